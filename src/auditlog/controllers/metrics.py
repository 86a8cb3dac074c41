"""/metrics (Prometheus text format) and the middleware that times and counts requests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import falcon
import falcon.asgi
import structlog

from auditlog.metrics import (
    EVENTS_ACCEPTED,
    HTTP_REQUEST_SECONDS,
    INGEST_REFUSED,
    Exposition,
    QueueCollector,
    refusal_reason,
)

log = structlog.get_logger("auditlog.metrics")

INGEST_ROUTE = "/v1/events"
# Label values come from closed sets: a client cannot add series by inventing methods.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsResource:
    """What this API instance (all its gunicorn workers) has counted, plus the queue depth."""

    public: ClassVar[bool] = True  # answers without a key

    def __init__(
        self, exposition: Exposition, queue: QueueCollector, depth: Callable[[], Awaitable[Any]]
    ):
        self._exposition = exposition
        self._queue = queue
        self._depth = depth

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        try:
            self._queue.set(await self._depth())
        except Exception as exc:  # a scrape must answer even when Redis does not
            log.warning("queue depth unavailable", error=str(exc))
            self._queue.set(None)
        body, content_type = self._exposition.render(req.get_header("Accept"))
        resp.content_type = content_type
        resp.data = body


class RequestMetrics:
    """Latency per route template and status; POST /v1/events accepted or refused, and why.

    Timed from RequestContext's `started` (it runs first). The histogram's children are kept
    here by their labels: one dict lookup a request instead of prometheus-client's labels().
    """

    def __init__(self) -> None:
        self._latency: dict[tuple[str, str, int], Any] = {}

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        req_succeeded: bool,
    ) -> None:
        started = getattr(req.context, "started", None)
        if started is None:
            return
        route = req.uri_template or "unmatched"  # unknown paths: one label, not one per path
        method = req.method if req.method in METHODS else "other"
        status = resp.status_code
        labels = (method, route, status)
        latency = self._latency.get(labels)
        if latency is None:
            latency = self._latency[labels] = HTTP_REQUEST_SECONDS.labels(
                method, route, str(status)
            )
        latency.observe(time.perf_counter() - started)
        if method != "POST" or route != INGEST_ROUTE:
            return
        if status == 202:
            EVENTS_ACCEPTED.inc(getattr(req.context, "accepted", 0))
        else:
            reason = refusal_reason(getattr(req.context, "error_kind", None), status)
            INGEST_REFUSED.labels(reason).inc()
