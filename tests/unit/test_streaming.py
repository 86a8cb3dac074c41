"""UntilGone: a streamed answer (follow, export) ends, and closes what it holds, as soon as
its client disconnects, even when its body loses a cancellation (as Python 3.11's
asyncio.wait_for, inside redis-py, does when the cancellation lands as its result arrives)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from auditlog.controllers.streaming import RECEIVE, UntilGone

FIRST = b"retry: 1000\n\n"


class Follower:
    """A follower's body: one chunk at once, the next only after a long quiet (a heartbeat).
    The first `lost` cancellations are ignored, as a lost one is: it carries on waiting."""

    def __init__(self, lost: int):
        self.lost = lost
        self.sent = False
        self.closed = False

    def __aiter__(self) -> Follower:
        return self

    async def __anext__(self) -> bytes:
        if not self.sent:
            self.sent = True
            return FIRST
        while True:
            try:
                await asyncio.sleep(60)
                return b": still following\n\n"
            except asyncio.CancelledError:
                if not self.lost:
                    raise
                self.lost -= 1

    async def close(self) -> None:
        self.closed = True


def client(gone: asyncio.Event) -> Any:
    """An ASGI `receive`: the (empty) request, then a disconnect once `gone` is set."""
    messages = iter([{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> dict[str, Any]:
        for message in messages:
            return message
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive


async def serve(body: Follower) -> list[bytes]:
    """What a server sends of the stream when its client leaves after the first chunk."""
    gone = asyncio.Event()
    stream = UntilGone(SimpleNamespace(scope={RECEIVE: client(gone)}), body)
    sent = []
    try:
        async for chunk in stream:
            sent.append(chunk)
            gone.set()
    finally:
        await stream.close()
    return sent


@pytest.mark.parametrize("lost", [0, 1, 3])
async def test_the_stream_ends_when_its_client_goes(lost: int):
    body = Follower(lost)
    sent = await asyncio.wait_for(serve(body), timeout=5)  # not at the body's next chunk
    assert sent == [FIRST]
    assert body.closed
    assert body.lost == 0
