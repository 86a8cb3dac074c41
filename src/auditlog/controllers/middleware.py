"""Per-request context (the request id, the client's address, one log line) and the
authentication every resource gets unless it is declared public."""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
from typing import Any
from urllib.parse import unquote_to_bytes

import falcon
import falcon.asgi
import structlog

from auditlog.errors import InvalidQuery, MalformedRequest
from auditlog.services.audit import SelfAudit
from auditlog.services.auth import Authenticator, Scope

log = structlog.get_logger("auditlog.http")

# A request id is kept if it is short and plain; anything else is replaced.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# A refused request's body is charged against its key's rate: one request, plus one per
# this many bytes, so that sending megabytes of invalid events is not free.
CHARGE_BYTES = 64 * 1024
SLOW_REQUEST_S = 1.0


def is_public(resource: Any) -> bool:
    """Whether a resource answers without a key: only one that says so itself."""
    return getattr(type(resource), "public", False) is True


def _plain(value: str | None) -> str | None:
    return value if value and _REQUEST_ID.fullmatch(value) else None


class RequestContext:
    """The request's ids and the client's address, taken from a proxy only if it is one of
    `trusted_proxies` (nginx overwrites X-Request-ID, X-Client-Request-ID and X-Real-IP;
    a client that reaches an instance directly cannot forge them).

    A request is logged when it was refused or failed (4xx, 5xx: with the reason, which
    nginx's access log lacks) or slow; nginx's access log has a line for every request with
    the same request id, and a line per accepted request here cost a tenth of the ingest
    path's CPU (docs/DESIGN.md, "Serving").
    """

    def __init__(self, trusted_proxies: str):
        self._trusted = [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in trusted_proxies.split(",")
            if part.strip()
        ]
        self._trusted_cache: dict[str, bool] = {}

    def _from_proxy(self, peer: str | None) -> bool:
        if not peer:
            return False
        known = self._trusted_cache.get(peer)
        if known is None:
            try:
                address = ipaddress.ip_address(peer)
                known = any(address in network for network in self._trusted)
            except ValueError:  # a Unix socket's "address"
                known = False
            if len(self._trusted_cache) < 1024:
                self._trusted_cache[peer] = known
        return known

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        peer = req.remote_addr
        proxied = self._from_proxy(peer)
        own = req.get_header("X-Request-ID")
        if proxied:
            request_id = _plain(own) or uuid.uuid4().hex
            client_request_id = _plain(req.get_header("X-Client-Request-ID"))
            ip = req.get_header("X-Real-IP") or peer
        else:
            request_id = uuid.uuid4().hex
            client_request_id = _plain(own)
            ip = peer
        ctx = req.context
        ctx.request_id = request_id
        ctx.client_request_id = client_request_id
        ctx.ip = ip
        ctx.principal = None
        ctx.started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        resp.set_header("X-Request-ID", request_id)

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        req_succeeded: bool,
    ) -> None:
        started = getattr(req.context, "started", None)
        elapsed = time.perf_counter() - started if started is not None else 0.0
        status = int(resp.status_code)
        if status < 400 and elapsed < SLOW_REQUEST_S:
            return
        log.info(
            "request",
            method=req.method,
            path=req.path,
            status=status,
            duration_ms=round(elapsed * 1000, 3),
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

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        params: dict[str, Any],
    ) -> None:
        if is_public(resource):
            return
        principal = await self._authenticator.authenticate(req.get_header("Authorization"))
        req.context.principal = principal
        structlog.contextvars.bind_contextvars(key=principal.name)
        # A responder the resource does not list in `scopes` is refused (deny by default);
        # a method with no responder falls through to Falcon's 405 and its Allow header.
        if hasattr(resource, f"on_{req.method.lower()}"):
            need = getattr(resource, "scopes", {}).get(req.method)
            self._authenticator.authorize(principal, need, f"{req.method} {req.uri_template}")
        # Then the key's rate-limit token, before any work is done for the request.
        # Resources that spend it themselves (POST /v1/events does, in the same Redis round
        # trip as the append) say so; a key known to be out of tokens is refused even so.
        if req.method in getattr(resource, "throttles_itself", ()):
            self._authenticator.refuse_if_empty(principal)
        else:
            await self._authenticator.throttle(principal)

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        req_succeeded: bool,
    ) -> None:
        principal = req.context.principal
        if principal is None:
            return
        status = int(resp.status_code)
        wait = getattr(req.context, "rate_limited_s", None)
        if wait is not None:
            self._authenticator.note_empty(principal, wait)
        if req.method == "POST" and 400 <= status < 500 and status not in (401, 403, 429):
            # Refused work is not free: what it cost is charged against the key's rate.
            size = req.content_length or 0
            await self._authenticator.charge(principal, 1 + size // CHARGE_BYTES)
        if req.method != "GET" or principal.scope is Scope.WRITE:
            return
        if status == 429:
            # Refused for its rate, it read nothing: recording it would let a throttled key
            # still make the log do work per request (the request metrics count these).
            return
        recorded = await self._audit.query(
            key_name=principal.name,
            method=req.method,
            path=req.path,
            query_string=req.query_string,
            params=req.params,
            status=status,
            results=getattr(req.context, "results", None),
            context={
                "request_id": req.context.request_id,
                "client_request_id": req.context.client_request_id,
                "ip": req.context.ip,
                "user_agent": req.user_agent,
            },
        )
        if not recorded and self._audit.strict_reads and status < 400:
            # No unaudited reads: withhold the answer rather than give it unrecorded.
            resp.status = falcon.HTTP_503
            resp.set_header("Retry-After", "5")
            # A streamed answer (export, follow) holds a slot and a cursor until closed.
            close = getattr(resp.stream, "close", None)
            resp.stream = None
            if close is not None:
                await close()
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

    The server decodes what it cannot read as U+FFFD, so `?service=%FF` would quietly become
    a search for a replacement character: a client whose bytes are not what it meant gets a
    400 naming the part. ASGI hands over both as the raw bytes the client sent.
    """

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        raw_path = req.scope.get("raw_path")
        if (
            raw_path is not None
            and (b"%" in raw_path or not raw_path.isascii())
            and _utf8(unquote_to_bytes(raw_path)) is None
        ):
            raise MalformedRequest("the path is not valid UTF-8")
        query: bytes = req.scope.get("query_string", b"")
        if query.isascii() and b"%" not in query:
            return
        for part in query.split(b"&"):
            name, _, value = part.partition(b"=")
            decoded = _utf8(unquote_to_bytes(name.replace(b"+", b" ")))
            if decoded is None:
                raise InvalidQuery("query string", "a parameter name is not valid UTF-8")
            if _utf8(unquote_to_bytes(value.replace(b"+", b" "))) is None:
                raise InvalidQuery(decoded, "is not valid UTF-8 (percent-escapes must spell UTF-8)")
