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


async def _gone(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


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
        chunk.cancel()
        await asyncio.gather(chunk, return_exceptions=True)
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
