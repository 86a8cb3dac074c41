"""What the per-request logging and metrics cost an accepted POST, in the app itself.

The real app (create_app, the settings of the environment: make run's .env) is called
in-process, as uvicorn calls it, 16 requests at a time for a few thousand requests; its CPU
per request is compared with the same app whose metrics middleware and request-scoped log
context do nothing. The difference is the logging and metrics cost; the HTTP server's own
work (the same either way) is left out, so the share is of the app's CPU, an upper bound of
the share of a request's whole CPU.

    .venv/bin/honcho run .venv/bin/python -m bench.overhead      # make run's secrets
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import structlog

from auditlog.app import create_app
from auditlog.controllers.metrics import RequestMetrics
from auditlog.services.auth import KeyAdmin
from auditlog.settings import Settings
from auditlog.storage.engine import create_role_engine
from auditlog.storage.keys import KeyStore

BODY_TAIL = (
    b',"type":"customer.billed","service":"billing","occurred_at":"2026-01-01T10:00:00Z",'
    b'"actor":{"type":"user","id":"u-4979"},"subject":{"type":"customer","id":"c-153021"},'
    b'"action":"bill","outcome":"success","context":{"host":"web-3","ip":"10.15.35.163",'
    b'"trace_id":"083d0a2fcd6a4292f27baaf989bc15a5"},"data":{"amount_cents":1299,'
    b'"currency":"EUR","plan":"pro","invoice":"inv-88213"}}'
)


def _scope(token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/events",
        "raw_path": b"/v1/events",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"auditlog"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"x-request-id", uuid.uuid4().hex.encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8081),
    }


async def _requests(app: Any, token: str, count: int) -> None:
    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 202, message

    for _ in range(count):
        body = b'{"id":"%s"' % str(uuid.uuid4()).encode() + BODY_TAIL
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive(messages: Iterator[dict[str, Any]] = messages) -> dict[str, Any]:
            return next(messages, {"type": "http.disconnect"})

        await app(_scope(token), receive, send)


async def _cpu_per_request(app: Any, token: str, *, concurrency: int, each: int) -> float:
    await _requests(app, token, 200)  # warm: connections, caches
    started = time.process_time()
    await asyncio.gather(*(_requests(app, token, each) for _ in range(concurrency)))
    return (time.process_time() - started) / (concurrency * each) * 1e6


@contextmanager
def _quiet() -> Iterator[None]:
    """The app without its request metrics and its request-scoped log context."""

    async def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    def none(*args: Any, **kwargs: Any) -> None:
        return None

    with (
        mock.patch.object(RequestMetrics, "process_response", nothing),
        mock.patch.object(structlog.contextvars, "bind_contextvars", none),
        mock.patch.object(structlog.contextvars, "clear_contextvars", none),
    ):
        yield


def measure(
    settings: Settings, *, rounds: int = 5, concurrency: int = 16, each: int = 300
) -> dict[str, float]:
    """CPU µs per accepted POST with and without logging and metrics (best of `rounds`
    each, taking turns), and the share they take."""
    engine = create_role_engine(settings, "owner", pool_size=1)
    try:
        token = (
            KeyAdmin(KeyStore(engine))
            .create(
                f"overhead-{uuid.uuid4().hex[:8]}",
                "write",
                ["billing"],
                rate_per_s=1e6,
                burst=10**7,
            )
            .token
        )
    finally:
        engine.dispose()

    async def run() -> dict[str, float]:
        app = create_app(settings)
        full: list[float] = []
        bare: list[float] = []
        for _ in range(rounds):
            full.append(await _cpu_per_request(app, token, concurrency=concurrency, each=each))
            with _quiet():
                bare.append(await _cpu_per_request(app, token, concurrency=concurrency, each=each))
        with_all, without = min(full), min(bare)
        return {
            "cpu_us_per_request": with_all,
            "cpu_us_without_logging_and_metrics": without,
            "logging_and_metrics_share": (with_all - without) / with_all,
        }

    import uvloop  # noqa: PLC0415 - the event loop uvicorn runs the app on

    return uvloop.run(run())


def main() -> None:
    figures = measure(Settings.from_env())
    for name, value in figures.items():
        print(f"{name}: {value:.3f}" if value < 1 else f"{name}: {value:.1f}")


if __name__ == "__main__":
    main()
