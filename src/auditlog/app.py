"""create_app(settings) -> falcon.asgi.App: every route, and the one place errors become HTTP."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi
import falcon.media
import orjson
import structlog

from auditlog import errors
from auditlog.controllers.docs import OpenApiResource
from auditlog.controllers.events import EventResource, EventsResource
from auditlog.controllers.health import HealthResource, ReadinessResource
from auditlog.controllers.integrity import (
    ConsistencyProofResource,
    InclusionProofResource,
    PublicKeyResource,
    TreeHeadResource,
)
from auditlog.controllers.keys import KeysResource
from auditlog.controllers.log import (
    CheckpointResource,
    EntryBundleResource,
    HashTileResource,
    PublicCheckpointResource,
    PublicHashTileResource,
)
from auditlog.controllers.metrics import MetricsResource, RequestMetrics
from auditlog.controllers.middleware import Authentication, RequestContext, Utf8Only
from auditlog.controllers.stats import BucketsResource
from auditlog.controllers.streaming import RECEIVE
from auditlog.controllers.tail import ExportResource, TailResource
from auditlog.controllers.viewer import ViewerResource
from auditlog.metrics import Exposition, QueueCollector
from auditlog.openapi import build_openapi
from auditlog.runtime import ApiRuntime
from auditlog.services.health import ReadinessService
from auditlog.settings import Settings
from auditlog.viewer import ViewerBundle

log = structlog.get_logger("auditlog.http")

# Domain error -> (status, title). The description is the error's own message.
_STATUS: dict[type[errors.AuditlogError], tuple[str, str]] = {
    errors.MalformedBody: (falcon.HTTP_400, "Malformed body"),
    errors.MalformedRequest: (falcon.HTTP_400, "Malformed request"),
    errors.InvalidQuery: (falcon.HTTP_400, "Invalid query parameter"),
    errors.Unauthorized: (falcon.HTTP_401, "Unauthorized"),
    errors.Forbidden: (falcon.HTTP_403, "Forbidden"),
    errors.NotFound: (falcon.HTTP_404, "Not found"),
    errors.AmbiguousId: (falcon.HTTP_409, "Ambiguous id"),
    errors.BodyTooLarge: (falcon.HTTP_413, "Payload too large"),
    errors.UnsupportedMediaType: (falcon.HTTP_415, "Unsupported media type"),
    errors.InvalidEvents: (falcon.HTTP_422, "Invalid events"),
    errors.QueryTooCostly: (falcon.HTTP_422, "Query too costly"),
    errors.RateLimited: (falcon.HTTP_429, "Too many requests"),
    errors.Overloaded: (falcon.HTTP_503, "Overloaded"),
    errors.Unavailable: (falcon.HTTP_503, "Service unavailable"),
    errors.NotDurable: (falcon.HTTP_503, "Queued, not confirmed on disk"),
    errors.LogDamaged: (falcon.HTTP_500, "Log damaged"),
}


# A 422 lists at most this many problems (and says how many there were): an error list
# must not be larger than the request that caused it.
MAX_LISTED_ERRORS = 100


async def _handle_domain_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, exc: errors.AuditlogError, params: Any
) -> None:
    await _drop_unread_body(req)
    status, title = _STATUS.get(type(exc), (falcon.HTTP_400, "Bad request"))
    body: dict[str, Any] = {"title": title, "description": str(exc)}
    if isinstance(exc, errors.InvalidEvents):
        body["errors"] = [e.as_dict() for e in exc.errors[:MAX_LISTED_ERRORS]]
        if len(exc.errors) > MAX_LISTED_ERRORS:
            body["errors_total"] = len(exc.errors)
    if isinstance(exc, errors.NotDurable):
        body["ids"] = exc.ids
    if isinstance(exc, errors.AmbiguousId):
        body["services"] = exc.services
    if isinstance(
        exc, errors.Overloaded | errors.Unavailable | errors.RateLimited | errors.NotDurable
    ):
        resp.set_header("Retry-After", str(exc.retry_after_s))
    if isinstance(exc, errors.RateLimited):
        req.context.rate_limited_s = exc.wait_s
    if isinstance(exc, errors.Unauthorized):
        challenge = 'Bearer realm="auditlog"'
        if exc.token_given:
            challenge += ', error="invalid_token"'
        resp.set_header("WWW-Authenticate", challenge)
    if isinstance(exc, errors.LogDamaged):
        log.error("the stored log is damaged", path=req.path, reason=str(exc))
    req.context.log_fields = {"refused": title}
    req.context.error_kind = type(exc).__name__
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON  # whatever the resource meant to answer
    resp.media = body


async def _drop_unread_body(req: falcon.asgi.Request) -> None:
    """Read what is left of a refused request's body (nginx has it whole: this is a copy over
    loopback, not work done on it). Closed with unread bytes, the connection would be reset
    by the kernel, and nginx would log an error and perhaps answer 502 for it."""
    if req.content_length:
        await req.stream.exhaust()


async def _handle_unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, exc: Exception, params: Any
) -> None:
    # Falcon's own HTTPError (unknown route, 405, bad header) has a more specific handler.
    log.exception("unhandled error", method=req.method, path=req.path)
    resp.status = falcon.HTTP_500
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {"title": "Internal error", "description": "the failure is logged"}


_FALCON_DESCRIPTIONS = {
    404: "no such route; see /openapi.json",
    405: "this method is not allowed here; the audit log is append-only: events can be "
    "added and read, never changed or deleted",
}


def _serialize_http_error(
    req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError
) -> None:
    """Falcon's own errors in our shape: always a title and a description."""
    body = exc.to_dict()
    body.setdefault("description", _FALCON_DESCRIPTIONS.get(exc.status_code, body["title"]))
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(body)


class App(falcon.asgi.App):  # type: ignore[type-arg]
    """Falcon's ASGI app, handing each HTTP request's `receive` to the resources (scope
    RECEIVE), so that a streamed answer can tell when its client has gone."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # type: ignore[override]
        # Falcon's test client says the client is gone as soon as its request is sent (it
        # reads the answer after the app is done), which would end every stream at once.
        if scope["type"] == "http" and not type(receive).__module__.startswith("falcon.testing"):
            scope[RECEIVE] = receive
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, runtime: ApiRuntime | None = None) -> App:
    """Build the ASGI app; collaborators are built from settings unless passed in.

    Nothing here does I/O: the clients connect on first use, in the server's event loop,
    and the app's shutdown gives their connections back (a runtime passed in is the
    caller's to close).
    """
    owned = runtime is None
    runtime = runtime or ApiRuntime.build(settings)
    middleware: list[Any] = [
        RequestContext(settings.trusted_proxies),
        RequestMetrics(),
        Authentication(runtime.authenticator, runtime.audit),
        Utf8Only(),
    ]
    if owned:
        middleware.append(_Lifespan(runtime))
    app = App(middleware=middleware)
    json_handler = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.req_options.strip_url_path_trailing_slash = True

    readiness = ReadinessService({"postgres": runtime.store.ping, "redis": runtime.appender.ping})
    app.add_route(
        "/v1/events",
        EventsResource(runtime.ingest, runtime.queries, max_body_bytes=settings.max_body_bytes),
    )
    # Literal segments win over {event_id}: these two are never taken for an id.
    app.add_route("/v1/events/tail", TailResource(runtime.tail, runtime.authenticator))
    app.add_route("/v1/events/export", ExportResource(runtime.exports, runtime.authenticator))
    app.add_route("/v1/events/{event_id}", EventResource(runtime.queries))
    app.add_route("/v1/stats/buckets", BucketsResource(runtime.queries))
    app.add_route("/v1/events/{event_id}/proof", InclusionProofResource(runtime.integrity))
    app.add_route("/v1/integrity/tree-head", TreeHeadResource(runtime.integrity))
    app.add_route("/v1/integrity/consistency", ConsistencyProofResource(runtime.integrity))
    app.add_route("/v1/integrity/public-key", PublicKeyResource(runtime.integrity))
    public = settings.public_tiles  # the checkpoint and hash tiles carry no event content
    checkpoint = PublicCheckpointResource if public else CheckpointResource
    app.add_route("/v1/log/checkpoint", checkpoint(runtime.tiles))
    # The literal `entries` wins over {level}.
    app.add_route("/v1/log/tile/entries/{index:path}", EntryBundleResource(runtime.tiles))
    tile = PublicHashTileResource if public else HashTileResource
    app.add_route("/v1/log/tile/{level}/{index:path}", tile(runtime.tiles))
    app.add_route("/v1/keys", KeysResource(runtime.keys))
    viewer = ViewerResource(
        ViewerBundle.load(settings.viewer_dir, public_key=settings.viewer_public_key)
    )
    app.add_route("/viewer", viewer)
    app.add_route("/viewer/{asset:path}", viewer)
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadinessResource(readiness))
    app.add_route("/openapi.json", OpenApiResource(build_openapi(settings)))
    app.add_route(
        "/metrics",
        _metrics(settings, runtime),
    )

    app.set_error_serializer(_serialize_http_error)
    app.add_error_handler(Exception, _handle_unexpected)
    app.add_error_handler(errors.AuditlogError, _handle_domain_error)
    return app


def _metrics(settings: Settings, runtime: ApiRuntime) -> MetricsResource:
    queue = QueueCollector()
    return MetricsResource(Exposition(settings.metrics_dir, [queue]), queue, runtime.appender.depth)


class _Lifespan:
    """The app's own runtime is closed when the server shuts down."""

    def __init__(self, runtime: ApiRuntime):
        self._runtime = runtime

    async def process_shutdown(self, scope: Any, event: Any) -> None:
        await self._runtime.close()
