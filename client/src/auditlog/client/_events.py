"""An event as the client holds it: its id assigned and its JSON written once, at `emit`."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal, NotRequired, TypedDict

if sys.version_info >= (3, 14):
    from uuid import uuid7
else:
    from uuid_utils import uuid7


class Party(TypedDict, total=False):
    """An actor or a subject: a string `id`, usually a `type`, more keys allowed."""

    id: str
    type: str


class Event(TypedDict):
    """The fields of an event (docs/API.md); the client fills in `id` and `occurred_at`."""

    type: str
    service: str
    id: NotRequired[str | uuid.UUID]
    occurred_at: NotRequired[str | datetime]
    actor: NotRequired[Party | dict[str, Any]]
    subject: NotRequired[Party | dict[str, Any]]
    action: NotRequired[str]
    outcome: NotRequired[Literal["success", "failure", "unknown"]]
    context: NotRequired[dict[str, Any]]
    data: NotRequired[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Item:
    """One event waiting to be sent."""

    id: str
    raw: bytes
    """The event's JSON, exactly as it is sent (and spilled)."""
    seq: int
    """Its place in this client's emit order; -1 for one replayed from an earlier client's
    spill file (nobody in this process waits for it)."""


FailureKind = Literal[
    "rejected", "unauthorized", "forbidden", "refused", "dropped", "spill_full", "undelivered"
]


@dataclass(frozen=True)
class Failure:
    """An event that will not be stored, and why (given to `on_failure`)."""

    id: str
    kind: FailureKind
    """rejected (422: the event breaks a rule), unauthorized (401), forbidden (403),
    refused (another 4xx), dropped (Overflow.DROP_OLDEST), spill_full (the spill file is at
    its limit or cannot be written), undelivered (the client closed with the service away)."""
    detail: str
    status: int | None
    raw: bytes
    seq: int = -1
    """Its place in this client's emit order (-1: from an earlier client's spill file)."""

    @property
    def event(self) -> dict[str, Any]:
        """The event as it was sent."""
        value: dict[str, Any] = json.loads(self.raw)
        return value


class DeliveryError(Exception):
    """`emit_sync`: the event was not accepted."""

    def __init__(self, failure: Failure):
        self.failure = failure
        super().__init__(f"event {failure.id} {failure.kind}: {failure.detail}")


class ClientClosedError(RuntimeError):
    """`emit` on a closed client."""


class BufferFullError(RuntimeError):
    """Overflow.BLOCK: no room within `block_timeout_s` (the event was not taken)."""


def new_id() -> str:
    """A UUIDv7: time-ordered, so the log's index on ids stays compact."""
    return str(uuid7())


def timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware (the API needs an offset)")
    return moment.isoformat()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, date | uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(event: Mapping[str, Any]) -> tuple[str, bytes]:
    """The event's id (assigned if absent) and its JSON; ValueError or TypeError for what
    could never be sent (NaN, a lone surrogate, an object JSON cannot hold)."""
    body = dict(event)
    given = body.get("id")
    event_id = new_id() if given is None else str(given)
    body["id"] = event_id
    occurred_at = body.get("occurred_at")
    if occurred_at is None:
        body["occurred_at"] = datetime.now(UTC).isoformat()
    elif isinstance(occurred_at, datetime):
        body["occurred_at"] = timestamp(occurred_at)
    # Refused here, in the caller's thread, rather than as a 400 for a whole batch: NaN and
    # Infinity (allow_nan), lone surrogates (the UTF-8 encoding fails on them).
    text = json.dumps(
        body, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
    )
    return event_id, text.encode("utf-8")
