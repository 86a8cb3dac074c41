"""The one fixed form of timestamps and stored events, shared by every layer.

A stored event is returned by the API, written to exports and hashed into the integrity tree
in exactly one shape, so this module has no dependencies on the rest of the package.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

# RFC 3339 §5.6 date-time: the offset is mandatory; any number of fraction digits.
_RFC3339 = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[Tt](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:\.(?P<frac>\d{1,32}))?(?P<tz>[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


# The fields of a stored event, in the order the API returns them.
EVENT_FIELDS = (
    "id",
    "seq",
    "type",
    "service",
    "occurred_at",
    "received_at",
    "publisher",
    "actor",
    "subject",
    "action",
    "outcome",
    "context",
    "data",
    "leaf_hash",
)


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 date-time with an offset into an aware UTC datetime.

    Fractions beyond microseconds are truncated (PostgreSQL keeps microseconds). Raises
    ValueError with a message fit for the client.
    """
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T12:00:00Z")
    parts = match.groupdict()
    if parts["s"] == "60":
        raise ValueError("leap seconds (second 60) are not supported")
    micros = int((parts["frac"] or "0")[:6].ljust(6, "0"))
    try:
        naive = datetime(
            int(parts["y"]),
            int(parts["mo"]),
            int(parts["d"]),
            int(parts["h"]),
            int(parts["mi"]),
            int(parts["s"]),
            micros,
        )
    except ValueError as exc:
        raise ValueError(f"is not a real date-time: {exc}") from None
    tz = parts["tz"]
    offset = timedelta(0)
    if tz not in ("Z", "z"):
        hours, minutes = int(tz[1:3]), int(tz[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError("has an offset out of range")
        offset = timedelta(hours=hours, minutes=minutes) * (1 if tz[0] == "+" else -1)
    try:
        return (naive - offset).replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


def format_timestamp(moment: datetime) -> str:
    """The canonical form: UTC, six fraction digits, `Z`: 2026-01-31T12:00:00.000000Z."""
    # isoformat, not strftime: strftime's %Y does not pad years before 1000 to four digits.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def event_document(event: Mapping[str, Any], seq: int) -> dict[str, Any]:
    """The API form of an event being stored (its timestamps already canonical)."""
    return {
        "id": event["id"],
        "seq": seq,
        "type": event["type"],
        "service": event["service"],
        "occurred_at": event["occurred_at"],
        "received_at": event["received_at"],
        "publisher": event.get("publisher"),
        "actor": event.get("actor"),
        "subject": event.get("subject"),
        "action": event.get("action"),
        "outcome": event["outcome"],
        "context": event.get("context"),
        "data": event.get("data") or {},
    }


def stored_event(row: Any) -> dict[str, Any]:
    """Shape a stored row (attribute access, e.g. a SQLAlchemy Row) as the API returns it."""
    document = {
        "id": str(row.id),
        "seq": row.seq,
        "type": row.type,
        "service": row.service,
        "occurred_at": format_timestamp(row.occurred_at),
        "received_at": format_timestamp(row.received_at),
        "publisher": row.publisher,
        "actor": row.actor,
        "subject": row.subject,
        "action": row.action,
        "outcome": row.outcome,
        "context": row.context,
        "data": row.data,
    }
    leaf = getattr(row, "leaf_hash", None)
    if leaf is not None:
        document["leaf_hash"] = base64.b64encode(leaf).decode()
    return document
