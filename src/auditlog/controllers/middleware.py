"""Per-request context: the request id, and one canonical log line per request."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any
from urllib.parse import unquote_to_bytes

import falcon
import structlog

from auditlog.errors import InvalidQuery, MalformedRequest
from auditlog.services.audit import SelfAudit
from auditlog.services.auth import Authenticator, Scope

log = structlog.get_logger("auditlog.http")

# A client's own id is kept if it is short and plain; anything else is replaced.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def is_public(resource: Any) -> bool:
    """Whether a resource answers without a key: only one that says so itself."""
    return getattr(type(resource), "public", False) is True


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


class Authentication:
    """Every request that reaches a resource carries a live key with the scope the resource
    asks for, unless the resource itself is declared public (deny by default).

    The decision is made on the matched resource, never on the path's spelling: Falcon's
    router matches `//v1/events` and `/v1/events` alike, so a rule keyed on the path string
    could be skipped by an extra slash. Resources declare `scopes = {"GET": Scope.READ, ...}`;
    a method they do not list is refused; an unmatched path is Falcon's 404 and reads
    nothing. Reads by a key are recorded in the log itself once answered.
    """

    def __init__(self, authenticator: Authenticator, audit: SelfAudit):
        self._authenticator = authenticator
        self._audit = audit

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.principal = None

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if is_public(resource):
            return
        principal = self._authenticator.authenticate(req.get_header("Authorization"))
        req.context.principal = principal
        structlog.contextvars.bind_contextvars(key=principal.name)
        # A responder the resource does not list in `scopes` is refused (deny by default);
        # a method with no responder falls through to Falcon's 405 and its Allow header.
        if hasattr(resource, f"on_{req.method.lower()}"):
            need = getattr(resource, "scopes", {}).get(req.method)
            self._authenticator.authorize(principal, need, f"{req.method} {req.uri_template}")
        # Then the key's rate-limit token. Resources that spend it themselves (POST
        # /v1/events does, in the same Redis round trip as the append) say so.
        if req.method not in getattr(resource, "throttles_itself", ()):
            self._authenticator.throttle(principal)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        principal = getattr(req.context, "principal", None)
        if principal is None or req.method != "GET" or principal.scope is Scope.WRITE:
            return
        if resp.status_code == 429:
            # Refused for its rate, it read nothing: recording it would let a throttled key
            # still make the log do work per request (the request metrics count these).
            return
        recorded = self._audit.query(
            key_name=principal.name,
            method=req.method,
            path=req.path,
            params=req.params,
            status=int(resp.status_code),
            results=getattr(req.context, "results", None),
            context={
                "request_id": getattr(req.context, "request_id", None),
                "ip": req.access_route[0] if req.access_route else req.remote_addr,
                "user_agent": req.user_agent,
            },
        )
        if not recorded and self._audit.strict_reads and int(resp.status_code) < 400:
            # No unaudited reads: withhold the answer rather than give it unrecorded.
            resp.status = falcon.HTTP_503
            resp.set_header("Retry-After", "5")
            # A streamed answer (export, follow) holds a slot and a cursor until closed.
            close = getattr(resp.stream, "close", None)
            if close is not None:
                close()
            resp.stream = None
            resp.content_type = falcon.MEDIA_JSON  # not the export's or the tail's own
            resp.delete_header("Content-Disposition")
            resp.media = {
                "title": "Service unavailable",
                "description": "this read could not be recorded in the audit log; retry shortly",
            }


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class Utf8Only:
    """Refuse a path or query string that is not UTF-8, instead of guessing.

    Falcon decodes what it cannot read as U+FFFD, so `?service=%FF` would quietly become a
    search for a replacement character: a client whose bytes are not what it meant gets a
    400 naming the part. WSGI hands both over as latin-1 text of the raw bytes.
    """

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        path = req.env.get("PATH_INFO", "")
        if _utf8(path.encode("latin-1", "replace")) is None:
            raise MalformedRequest("the path is not valid UTF-8")
        query = req.env.get("QUERY_STRING", "")
        if query.isascii() and "%" not in query:
            return
        for part in query.split("&"):
            name, _, value = part.partition("=")
            decoded = _utf8(unquote_to_bytes(name.replace("+", " ").encode("latin-1", "replace")))
            if decoded is None:
                raise InvalidQuery("query string", "a parameter name is not valid UTF-8")
            raw = unquote_to_bytes(value.replace("+", " ").encode("latin-1", "replace"))
            if _utf8(raw) is None:
                raise InvalidQuery(decoded, "is not valid UTF-8 (percent-escapes must spell UTF-8)")
