"""Long-lived answers (follow, export): a bounded number per process, released on close."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from auditlog.errors import Overloaded


class Slots:
    """At most `limit` holders at once in this process; the next one is refused (503)."""

    def __init__(self, what: str, limit: int, *, retry_after_s: int = 5):
        self._what = what
        self._limit = limit
        self._retry_after_s = retry_after_s
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def acquire(self) -> Callable[[], None]:
        """Take a slot; returns the function that gives it back (idempotent)."""
        with self._lock:
            if self._held >= self._limit:
                raise Overloaded(
                    f"this process already serves {self._limit} {self._what}; "
                    "retry shortly (another process may have room)",
                    self._retry_after_s,
                )
            self._held += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self._held -= 1

        return release


class ClosingStream:
    """A response body the WSGI server iterates and then closes: closing gives back what
    the stream holds (its slot, its database cursor), even if it was never started."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None]):
        self._chunks = chunks
        self._release = release

    def __iter__(self) -> ClosingStream:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._release()
