"""The stored counts, as spans of seqs: what the writer appends and what the verifier checks.

`event_counts` answers `GET /v1/stats/buckets` without scanning the log, and it is
append-only like every other table: a row is never updated. Each row counts the events of
one cell (hour, service, type, action, outcome, publisher) within one span of seqs:

- level 0: one batch's events within one piece of 2^12 seqs (a batch that crosses a
  multiple of 4,096 writes one span on each side), so the level-0 spans tile the log;
- level 12, level 16: a whole block of 2^12 (4,096) or 2^16 (65,536) seqs, aligned,
  appended by the batch that completes the block as the sum of the rows of the level
  below within it.

A read takes the level-16 rows of every complete block, the level-12 rows of the open
level-16 block and the level-0 rows of the open level-12 block: what it sums grows with the
cells of a block (a few hours of traffic), not with the number of batches, and the batches
it reads are never more than 4,095 events' worth. This is the shape of the tree's strata
(`merkle.py`): small pieces appended as they come, a larger piece appended once the pieces
below it are complete.

The counts are derived from the events, so the verifier recounts every span (`CountTally`)
as it reads the log in seq order: it holds the cells of one open block per level, whatever
the size of the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from auditlog.canonical import format_timestamp

ROLLUP_LEVELS = (12, 16)  # ascending; each a multiple of the one before
LEVELS = (0, *ROLLUP_LEVELS)
PIECE = 1 << ROLLUP_LEVELS[0]  # level-0 spans stay within one of these
TOP_LEVEL = ROLLUP_LEVELS[-1]

# (hour, service, type, action, outcome, publisher). The hour is the first 13 characters of
# the canonical timestamp ("2026-11-28T10"); absent action and publisher are "" (cells are
# compared as keys: never NULL).
CountKey = tuple[str, str, str, str, str, str]


def count_key(event: Mapping[str, Any]) -> CountKey:
    """The cell an event (in the API's form) is counted in."""
    return (
        event["occurred_at"][:13],
        event["service"],
        event["type"],
        event.get("action") or "",
        event["outcome"],
        event.get("publisher") or "",
    )


def hour_of(key: CountKey) -> str:
    """The cell's hour as a canonical timestamp, as the database takes it."""
    return f"{key[0]}:00:00Z"


def below(level: int) -> int:
    """The level whose rows a rollup level's rows sum."""
    return LEVELS[LEVELS.index(level) - 1]


def completed_blocks(level: int, lo: int, hi: int) -> list[int]:
    """The blocks of 2^level seqs that a batch of seqs [lo, hi) completes."""
    return list(range(lo >> level, hi >> level)) if hi > lo else []


@dataclass(frozen=True)
class CountSpan:
    """The stored counts of one span of seqs [lo, hi), cell by cell."""

    level: int
    lo: int
    hi: int
    cells: dict[CountKey, int] = field(default_factory=dict)
    # More rows than a span can truly hold were stored for it; only the first were kept.
    overfull: bool = False

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """(level, seq_lo, seq_hi, hour, service, type, action, outcome, publisher, n)."""
        for key, n in self.cells.items():
            yield (self.level, self.lo, self.hi, hour_of(key), *key[1:], n)


def batch_spans(stored: Iterable[Mapping[str, Any]]) -> list[CountSpan]:
    """The level-0 spans of a batch (its events in seq order, each with its seq): one per
    piece of 2^12 seqs the batch falls in."""
    spans: list[CountSpan] = []
    cells: Counter[CountKey] = Counter()
    lo = hi = None
    for event in stored:
        seq = event["seq"]
        if lo is not None and seq // PIECE != lo // PIECE:
            spans.append(CountSpan(0, lo, seq, dict(cells)))
            cells.clear()
            lo = None
        if lo is None:
            lo = seq
        hi = seq + 1
        cells[count_key(event)] += 1
    if lo is not None and hi is not None:
        spans.append(CountSpan(0, lo, hi, dict(cells)))
    return spans


def group_spans(
    rows: Iterable[Sequence[Any]], *, max_cells: int = 1 << TOP_LEVEL
) -> Iterator[CountSpan]:
    """Stored rows (level, seq_lo, seq_hi, hour, service, type, action, outcome, publisher,
    n), ordered by span, grouped into spans. A span holds at most one cell per event, so
    `max_cells` rows are more than any honest span has: beyond it the span is marked
    overfull and the rest skipped, which bounds the memory a tampered table can take."""
    current: CountSpan | None = None
    for level, lo, hi, hour, service, type_, action, outcome, publisher, n in rows:
        if current is None or (level, lo, hi) != (current.level, current.lo, current.hi):
            if current is not None:
                yield current
            current = CountSpan(level, lo, hi)
        if len(current.cells) >= max_cells:
            if not current.overfull:
                current = CountSpan(current.level, current.lo, current.hi, current.cells, True)
            continue
        key = (format_timestamp(hour)[:13], service, type_, action, outcome, publisher)
        current.cells[key] = current.cells.get(key, 0) + n
    if current is not None:
        yield current


def _differences(stored: Mapping[CountKey, int], counted: Mapping[CountKey, int]) -> str:
    """The first few cells where the stored counts and the events disagree, in words."""
    keys = sorted(k for k in stored.keys() | counted.keys() if stored.get(k) != counted.get(k))
    shown = [
        f"{hour_of(k)} service={k[1]!r} type={k[2]!r} action={k[3]!r} outcome={k[4]!r} "
        f"publisher={k[5]!r}: stored {stored.get(k, 0)}, events {counted.get(k, 0)}"
        for k in keys[:3]
    ]
    more = f" (and {len(keys) - 3} more cells)" if len(keys) > 3 else ""
    return "; ".join(shown) + more


@dataclass
class _OpenBlock:
    """The events of the block of one rollup level that the tally is in."""

    index: int = 0
    cells: Counter[CountKey] = field(default_factory=Counter)
    checked: bool = False


class CountTally:
    """Recounts the events, in seq order, against the stored count spans.

    Feed it each event in seq order (`add`; a gap is the log's finding) and each span right
    after the event that ends it (`check`: lower levels first), then `finish` with the log's
    size. It holds the cells of the open level-0 span and of one open block per rollup
    level: a few blocks' cells at most, whatever the size of the log.
    """

    def __init__(self, find: Callable[[int, str], None]):
        self._find = find  # (the first seq concerned, what is wrong)
        self._position = 0  # the next seq
        self._span_start = 0  # where the next level-0 span must start
        self._since_span: Counter[CountKey] = Counter()
        self._open = {level: _OpenBlock() for level in ROLLUP_LEVELS}

    def add(self, event: Mapping[str, Any]) -> None:
        seq = event["seq"]
        for level, block in self._open.items():
            if seq >> level != block.index:
                self._close(level, complete=True)
                block.index = seq >> level
        self._span_start = max(self._span_start, seq - seq % PIECE)
        self._position = seq + 1
        try:
            key = count_key(event)
        except (KeyError, TypeError):
            return  # a malformed event is the log's finding, not the counts'
        self._since_span[key] += 1
        for block in self._open.values():
            block.cells[key] += 1

    def check(self, span: CountSpan) -> None:
        what = f"the stored counts of seq {span.lo}–{span.hi - 1}"
        if span.overfull:
            self._find(span.lo, f"{what} hold more rows than events: rows were inserted")
        if span.level not in LEVELS:
            self._find(span.lo, f"{what} have an unknown level {span.level}: rows were inserted")
        elif span.hi > self._position:
            self._find(
                span.lo,
                f"{what} count events up to seq {span.hi - 1}, but here the log holds none "
                f"after seq {self._position - 1}: counts were inserted, or events removed",
            )
            if span.level == 0:
                self._span_start = max(self._span_start, span.hi)
                self._since_span.clear()
        elif span.level == 0:
            self._check_batch(span, what)
        else:
            self._check_block(span, what)

    def finish(self, size: int) -> None:
        """The log ends before seq `size`: everything it holds must be counted."""
        self._position = max(self._position, size)
        for level in ROLLUP_LEVELS:
            self._close(level, complete=size > 0 and size % (1 << level) == 0)

    def _check_batch(self, span: CountSpan, what: str) -> None:
        if span.lo < self._span_start:
            self._find(span.lo, f"{what} overlap the counts before them: counts were inserted")
        elif span.lo > self._span_start:
            self._missing(self._span_start, span.lo)
        elif span.lo // PIECE != (span.hi - 1) // PIECE:
            self._find(span.lo, f"{what} cross a multiple of {PIECE}: they were not written so")
        elif span.cells != dict(self._since_span):
            differences = _differences(span.cells, self._since_span)
            self._find(span.lo, f"{what} disagree with the events: {differences}")
        self._span_start = max(self._span_start, span.hi)
        self._since_span.clear()

    def _check_block(self, span: CountSpan, what: str) -> None:
        level, block = span.level, self._open[span.level]
        whole = f"{what} (a whole block of level {level})"
        if span.lo % (1 << level) or span.hi != span.lo + (1 << level):
            self._find(span.lo, f"{what} are not a whole block of level {level}: not written so")
        elif span.lo >> level != block.index or block.checked:
            self._find(span.lo, f"{whole} do not belong here: counts were inserted")
        else:
            block.checked = True
            if span.cells != dict(block.cells):
                differences = _differences(span.cells, block.cells)
                self._find(span.lo, f"{whole} disagree with the events: {differences}")

    def _close(self, level: int, *, complete: bool) -> None:
        """Every event of the open block of a level has been seen; so must its counts."""
        block = self._open[level]
        start, end = block.index << level, (block.index + 1) << level
        if level == ROLLUP_LEVELS[0] and self._since_span:
            self._missing(self._span_start, min(self._position, end))
            self._since_span.clear()
            self._span_start = max(self._span_start, min(self._position, end))
        if complete and not block.checked:
            self._find(
                start,
                f"no counts of the whole block seq {start}–{end - 1} (level {level}) are "
                "stored: counts were removed",
            )
        block.cells.clear()
        block.checked = False

    def _missing(self, lo: int, hi: int) -> None:
        self._find(lo, f"no counts are stored for seq {lo}–{hi - 1}: counts were removed")
