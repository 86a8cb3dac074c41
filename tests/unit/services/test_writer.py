"""The batch writer's decisions: ack after commit, retry outages, isolate refused entries.

The stream and store here are in-memory stand-ins; the real ones are exercised by
tests/integration/test_pipeline.py.
"""

from __future__ import annotations

from typing import Any

import orjson

from auditlog.services.writer import BatchWriter
from auditlog.storage.events import StoreRejected, StoreUnavailable, WriteResult
from auditlog.storage.stream import Entry


class FakeStream:
    def __init__(self, payloads: list[bytes]):
        self.waiting = [Entry(f"{i}-0", p) for i, p in enumerate(payloads)]
        self.pending: dict[str, Entry] = {}
        self.deliveries_by_id: dict[str, int] = {}
        self.acked: list[str] = []
        self.dead: list[tuple[str, str]] = []

    def ensure_group(self) -> None:
        pass

    def read(self, consumer: str, count: int, block_ms: int, *, pending: bool) -> list[Entry]:
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


def run(stream: FakeStream, store: FakeStore, *, batch_max: int = 100, until: float = 10.0) -> Any:
    clock = Clock()
    writer = BatchWriter(
        stream,
        store,
        batch_max=batch_max,
        block_ms=1,  # type: ignore[arg-type]
        claim_idle_ms=1000,
        max_attempts=3,
        clock=clock,
        sleep=clock.sleep,
    )
    return writer.drain("c", deadline=until, keep_going=lambda: True)


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
