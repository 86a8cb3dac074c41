"""AsyncAuditClient: `await emit(...)` from tasks of one event loop; a sender task batches
and delivers. The same buffer and Delivery as AuditClient, driven by asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
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


class AsyncAuditClient(ClientBase):
    """AuditClient for asyncio: the same batching, retries, overflow and failures.

    Use it from one event loop (`async with AsyncAuditClient(...) as audit`); `emit` awaits
    only when Overflow.BLOCK waits for room. The spill file's small writes happen on the
    loop (see the README). Close it with `aclose()` (the context manager does).
    """

    def __init__(
        self,
        url: str,
        token: str,
        options: Options | None = None,
        *,
        on_failure: OnFailure | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        super().__init__(url, token, options, on_failure)
        self._http = httpx.AsyncClient(
            headers=self._headers, timeout=self._options.timeout_s, transport=transport
        )
        self._work = asyncio.Event()  # the sender looks for a batch
        self._progress = asyncio.Condition()  # room, flushes, emit_sync
        self._stopping = asyncio.Event()
        self._futures: dict[int, tuple[asyncio.Future[Failure | None], Item]] = {}
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self._sender_done = False
        self._deadline: float | None = None

    # --- the producer's side ------------------------------------------------------------
    async def emit(self, event: Mapping[str, Any]) -> str:
        """Queue an event; its id (assigned here unless the event has one)."""
        event_id, raw = encode(event)
        await self._enqueue(event_id, raw, None)
        return event_id

    async def emit_sync(self, event: Mapping[str, Any], timeout: float | None = None) -> str:
        """Queue an event and wait until the service has accepted it (202); its id.

        DeliveryError if it will not be stored; TimeoutError if no answer came in time
        (the event stays queued).
        """
        event_id, raw = encode(event)
        future: asyncio.Future[Failure | None] = asyncio.get_running_loop().create_future()
        await self._enqueue(event_id, raw, future)
        try:
            failure = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise TimeoutError(f"event {event_id} not accepted within {timeout} s") from None
        if failure is not None:
            raise DeliveryError(failure)
        return event_id

    async def _enqueue(
        self, event_id: str, raw: bytes, future: asyncio.Future[Failure | None] | None
    ) -> None:
        if self._closed:
            raise ClientClosedError("the client is closed")
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._run())
        if self._options.overflow is Overflow.BLOCK and not self._buffer.has_room(len(raw)):
            await self._wait_for_room(len(raw))
        if future is not None:
            seq = self._buffer.next_seq
            self._futures[seq] = (future, Item(event_id, raw, seq))
        # TODO(scale): while spilling, put() writes to the spill file on the loop (one small
        # write per event); asyncio.to_thread, keeping the order, if a disk is slow.
        failures, wake = self._buffer.put(event_id, raw, time.monotonic())
        if wake or future is not None:
            self._work.set()
        if failures:
            self._resolve(failures)
            self._report(failures)

    async def _wait_for_room(self, size: int) -> None:
        async with self._progress:
            try:
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: self._closed or self._buffer.has_room(size)),
                    self._options.block_timeout_s,
                )
            except TimeoutError:
                raise BufferFullError(
                    f"no room in the buffer within {self._options.block_timeout_s} s"
                ) from None
        if self._closed:
            raise ClientClosedError("the client closed while emit waited for room")

    async def flush(self, timeout: float | None = None) -> bool:
        """Send now what waits, and wait until every event emitted before is settled
        (accepted or given to `on_failure`); False if that took longer than `timeout`."""
        mark = self._buffer.mark()
        self._work.set()
        try:
            async with self._progress:
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: mark.remaining <= 0 or self._sender_done),
                    timeout,
                )
            return mark.remaining <= 0
        except TimeoutError:
            return False
        finally:
            self._buffer.unmark(mark)

    @property
    def stats(self) -> Stats:
        return self._stats()

    async def aclose(self, timeout: float | None = None) -> None:
        """Send what is left, trying for up to `timeout` (Options.close_timeout_s); then
        spill what remains (Overflow.SPILL) or give it to `on_failure`."""
        if self._closed:
            return
        timeout = self._options.close_timeout_s if timeout is None else timeout
        self._closed = True
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        self._work.set()
        async with self._progress:
            self._progress.notify_all()
        if self._sender is not None:
            # A request in flight at the deadline ends within its own timeout.
            done, _ = await asyncio.wait(
                {self._sender}, timeout=timeout + self._options.timeout_s + 1
            )
            if not done:
                self._sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sender
        failures = self._buffer.close()
        failed = {failure.seq for failure in failures}
        spilled = [
            (future, spilled_failure(item, self._options.spill_path))
            for seq, (future, item) in self._futures.items()
            if seq not in failed
        ]
        self._resolve(failures)
        for future, failure in spilled:
            if not future.done():
                future.set_result(failure)
        self._futures.clear()
        self._report(failures)
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAuditClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- the sender ---------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._send_batches()
        except Exception:
            log.exception("the sender stopped; aclose() spills or reports what is left")
        finally:
            self._sender_done = True
            async with self._progress:
                self._progress.notify_all()

    async def _send_batches(self) -> None:
        while True:
            now = time.monotonic()
            if self._deadline is not None and now >= self._deadline:
                return  # aclose() spills or reports what is left
            urgent = self._closed or self._buffer.flushing or bool(self._futures)
            batch = self._buffer.take(now, urgent)
            if batch is None:
                if self._closed:
                    return
                self._work.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._work.wait(), self._buffer.wait_s(now))
                continue
            async with self._progress:
                self._progress.notify_all()  # room for blocked emitters
            if not await self._deliver(batch):
                return

    async def _deliver(self, batch: Batch) -> bool:
        """Post the batch until every item is settled; False if stopped by aclose."""
        delivery = Delivery(batch.items, self._options)
        try:
            return await self._post(batch, delivery)
        except BaseException:
            self._buffer.give_back(batch, delivery.remaining())
            raise

    async def _post(self, batch: Batch, delivery: Delivery) -> bool:
        while (part := delivery.part) is not None:
            try:
                answer = await self._http.post(self._endpoint, content=batch_body(part))
            except httpx.RequestError:
                settled: list[Settled] = []
                wait = delivery.failed()
            else:
                settled, wait = delivery.answered(
                    answer.status_code, answer.headers.get("Retry-After"), answer.content
                )
            if settled:
                await self._settled(settled)
            if wait and not await self._sleep(wait):
                self._buffer.sent(delivery.requests, delivery.retries)
                self._buffer.give_back(batch, delivery.remaining())
                return False
        self._buffer.sent(delivery.requests, delivery.retries)
        self._buffer.finish(batch)
        return True

    async def _settled(self, settled: list[Settled]) -> None:
        failures = self._settle_all(settled)
        for part in settled:
            if part.kind is None and self._futures:
                for item in part.items:
                    waiter = self._futures.pop(item.seq, None)
                    if waiter is not None and not waiter[0].done():
                        waiter[0].set_result(None)
        self._resolve(failures)
        async with self._progress:
            self._progress.notify_all()
        self._report(failures)

    def _resolve(self, failures: list[Failure]) -> None:
        """Answer the emit_sync callers whose events failed."""
        for failure in failures:
            waiter = self._futures.pop(failure.seq, None)
            if waiter is not None and not waiter[0].done():
                waiter[0].set_result(failure)

    async def _sleep(self, seconds: float) -> bool:
        """Wait before a retry; False if aclose's deadline comes first (give up)."""
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            deadline = self._deadline
            if deadline is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), end - now)
                continue
            if end > deadline:
                await asyncio.sleep(max(0.0, deadline - now))
                return False
            await asyncio.sleep(end - now)
        return True
