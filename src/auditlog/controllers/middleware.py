"""Per-request context: the request id, and one canonical log line per request."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import falcon
import structlog

log = structlog.get_logger("auditlog.http")

# A client's own id is kept if it is short and plain; anything else is replaced.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContext:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        request_id = req.get_header("X-Request-ID")
        if not request_id or not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        req.context.request_id = request_id
        req.context.started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        resp.set_header("X-Request-ID", request_id)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        started = getattr(req.context, "started", None)
        elapsed_ms = (time.perf_counter() - started) * 1000 if started else None
        log.info(
            "request",
            method=req.method,
            path=req.path,
            status=int(resp.status_code),
            duration_ms=round(elapsed_ms, 3) if elapsed_ms is not None else None,
            **getattr(req.context, "log_fields", {}),
        )
