"""/v1/events/tail (the newest events, or a live stream of them) and /v1/events/export."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import falcon

from auditlog.errors import InvalidQuery
from auditlog.services.auth import Scope
from auditlog.services.export import ExportService
from auditlog.services.tail import TailService

SSE = "text/event-stream"


def _stream_headers(resp: falcon.Response) -> None:
    resp.set_header("Cache-Control", "no-store")
    # nginx must pass each chunk on as it comes, not buffer the answer.
    resp.set_header("X-Accel-Buffering", "no")


class TailResource:
    """GET: the newest events (JSON, with an ETag); with follow=true, a stream of them."""

    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, tail: TailService):
        self._tail = tail

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = dict(req.params)
        follow = params.pop("follow", "false")
        if isinstance(follow, list):
            raise InvalidQuery("follow", "is given more than once")
        if follow == "true":
            stream = self._tail.follow(params, req.get_header("Last-Event-ID"))
            resp.content_type = SSE
            _stream_headers(resp)
            resp.stream = stream
            req.context.log_fields = {"follow": True}
            return
        if follow != "false":
            raise InvalidQuery("follow", "must be true or false")
        answer = self._tail.tail(params)
        req.context.log_fields = {"tail": answer.source}
        req.context.results = len(answer.events)
        resp.etag = answer.etag
        resp.set_header("Cache-Control", "no-cache")
        if _matches(req.if_none_match, answer.etag):
            resp.status = falcon.HTTP_304
            return
        resp.content_type = falcon.MEDIA_JSON
        resp.data = b'{"events":[' + b",".join(answer.events) + b"]}"


def _matches(if_none_match: Sequence[str] | None, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2): the opaque tags are equal, W/ or not."""
    if not if_none_match:
        return False
    opaque = etag.removeprefix("W/").strip('"')
    return any(tag == "*" or str(tag) == opaque for tag in if_none_match)


class ExportResource:
    """GET: every matching event, oldest first, as a download (NDJSON or CSV)."""

    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, exports: ExportService):
        self._exports = exports

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        export = self._exports.export(req.params)
        resp.content_type = export.media_type
        resp.downloadable_as = export.filename
        _stream_headers(resp)
        resp.stream = export.body
