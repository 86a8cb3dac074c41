"""The verifier over made-up logs: one test per kind of tampering, and its memory."""

from __future__ import annotations

import base64
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlog.integrity.export import ExportFormatError, read_export
from auditlog.integrity.heads import HeadSigner, TreeHead, b64
from auditlog.integrity.leaf import leaf_hash
from auditlog.integrity.merkle import Frontier
from auditlog.integrity.verify import LogVerifier, VerifyReport

SIGNER = HeadSigner(Ed25519PrivateKey.generate())
KEY = SIGNER.public_key
NOW = datetime(2026, 12, 1, tzinfo=UTC)

Item = dict[str, Any] | TreeHead


def event(seq: int, **overrides: Any) -> dict[str, Any]:
    document = {"id": f"e{seq}", "seq": seq, "type": "customer.billed", "data": {"n": seq}}
    document.update(overrides)
    document["leaf_hash"] = b64(leaf_hash(document))
    return document


def log(size: int, *, head_every: int = 10, salt: str = "") -> Iterator[Item]:
    """A log as the writer leaves it: events in seq order, a signed head after each batch."""
    frontier = Frontier()
    for seq in range(size):
        document = event(seq, **({"salt": salt} if salt else {}))
        frontier.append(leaf_hash(document))
        yield document
        if frontier.size % head_every == 0 or frontier.size == size:
            yield SIGNER.sign(frontier.size, frontier.root(), NOW)


def head_at(size: int, items: list[Item]) -> TreeHead:
    return next(i for i in items if isinstance(i, TreeHead) and i.tree_size == size)


def verify(items: list[Item] | Iterator[Item], **kwargs: Any) -> VerifyReport:
    return LogVerifier(KEY, **kwargs).run(items)


def edited(items: list[Item], seq: int, change: Callable[[dict[str, Any]], Any]) -> list[Item]:
    out: list[Item] = []
    for item in items:
        if isinstance(item, dict) and item["seq"] == seq:
            copy = orjson.loads(orjson.dumps(item))
            change(copy)
            out.append(copy)
        else:
            out.append(item)
    return out


class TestIntact:
    """An untouched log verifies, whatever its size and batch boundaries."""

    @pytest.mark.parametrize("size", [1, 2, 7, 10, 11, 100, 257])
    def test_untouched(self, size: int):
        report = verify(log(size))
        assert report.intact, report.findings
        assert (report.events, report.tree_size) == (size, size)

    def test_empty_log_is_intact(self):
        report = verify([])
        assert report.intact
        assert (report.events, report.heads) == (0, 0)

    def test_grown_from_a_trusted_head(self):
        items = list(log(100))
        assert verify(items, trusted=head_at(40, items)).intact


class TestTampering:
    """Each kind of change is found, and the first finding names its seq."""

    def test_changed_field(self):
        items = edited(list(log(100)), 37, lambda e: e["data"].update(n=-1))
        first = verify(items).first()
        assert first is not None
        assert (first.kind, first.seq) == ("changed", 37)

    def test_changed_field_with_its_leaf_hash_recomputed(self):
        def forge(document: dict[str, Any]) -> None:
            document["data"] = {"n": -1}
            document["leaf_hash"] = b64(leaf_hash(document))

        first = verify(edited(list(log(100)), 37, forge)).first()
        assert first is not None
        assert first.kind == "head-mismatch"
        # Only the signed heads can tell: the change is placed within its batch.
        assert first.seq == 30
        assert "seq 30–39" in first.message

    def test_removed_event(self):
        items = [i for i in log(100) if not (isinstance(i, dict) and i["seq"] == 52)]
        first = verify(items).first()
        assert first is not None
        assert (first.kind, first.seq) == ("missing", 52)

    def test_inserted_event_with_a_taken_seq(self):
        items = list(log(100))
        index = items.index(next(i for i in items if isinstance(i, dict) and i["seq"] == 20))
        items.insert(index + 1, event(20, type="forged"))
        first = verify(items).first()
        assert first is not None
        assert (first.kind, first.seq) == ("inserted", 20)

    def test_appended_event_not_covered_by_a_head(self):
        items = [*log(100), event(100)]
        first = verify(items).first()
        assert first is not None
        assert (first.kind, first.seq) == ("unsigned", 100)

    def test_swapped_pair(self):
        # Two events trade seqs; read back in seq order, each sits where the other was.
        items = list(log(100))
        at = {i["seq"]: n for n, i in enumerate(items) if isinstance(i, dict)}
        items[at[61]], items[at[64]] = (
            {**items[at[64]], "seq": 61},
            {**items[at[61]], "seq": 64},
        )
        first = verify(items).first()
        assert first is not None
        assert (first.kind, first.seq) == ("changed", 61)

    def test_head_signed_by_another_key(self):
        other = HeadSigner(Ed25519PrivateKey.generate())
        items = [
            other.sign(i.tree_size, i.root_hash, i.timestamp) if isinstance(i, TreeHead) else i
            for i in log(30)
        ]
        report = verify(items)
        assert not report.intact
        assert {f.kind for f in report.findings} >= {"bad-signature"}

    def test_stream_shorter_than_its_declared_end(self):
        items = list(log(100))
        cut = items[: items.index(head_at(60, items)) + 1]
        assert verify(cut).intact  # a shorter log, as far as the stream itself can tell
        first = verify(cut, end=100).first()
        assert first is not None
        assert (first.kind, first.seq) == ("missing", 60)

    def test_end_removed_with_its_heads_is_caught_by_a_trusted_head(self):
        items = list(log(100))
        trusted = head_at(90, items)
        cut = items[: items.index(head_at(60, items)) + 1]
        first = verify(cut, trusted=trusted).first()
        assert first is not None
        assert (first.kind, first.seq) == ("missing", 60)

    def test_rewritten_history_is_caught_by_a_trusted_head(self):
        trusted = head_at(50, list(log(100)))
        # Every event changed and every head signed again with the log's own key: the log
        # is consistent with itself, not with what an auditor saw before.
        first = verify(list(log(100, salt="rewritten")), trusted=trusted).first()
        assert first is not None
        assert first.kind == "head-mismatch"
        assert "trusted tree head at size 50" in first.message

    def test_a_trusted_head_must_be_signed_by_the_key(self):
        forged = TreeHead(10, b"\0" * 32, NOW, b"\0" * 64)
        with pytest.raises(ValueError, match="no valid signature"):
            LogVerifier(KEY, trusted=forged)


def test_memory_does_not_grow_with_the_log():
    """The peak of Python allocations while verifying 3,000 or 30,000 events."""

    def peak(size: int) -> int:
        stream = log(size, head_every=500)
        tracemalloc.start()
        try:
            assert verify(stream).intact
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(3_000), peak(30_000)
    # Holding every event would take ~30 MB more; a stream holds one at a time.
    assert large - small < 256 * 1024, (small, large)


class TestReadExport:
    """An export file is read lazily; what is not an export is an ExportFormatError."""

    def header(self, **overrides: Any) -> bytes:
        return orjson.dumps(
            {"auditlog_export": 1, "start": 0, "end": None, "prefix": []} | overrides
        )

    def test_round_trip(self):
        lines = [self.header(end=10)]
        for item in log(10):
            lines.append(orjson.dumps(item.as_dict() if isinstance(item, TreeHead) else item))
        piece = read_export(lines)
        assert (piece.start, piece.end) == (0, 10)
        assert verify(piece.items, end=piece.end).intact

    @pytest.mark.parametrize(
        "header",
        [
            b"[]",
            b'{"auditlog_export": 2, "start": 0, "prefix": []}',
            b'{"auditlog_export": 1, "start": -1, "prefix": []}',
            b'{"auditlog_export": 1, "start": 3, "prefix": []}',  # 3 = 2 + 1: two hashes
            b'{"auditlog_export": 1, "start": 1, "prefix": ["AAAA"]}',  # not 32 bytes
            b'{"auditlog_export": 1, "start": 5, "end": 4, "prefix": []}',
        ],
    )
    def test_bad_headers(self, header: bytes):
        with pytest.raises(ExportFormatError):
            read_export([header])

    def test_a_piece_starting_later_carries_its_prefix(self):
        prefix = [base64.b64encode(bytes(32)).decode()] * 2
        piece = read_export([self.header(start=3, prefix=prefix)])
        assert piece.prefix == [bytes(32)] * 2

    @pytest.mark.parametrize("line", [b"1", b"[1]", b'"text"', b"{"])
    def test_a_line_that_is_not_an_object(self, line: bytes):
        piece = read_export([self.header(), line])
        with pytest.raises(ExportFormatError, match="line 2"):
            list(piece.items)
