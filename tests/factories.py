"""Factories for events and CloudEvents: realistic defaults, override what a test is about."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

_counter = itertools.count()
_DROP = object()


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(*, drop: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    """One valid event as a producer sends it; `drop` removes fields."""
    n = next(_counter)
    base: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "type": "customer.billed",
        "service": "billing",
        "occurred_at": timestamp(datetime.now(UTC) - timedelta(seconds=1)),
        "actor": {"type": "user", "id": f"user-{n % 7}"},
        "subject": {"type": "customer", "id": f"cust-{n}"},
        "action": "bill",
        "outcome": "success",
        "context": {"host": "billing-1", "ip": "10.0.0.7", "trace_id": uuid.uuid4().hex},
        "data": {"amount": 1999 + n, "currency": "EUR", "invoice": f"INV-{n:06d}"},
    }
    base.update(overrides)
    for name in drop:
        base.pop(name, None)
    return base


def events(count: int, **overrides: Any) -> list[dict[str, Any]]:
    return [event(**overrides) for _ in range(count)]


def cloudevent(**overrides: Any) -> dict[str, Any]:
    """One valid structured-mode CloudEvent."""
    n = next(_counter)
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"evt-{uuid.uuid4().hex}",
        "source": "accounts",
        "type": "customer.account.created",
        "time": timestamp(datetime.now(UTC) - timedelta(seconds=1)),
        "subject": f"cust-{n}",
        "subjecttype": "customer",
        "actorid": "signup-service",
        "actortype": "service",
        "action": "create",
        "outcome": "success",
        "datacontenttype": "application/json",
        "data": {"plan": "pro"},
    }
    base.update(overrides)
    return base


def principal(scope: str = "admin", name: str = "test-key", *services: str) -> Any:
    """A key as the API sees it after authentication (services.auth.Principal)."""
    from auditlog.services.auth import Principal, Scope  # noqa: PLC0415 - a test helper

    return Principal(
        name=name, scope=Scope(scope), services=frozenset(services), rate_per_s=100.0, burst=100
    )
