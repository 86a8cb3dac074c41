"""The counts' spans and their recount, over made-up logs (the top block is 65,536 events)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from auditlog.integrity.counts import (
    PIECE,
    ROLLUP_LEVELS,
    TOP_LEVEL,
    CountSpan,
    CountTally,
    batch_spans,
    below,
    completed_blocks,
    group_spans,
)

TOP = 1 << TOP_LEVEL


def event(seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "occurred_at": f"2026-11-02T{seq // 10_000 % 24:02d}:00:00.000000Z",
        "service": ("billing", "web")[seq % 2],
        "type": ("customer.billed", "invoice.sent", "session.login")[seq % 3],
        "action": None if seq % 4 else "bill",
        "outcome": "success",
        "publisher": None,
    }


def spans_of(size: int, batch: int) -> list[CountSpan]:
    """What the writer appends for a log of `size` events written `batch` at a time: each
    batch's level-0 spans, then the rows of every block it completes, smallest first."""
    out: list[CountSpan] = []
    for lo in range(0, size, batch):
        hi = min(size, lo + batch)
        out += batch_spans(event(seq) for seq in range(lo, hi))
        for level in ROLLUP_LEVELS:
            for block in completed_blocks(level, lo, hi):
                start, end = block << level, (block + 1) << level
                cells: dict[Any, int] = {}
                for span in out:
                    if span.level == below(level) and start <= span.lo < end:
                        for key, n in span.cells.items():
                            cells[key] = cells.get(key, 0) + n
                out.append(CountSpan(level, start, end, cells))
    return out


def tally(size: int, spans: list[CountSpan], *, events: Iterator[int] | None = None) -> list[str]:
    """Feed the tally as the verifier does (each span after the event before its end)."""
    findings: list[str] = []
    counts = CountTally(lambda seq, message: findings.append(f"{seq}: {message}"))
    pending = sorted(spans, key=lambda s: (s.hi, s.level))
    for seq in events if events is not None else range(size):
        while pending and pending[0].hi <= seq:
            counts.check(pending.pop(0))
        counts.add(event(seq))
    for span in pending:
        counts.check(span)
    counts.finish(size)
    return findings


SIZE = TOP + 1000


@pytest.fixture(scope="module")
def written() -> list[CountSpan]:
    return spans_of(SIZE, 3000)


class TestSpans:
    def test_a_batch_is_split_at_each_piece(self):
        spans = batch_spans(event(seq) for seq in range(PIECE - 3, 2 * PIECE + 2))
        assert [(s.level, s.lo, s.hi, sum(s.cells.values())) for s in spans] == [
            (0, PIECE - 3, PIECE, 3),
            (0, PIECE, 2 * PIECE, PIECE),
            (0, 2 * PIECE, 2 * PIECE + 2, 2),
        ]

    @pytest.mark.parametrize(
        ("level", "lo", "hi", "blocks"),
        [
            (16, 0, 10, []),
            (16, 0, TOP, [0]),
            (16, TOP - 1, TOP + 1, [0]),
            (16, TOP, 2 * TOP - 1, []),
            (12, 0, 3 * PIECE, [0, 1, 2]),
        ],
    )
    def test_completed_blocks(self, level: int, lo: int, hi: int, blocks: list[int]):
        assert completed_blocks(level, lo, hi) == blocks

    def test_rows_of_a_span_regroup_into_it(self, written: list[CountSpan]):
        rows = [
            (level, lo, hi, datetime.fromisoformat(hour), *rest)
            for span in written[:3]
            for level, lo, hi, hour, *rest in span.rows()
        ]
        assert list(group_spans(rows)) == written[:3]

    def test_a_span_with_more_rows_than_events_is_cut_short(self):
        rows = [
            (0, 0, 5, datetime(2026, 11, 2, tzinfo=UTC), "s", f"t{i}", "", "success", "", 1)
            for i in range(10)
        ]
        (span,) = group_spans(rows, max_cells=4)
        assert span.overfull
        assert len(span.cells) == 4


class TestTally:
    def test_what_the_writer_wrote_agrees(self, written: list[CountSpan]):
        levels = [s.level for s in written]
        assert (levels.count(12), levels.count(16)) == (16, 1)
        assert tally(SIZE, written) == []

    def test_an_altered_cell(self, written: list[CountSpan]):
        span = written[4]
        key = next(iter(span.cells))
        changed = CountSpan(0, span.lo, span.hi, {**span.cells, key: span.cells[key] + 1})
        (finding,) = tally(SIZE, [changed if s is span else s for s in written])
        assert finding.startswith(f"{span.lo}: the stored counts of seq {span.lo}–{span.hi - 1}")
        assert f"stored {span.cells[key] + 1}, events {span.cells[key]}" in finding

    def test_a_removed_span(self, written: list[CountSpan]):
        span = written[4]
        assert tally(SIZE, [s for s in written if s is not span]) == [
            f"{span.lo}: no counts are stored for seq {span.lo}–{span.hi - 1}: counts were removed"
        ]

    def test_the_last_span_removed(self, written: list[CountSpan]):
        last = written[-1]
        assert last.level == 0
        assert tally(SIZE, written[:-1]) == [
            f"{last.lo}: no counts are stored for seq {last.lo}–{SIZE - 1}: counts were removed"
        ]

    @pytest.mark.parametrize("level", ROLLUP_LEVELS)
    def test_a_block_removed(self, written: list[CountSpan], level: int):
        block = next(s for s in written if s.level == level)
        (finding,) = tally(SIZE, [s for s in written if s is not block])
        assert f"no counts of the whole block seq {block.lo}–{block.hi - 1} (level {level})" in (
            finding
        )

    @pytest.mark.parametrize("level", ROLLUP_LEVELS)
    def test_a_block_altered(self, written: list[CountSpan], level: int):
        block = next(s for s in written if s.level == level)
        key = next(iter(block.cells))
        forged = CountSpan(level, block.lo, block.hi, {**block.cells, key: 1})
        (finding,) = tally(SIZE, [forged if s is block else s for s in written])
        assert f"(a whole block of level {level}) disagree with the events" in finding

    @pytest.mark.parametrize(
        "extra",
        [
            CountSpan(0, 10, 20, {("2026-11-02T00", "x", "y", "", "success", ""): 1}),
            CountSpan(0, SIZE, SIZE + 3, {("2026-11-02T00", "x", "y", "", "success", ""): 3}),
            CountSpan(16, TOP, 2 * TOP, {}),
            CountSpan(16, 0, TOP, {}),
            CountSpan(12, PIECE, 2 * PIECE, {}),
            CountSpan(12, 0, 2 * PIECE, {}),
            CountSpan(7, 0, 5, {}),
        ],
        ids=[
            "overlapping",
            "past-the-end",
            "open-block",
            "block-twice",
            "piece-twice",
            "not-a-block",
            "unknown-level",
        ],
    )
    def test_an_inserted_span(self, written: list[CountSpan], extra: CountSpan):
        assert tally(SIZE, [*written, extra])

    def test_an_event_removed_shows_in_each_span_over_it(self, written: list[CountSpan]):
        findings = tally(SIZE, written, events=(s for s in range(SIZE) if s != 5000))
        assert len(findings) == 3, findings  # its batch's span, its 4,096 and its 65,536
        assert findings[0].startswith("4096: the stored counts of seq 4096–5999 disagree")
        assert "(a whole block of level 12) disagree with the events" in findings[1]
        assert "(a whole block of level 16) disagree with the events" in findings[2]

    def test_memory_is_one_open_block_per_level(self):
        """The tally forgets a block once it is closed: a few cells, not the log's."""
        counts = CountTally(lambda seq, message: None)
        for seq in range(TOP + 10):
            counts.add(event(seq))
        assert [sum(block.cells.values()) for block in counts._open.values()] == [10, 10]
