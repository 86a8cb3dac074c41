"""Queries: get one event, walk a filtered list with a cursor, count events in time buckets."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson

from auditlog.canonical import format_timestamp, parse_timestamp
from auditlog.errors import InvalidQuery, NotFound
from auditlog.services.envelope import OUTCOMES
from auditlog.storage.events import BUCKET_ORIGIN, GROUP_KEYS, EventFilter, EventReader

# Bytes of HMAC-SHA256 a cursor carries: enough that a forged one is never accepted.
CURSOR_MAC_BYTES = 16

Params = Mapping[str, str | list[str]]
Order = Literal["asc", "desc"]

FILTER_PARAMS = (
    "service",
    "type",
    "actor_type",
    "actor_id",
    "subject_type",
    "subject_id",
    "action",
    "outcome",
    "trace_id",
    "publisher",
    "since",
    "until",
)
LIST_PARAMS = (*FILTER_PARAMS, "limit", "order", "cursor")
BUCKET_PARAMS = (*FILTER_PARAMS, "width", "group_by")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_BUCKETS = 10_000
_WIDTH = re.compile(r"([1-9][0-9]{0,4})([mhd])")
_WIDTH_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class Cursor:
    """Where a walk stands: the last (occurred_at, seq) returned, under a fixed snapshot.

    `snapshot` is the next seq when the walk began: only events with a smaller seq are part
    of the walk, so events committed meanwhile can neither repeat nor shift a page.
    """

    order: Order
    occurred_at: datetime
    seq: int
    snapshot: int
    query: str

    def encode(self, key: bytes) -> str:
        """The cursor as the client sees it: its fields, then their HMAC under the server's
        key, so that a cursor the server did not issue (or one with a field changed) is a
        400, not a walk from wherever the client likes."""
        body = _b64(
            orjson.dumps(
                {
                    "v": 1,
                    "o": self.order,
                    "t": format_timestamp(self.occurred_at),
                    "s": self.seq,
                    "n": self.snapshot,
                    "q": self.query,
                }
            )
        )
        return f"{body}.{_b64(_mac(key, body))}"

    @classmethod
    def decode(cls, token: str, key: bytes) -> Cursor:
        refused = InvalidQuery("cursor", "is not a cursor this server issued")
        body, _, mac = token.partition(".")
        try:
            if not hmac.compare_digest(_unb64(mac), _mac(key, body)):
                raise refused
            raw = orjson.loads(_unb64(body))
            if raw["v"] != 1 or raw["o"] not in ("asc", "desc"):
                raise ValueError("unknown version or order")
            cursor = cls(
                order=raw["o"],
                occurred_at=parse_timestamp(raw["t"]),
                seq=raw["s"],
                snapshot=raw["n"],
                query=raw["q"],
            )
            if not (
                isinstance(cursor.seq, int)
                and isinstance(cursor.snapshot, int)
                and isinstance(cursor.query, str)
            ):
                raise ValueError("malformed fields")
        except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
            raise refused from None
        return cursor


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> bytes:
    return hmac.digest(key, body.encode(), "sha256")[:CURSOR_MAC_BYTES]


def single_values(params: Params, allowed: tuple[str, ...]) -> dict[str, str]:
    """Each parameter once, known, non-empty and storable."""
    values: dict[str, str] = {}
    for name, value in params.items():
        if name not in allowed:
            known = f"known: {', '.join(allowed)}" if allowed else "this endpoint takes none"
            raise InvalidQuery(name, f"unknown parameter; {known}")
        if isinstance(value, list):
            raise InvalidQuery(name, "is given more than once")
        if value == "":
            raise InvalidQuery(name, "is empty")
        if "\x00" in value:
            raise InvalidQuery(name, "contains U+0000")
        values[name] = value
    return values


def no_parameters(params: Params) -> None:
    """An endpoint that takes no query parameters refuses any, rather than ignore them."""
    single_values(params, ())


def _timestamp(values: dict[str, str], name: str) -> datetime | None:
    if name not in values:
        return None
    try:
        return parse_timestamp(values[name])
    except ValueError as exc:
        raise InvalidQuery(name, str(exc)) from None


def event_filter(values: dict[str, str]) -> EventFilter:
    since, until = _timestamp(values, "since"), _timestamp(values, "until")
    if since is not None and until is not None and since >= until:
        raise InvalidQuery("since", "must be earlier than until (the range is [since, until))")
    outcome = values.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidQuery("outcome", f"must be one of {', '.join(OUTCOMES)}")
    type_exact = values.get("type")
    type_prefix: str | None = None
    if type_exact is not None and type_exact.endswith("*"):
        type_prefix = type_exact[:-1]
        type_exact = None
        if not type_prefix:
            raise InvalidQuery("type", "a prefix must come before the *, e.g. customer.*")
    return EventFilter(
        service=values.get("service"),
        type=type_exact,
        type_prefix=type_prefix,
        actor_type=values.get("actor_type"),
        actor_id=values.get("actor_id"),
        subject_type=values.get("subject_type"),
        subject_id=values.get("subject_id"),
        action=values.get("action"),
        outcome=outcome,
        trace_id=values.get("trace_id"),
        publisher=values.get("publisher"),
        since=since,
        until=until,
    )


def _order(values: dict[str, str]) -> Order:
    order = values.get("order", "desc")
    if order == "asc":
        return "asc"
    if order == "desc":
        return "desc"
    raise InvalidQuery("order", "must be asc or desc")


def _fingerprint(values: dict[str, str]) -> str:
    """Names the query a cursor belongs to, so it cannot be replayed against another."""
    relevant = {k: v for k, v in values.items() if k in FILTER_PARAMS}
    return hashlib.sha256(orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def parse_width(value: str) -> timedelta:
    match = _WIDTH.fullmatch(value)
    if match is None:
        raise InvalidQuery("width", "must be a number and a unit (m, h, d), e.g. 5m, 1h, 1d")
    width = int(match[1]) * _WIDTH_UNITS[match[2]]
    if width > timedelta(days=366):
        raise InvalidQuery("width", "must be at most 366d")
    return width


HOUR = timedelta(hours=1)
_HOURLY_FILTERS = ("service", "type", "type_prefix", "action", "outcome", "publisher")
_HOURLY_GROUPS = (None, "type", "service", "action", "outcome")


def can_count_hourly(flt: EventFilter, width: timedelta, group_by: str | None) -> bool:
    """Whether the writer's hourly counts answer this bucket query exactly."""
    on_the_hour = all(
        t is not None and t.minute == t.second == t.microsecond == 0 for t in (flt.since, flt.until)
    )
    other_filters = any(
        getattr(flt, f.name) is not None
        for f in fields(flt)
        if f.name not in (*_HOURLY_FILTERS, "since", "until")
    )
    return (
        on_the_hour
        and width % HOUR == timedelta(0)
        and not other_filters
        and (group_by in _HOURLY_GROUPS)
    )


def bucket_starts(since: datetime, until: datetime, width: timedelta) -> list[datetime]:
    """The start of every bucket that overlaps [since, until), aligned on BUCKET_ORIGIN."""
    try:
        first = BUCKET_ORIGIN + ((since - BUCKET_ORIGIN) // width) * width
    except OverflowError:
        # The first bucket would start before year 1, where no datetime exists.
        raise InvalidQuery(
            "since", "is too early for buckets of this width (before year 1)"
        ) from None
    count = -((first - until) // width)  # ceil((until - first) / width), without overflow
    if count > MAX_BUCKETS:
        raise InvalidQuery(
            "width", f"gives more than {MAX_BUCKETS} buckets; widen it or narrow the range"
        )
    return [first + n * width for n in range(count)]


class QueryService:
    """The read side of the log, for auditors."""

    def __init__(self, store: EventReader, *, cursor_key: bytes):
        self._store = store
        self._cursor_key = cursor_key

    async def get(self, event_id: str) -> dict[str, Any]:
        try:
            key = uuid.UUID(event_id)
        except ValueError:
            raise NotFound(f"no event has the id {event_id!r} (ids are UUIDs)") from None
        event = await self._store.get(key)
        if event is None:
            raise NotFound(f"no event has the id {event_id}")
        return event

    async def list(self, params: Params) -> Page:
        values = single_values(params, LIST_PARAMS)
        flt = event_filter(values)
        limit = self._limit(values)
        order = _order(values)
        query = _fingerprint(values)
        after: tuple[datetime, int] | None = None
        if "cursor" in values:
            cursor = Cursor.decode(values["cursor"], self._cursor_key)
            if cursor.order != order:
                raise InvalidQuery("cursor", f"was issued for order={cursor.order}")
            if cursor.query != query:
                raise InvalidQuery("cursor", "was issued for a query with other filters")
            snapshot, after = cursor.snapshot, (cursor.occurred_at, cursor.seq)
        else:
            snapshot = await self._store.next_seq()
        rows = await self._store.page(
            flt,
            order=order,
            limit=limit + 1,
            before_seq=snapshot,
            after=after,
        )
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = Cursor(
                order=order,
                occurred_at=parse_timestamp(last["occurred_at"]),
                seq=last["seq"],
                snapshot=snapshot,
                query=query,
            ).encode(self._cursor_key)
        return Page(events=rows, next_cursor=next_cursor)

    async def buckets(self, params: Params) -> dict[str, Any]:
        values = single_values(params, BUCKET_PARAMS)
        for required in ("since", "until"):
            if required not in values:
                raise InvalidQuery(required, "is required")
        flt = event_filter(values)
        assert flt.since is not None
        assert flt.until is not None
        width_name = values.get("width", "1h")
        width = parse_width(width_name)
        group_by = values.get("group_by")
        if group_by is not None and group_by not in GROUP_KEYS:
            raise InvalidQuery("group_by", f"must be one of {', '.join(GROUP_KEYS)}")
        starts = bucket_starts(flt.since, flt.until, width)
        if can_count_hourly(flt, width, group_by):
            counts = await self._store.hourly_bucket_counts(flt, width, group_by)
        else:
            counts = await self._store.bucket_counts(flt, width, group_by)
        by_key: dict[str | None, dict[datetime, int]] = {}
        for start, key, count in counts:
            by_key.setdefault(key, {})[start] = count
        buckets: list[dict[str, Any]] = []
        keys = sorted(by_key, key=lambda k: (k is None, k or "")) if group_by else [None]
        for start in starts:
            for key in keys:
                bucket: dict[str, Any] = {
                    "start": format_timestamp(start),
                    "count": by_key.get(key, {}).get(start, 0),
                }
                if group_by:
                    bucket["key"] = key
                buckets.append(bucket)
        return {"width": width_name, "group_by": group_by, "buckets": buckets}

    @staticmethod
    def _limit(values: dict[str, str]) -> int:
        raw = values.get("limit")
        if raw is None:
            return DEFAULT_LIMIT
        if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= MAX_LIMIT:
            raise InvalidQuery("limit", f"must be an integer from 1 to {MAX_LIMIT}")
        return int(raw)
