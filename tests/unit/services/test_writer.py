"""The batch writer's decisions: ack after commit, retry outages, isolate refused entries.

The stream and store here are in-memory stand-ins; the real ones are exercised by
tests/integration/test_pipeline.py.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from auditlog.errors import Unavailable
from auditlog.services.writer import BatchWriter
from auditlog.storage.event_writer import StoreRejected, StoreUnavailable, WriteResult
from auditlog.storage.stream import Entry


class FakeStream:
    """Redis is away for the first `outages[op]` calls of an operation."""

    def __init__(self, payloads: list[bytes], outages: dict[str, int] | None = None):
        self.waiting = [Entry(f"{i}-0", p) for i, p in enumerate(payloads)]
        self.pending: dict[str, Entry] = {}
        self.deliveries_by_id: dict[str, int] = {}
        self.acked: list[str] = []
        self.dead: list[tuple[str, str]] = []
        self.outages = dict(outages or {})

    def _maybe_away(self, operation: str) -> None:
        if self.outages.get(operation, 0) > 0:
            self.outages[operation] -= 1
            raise Unavailable(f"Redis does not answer ({operation})")

    def ensure_group(self) -> None:
        self._maybe_away("ensure_group")

    def read(self, consumer: str, count: int, block_ms: int, *, pending: bool) -> list[Entry]:
        self._maybe_away("read")
        if pending:
            batch = list(self.pending.values())[:count]
        else:
            batch, self.waiting = self.waiting[:count], self.waiting[count:]
        for entry in batch:
            self.pending[entry.entry_id] = entry
            self.deliveries_by_id[entry.entry_id] = self.deliveries_by_id.get(entry.entry_id, 0) + 1
        return batch

    def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        return []

    def deliveries(self, consumer: str, entry_id: str) -> int:
        return self.deliveries_by_id[entry_id]

    def ack(self, entry_ids: list[str]) -> None:
        self._maybe_away("ack")
        for entry_id in entry_ids:
            self.pending.pop(entry_id)
        self.acked += entry_ids

    def dead_letter(self, entry: Entry, error: str) -> None:
        self.pending.pop(entry.entry_id, None)
        self.dead.append((entry.entry_id, error))


class FakeStore:
    """Refuses any batch holding a type in `refuse`; is down for the first `outages` calls."""

    def __init__(self, refuse: set[str] = frozenset(), outages: int = 0):  # type: ignore[assignment]
        self.refuse = refuse
        self.outages = outages
        self.rows: list[str] = []
        self.calls = 0

    def write(self, batch: list[dict[str, Any]]) -> WriteResult:
        self.calls += 1
        if self.outages:
            self.outages -= 1
            raise StoreUnavailable("connection refused")
        if any(e["type"] in self.refuse for e in batch):
            raise StoreRejected("invalid byte sequence")
        new = []
        for event in batch:
            if event["id"] not in self.rows:
                self.rows.append(event["id"])
                new.append(event["id"])
        return WriteResult(
            stored=[{"id": i, "seq": n} for n, i in enumerate(new)],
            duplicates=len(batch) - len(new),
        )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def payload(i: int, type_: str = "a.b") -> bytes:
    return orjson.dumps(
        {
            "id": f"id-{i}",
            "type": type_,
            "service": "s",
            "occurred_at": "2026-01-01T00:00:00.000000Z",
            "received_at": "2026-01-01T00:00:00.000000Z",
            "outcome": "unknown",
        }
    )


def run(
    stream: FakeStream,
    store: FakeStore,
    *,
    batch_max: int = 100,
    until: float = 10.0,
    keep_going: Any = lambda: True,
    linger_ms: int = 0,
    clock: Clock | None = None,
) -> Any:
    clock = clock or Clock()
    writer = BatchWriter(
        stream,
        store,
        batch_max=batch_max,
        block_ms=1,  # type: ignore[arg-type]
        linger_ms=linger_ms,
        claim_idle_ms=1000,
        max_attempts=3,
        clock=clock,
        sleep=clock.sleep,
    )
    return writer.drain("c", deadline=until, keep_going=keep_going)


class ArrivingStream(FakeStream):
    """Events arrive between the first read and the next: as a busy producer's would."""

    def __init__(self, payloads: list[bytes], later: list[bytes]):
        super().__init__(payloads)
        self.later = later
        self.reads = 0

    def read(self, consumer: str, count: int, block_ms: int, *, pending: bool) -> list[Entry]:
        if not pending:
            self.reads += 1
            if self.reads == 2:
                first = len(self.waiting) + len(self.pending) + len(self.acked)
                self.waiting += [Entry(f"{first + i}-0", p) for i, p in enumerate(self.later)]
        return super().read(consumer, count, block_ms, pending=pending)


class SleepLog(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        super().sleep(seconds)


class TestLinger:
    """After a short read the writer waits a moment for more: fewer, larger transactions."""

    def test_what_arrives_while_lingering_joins_the_batch(self):
        stream = ArrivingStream([payload(i) for i in range(3)], [payload(i) for i in range(3, 10)])
        clock = SleepLog()
        store = FakeStore()
        report = run(stream, store, linger_ms=50, clock=clock, until=1.0)
        assert store.rows == [f"id-{i}" for i in range(10)]
        assert report.batches == 1
        assert report.largest_batch == 10
        assert clock.slept[0] == pytest.approx(0.05)

    def test_without_linger_each_read_is_a_batch(self):
        stream = ArrivingStream([payload(i) for i in range(3)], [payload(i) for i in range(3, 10)])
        clock = SleepLog()
        store = FakeStore()
        report = run(stream, store, clock=clock, until=1.0)
        assert store.rows == [f"id-{i}" for i in range(10)]
        assert report.batches == 2
        assert clock.slept == []

    def test_a_full_read_is_written_at_once(self):
        stream = FakeStream([payload(i) for i in range(250)])
        clock = SleepLog()
        report = run(stream, FakeStore(), batch_max=100, linger_ms=50, clock=clock, until=1.0)
        assert report.batches == 3
        assert clock.slept == [pytest.approx(0.05)]  # only the last, short read waited

    def test_the_linger_never_passes_the_deadline(self):
        stream = FakeStream([payload(0)])
        clock = SleepLog()
        run(stream, FakeStore(), linger_ms=5000, clock=clock, until=0.5)
        assert 0 < clock.slept[0] <= 0.5


class TestBatchWriter:
    def test_writes_in_batches_and_acks_after(self):
        stream = FakeStream([payload(i) for i in range(250)])
        store = FakeStore()
        report = run(stream, store)
        assert store.rows == [f"id-{i}" for i in range(250)]
        assert report.batches == 3
        assert report.largest_batch == 100
        assert len(stream.acked) == 250
        assert not stream.pending

    def test_outage_is_retried_without_acking(self):
        stream = FakeStream([payload(i) for i in range(10)])
        store = FakeStore(outages=4)
        report = run(stream, store)
        assert report.retries == 4
        assert len(store.rows) == 10
        assert len(stream.acked) == 10

    def test_outage_past_the_deadline_leaves_entries_pending(self):
        stream = FakeStream([payload(i) for i in range(10)])
        store = FakeStore(outages=1000)
        run(stream, store, until=3.0)
        assert store.rows == []
        assert stream.acked == []
        assert len(stream.pending) == 10  # the next drain starts with them

    def test_refused_entry_is_isolated_and_dead_lettered(self):
        payloads = [payload(i) for i in range(20)]
        payloads[13] = payload(13, "poison")
        stream = FakeStream(payloads)
        store = FakeStore(refuse={"poison"})
        report = run(stream, store)
        assert len(store.rows) == 19
        assert "id-13" not in store.rows
        assert [d[0] for d in stream.dead] == ["13-0"]
        assert stream.dead[0][1].startswith("refused 3 times")
        assert report.dead_lettered == 1
        assert not stream.pending

    def test_unreadable_entry_is_dead_lettered_at_once(self):
        stream = FakeStream([b"[1]", b"{", payload(1), orjson.dumps({"id": "x"})])
        store = FakeStore()
        run(stream, store)
        assert store.rows == ["id-1"]
        assert len(stream.dead) == 3
        assert all(error.startswith("unreadable entry") for _, error in stream.dead)

    def test_redelivered_entries_are_not_stored_twice(self):
        stream = FakeStream([payload(1), payload(2), payload(1)])
        store = FakeStore()
        report = run(stream, store)
        assert store.rows == ["id-1", "id-2"]
        assert report.duplicates == 1


class TestRedisAway:
    """Redis not answering is waited out within the drain, like a database outage: the
    drain (and so the slot's chain and lease) survives a Redis restart."""

    def test_reads_are_retried(self):
        stream = FakeStream([payload(i) for i in range(10)], outages={"ensure_group": 1, "read": 3})
        store = FakeStore()
        report = run(stream, store)
        assert report.retries == 4
        assert len(store.rows) == 10
        assert len(stream.acked) == 10

    def test_an_ack_lost_after_commit_is_a_duplicate_later(self):
        stream = FakeStream([payload(i) for i in range(10)], outages={"ack": 1})
        store = FakeStore()
        report = run(stream, store)
        assert store.rows == [f"id-{i}" for i in range(10)]  # once each
        assert report.stored == 10
        assert report.duplicates == 10  # read again from the pending list, skipped
        assert sorted(stream.acked) == sorted(f"{i}-0" for i in range(10))
        assert not stream.pending

    def test_a_lease_that_cannot_be_renewed_for_now_is_tried_again(self):
        answers = iter([Unavailable("away"), Unavailable("away")])

        def keep_going() -> bool:
            failure = next(answers, None)
            if failure is not None:
                raise failure
            return True

        stream = FakeStream([payload(i) for i in range(10)])
        store = FakeStore()
        report = run(stream, store, keep_going=keep_going)
        assert report.retries == 2
        assert len(store.rows) == 10

    def test_redis_away_past_the_deadline_ends_the_drain(self):
        stream = FakeStream([payload(i) for i in range(10)], outages={"read": 1000})
        store = FakeStore()
        report = run(stream, store, until=3.0)
        assert store.rows == []
        assert 3 <= report.retries < 10  # backing off, not spinning
