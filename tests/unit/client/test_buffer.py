"""The buffer between emit and the sender: batches, overflow policies, flush accounting."""

from __future__ import annotations

from pathlib import Path

from auditlog.client import Options, Overflow
from auditlog.client._buffer import Buffer
from auditlog.client._protocol import Settled
from auditlog.client._spill import SpillFile


def raw(n: int) -> bytes:
    return b'{"n":%04d}' % n  # 10 bytes


def fill(buffer: Buffer, count: int, start: int = 0) -> list:
    failures = []
    for n in range(start, start + count):
        failures += buffer.put(f"id-{n}", raw(n), now=0.0)[0]
    return failures


class TestBatches:
    def test_a_batch_waits_for_the_linger_unless_full_or_urgent(self):
        buffer = Buffer(Options(max_batch_events=3, linger_s=0.5))
        fill(buffer, 2)
        assert buffer.take(now=0.1, urgent=False) is None
        assert buffer.wait_s(now=0.1) == 0.4
        assert [i.id for i in buffer.take(now=0.5, urgent=False).items] == ["id-0", "id-1"]
        fill(buffer, 2, start=2)
        assert len(buffer.take(now=0.0, urgent=True).items) == 2

    def test_a_full_batch_goes_at_once_and_wakes_the_sender(self):
        buffer = Buffer(Options(max_batch_events=3, linger_s=60))
        wakes = [buffer.put(f"id-{n}", raw(n), 0.0)[1] for n in range(4)]
        assert wakes == [True, False, True, False]
        assert [i.id for i in buffer.take(0.0, urgent=False).items] == ["id-0", "id-1", "id-2"]

    def test_batches_are_bounded_by_bytes(self):
        buffer = Buffer(Options(max_batch_bytes=1024, linger_s=0))
        for n in range(3):
            buffer.put(f"id-{n}", b"x" * 500, 0.0)
        assert [len(buffer.take(0.0, False).items) for _ in range(2)] == [2, 1]


class TestOverflow:
    def test_block_leaves_the_waiting_to_the_client(self):
        buffer = Buffer(Options(buffer_events=2))
        fill(buffer, 2)
        assert not buffer.has_room(10)
        buffer.take(0.0, urgent=True)
        assert buffer.has_room(10)

    def test_drop_oldest_reports_and_counts_what_it_gives_up(self):
        buffer = Buffer(Options(buffer_events=3, overflow=Overflow.DROP_OLDEST))
        failures = fill(buffer, 5)
        assert [(f.id, f.kind) for f in failures] == [("id-0", "dropped"), ("id-1", "dropped")]
        stats = buffer.stats()
        assert (stats.dropped, stats.failed, stats.buffered, stats.emitted) == (2, 2, 3, 5)
        assert [i.id for i in buffer.take(0.0, True).items] == ["id-2", "id-3", "id-4"]

    def test_buffer_bytes_bound_too(self):
        buffer = Buffer(Options(buffer_bytes=25, overflow=Overflow.DROP_OLDEST))
        assert [f.id for f in fill(buffer, 3)] == ["id-0"]

    def test_spill_keeps_the_order_memory_then_disk(self, tmp_path: Path):
        options = Options(
            buffer_events=2, overflow=Overflow.SPILL, spill_path=tmp_path / "s", linger_s=0
        )
        buffer = Buffer(options)
        buffer.spill = SpillFile(tmp_path / "s", 1 << 20, buffer.run)
        assert fill(buffer, 3) == []
        assert buffer.stats().spilled == 1
        # Memory has room again, but events follow the ones on disk until it is empty.
        first = buffer.take(0.0, urgent=False)
        fill(buffer, 1, start=3)
        assert buffer.stats().spilled == 2
        second = buffer.take(0.0, urgent=False)
        assert [i.id for i in first.items] == ["id-0", "id-1"]
        assert [i.id for i in second.items] == ["id-2", "id-3"]
        assert [i.seq for i in second.items] == [2, 3]  # this run's: flushes wait for them
        buffer.finish(second)
        assert not buffer.spill.pending
        assert buffer.stats().replayed == 2
        buffer.close()

    def test_close_spills_what_memory_holds(self, tmp_path: Path):
        options = Options(overflow=Overflow.SPILL, spill_path=tmp_path / "s")
        buffer = Buffer(options)
        buffer.spill = SpillFile(tmp_path / "s", 1 << 20, buffer.run)
        fill(buffer, 3)
        assert buffer.close() == []
        assert len((tmp_path / "s").read_bytes().splitlines()) == 3

    def test_close_without_spill_reports_what_is_left(self):
        buffer = Buffer(Options())
        fill(buffer, 2)
        assert [f.kind for f in buffer.close()] == ["undelivered", "undelivered"]


class TestFlushMarks:
    def test_a_mark_counts_only_what_was_emitted_before_it(self):
        buffer = Buffer(Options(linger_s=0))
        fill(buffer, 3)
        mark = buffer.mark()
        fill(buffer, 2, start=3)
        batch = buffer.take(0.0, urgent=True)
        assert mark.remaining == 3
        buffer.settle(Settled(batch.items[:2]))
        buffer.settle(Settled(batch.items[3:]))  # emitted after the mark
        assert mark.remaining == 1
        buffer.settle(Settled(batch.items[2:3], "rejected", "bad", 422))
        assert mark.remaining == 0
        assert buffer.flushing
        buffer.unmark(mark)
        assert not buffer.flushing

    def test_given_back_items_are_sent_first(self):
        buffer = Buffer(Options(linger_s=0, max_batch_events=2))
        fill(buffer, 3)
        batch = buffer.take(0.0, urgent=True)
        buffer.give_back(batch, batch.items[1:])
        assert [i.id for i in buffer.take(0.0, urgent=True).items] == ["id-1", "id-2"]
