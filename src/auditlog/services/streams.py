"""Long-lived answers (follow, export): a bounded number per process and per key, given
back when they end, and ended when their key is revoked."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from auditlog.errors import Overloaded

# Asked now and then by a long answer: is its key still live?
StillAllowed = Callable[[], Awaitable[bool]]


class Slots:
    """At most `limit` holders at once in this process, and at most `per_key` of them for one
    key, so that one key cannot take them all; the next one is refused (503)."""

    def __init__(self, what: str, limit: int, *, per_key: int, retry_after_s: int = 5):
        self._what = what
        self._limit = limit
        self._per_key = min(per_key, limit)
        self._retry_after_s = retry_after_s
        self._held: dict[str, int] = {}

    @property
    def held(self) -> int:
        return sum(self._held.values())

    def acquire(self, key: str) -> Callable[[], None]:
        """Take a slot for `key`; returns the function that gives it back (idempotent)."""
        mine = self._held.get(key, 0)
        if mine >= self._per_key:
            raise Overloaded(
                f"this key already holds {mine} {self._what} in this process (at most "
                f"{self._per_key} per key); close one or retry shortly",
                self._retry_after_s,
            )
        if self.held >= self._limit:
            raise Overloaded(
                f"this process already serves {self._limit} {self._what}; "
                "retry shortly (another process may have room)",
                self._retry_after_s,
            )
        self._held[key] = mine + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._held[key] - 1
                if left:
                    self._held[key] = left
                else:
                    del self._held[key]

        return release


class KeyCheck:
    """Asks `still_allowed` at most every `every_s`; remembers a refusal."""

    def __init__(
        self,
        still_allowed: StillAllowed,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._still_allowed = still_allowed
        self._every_s = every_s
        self._clock = clock
        self._next = clock() + every_s
        self._allowed = True

    async def allowed(self) -> bool:
        if self._allowed and self._clock() >= self._next:
            self._allowed = await self._still_allowed()
            self._next = self._clock() + self._every_s
        return self._allowed


class ClosingStream:
    """A response body the server iterates and then closes: closing (at the end, on an
    error, the client gone, or never started) gives back what the stream holds: its slot,
    its database cursor."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        release: Callable[[], None],
        *,
        holds: AsyncIterator[Any] | None = None,
    ):
        self._chunks = chunks
        self._release = release
        # What the chunks read from (a database cursor): closed explicitly, since closing a
        # generator that never started does not run its own clean-up.
        self._holds = holds
        self._closed = False

    def __aiter__(self) -> ClosingStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for held in (self._chunks, self._holds):
                close = getattr(held, "aclose", None)
                if close is not None:
                    await close()
        finally:
            self._release()

    aclose = close
