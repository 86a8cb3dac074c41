"""Send audit events to auditlog: batched, retried, bounded, never lost silently.

    from auditlog.client import AuditClient

    with AuditClient("http://127.0.0.1:8080", token) as audit:
        audit.emit({"type": "customer.billed", "service": "billing",
                    "subject": {"type": "customer", "id": "c-42"}, "data": {"amount": 1999}})

See the package's README for batching, retries, the overflow policies and the logging handler.
"""

from auditlog.client._async import AsyncAuditClient
from auditlog.client._base import VERSION as __version__
from auditlog.client._buffer import Stats
from auditlog.client._events import (
    BufferFullError,
    ClientClosedError,
    DeliveryError,
    Event,
    Failure,
    FailureKind,
    Party,
)
from auditlog.client._handler import AuditLogHandler
from auditlog.client._options import Options, Overflow
from auditlog.client._spill import SpillFileBusy
from auditlog.client._sync import AuditClient

__all__ = [
    "AsyncAuditClient",
    "AuditClient",
    "AuditLogHandler",
    "BufferFullError",
    "ClientClosedError",
    "DeliveryError",
    "Event",
    "Failure",
    "FailureKind",
    "Options",
    "Overflow",
    "Party",
    "SpillFileBusy",
    "Stats",
    "__version__",
]
