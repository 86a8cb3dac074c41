"""Recompute the log from its events and check it against the signed tree heads.

The input is one stream, in log order: each event (as the API returns it) and, right after
the event that completes it, each signed tree head. The database and an export file give the
same stream, so the same checks run on both, in constant memory. From the database, the
stored counts come in the same stream (each span right after its last event) and are
recounted from the events (`counts.CountTally`); an export holds no counts.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from auditlog.canonical import format_timestamp
from auditlog.integrity.counts import CountSpan, CountTally
from auditlog.integrity.heads import TreeHead
from auditlog.integrity.leaf import leaf_hash
from auditlog.integrity.merkle import Frontier

Item = dict[str, Any] | TreeHead | CountSpan
EXACT = frozenset({"changed", "missing", "inserted", "unsigned", "malformed"})
RANGE = frozenset({"head-mismatch"})
# The counts are derived from the events: a changed or removed event makes them disagree
# too, so they locate a disagreement only when the events themselves are intact.
DERIVED = frozenset({"counts"})


@dataclass(frozen=True)
class Finding:
    """One disagreement: where (the first seq concerned), what kind, and in words."""

    seq: int | None
    kind: str
    message: str


@dataclass
class VerifyReport:
    events: int = 0
    heads: int = 0
    count_spans: int = 0
    tree_size: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        # An empty log is intact only in that nothing contradicts it: that nothing was
        # removed from it takes a head from elsewhere (LogVerifier's `trusted`).
        return not self.findings

    def first(self) -> Finding | None:
        """The earliest exact disagreement; a head mismatch only bounds a range of seqs, and
        the counts are derived from the events."""
        for kinds in (EXACT, RANGE, DERIVED):
            located = [f for f in self.findings if f.seq is not None and f.kind in kinds]
            if located:
                return min(located, key=lambda f: f.seq or 0)
        return self.findings[0] if self.findings else None


@dataclass(frozen=True)
class Anchor:
    """A tree size and root hash the auditor trusts from elsewhere: a tree head kept from
    earlier, a saved checkpoint, a checkpoint cosigned by witnesses. The log must reach its
    size, and its tree at that size must have that root."""

    tree_size: int
    root_hash: bytes
    what: str = "the trusted tree head"


def _placed_after(item: TreeHead | CountSpan) -> tuple[int, int]:
    """Where an item goes: after the event before its end; a head first, then the counts
    of a batch, then those of a whole block."""
    if isinstance(item, TreeHead):
        return item.tree_size, -1
    return item.hi, item.level


def interleave(
    events: Iterable[dict[str, Any]],
    heads: Iterable[TreeHead],
    *counts: Iterable[CountSpan],
) -> Iterator[Item]:
    """Merge events (by seq), heads (by size) and count spans (by end, each stream of them
    in order): each head and span right after the last event it covers."""
    streams: list[Iterable[TreeHead | CountSpan]] = [heads, *counts]
    pending = heapq.merge(*streams, key=_placed_after)
    after = next(pending, None)
    for event in events:
        seq = event.get("seq")
        while after is not None and isinstance(seq, int) and _placed_after(after)[0] <= seq:
            yield after
            after = next(pending, None)
        yield event
    while after is not None:
        yield after
        after = next(pending, None)


class LogVerifier:
    """Checks one stream of events and heads against a public key.

    `end`: the size the stream says it reaches (an export's header), so that a stream cut
    short is caught. `trusted`: a signed head the auditor kept from earlier (fetched from
    the API, published elsewhere), and `anchors`: sizes and roots trusted otherwise (a saved
    checkpoint, one cosigned by witnesses): the log must have grown from each, so that
    removing its newest events together with the heads covering them, or rolling the whole
    log back, shows. Without one, a log cut at a head boundary cannot be told from a
    shorter log.
    """

    def __init__(
        self,
        public_key: bytes,
        *,
        start: int = 0,
        prefix: Sequence[bytes] = (),
        end: int | None = None,
        trusted: TreeHead | None = None,
        counts: bool = False,
        anchors: Sequence[Anchor] = (),
        max_findings: int = 100,
    ):
        """`counts`: the stream carries the stored count spans, to be checked against the
        events (from the database; an export has none)."""
        if trusted is not None and not trusted.verify(public_key):
            raise ValueError("the trusted tree head has no valid signature by this key")
        if trusted is not None:
            anchors = [Anchor(trusted.tree_size, trusted.root_hash), *anchors]
        self._public_key = public_key
        self._frontier = Frontier(start, prefix)
        self._expected = start
        self._last_good_head = start
        self._tree_valid = True  # False once a gap or repeat makes later roots meaningless
        self._end = end
        self._anchors = {a.tree_size: a for a in anchors if a.tree_size > start}
        self._max_findings = max_findings
        self.report = VerifyReport(tree_size=start)
        self._tally = (
            CountTally(lambda seq, message: self._find(seq, "counts", message)) if counts else None
        )

    def run(self, items: Iterable[Item]) -> VerifyReport:
        for item in items:
            if len(self.report.findings) >= self._max_findings:
                break
            if isinstance(item, TreeHead):
                self._check_head(item)
            elif isinstance(item, CountSpan):
                self.report.count_spans += 1
                if self._tally is not None:
                    self._tally.check(item)
            else:
                self._check_event(item)
        self._finish()
        return self.report

    def _find(self, seq: int | None, kind: str, message: str) -> None:
        self.report.findings.append(Finding(seq, kind, message))

    def _check_event(self, event: dict[str, Any]) -> None:
        self.report.events += 1
        seq = event.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            self._find(None, "malformed", f"an event without an integer seq: {event.get('id')}")
            self._tree_valid = False
            return
        if seq < self._expected:
            self._find(
                seq,
                "inserted",
                f"seq {seq} appears again (event {event.get('id')}): "
                "an event was inserted, or a seq changed",
            )
            self._tree_valid = False
            return
        if seq > self._expected:
            gap = (
                f"{self._expected}" if seq == self._expected + 1 else f"{self._expected}–{seq - 1}"
            )
            self._find(self._expected, "missing", f"seq {gap} missing: events were removed")
            self._tree_valid = False
            self._expected = seq
        if self._tally is not None:
            self._tally.add(event)
        leaf = leaf_hash(event)
        recorded = event.get("leaf_hash")
        if recorded is not None and _decode(recorded) != leaf:
            self._find(
                seq,
                "changed",
                f"seq {seq} (event {event.get('id')}) does not match its "
                "recorded leaf hash: a field was changed, or seqs were swapped",
            )
        if self._tree_valid:
            self._frontier.append(leaf)
            self._check_trusted()
        self._expected += 1

    def _check_trusted(self) -> None:
        trusted = self._anchors.get(self._frontier.size)
        if trusted is None:
            return
        if self._frontier.root() != trusted.root_hash:
            self._find(
                self._last_good_head,
                "head-mismatch",
                f"{trusted.what} at size {trusted.tree_size} does not match the "
                f"events: the log's history was rewritten; the difference lies in seq "
                f"{self._last_good_head}–{trusted.tree_size - 1}",
            )
            self._tree_valid = False

    def _check_head(self, head: TreeHead) -> None:
        self.report.heads += 1
        if not head.verify(self._public_key):
            self._find(
                None,
                "bad-signature",
                f"the tree head at size {head.tree_size} has no valid signature by this key",
            )
            return
        if head.tree_size > self._expected:
            self._find(
                self._expected,
                "missing",
                f"the tree head at size {head.tree_size} covers seq up to "
                f"{head.tree_size - 1}, but the log stops at seq {self._expected - 1}: "
                "events were removed",
            )
            self._tree_valid = False
            return
        if not self._tree_valid or head.tree_size != self._frontier.size:
            return
        if self._frontier.root() != head.root_hash:
            self._find(
                self._last_good_head,
                "head-mismatch",
                f"the tree head at size {head.tree_size} (signed "
                f"{format_timestamp(head.timestamp)}) does not match the events; the "
                "difference lies in seq "
                f"{self._last_good_head}–{head.tree_size - 1}",
            )
            self._tree_valid = False
            return
        self._last_good_head = head.tree_size
        self.report.tree_size = head.tree_size

    def _finish(self) -> None:
        if self._tally is not None:
            self._tally.finish(self._expected)
        bounds = [("the export's header", self._end)]
        bounds += [(a.what, a.tree_size) for a in self._anchors.values()]
        for what, size in bounds:
            if size is not None and self._expected < size:
                self._find(
                    self._expected,
                    "missing",
                    f"{what} covers seq up to {size - 1}, but the log holds nothing from "
                    f"seq {self._expected} on: events were removed from its end",
                )
        if self._expected > self._last_good_head and self._tree_valid:
            self._find(
                self._last_good_head,
                "unsigned",
                f"seq {self._last_good_head}–{self._expected - 1} are not covered by any "
                "signed tree head: events were added outside the writer",
            )


def _decode(value: Any) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError):
        return None
