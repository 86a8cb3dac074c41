"""AuditLogHandler: audit events through the standard library's logging."""

from __future__ import annotations

import logging
import re
import socket
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from auditlog.client._sync import AuditClient

_NOT_IN_TYPE = re.compile(r"[^a-z0-9_-]+")


class AuditLogHandler(logging.Handler):
    """Send each log record it handles as an audit event through an AuditClient.

    A record becomes an event of `service`, type `<type_prefix>.<level>` (`log.warning`),
    `occurred_at` its time, `context` the host and logger, `data` the message (and the
    exception, if any). What the record's `audit` extra holds takes precedence, key by key,
    so that code already logging can say what happened:

        log.info("invoice %s paid", n, extra={"audit": {
            "type": "invoice.paid", "action": "pay", "outcome": "success",
            "subject": {"type": "invoice", "id": n}}})

    `data` from `audit` is merged over the default one. Records of the client's own logger
    (`auditlog.client`) are never sent, so that a failure to send cannot feed itself.
    """

    def __init__(
        self,
        client: AuditClient,
        service: str,
        *,
        type_prefix: str = "log",
        level: int = logging.NOTSET,
    ):
        super().__init__(level)
        self.client = client
        self.service = service
        self.type_prefix = type_prefix
        self._host = socket.gethostname()

    def event(self, record: logging.LogRecord) -> dict[str, Any]:
        """The event for a record (override to shape it otherwise)."""
        level = _NOT_IN_TYPE.sub("_", record.levelname.lower()).strip("_") or "log"
        data: dict[str, Any] = {"message": record.getMessage(), "level": record.levelname}
        if record.exc_info:
            data["exception"] = "".join(traceback.format_exception(*record.exc_info))
        event: dict[str, Any] = {
            "type": f"{self.type_prefix}.{level}",
            "service": self.service,
            "occurred_at": datetime.fromtimestamp(record.created, UTC),
            "context": {"host": self._host, "logger": record.name},
            "data": data,
        }
        audit = getattr(record, "audit", None)
        if isinstance(audit, Mapping):
            event.update({key: value for key, value in audit.items() if key != "data"})
            if isinstance(audit.get("data"), Mapping):
                data.update(audit["data"])
        return event

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "auditlog.client" or record.name.startswith("auditlog.client."):
            return
        try:
            self.client.emit(self.event(record))
        except Exception:
            self.handleError(record)
