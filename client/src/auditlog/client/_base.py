"""What the thread client and the asyncio client share: where to send, the buffer, and
how failures are told."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from auditlog.client._buffer import Buffer, Stats
from auditlog.client._events import Failure, Item
from auditlog.client._options import Options, Overflow
from auditlog.client._protocol import Settled
from auditlog.client._spill import SpillFile

log = logging.getLogger("auditlog.client")

try:
    VERSION = version("auditlog-client")
except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
    VERSION = "0+unknown"

OnFailure = Callable[[Failure], None]


def log_failure(failure: Failure) -> None:
    """The default `on_failure`: an ERROR line per event, so none goes unnoticed."""
    log.error("audit event %s not stored (%s): %s", failure.id, failure.kind, failure.detail)


def spilled_failure(item: Item, path: object) -> Failure:
    """What an `emit_sync` waiter is told when its event went to the spill file at close."""
    return Failure(
        item.id,
        "undelivered",
        f"the client closed first; the event is in {path}, to be sent by the next client",
        None,
        item.raw,
        item.seq,
    )


class ClientBase:
    def __init__(self, url: str, token: str, options: Options | None, on_failure: OnFailure | None):
        self._options = options or Options()
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be http:// or https://, not {url!r}")
        self._endpoint = url.rstrip("/") + "/v1/events"
        self._headers = {
            "User-Agent": f"auditlog-client/{VERSION}",
            **self._options.headers,
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        }
        self._on_failure = on_failure or log_failure
        self._buffer = Buffer(self._options)
        if self._options.overflow is Overflow.SPILL:
            assert self._options.spill_path is not None  # Options checks it
            self._buffer.spill = SpillFile(
                self._options.spill_path, self._options.spill_max_bytes, self._buffer.run
            )

    @property
    def options(self) -> Options:
        return self._options

    def _report(self, failures: list[Failure]) -> None:
        for failure in failures:
            try:
                self._on_failure(failure)
            except Exception:
                log.exception("on_failure raised for event %s", failure.id)

    def _settle_all(self, settled: list[Settled]) -> list[Failure]:
        return [failure for part in settled for failure in self._buffer.settle(part)]

    def _stats(self) -> Stats:
        return self._buffer.stats()
