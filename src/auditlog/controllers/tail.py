"""/v1/events/tail (the newest events, or a live stream of them) and /v1/events/export."""

from __future__ import annotations

from typing import ClassVar

import falcon
import falcon.asgi

from auditlog.controllers.conditional import matches
from auditlog.controllers.streaming import UntilGone, stream_headers
from auditlog.errors import InvalidQuery
from auditlog.services.auth import Authenticator, Scope
from auditlog.services.export import ExportService
from auditlog.services.tail import TailService

SSE = "text/event-stream"


class TailResource:
    """GET: the newest events (JSON, with an ETag); with follow=true, a stream of them."""

    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, tail: TailService, authenticator: Authenticator):
        self._tail = tail
        self._authenticator = authenticator

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        params = dict(req.params)
        follow = params.pop("follow", "false")
        if isinstance(follow, list):
            raise InvalidQuery("follow", "is given more than once")
        if follow == "true":
            principal = req.context.principal
            stream = await self._tail.follow(
                params,
                req.get_header("Last-Event-ID"),
                viewer=principal,
                still_allowed=lambda: self._authenticator.still_valid(principal),
            )
            resp.content_type = SSE
            stream_headers(resp)
            resp.stream = UntilGone(req, stream)
            req.context.log_fields = {"follow": True}
            return
        if follow != "false":
            raise InvalidQuery("follow", "must be true or false")
        answer = await self._tail.tail(params, viewer=req.context.principal)
        req.context.log_fields = {"tail": answer.source}
        req.context.results = len(answer.events)
        resp.etag = answer.etag
        resp.set_header("Cache-Control", "no-cache")
        if matches(req.if_none_match, answer.etag):
            resp.status = falcon.HTTP_304
            return
        resp.content_type = falcon.MEDIA_JSON
        resp.data = b'{"events":[' + b",".join(answer.events) + b"]}"


class ExportResource:
    """GET: every matching event, oldest first, as a download (NDJSON or CSV)."""

    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, exports: ExportService, authenticator: Authenticator):
        self._exports = exports
        self._authenticator = authenticator

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        principal = req.context.principal
        export = await self._exports.export(
            req.params,
            viewer=principal,
            still_allowed=lambda: self._authenticator.still_valid(principal),
        )
        resp.content_type = export.media_type
        resp.downloadable_as = export.filename
        stream_headers(resp)
        resp.stream = UntilGone(req, export.body)
