"""/v1/events: post events; list them; get one."""

from __future__ import annotations

from typing import ClassVar

import falcon
import falcon.asgi

from auditlog.errors import BodyTooLarge, UnsupportedMediaType
from auditlog.services.auth import Scope
from auditlog.services.ingest import EnvelopeFormat, IngestService
from auditlog.services.queries import QueryService, no_parameters

_FORMATS = {fmt.value: fmt for fmt in EnvelopeFormat}


def envelope_format(content_type: str | None) -> EnvelopeFormat:
    """The framing a Content-Type announces; 415 for anything else."""
    if not content_type:
        raise UnsupportedMediaType(f"send a Content-Type: one of {', '.join(_FORMATS)}")
    media_type, params = falcon.parse_header(content_type)
    fmt = _FORMATS.get(media_type.lower())
    if fmt is None:
        raise UnsupportedMediaType(
            f"{media_type!r} is not accepted; use one of {', '.join(_FORMATS)}"
        )
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset!r} is not accepted; send UTF-8")
    return fmt


async def read_body(req: falcon.asgi.Request, limit: int) -> bytes:
    """The whole body, refusing (413) one longer than limit without reading it all."""
    if req.content_length is not None and req.content_length > limit:
        raise BodyTooLarge(f"the body is {req.content_length} bytes; the limit is {limit}")
    body = await req.bounded_stream.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge(f"the body is over the limit of {limit} bytes")
    return body


class EventsResource:
    """POST enqueues events (202); GET lists them, newest first, a page at a time."""

    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ, "POST": Scope.WRITE}
    throttles_itself: ClassVar[frozenset[str]] = frozenset({"POST"})

    def __init__(self, ingest: IngestService, queries: QueryService, *, max_body_bytes: int):
        self._ingest = ingest
        self._queries = queries
        self._max_body_bytes = max_body_bytes

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        fmt = envelope_format(req.content_type)
        body = await read_body(req, self._max_body_bytes)
        ids = await self._ingest.submit(
            body, fmt, principal=req.context.principal, request_id=req.context.request_id
        )
        req.context.accepted = len(ids)
        resp.status = falcon.HTTP_202
        resp.media = {"accepted": len(ids), "ids": ids}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        page = await self._queries.list(req.params)
        req.context.results = len(page.events)
        resp.media = {"events": page.events, "next_cursor": page.next_cursor}


class EventResource:
    """GET one stored event by id. There is no PUT, PATCH or DELETE: 405."""

    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, queries: QueryService):
        self._queries = queries

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, event_id: str
    ) -> None:
        no_parameters(req.params)
        resp.media = await self._queries.get(event_id)
        req.context.results = 1
