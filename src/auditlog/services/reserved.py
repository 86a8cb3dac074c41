"""Names the service itself uses, which no producer may: its own events cannot be imitated.

The log records its own use (services/audit.py): reads by API keys and changes to keys are
events of service `auditlog`, of types under `auditlog.`, published as `auditlog`. A
producer's event may use none of these, and no API key may be named `auditlog` (a key's
name is the publisher of what it sends) or be bound to the service `auditlog`.
"""

from __future__ import annotations

from typing import Any

from auditlog.errors import FieldError

NAME = "auditlog"  # the service, the publisher and the namespace of event types
TYPE_PREFIX = f"{NAME}."
_WHY = "reserved for the events the log records about itself"


def is_reserved_type(event_type: str) -> bool:
    return event_type == NAME or event_type.startswith(TYPE_PREFIX)


def producer_problems(event: dict[str, Any], index: int) -> list[FieldError]:
    """What a producer's checked event claims that only the service may (empty: nothing)."""
    problems = []
    if is_reserved_type(event["type"]):
        problems.append(FieldError(index, "type", f"`{NAME}` and `{TYPE_PREFIX}*` are {_WHY}"))
    if event["service"] == NAME:
        problems.append(FieldError(index, "service", f"`{NAME}` is {_WHY}"))
    return problems


def key_problem(name: str, services: list[str]) -> str | None:
    """Why a key may not be made with this name or these services (None: it may)."""
    if name == NAME:
        return f"the key name {NAME!r} is reserved: it is the publisher of the log's own events"
    if NAME in services:
        return f"no key may send events of the service {NAME!r}: it is {_WHY}"
    return None
