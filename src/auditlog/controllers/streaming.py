"""Streamed answers (follow, export) that stop when the client goes away.

An ASGI server keeps accepting chunks for a client that has left (uvicorn's send() is a
no-op then), so a stream would run on, holding its slot and its database cursor, until it
ended by itself. The app hands each HTTP request's `receive` to its resources (app.py); a
stream here watches it and ends, closing what it holds, as soon as the client disconnects.
"""

from __future__ import annotations

import asyncio
from typing import Any

import falcon.asgi

# Where app.py puts the ASGI `receive` callable of each HTTP request.
RECEIVE = "auditlog.receive"


# How long a cancelled chunk is given to end before it is cancelled again (see _stop).
RECANCEL_S = 0.05


async def _gone(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _stop(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and wait until it has ended.

    One cancellation is not always enough: Python 3.11's asyncio.wait_for, which redis-py's
    asyncio client wraps around every command it sends, returns the inner result instead of
    raising when the cancellation lands just as that result arrives. The stream would then
    run on to its next chunk (a follower's heartbeat, 15 s later), holding its slot. So the
    task is cancelled again until it ends (CPython gh-86296; 3.12's wait_for loses none).
    """
    while not task.done():
        task.cancel()
        await asyncio.wait((task,), timeout=RECANCEL_S)
    await asyncio.gather(task, return_exceptions=True)  # its outcome, retrieved


class UntilGone:
    """The chunks of `body` until the client disconnects; then `body` is closed."""

    def __init__(self, req: falcon.asgi.Request, body: Any):
        self._body = body
        self._receive = req.scope.get(RECEIVE)
        self._watch: asyncio.Task[None] | None = None

    def __aiter__(self) -> UntilGone:
        return self

    async def __anext__(self) -> bytes:
        if self._receive is None:  # no way to tell (a test harness): stream to the end
            return bytes(await self._body.__anext__())
        if self._watch is None:
            self._watch = asyncio.ensure_future(_gone(self._receive))
        chunk = asyncio.ensure_future(self._body.__anext__())
        await asyncio.wait((chunk, self._watch), return_when=asyncio.FIRST_COMPLETED)
        if chunk.done():
            return bytes(chunk.result())  # StopAsyncIteration ends the stream
        await _stop(chunk)
        raise StopAsyncIteration

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self._body.close()


def stream_headers(resp: falcon.asgi.Response) -> None:
    resp.set_header("Cache-Control", "no-store")
    # nginx must pass each chunk on as it comes, not buffer the answer.
    resp.set_header("X-Accel-Buffering", "no")
