"""The batch writer: moves events from the stream into PostgreSQL, many per round trip.

Delivery is at least once (an entry leaves the stream only after its batch commits) and the
store deduplicates on (id, service), so each accepted event is stored exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog

from auditlog.errors import Unavailable
from auditlog.storage.event_writer import StoreRejected, StoreUnavailable, WriteResult
from auditlog.storage.stream import Entry, EventStream

log = structlog.get_logger("auditlog.writer")

REQUIRED_KEYS = ("id", "type", "service", "occurred_at", "received_at", "outcome")


class BatchStore(Protocol):
    """Where batches go: one transaction each (storage.event_writer.EventWriter)."""

    def write(self, batch: Sequence[dict[str, Any]]) -> WriteResult: ...


@dataclass
class DrainReport:
    """What one drain did; returned by the Celery task, so Flower shows it."""

    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    largest_batch: int = 0
    retries: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Stop(Exception):
    """The drain must end now (deadline or lost lease); what is unwritten stays pending."""


@dataclass
class _Run:
    """One drain in progress: whose it is, until when, and what it has done so far."""

    consumer: str
    deadline: float
    keep_going: Callable[[], bool]
    report: DrainReport


def parse_entry(entry: Entry) -> dict[str, Any]:
    """The event an entry carries; ValueError if it can never be written."""
    if entry.payload is None:
        raise ValueError("the entry has no payload")
    event = orjson.loads(entry.payload)
    if not isinstance(event, dict):
        raise ValueError("the payload is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if not event.get(key)]
    if missing:
        raise ValueError(f"the payload lacks {', '.join(missing)}")
    return event


class BatchWriter:
    """Reads batches for one consumer name and writes each in one transaction."""

    def __init__(
        self,
        stream: EventStream,
        store: BatchStore,
        *,
        batch_max: int,
        block_ms: int,
        claim_idle_ms: int,
        max_attempts: int,
        linger_ms: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_commit: Sequence[Callable[[WriteResult], None]] = (),
    ):
        self._stream = stream
        self._store = store
        self._batch_max = batch_max
        self._block_ms = block_ms
        self._linger_s = linger_ms / 1000
        self._claim_idle_ms = claim_idle_ms
        self._max_attempts = max_attempts
        self._clock = clock
        self._sleep = sleep
        self._on_commit = tuple(on_commit)
        self._group_ready = False

    def drain(
        self, consumer: str, *, deadline: float, keep_going: Callable[[], bool]
    ) -> DrainReport:
        """Write batches until the deadline passes or keep_going() says stop.

        Starts with the consumer's own pending entries: those a previous holder of this
        consumer name read but did not acknowledge (it died, or the database was down).
        """
        run = _Run(consumer, deadline, keep_going, DrainReport())
        own_pending = True
        next_claim = self._clock()
        delay = 0.1
        try:
            while self._clock() < deadline:
                try:
                    if not keep_going():
                        break
                    if not self._group_ready:
                        self._stream.ensure_group()
                        self._group_ready = True
                    if own_pending:
                        entries = self._stream.read(consumer, self._batch_max, 0, pending=True)
                        own_pending = bool(entries)
                        if not entries:
                            continue
                    else:
                        entries = []
                        if self._clock() >= next_claim:
                            entries = self._stream.claim_stale(
                                consumer, self._claim_idle_ms, self._batch_max
                            )
                            next_claim = self._clock() + self._claim_idle_ms / 4000
                        if not entries:
                            entries = self._stream.read(
                                consumer, self._batch_max, self._block_ms, pending=False
                            )
                            entries = self._fill(consumer, entries, deadline)
                    if entries and self._write(run, entries):
                        own_pending = True  # something was left pending: try it again first
                    delay = 0.1
                except Unavailable as exc:
                    # Redis is away (restarting, say). What was read and not acknowledged
                    # stays pending and is read first when it answers again; waiting here,
                    # rather than failing, keeps the slot's chain (and its lease) alive.
                    own_pending = True
                    run.report.retries += 1
                    log.warning("stream unavailable; retrying", error=str(exc), retry_in_s=delay)
                    if self._clock() + delay >= deadline:
                        break
                    self._sleep(delay)
                    delay = min(delay * 2, 2.0)
        except _Stop:
            pass
        return run.report

    def _fill(self, consumer: str, entries: list[Entry], deadline: float) -> list[Entry]:
        """Linger a moment after a short read and take what arrived meanwhile.

        A batch's transaction costs about the same for 5 events as for 500 (the lock, the
        tree head, its signature, the commit), so at a moderate rate of single events,
        writing each read at once spends most of the worker's CPU on tiny transactions.
        A few tens of milliseconds of waiting turn them into a few large ones.
        """
        if not entries or len(entries) >= self._batch_max or self._linger_s <= 0:
            return entries
        self._sleep(max(0.0, min(self._linger_s, deadline - self._clock())))
        more = self._stream.read(consumer, self._batch_max - len(entries), None, pending=False)
        return entries + more

    def _write(self, run: _Run, entries: list[Entry]) -> bool:
        """Write entries; True if some were left pending to be retried."""
        report = run.report
        good: list[Entry] = []
        events: list[dict[str, Any]] = []
        for entry in entries:
            try:
                events.append(parse_entry(entry))
                good.append(entry)
            except ValueError as exc:
                self._dead_letter(entry, f"unreadable entry: {exc}", run)
        if not good:
            return False
        delay = 0.1
        while True:
            try:
                result = self._store.write(events)
                break
            except StoreUnavailable as exc:
                report.retries += 1
                log.warning("store unavailable; retrying", error=str(exc), retry_in_s=delay)
                if self._clock() + delay >= run.deadline or not run.keep_going():
                    raise _Stop from exc
                self._sleep(delay)
                delay = min(delay * 2, 2.0)
            except StoreRejected as exc:
                return self._isolate(run, good, str(exc))
        unacknowledged: Unavailable | None = None
        try:
            self._stream.ack([entry.entry_id for entry in good])
        except Unavailable as exc:
            # Committed all the same: the entries are read again and skipped as duplicates.
            unacknowledged = exc
        report.batches += 1
        report.stored += len(result.stored)
        report.duplicates += result.duplicates
        report.largest_batch = max(report.largest_batch, len(good))
        log.info(
            "batch written",
            consumer=run.consumer,
            batch=len(good),
            stored=len(result.stored),
            duplicates=result.duplicates,
            # Every request whose events this batch holds, so that a request id from nginx
            # finds the batch that wrote it (a few KB at most: one id per request).
            request_ids=sorted({e.request_id for e in good if e.request_id}),
        )
        for reuse in result.reused:
            # Both events are kept (an id is deduplicated within its service only); an id
            # reused across services is a producer's bug or someone squatting ids: say so.
            log.warning(
                "event id reused across services",
                id=reuse.id,
                service=reuse.service,
                seq=reuse.seq,
                earlier_services=list(reuse.earlier_services),
            )
        for hook in self._on_commit:
            try:
                hook(result)
            except Exception:  # a hook (cache, metrics) must never undo a committed batch
                log.exception("on_commit hook failed", hook=getattr(hook, "__name__", hook))
        if unacknowledged is not None:
            raise unacknowledged
        return False

    def _isolate(self, run: _Run, entries: list[Entry], error: str) -> bool:
        """The store refused a batch: split it until the entries it refuses stand alone."""
        if len(entries) > 1:
            middle = len(entries) // 2
            left = self._write(run, entries[:middle])
            right = self._write(run, entries[middle:])
            return left or right
        entry = entries[0]
        attempts = self._stream.deliveries(run.consumer, entry.entry_id)
        if attempts >= self._max_attempts:
            self._dead_letter(entry, f"refused {attempts} times: {error}", run)
            return False
        log.warning(
            "entry refused; will retry", entry=entry.entry_id, attempts=attempts, error=error
        )
        return True

    def _dead_letter(self, entry: Entry, error: str, run: _Run) -> None:
        log.error("entry dead-lettered", entry=entry.entry_id, error=error)
        self._stream.dead_letter(entry, error)
        run.report.dead_lettered += 1
