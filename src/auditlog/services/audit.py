"""The log audits its own use: reads by API keys and changes to keys become events."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from auditlog.canonical import format_timestamp
from auditlog.errors import AuditlogError
from auditlog.services.ingest import IngestService
from auditlog.storage.keys import ApiKey

log = structlog.get_logger("auditlog.audit")

SERVICE = "auditlog"
# What a read's record keeps of the request: a client's text is bounded, so that a read
# cannot make the log grow faster than the client sends (the whole query string is kept as
# its SHA-256 and length when anything was left out).
_MAX_VALUE = 256
_MAX_PARAMS = 16
_MAX_LIST = 4
_MAX_FILTERS_CHARS = 2048


def _plain(value: str, limit: int = _MAX_VALUE) -> str:
    """A request's own text made storable: no U+0000, bounded length."""
    return value.replace("\x00", "\\u0000")[:limit]


def _params(params: Mapping[str, str | list[str]]) -> tuple[dict[str, Any], bool]:
    """The parameters as recorded, and whether anything was left out."""
    out: dict[str, Any] = {}
    budget = _MAX_FILTERS_CHARS
    cut = len(params) > _MAX_PARAMS
    for name, value in list(params.items())[:_MAX_PARAMS]:
        key = _plain(name, 64)
        kept = [_plain(v) for v in value[:_MAX_LIST]] if isinstance(value, list) else _plain(value)
        size = len(key) + sum(map(len, kept if isinstance(kept, list) else [kept]))
        if size > budget:
            cut = True
            break
        budget -= size
        cut = cut or key != name or kept != value
        out[key] = kept
    return out, cut


class SelfAudit:
    """Records events about the log's own use through the normal ingest pipeline."""

    def __init__(self, ingest: IngestService, *, strict_reads: bool):
        self._ingest = ingest
        self.strict_reads = strict_reads

    async def query(
        self,
        *,
        key_name: str,
        method: str,
        path: str,
        query_string: str,
        params: Mapping[str, str | list[str]],
        status: int,
        results: int | None,
        context: Mapping[str, str | None],
    ) -> bool:
        """Record one read; False (after logging the whole record) if it could not be."""
        filters, cut = _params(params)
        data: dict[str, Any] = {"filters": filters, "results": results}
        if cut:
            data["query_sha256"] = hashlib.sha256(query_string.encode()).hexdigest()
            data["query_bytes"] = len(query_string.encode())
        event = {
            "type": "auditlog.query.executed",
            "service": SERVICE,
            "actor": {"type": "api_key", "id": key_name},
            "action": "query",
            "outcome": "success" if status < 400 else "failure",
            "context": {
                **{k: _plain(v) for k, v in context.items() if v},
                "method": method,
                "path": _plain(path),
                "status": status,
            },
            "data": data,
        }
        return await self._record(event)

    async def key_changed(self, what: str, key: ApiKey, actor: str) -> bool:
        data: dict[str, Any] = {"name": key.name}
        if what == "created":
            data.update(scope=key.scope, services=list(key.services))
        if what in ("created", "limited"):
            data.update(rate_per_s=key.rate_per_s, burst=key.burst)
        return await self._record(
            {
                "type": f"auditlog.key.{what}",
                "service": SERVICE,
                "actor": {"type": "operator", "id": _plain(actor)},
                "subject": {"type": "api_key", "id": key.name},
                "action": {"created": "create", "revoked": "revoke", "limited": "limit"}[what],
                "outcome": "success",
                "data": data,
            }
        )

    async def _record(self, event: dict[str, Any]) -> bool:
        event["occurred_at"] = format_timestamp(datetime.now(UTC))
        try:
            await self._ingest.record([event], publisher=SERVICE)
        except AuditlogError as exc:
            problems = [e.as_dict() for e in getattr(exc, "errors", [])]
            log.error(
                "self-audit event not recorded", error=str(exc), problems=problems, record=event
            )
            return False
        return True
