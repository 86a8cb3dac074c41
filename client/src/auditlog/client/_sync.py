"""AuditClient: `emit` from any thread; one sender thread batches and delivers."""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any

import httpx

from auditlog.client._base import ClientBase, OnFailure, log, spilled_failure
from auditlog.client._buffer import Batch, Stats
from auditlog.client._events import (
    BufferFullError,
    ClientClosedError,
    DeliveryError,
    Failure,
    Item,
    encode,
)
from auditlog.client._options import Options, Overflow
from auditlog.client._protocol import Delivery, Settled, batch_body


class AuditClient(ClientBase):
    """Send events to auditlog from threads, in batches, without losing any silently.

    `emit` returns the event's id at once; a sender thread posts batches (by count, bytes
    and linger), retries what the service could not take, and gives each event that will
    never be stored to `on_failure` (called from the sender or the emitting thread; by
    default it logs an error). Close it (or use it as a context manager) to send what is
    left; it also closes itself at interpreter exit.
    """

    def __init__(
        self,
        url: str,
        token: str,
        options: Options | None = None,
        *,
        on_failure: OnFailure | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        super().__init__(url, token, options, on_failure)
        self._http = httpx.Client(
            headers=self._headers, timeout=self._options.timeout_s, transport=transport
        )
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the sender waits for a batch
        self._progress = threading.Condition(self._lock)  # room, flushes, emit_sync
        self._stopping = threading.Event()  # cuts the sender's backoff short at close
        # emit_sync callers, by seq: their future, and the event (to tell them at close)
        self._futures: dict[int, tuple[Future[Failure | None], Item]] = {}
        self._closed = False
        self._sender_done = False
        self._deadline: float | None = None
        self._sender = threading.Thread(target=self._run, name="auditlog-client", daemon=True)
        self._sender.start()
        atexit.register(self.close)

    # --- the producer's side ------------------------------------------------------------
    def emit(self, event: Mapping[str, Any]) -> str:
        """Queue an event; its id (assigned here unless the event has one)."""
        event_id, raw = encode(event)
        self._enqueue(event_id, raw, None)
        return event_id

    def emit_sync(self, event: Mapping[str, Any], timeout: float | None = None) -> str:
        """Queue an event and wait until the service has accepted it (202); its id.

        DeliveryError if it will not be stored; TimeoutError if no answer came in time
        (the event stays queued).
        """
        event_id, raw = encode(event)
        future: Future[Failure | None] = Future()
        self._enqueue(event_id, raw, future)
        try:
            failure = future.result(timeout)
        except FutureTimeout:
            raise TimeoutError(f"event {event_id} not accepted within {timeout} s") from None
        if failure is not None:
            raise DeliveryError(failure)
        return event_id

    def _enqueue(self, event_id: str, raw: bytes, future: Future[Failure | None] | None) -> None:
        with self._lock:
            if self._closed:
                raise ClientClosedError("the client is closed")
            if self._options.overflow is Overflow.BLOCK and not self._buffer.has_room(len(raw)):
                self._wait_for_room(len(raw))
            if future is not None:
                seq = self._buffer.next_seq
                self._futures[seq] = (future, Item(event_id, raw, seq))
            failures, wake = self._buffer.put(event_id, raw, time.monotonic())
            if wake or future is not None:
                self._work.notify()
        if failures:
            self._resolve(failures)
            self._report(failures)

    def _wait_for_room(self, size: int) -> None:
        if not self._progress.wait_for(
            lambda: self._closed or self._buffer.has_room(size),
            self._options.block_timeout_s,
        ):
            raise BufferFullError(f"no room in the buffer within {self._options.block_timeout_s} s")
        if self._closed:
            raise ClientClosedError("the client closed while emit waited for room")

    def flush(self, timeout: float | None = None) -> bool:
        """Send now what waits, and wait until every event emitted before is settled
        (accepted or given to `on_failure`); False if that took longer than `timeout`."""
        with self._lock:
            mark = self._buffer.mark()
            self._work.notify()
            try:
                self._progress.wait_for(lambda: mark.remaining <= 0 or self._sender_done, timeout)
                return mark.remaining <= 0
            finally:
                self._buffer.unmark(mark)

    @property
    def stats(self) -> Stats:
        with self._lock:
            return self._stats()

    def close(self, timeout: float | None = None) -> None:
        """Send what is left, trying for up to `timeout` (Options.close_timeout_s); then
        spill what remains (Overflow.SPILL) or give it to `on_failure`."""
        timeout = self._options.close_timeout_s if timeout is None else timeout
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._deadline = time.monotonic() + timeout
            self._work.notify_all()
            self._progress.notify_all()
        self._stopping.set()
        if threading.current_thread() is not self._sender:  # close() from on_failure
            # A request in flight at the deadline ends within its own timeout.
            self._sender.join(timeout + self._options.timeout_s + 1)
        with self._lock:
            failures = self._buffer.close()
            # Still waiting: events in the spill file (failures are answered below).
            failed = {failure.seq for failure in failures}
            spilled = [
                (future, spilled_failure(item, self._options.spill_path))
                for seq, (future, item) in self._futures.items()
                if seq not in failed
            ]
        self._resolve(failures)
        for future, failure in spilled:
            future.set_result(failure)
        self._report(failures)
        self._http.close()
        atexit.unregister(self.close)

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- the sender ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._send_batches()
        except Exception:
            log.exception("the sender stopped; close() spills or reports what is left")
        finally:
            with self._lock:
                self._sender_done = True
                self._progress.notify_all()

    def _send_batches(self) -> None:
        # TODO(scale): one request in flight per client (4,000-6,000 events/s with batches of
        # 500, measured); several senders taking batches in turn would overlap the answers.
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    if self._deadline is not None and now >= self._deadline:
                        return  # close() spills or reports what is left
                    urgent = self._closed or self._buffer.flushing or bool(self._futures)
                    batch = self._buffer.take(now, urgent)
                    if batch is not None:
                        self._progress.notify_all()  # room for blocked emitters
                        break
                    if self._closed:
                        return
                    self._work.wait(self._buffer.wait_s(now))
            if not self._deliver(batch):
                return

    def _deliver(self, batch: Batch) -> bool:
        """Post the batch until every item is settled; False if stopped by close."""
        delivery = Delivery(batch.items, self._options)
        try:
            return self._post(batch, delivery)
        except BaseException:
            with self._lock:
                self._buffer.give_back(batch, delivery.remaining())
            raise

    def _post(self, batch: Batch, delivery: Delivery) -> bool:
        while (part := delivery.part) is not None:
            try:
                answer = self._http.post(self._endpoint, content=batch_body(part))
            except httpx.RequestError:
                settled: list[Settled] = []
                wait = delivery.failed()
            else:
                settled, wait = delivery.answered(
                    answer.status_code, answer.headers.get("Retry-After"), answer.content
                )
            if settled:
                self._settled(settled)
            if wait and not self._sleep(wait):
                with self._lock:
                    self._buffer.sent(delivery.requests, delivery.retries)
                    self._buffer.give_back(batch, delivery.remaining())
                return False
        with self._lock:
            self._buffer.sent(delivery.requests, delivery.retries)
            self._buffer.finish(batch)
        return True

    def _settled(self, settled: list[Settled]) -> None:
        with self._lock:
            failures = self._settle_all(settled)
            accepted = [
                waiter[0]
                for part in settled
                if part.kind is None and self._futures
                for item in part.items
                if (waiter := self._futures.pop(item.seq, None)) is not None
            ]
            self._progress.notify_all()
        for future in accepted:
            future.set_result(None)
        self._resolve(failures)
        self._report(failures)

    def _resolve(self, failures: list[Failure]) -> None:
        """Answer the emit_sync callers whose events failed."""
        with self._lock:
            if not self._futures:
                return
            waiting = [(self._futures.pop(f.seq, None), f) for f in failures]
        for waiter, failure in waiting:
            if waiter is not None:
                waiter[0].set_result(failure)

    def _sleep(self, seconds: float) -> bool:
        """Wait before a retry; False if close's deadline comes first (give up)."""
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            deadline = self._deadline
            if deadline is None:
                self._stopping.wait(end - now)
                continue
            if end > deadline:
                time.sleep(max(0.0, deadline - now))
                return False
            time.sleep(end - now)
        return True
