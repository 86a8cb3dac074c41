"""How a client batches, retries and behaves when the service stays away: one frozen object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

# The API's own limits (docs/API.md): at most this many events in one POST.
API_MAX_EVENTS_PER_REQUEST = 1000


class Overflow(StrEnum):
    """What `emit` does when the buffer is full (the service is down or slower than you)."""

    BLOCK = "block"
    """Wait for room (up to `block_timeout_s`, then BufferFullError)."""
    DROP_OLDEST = "drop_oldest"
    """Make room by giving up the oldest waiting event: it goes to `on_failure` and is
    counted in `stats.dropped`."""
    SPILL = "spill"
    """Append to `spill_path`; the file is sent once the service answers again, and by the
    next client opened on it if this one closes first."""


@dataclass(frozen=True)
class Options:
    """Everything settable about a client; the defaults suit a busy service."""

    max_batch_events: int = 500
    """Most events in one POST (the API takes 1000)."""
    max_batch_bytes: int = 1 << 20
    """Most bytes of events in one POST (the API takes 5 MiB)."""
    linger_s: float = 0.01
    """How long the first waiting event waits for others before a smaller batch goes."""
    buffer_events: int = 10_000
    """Events waiting in memory at most; past it, `overflow` decides."""
    buffer_bytes: int = 16 << 20
    """Bytes of events waiting in memory at most; past it, `overflow` decides."""
    overflow: Overflow = Overflow.BLOCK
    block_timeout_s: float | None = None
    """With Overflow.BLOCK: how long `emit` waits for room; None waits as long as it takes."""
    spill_path: Path | None = None
    """With Overflow.SPILL: the spill file (one client at a time; a `.pos` file beside it)."""
    spill_max_bytes: int = 1 << 30
    """With Overflow.SPILL: past this size, events go to `on_failure` instead."""
    timeout_s: float = 10.0
    """Bound on one HTTP request (connect, send, answer)."""
    backoff_base_s: float = 0.1
    """First retry within this (full jitter), doubling each attempt."""
    backoff_max_s: float = 30.0
    """Longest wait between attempts (a Retry-After from the server is honoured as given)."""
    close_timeout_s: float = 10.0
    """How long `close` keeps trying before spilling or reporting what is left."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra headers on every request (the Authorization header is the client's)."""

    def __post_init__(self) -> None:
        # Accept plain strings where an enum or a path is meant (from configuration files).
        object.__setattr__(self, "overflow", Overflow(self.overflow))
        if self.spill_path is not None:
            object.__setattr__(self, "spill_path", Path(self.spill_path))
        problems = [
            message
            for wrong, message in (
                (
                    not 1 <= self.max_batch_events <= API_MAX_EVENTS_PER_REQUEST,
                    f"max_batch_events must be 1 to {API_MAX_EVENTS_PER_REQUEST}",
                ),
                (self.max_batch_bytes < 1024, "max_batch_bytes must be at least 1024"),
                (self.linger_s < 0, "linger_s must not be negative"),
                (self.buffer_events < 1, "buffer_events must be at least 1"),
                (self.buffer_bytes < 1, "buffer_bytes must be at least 1"),
                (
                    self.overflow is Overflow.SPILL and self.spill_path is None,
                    "overflow=spill needs a spill_path",
                ),
                (self.timeout_s <= 0, "timeout_s must be positive"),
                (self.backoff_base_s <= 0, "backoff_base_s must be positive"),
                (self.backoff_max_s < self.backoff_base_s, "backoff_max_s must be >= the base"),
                (self.close_timeout_s < 0, "close_timeout_s must not be negative"),
            )
            if wrong
        ]
        if problems:
            raise ValueError("; ".join(problems))
