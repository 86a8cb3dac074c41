"""The bounded buffer between `emit` and the sender, with its overflow policy, and the
bookkeeping of what is settled (no I/O but the spill file, no locks: the clients hold
theirs around every call)."""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field

from auditlog.client._events import Failure, Item
from auditlog.client._options import Options, Overflow
from auditlog.client._protocol import Settled
from auditlog.client._spill import SpillFile


@dataclass(frozen=True)
class Stats:
    """What a client did so far."""

    emitted: int = 0
    """Events taken by `emit` and `emit_sync`."""
    delivered: int = 0
    """Events answered 202 (replayed ones from an earlier client's spill file included)."""
    failed: int = 0
    """Events given to `on_failure`, `dropped` included."""
    dropped: int = 0
    """Events given up by Overflow.DROP_OLDEST."""
    spilled: int = 0
    """Events written to the spill file."""
    replayed: int = 0
    """Events read back from the spill file."""
    requests: int = 0
    """POSTs sent (retries included)."""
    retries: int = 0
    """POSTs that got no acceptable answer and are tried again."""
    buffered: int = 0
    """Events waiting in memory now."""


@dataclass
class Batch:
    items: list[Item]
    spill_end: int | None = None
    """For a batch read from the spill file: where it ends there."""


@dataclass
class FlushMark:
    """A `flush` waiting for the events emitted before it."""

    last_seq: int
    remaining: int


@dataclass
class _Counters:
    emitted: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    spilled: int = 0
    replayed: int = 0
    requests: int = 0
    retries: int = 0


@dataclass
class Buffer:
    options: Options
    spill: SpillFile | None = None
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _items: deque[Item] = field(default_factory=deque)
    _bytes: int = 0
    _first_at: float = 0.0
    _next_seq: int = 0
    _unsettled: int = 0
    _marks: list[FlushMark] = field(default_factory=list)
    _counts: _Counters = field(default_factory=_Counters)

    # --- emit ---------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        """The seq the next `put` assigns."""
        return self._next_seq

    def has_room(self, size: int) -> bool:
        """Whether an event of `size` bytes fits in memory now (always, when empty)."""
        return not self._items or (
            len(self._items) < self.options.buffer_events
            and self._bytes + size <= self.options.buffer_bytes
        )

    def put(self, event_id: str, raw: bytes, now: float) -> tuple[list[Failure], bool]:
        """Take an event; the failures it caused (dropped, spill full) and whether the
        sender should look now (a batch is due)."""
        item = Item(event_id, raw, self._next_seq)
        self._next_seq += 1
        self._unsettled += 1
        self._counts.emitted += 1
        spill = self.spill
        if spill is not None and spill.pending:
            # Once events are on disk, the newer ones follow them there: the order holds.
            return self._spill(spill, item), True
        failures: list[Failure] = []
        if not self.has_room(len(raw)):
            if spill is not None:
                return self._spill(spill, item), True
            if self.options.overflow is Overflow.DROP_OLDEST:
                while not self.has_room(len(raw)):
                    oldest = self._pop()
                    self._counts.dropped += 1
                    failures += self.settle(
                        Settled([oldest], "dropped", "the buffer was full (drop_oldest)")
                    )
            # Overflow.BLOCK: the client waited for room (or the buffer is empty).
        if not self._items:
            self._first_at = now
        self._items.append(item)
        self._bytes += len(raw)
        count = len(self._items)
        return failures, count in (1, self.options.max_batch_events)

    def _spill(self, spill: SpillFile, item: Item) -> list[Failure]:
        problem = spill.append(item)
        if problem is None:
            self._counts.spilled += 1
            return []
        return self.settle(Settled([item], "spill_full", problem))

    def _pop(self) -> Item:
        item = self._items.popleft()
        self._bytes -= len(item.raw)
        return item

    # --- the sender ---------------------------------------------------------------------
    def take(self, now: float, urgent: bool) -> Batch | None:
        """The next batch if one is due: a full one, one whose first event has lingered
        long enough, anything when `urgent` (a flush, emit_sync, close); else the spill
        file's next events (they have waited already)."""
        options = self.options
        if self._items:
            due = (
                urgent
                or len(self._items) >= options.max_batch_events
                or self._bytes >= options.max_batch_bytes
                or now - self._first_at >= options.linger_s
            )
            if not due:
                return None
            items = [self._pop()]
            size = len(items[0].raw)
            while (
                self._items
                and len(items) < options.max_batch_events
                and size + len(self._items[0].raw) <= options.max_batch_bytes
            ):
                items.append(self._pop())
                size += len(items[-1].raw)
            self._first_at = now
            return Batch(items)
        if self.spill is not None and self.spill.unread:
            items, end = self.spill.read(options.max_batch_events, options.max_batch_bytes)
            self._counts.replayed += len(items)
            return Batch(items, end)
        return None

    def wait_s(self, now: float) -> float | None:
        """How long the sender may sleep before a batch is due (None: until woken)."""
        if self._items:
            return max(0.0, self._first_at + self.options.linger_s - now)
        if self.spill is not None and self.spill.unread:
            return 0.0
        return None

    def sent(self, requests: int, retries: int) -> None:
        self._counts.requests += requests
        self._counts.retries += retries

    def finish(self, batch: Batch) -> None:
        """Every item of the batch is settled."""
        if batch.spill_end is not None and self.spill is not None:
            self.spill.commit(batch.spill_end)

    def give_back(self, batch: Batch, remaining: list[Item]) -> None:
        """The sender stopped (close) with these items of the batch unsettled."""
        if batch.spill_end is not None:
            return  # still in the spill file, from its last acknowledged position
        for item in reversed(remaining):
            self._items.appendleft(item)
            self._bytes += len(item.raw)

    # --- settling -----------------------------------------------------------------------
    def settle(self, settled: Settled) -> list[Failure]:
        """Count the items as done; the failures to report."""
        for item in settled.items:
            if item.seq < 0:
                continue
            self._unsettled -= 1
            for mark in self._marks:
                if item.seq <= mark.last_seq:
                    mark.remaining -= 1
        if settled.kind is None:
            self._counts.delivered += len(settled.items)
            return []
        self._counts.failed += len(settled.items)
        return [
            Failure(item.id, settled.kind, settled.detail, settled.status, item.raw, item.seq)
            for item in settled.items
        ]

    def mark(self) -> FlushMark:
        """A flush of everything emitted so far (settled when `remaining` reaches 0)."""
        mark = FlushMark(self._next_seq - 1, self._unsettled)
        self._marks.append(mark)
        return mark

    def unmark(self, mark: FlushMark) -> None:
        self._marks.remove(mark)

    @property
    def flushing(self) -> bool:
        return bool(self._marks)

    def close(self) -> list[Failure]:
        """What is left in memory goes to the spill file, if there is one, else fails; the
        failures."""
        failures: list[Failure] = []
        while self._items:
            item = self._pop()
            if self.spill is not None:
                failures += self._spill(self.spill, item)
            else:
                failures += self.settle(
                    Settled([item], "undelivered", "the client closed with the service away")
                )
        if self.spill is not None:
            self.spill.close()
        return failures

    def stats(self) -> Stats:
        counts = self._counts
        return Stats(
            emitted=counts.emitted,
            delivered=counts.delivered,
            failed=counts.failed,
            dropped=counts.dropped,
            spilled=counts.spilled,
            replayed=counts.replayed,
            requests=counts.requests,
            retries=counts.retries,
            buffered=len(self._items),
        )
