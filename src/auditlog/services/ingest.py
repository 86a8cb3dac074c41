"""Ingest: check a request's events, stamp them, and put them in the stream, all or nothing."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils
from pydantic_core import from_json

from auditlog.canonical import format_timestamp
from auditlog.errors import (
    BodyTooLarge,
    FieldError,
    Forbidden,
    InvalidEvents,
    MalformedBody,
    NotDurable,
)
from auditlog.services.auth import Principal
from auditlog.services.envelope import (
    Limits,
    check_event,
    cloudevent_field,
    from_cloudevent,
    suspect,
)
from auditlog.storage.ratelimit import Throttled
from auditlog.storage.stream_append import StreamAppender


class EnvelopeFormat(enum.Enum):
    """How the events in a request body are framed."""

    NATIVE = "application/json"
    CLOUDEVENT = "application/cloudevents+json"
    CLOUDEVENT_BATCH = "application/cloudevents-batch+json"


# A body larger than this is checked in a thread (a few milliseconds of CPU or more).
THREAD_BODY_BYTES = 256 * 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return str(uuid_utils.uuid7())


class IngestService:
    """Turns a request body into stored-form events in the stream, or says exactly why not."""

    def __init__(
        self,
        stream: StreamAppender,
        limits: Limits,
        *,
        max_events: int,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], str] = new_event_id,
    ):
        self._stream = stream
        self._limits = limits
        self._max_events = max_events
        self._clock = clock
        self._new_id = new_id

    async def submit(
        self,
        body: bytes,
        fmt: EnvelopeFormat,
        *,
        principal: Principal | None = None,
        request_id: str | None = None,
    ) -> list[str]:
        """Enqueue every event of the body and return their ids in input order.

        The principal's key name becomes each event's `publisher`; a write key may only send
        events of its own services (403), and its one service fills in a missing `service`.
        A large body is checked in a thread, so that the event loop goes on serving others
        meanwhile (between the GIL's switches).
        """
        if len(body) > THREAD_BODY_BYTES:
            events = await asyncio.to_thread(self._prepare, body, fmt, principal)
        else:
            events = self._prepare(body, fmt, principal)
        return await self._enqueue(events, principal, request_id)

    def _prepare(
        self, body: bytes, fmt: EnvelopeFormat, principal: Principal | None
    ) -> list[dict[str, Any]]:
        """The body's events in stored form, or why not (InvalidEvents, Forbidden, ...)."""
        items = self._items(body, fmt)
        if principal is not None and principal.default_service and fmt is EnvelopeFormat.NATIVE:
            for item in items:
                if isinstance(item, dict) and "service" not in item:
                    item["service"] = principal.default_service
        events = self._check(items, fmt, walk=suspect(body, self._limits))
        if principal is not None and principal.bound_services is not None:
            foreign = [i for i, e in enumerate(events) if e["service"] not in principal.services]
            if foreign:
                names = sorted({events[i]["service"] for i in foreign})
                allowed = ", ".join(sorted(principal.services))
                raise Forbidden(
                    f"key {principal.name!r} may send events of {allowed} only; event(s) "
                    f"{', '.join(map(str, foreign[:20]))} are of {', '.join(names)}"
                )
        return events

    async def record(self, events: list[dict[str, Any]], *, publisher: str) -> list[str]:
        """Enqueue events the service itself produces (already plain JSON values)."""
        return await self._enqueue(
            self._check(events, EnvelopeFormat.NATIVE), None, None, publisher=publisher
        )

    def _check(
        self, items: list[Any], fmt: EnvelopeFormat, *, walk: bool = True
    ) -> list[dict[str, Any]]:
        """Every item in stored form, or InvalidEvents with every problem of every item."""
        now = self._clock()
        events: list[dict[str, Any]] = []
        errors: list[FieldError] = []
        first_index: dict[str, int] = {}
        cloud = fmt is not EnvelopeFormat.NATIVE
        for index, item in enumerate(items):
            raw = item
            if cloud:
                raw, problems = from_cloudevent(item, index)
                if problems:
                    errors.extend(problems)
                    continue
            event, problems = check_event(raw, index, now, self._limits, walk=walk)
            if cloud:
                problems = [
                    FieldError(p.index, cloudevent_field(p.field), p.message) for p in problems
                ]
            errors.extend(problems)
            if event is None:
                continue
            if event["id"] is not None:
                seen = first_index.setdefault(event["id"], index)
                if seen != index:
                    errors.append(FieldError(index, "id", f"repeats the id of event {seen}"))
            events.append(event)
        if errors:
            raise InvalidEvents(errors)
        return events

    async def _enqueue(
        self,
        events: list[dict[str, Any]],
        principal: Principal | None,
        request_id: str | None,
        *,
        publisher: str | None = None,
    ) -> list[str]:
        """Stamp and append; the principal's rate-limit token is spent in the same step."""
        received_at = format_timestamp(self._clock())
        publisher = principal.name if principal else publisher
        for event in events:
            if event["id"] is None:
                event["id"] = self._new_id()
            event["received_at"] = received_at
            event["publisher"] = publisher
        ids = [e["id"] for e in events]
        try:
            await self._stream.append(
                [orjson.dumps(e) for e in events],
                request_id,
                principal.bucket if principal else None,
            )
        except Throttled as exc:
            assert principal is not None
            raise principal.rate_limited(exc.wait_s) from None
        except NotDurable as exc:
            # Queued, not confirmed: the client gets the ids to send them again with.
            raise NotDurable(str(exc), ids=ids, retry_after_s=exc.retry_after_s) from exc
        return ids

    def _items(self, body: bytes, fmt: EnvelopeFormat) -> list[Any]:
        if not body:
            raise MalformedBody("the body is empty; send an event or an array of events")
        # TODO(scale): duplicate keys in one object are not detected (the last one wins, and
        # that is what is stored and hashed); refusing them needs a parser that reports them.
        try:
            value = from_json(body, allow_inf_nan=False)
        except ValueError as exc:
            if "recursion limit exceeded" in str(exc):
                # Deeper than the parser goes (some 200 levels), far past any event's limit.
                raise MalformedBody(
                    f"the body is nested too deeply to read ({exc}); events may nest at most "
                    f"{self._limits.max_depth} levels"
                ) from None
            raise MalformedBody(f"the body is not valid JSON: {exc}") from None
        if isinstance(value, dict) and fmt is not EnvelopeFormat.CLOUDEVENT_BATCH:
            return [value]
        if isinstance(value, list) and fmt is not EnvelopeFormat.CLOUDEVENT:
            if not value:
                raise MalformedBody(f"the array is empty; send 1 to {self._max_events} events")
            if len(value) > self._max_events:
                raise BodyTooLarge(
                    f"{len(value)} events in one request; the limit is {self._max_events}"
                )
            return value
        expected = {
            EnvelopeFormat.NATIVE: "an event object or an array of events",
            EnvelopeFormat.CLOUDEVENT: "one CloudEvent object",
            EnvelopeFormat.CLOUDEVENT_BATCH: "an array of CloudEvent objects",
        }[fmt]
        raise MalformedBody(f"the body must be {expected}")
