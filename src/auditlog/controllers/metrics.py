"""/metrics (Prometheus text format) and the middleware that times and counts requests."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import falcon

from auditlog.metrics import (
    EVENTS_ACCEPTED,
    HTTP_REQUEST_SECONDS,
    INGEST_REFUSED,
    Exposition,
    refusal_reason,
)

INGEST_ROUTE = "/v1/events"


class MetricsResource:
    """What this API instance (all its gunicorn workers) has counted, plus the queue depth."""

    public: ClassVar[bool] = True  # answers without a key

    def __init__(self, exposition: Exposition):
        self._exposition = exposition

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        body, content_type = self._exposition.render(req.get_header("Accept"))
        resp.content_type = content_type
        resp.data = body


class RequestMetrics:
    """Latency per route template and status; POST /v1/events accepted or refused, and why."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        started = getattr(req.context, "metrics_started", None)
        if started is None:
            return
        route = req.uri_template or "unmatched"  # unknown paths: one label, not one per path
        status = resp.status_code
        HTTP_REQUEST_SECONDS.labels(req.method, route, str(status)).observe(
            time.perf_counter() - started
        )
        if req.method != "POST" or route != INGEST_ROUTE:
            return
        if status == 202:
            EVENTS_ACCEPTED.inc(getattr(req.context, "accepted", 0))
        else:
            reason = refusal_reason(getattr(req.context, "error_kind", None), status)
            INGEST_REFUSED.labels(reason).inc()
