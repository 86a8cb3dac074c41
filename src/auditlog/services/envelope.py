"""The event envelope: what a producer may send, checked and put into its stored form.

The envelope has a fixed set of invariant fields (who, what, to what, when, where, outcome)
and one open object, `data`, for the application-specific content. New event types need no
code or schema change. The msgspec structs here are the one definition of the envelope: the
fast check of every event, the per-field list of problems when it fails, and the OpenAPI
schemas (msgspec.json.schema) all come from them.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta

from auditlog.canonical import format_timestamp, parse_timestamp
from auditlog.errors import FieldError

TYPE_PATTERN = r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$"
SERVICE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
ACTION_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
OUTCOMES = ("success", "failure", "unknown")
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# I-JSON (RFC 7493): integers outside this range do not survive a trip through most parsers,
# and the integrity hash (RFC 8785) cannot represent them.
MAX_SAFE_INTEGER = 2**53 - 1
# Context keys with an index of their own (filters of GET /v1/events): a btree entry holds at
# most 2704 bytes, so an indexed value is bounded like a party's id. Longer, the event could
# never be stored; the writer would dead-letter it after accepting it with a 202.
INDEXED_CONTEXT_KEYS = ("trace_id",)
MAX_INDEXED_CHARS = 256
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


class Party(msgspec.Struct, kw_only=True):
    """Who did it (actor) or what it was done to (subject): `id`, usually `type`, more allowed."""

    id: Annotated[str, Meta(min_length=1, max_length=256, description="The party's identifier.")]
    type: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=128,
                description="What kind of party, e.g. `user`, `service`, `customer`.",
            ),
        ]
        | None
    ) = None


class EventIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One event as a producer sends it (`application/json`)."""

    id: (
        Annotated[
            str,
            Meta(
                pattern=UUID_PATTERN,
                description="UUID; the idempotency key. The server assigns a UUIDv7 when absent.",
            ),
        ]
        | None
    ) = None
    type: Annotated[
        str,
        Meta(
            max_length=128,
            pattern=TYPE_PATTERN,
            description="What happened: a lowercase dotted name, e.g. `customer.billed`.",
        ),
    ]
    service: Annotated[str, Meta(pattern=SERVICE_PATTERN, description="The producing service.")]
    occurred_at: Annotated[
        str,
        Meta(
            extra_json_schema={"format": "date-time"},
            description="When it happened: RFC 3339 with an offset; stored in UTC, microseconds.",
        ),
    ]
    actor: Party | None = None
    subject: Party | None = None
    action: (
        Annotated[str, Meta(pattern=ACTION_PATTERN, description="A verb, e.g. `create`, `bill`.")]
        | None
    ) = None
    outcome: Literal["success", "failure", "unknown"] = "unknown"
    context: (
        Annotated[
            dict[str, Any],
            Meta(
                description=(
                    "Where: e.g. `host`, `ip`, `region`, `trace_id`, `request_id`, `user_agent`."
                )
            ),
        ]
        | None
    ) = None
    data: Annotated[
        dict[str, Any],
        Meta(description="The application-specific content; at most 64 KiB serialized."),
    ] = msgspec.field(default_factory=dict)


_FIELDS = {field.name: field for field in msgspec.structs.fields(EventIn)}
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"Object missing required field `([^`]*)`")


@dataclass(frozen=True)
class Limits:
    """The bounds every event is checked against (from settings)."""

    max_data_bytes: int = 64 * 1024
    max_event_bytes: int = 128 * 1024
    max_string_chars: int = 16 * 1024
    max_depth: int = 32
    future_skew: timedelta = timedelta(minutes=5)


def _field_error(index: int, name: str, error: msgspec.ValidationError) -> FieldError:
    """A msgspec error as one FieldError: its message, at the path it names below `name`."""
    message = str(error)
    path = name
    at = _AT.search(message)
    if at:
        message = message[: at.start()]
        path += re.sub(r"\[(\d+)\]", r".\1", at["path"])
    missing = _MISSING.fullmatch(message)
    if missing:  # named at the object; say it of the field, as for the envelope's own
        path, message = f"{path}.{missing[1]}", "is required"
    return FieldError(index, path, message)


def _schema_problems(raw: Any, index: int) -> list[FieldError]:
    """Every way `raw` breaks EventIn, one per field (msgspec stops at the first)."""
    if not isinstance(raw, dict):
        return [FieldError(index, "$", "must be a JSON object")]
    problems = [
        FieldError(index, name, "unknown field; put application-specific content in `data`")
        for name in raw
        if name not in _FIELDS
    ]
    for name, field in _FIELDS.items():
        if name not in raw:
            if field.required:
                problems.append(FieldError(index, name, "is required"))
            continue
        try:
            msgspec.convert(raw[name], field.type)
        except msgspec.ValidationError as exc:
            problems.append(_field_error(index, name, exc))
    return problems


def _scalar_problem(value: Any, limits: Limits) -> str | None:
    if isinstance(value, str):
        if "\x00" in value:
            return "contains U+0000, which cannot be stored"
        if len(value) > limits.max_string_chars:
            return f"is {len(value)} characters long; the limit is {limits.max_string_chars}"
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return "is an integer outside ±(2^53−1); send it as a string"
    elif isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    return None


def _key_problem(key: str, limits: Limits) -> str | None:
    if "\x00" in key:
        return "has a key containing U+0000, which cannot be stored"
    if len(key) > limits.max_string_chars:
        return f"has a key longer than {limits.max_string_chars} characters"
    return None


def _walk(value: Any, path: str, depth: int, limits: Limits) -> Iterator[tuple[str, str]]:
    """Yield (path, problem) for what JSON allows but an audit record must not hold."""
    if depth > limits.max_depth:
        yield path, f"is nested deeper than {limits.max_depth} levels"
    elif isinstance(value, dict):
        for key, item in value.items():
            problem = _key_problem(key, limits)
            if problem:
                yield path, problem
            yield from _walk(item, f"{path}.{key}", depth + 1, limits)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}.{index}", depth + 1, limits)
    else:
        problem = _scalar_problem(value, limits)
        if problem:
            yield path, problem


def _indexed_problems(raw: dict[str, Any]) -> Iterator[tuple[str, str]]:
    context = raw.get("context")
    if not isinstance(context, dict):
        return
    for key in INDEXED_CONTEXT_KEYS:
        value = context.get(key)
        if isinstance(value, dict | list):
            yield f"context.{key}", "must be a string (it is indexed)"
        elif isinstance(value, str) and len(value) > MAX_INDEXED_CHARS:
            yield (
                f"context.{key}",
                f"is {len(value)} characters long; the limit is {MAX_INDEXED_CHARS} "
                "(it is indexed)",
            )


def _serialized_size(value: Any) -> int:
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:  # an out-of-range integer, reported by _walk
        return 0


def _size_problems(raw: dict[str, Any], index: int, limits: Limits) -> Iterator[FieldError]:
    """`data` and the whole event within their serialized sizes.

    The whole event is bounded too: without it `context`, `actor` or `subject` could carry
    megabytes, and a writer's batch of such events would not fit in its memory.
    """
    total = _serialized_size(raw)
    data = raw.get("data")
    if total > limits.max_data_bytes and isinstance(data, dict):
        size = _serialized_size(data)
        if size > limits.max_data_bytes:
            message = f"is {size} bytes serialized; the limit is {limits.max_data_bytes}"
            yield FieldError(index, "data", message)
    if total > limits.max_event_bytes:
        yield FieldError(
            index,
            "$",
            f"the event is {total} bytes serialized; the limit is {limits.max_event_bytes} "
            f"(of which `data` may take {limits.max_data_bytes})",
        )


def suspect(body: bytes, limits: Limits) -> bool:
    """Whether a body could hold what only a walk through every value finds (U+0000, a
    string or key over the limit, nesting past the limit, an unsafe or infinite number).

    JSON spells U+0000 only as an escape, a string longer than the limit needs a body that
    long, nesting needs brackets, and an unsafe number needs 16 digits or a 3-digit exponent:
    a body with none of these (almost every body) skips the walk.
    """
    return (
        b"\\u0000" in body
        or len(body) > limits.max_string_chars
        or body.count(b"{") + body.count(b"[") > limits.max_depth - 2
        or _LONG_NUMBER.search(body) is not None
    )


# A number in value position (after `:`, `[` or `,`) with 16 digits or a 3-digit exponent.
_LONG_NUMBER = re.compile(rb"[:\[,]\s*-?(?:[0-9]{16}|[0-9.]+[eE][+-]?[0-9]{3})")


def check_event(
    raw: Any, index: int, now: datetime, limits: Limits, *, walk: bool = True
) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """Validate one raw JSON value against the envelope.

    Returns the event in stored form (without `id` when absent, `received_at`, `publisher`)
    or the list of every problem found. `walk=False` skips the walk through every value (the
    caller knows from `suspect` that it cannot find anything).
    """
    try:
        event: EventIn | None = msgspec.convert(raw, EventIn)
    except msgspec.ValidationError:
        event = None
    problems = [] if event is not None else _schema_problems(raw, index)
    occurred_at: datetime | None = None
    if isinstance(raw, dict):
        when = raw.get("occurred_at")
        if isinstance(when, str):
            try:
                occurred_at = parse_timestamp(when)
            except ValueError as exc:
                problems.append(FieldError(index, "occurred_at", str(exc)))
        if walk:
            # What JSON allows but a stored record must not hold, in every free-form part.
            for name in ("actor", "subject", "action", "context", "data"):
                for path, message in _walk(raw.get(name), name, 2, limits):
                    problems.append(FieldError(index, path, message))
        problems.extend(FieldError(index, path, m) for path, m in _indexed_problems(raw))
        problems.extend(_size_problems(raw, index, limits))
    if occurred_at is not None:
        if occurred_at > now + limits.future_skew:
            skew = int(limits.future_skew.total_seconds())
            problems.append(
                FieldError(
                    index, "occurred_at", f"is more than {skew} s ahead of the server's clock"
                )
            )
        elif occurred_at < EARLIEST:
            problems.append(FieldError(index, "occurred_at", "is before 1970-01-01T00:00:00Z"))
    if problems or event is None or occurred_at is None:
        return None, problems
    return {
        "id": event.id.lower() if event.id else None,
        "type": event.type,
        "service": event.service,
        "occurred_at": format_timestamp(occurred_at),
        "actor": raw.get("actor"),
        "subject": raw.get("subject"),
        "action": event.action,
        "outcome": event.outcome,
        "context": event.context,
        "data": event.data,
    }, []


# --- CloudEvents 1.0 ------------------------------------------------------------------------
# Attributes mapped to the envelope; every other extension attribute lands in `context`.
CLOUDEVENT_ATTRIBUTES = {
    "source": "service",
    "time": "occurred_at",
    "subject": "subject.id",
    "subjecttype": "subject.type",
    "actorid": "actor.id",
    "actortype": "actor.type",
    "action": "action",
    "outcome": "outcome",
    "type": "type",
    "data": "data",
}
_FIELD_TO_ATTRIBUTE = {field: attr for attr, field in CLOUDEVENT_ATTRIBUTES.items()}
_JSON_CONTENT_TYPES = ("application/json", "text/json")
# Non-UUID CloudEvents ids become UUIDv5 in this namespace, from `source` and `id`, so that
# a redelivered CloudEvent deduplicates like any other event.
CLOUDEVENTS_NAMESPACE = uuid.UUID("6f1c8a5e-3d2b-5c4f-9a7e-1b0d2c3e4f50")


def cloudevent_id(source: str, event_id: str) -> str:
    """The envelope id of a CloudEvent: its own id if a UUID, else UUIDv5(source, id)."""
    try:
        return str(uuid.UUID(event_id)) if len(event_id) == 36 else _uuid5(source, event_id)
    except ValueError:
        return _uuid5(source, event_id)


def _uuid5(source: str, event_id: str) -> str:
    return str(uuid.uuid5(CLOUDEVENTS_NAMESPACE, f"{source}\n{event_id}"))


def _cloudevent_problems(raw: dict[str, Any], index: int) -> list[FieldError]:
    """What makes a CloudEvent unusable before its attributes are even mapped."""
    problems: list[FieldError] = []
    if raw.get("specversion") != "1.0":
        problems.append(FieldError(index, "specversion", 'must be "1.0"'))
    ce_id = raw.get("id")
    if not isinstance(ce_id, str) or not ce_id:
        problems.append(FieldError(index, "id", "is required: a non-empty string"))
    content_type = raw.get("datacontenttype")
    if content_type is not None:
        media = content_type.split(";")[0].strip() if isinstance(content_type, str) else ""
        if media not in _JSON_CONTENT_TYPES and not media.endswith("+json"):
            problems.append(FieldError(index, "datacontenttype", "must be a JSON media type"))
    if "data_base64" in raw:
        problems.append(FieldError(index, "data_base64", "binary data is not accepted; use data"))
    return problems


def from_cloudevent(raw: Any, index: int) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """Map a structured-mode CloudEvent to a raw envelope (still to be checked)."""
    if not isinstance(raw, dict):
        return None, [FieldError(index, "$", "must be a JSON object")]
    problems = _cloudevent_problems(raw, index)
    if problems:
        return None, problems
    ce_id = raw["id"]
    event: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {"actor": {}, "subject": {}, "context": {}}
    for key, value in raw.items():
        if key in ("specversion", "id", "datacontenttype"):
            continue
        # dataschema and every extension attribute without a mapping are kept in context.
        target = CLOUDEVENT_ATTRIBUTES.get(key, f"context.{key}")
        head, _, tail = target.partition(".")
        if tail:
            nested[head][tail] = value
        else:
            event[head] = value
    source = event.get("service")
    if isinstance(source, str):
        event["id"] = cloudevent_id(source, ce_id)
        if event["id"] != ce_id.lower():
            nested["context"]["cloudevents_id"] = ce_id
    event.update({name: part for name, part in nested.items() if part})
    return event, []


def cloudevent_field(field: str) -> str:
    """Name a problem by the CloudEvents attribute the producer sent, not our field."""
    head = field.split(".", 2)
    for candidate in (".".join(head[:2]), head[0]):
        if candidate in _FIELD_TO_ATTRIBUTE:
            rest = field[len(candidate) :]
            return _FIELD_TO_ATTRIBUTE[candidate] + rest
    return field
