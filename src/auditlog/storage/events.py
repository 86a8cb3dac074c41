"""The read side of the event log: every SELECT of `events` and its ledgers (asyncio)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auditlog.canonical import stored_event
from auditlog.errors import QueryTooCostly, Unavailable
from auditlog.storage.batch import COPY_COLUMNS
from auditlog.storage.counts import live_counts, open_starts
from auditlog.storage.schema import event_ids, events, tree_heads

log = structlog.get_logger("auditlog.store")


QUERY_CANCELED = "57014"  # SQLSTATE of a statement cancelled by statement_timeout

# time_bucket's own default origin for intervals without months (a Monday, midnight UTC);
# passed explicitly so that the zero-filled series computed in Python lines up with it.
BUCKET_ORIGIN = datetime.fromisoformat("2000-01-03T00:00:00+00:00")

GROUP_KEYS: dict[str, ColumnElement[Any]] = {
    "type": events.c.type,
    "service": events.c.service,
    "action": events.c.action,
    "outcome": events.c.outcome,
    "actor_id": literal_column("(actor ->> 'id')"),
}


@dataclass(frozen=True)
class BucketCounts:
    """(bucket start, group key, kept, count) for every non-empty bucket; `kept` False rows
    sum the groups past the top ones (their key is None). `groups`: the kept keys, most
    events first; `others`: how many groups were summed."""

    rows: list[tuple[datetime, str | None, bool, int]]
    groups: list[str | None]
    others: int


@dataclass(frozen=True)
class EventFilter:
    """Conditions of a list, export or bucket query; None means no condition."""

    service: str | None = None
    type: str | None = None
    type_prefix: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    trace_id: str | None = None
    publisher: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # Not a client's filter: events of this type prefix are left out (what a key may not read).
    hidden_type_prefix: str | None = None


def _json_path(column: str, key: str) -> ColumnElement[Any]:
    # Spelled as the index expressions are, so the planner matches them.
    return literal_column(f"({column} ->> '{key}')")


_JSON_FILTERS = {
    "actor_type": _json_path("actor", "type"),
    "actor_id": _json_path("actor", "id"),
    "subject_type": _json_path("subject", "type"),
    "subject_id": _json_path("subject", "id"),
    "trace_id": _json_path("context", "trace_id"),
}


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with prefix (C collation:
    UTF-8 bytes, i.e. code point order), or None when there is none (all U+10FFFF)."""
    chars = list(prefix)
    while chars:
        following = ord(chars.pop()) + 1
        if following <= sys.maxunicode:
            if 0xD800 <= following <= 0xDFFF:  # surrogates are not characters
                following = 0xE000
            return "".join(chars) + chr(following)
    return None


def prefix_range(column: ColumnElement[str], prefix: str) -> list[ColumnElement[bool]]:
    """column starts with prefix, as a range an index on column can serve."""
    upper = prefix_upper_bound(prefix)
    return [column >= prefix] if upper is None else [column >= prefix, column < upper]


def conditions(flt: EventFilter) -> list[ColumnElement[bool]]:
    c = events.c
    where: list[ColumnElement[bool]] = []
    for name in ("service", "type", "action", "outcome", "publisher"):
        value = getattr(flt, name)
        if value is not None:
            where.append(c[name] == value)
    if flt.type_prefix:
        where += prefix_range(c.type, flt.type_prefix)
    for name, expression in _JSON_FILTERS.items():
        value = getattr(flt, name)
        if value is not None:
            where.append(expression == value)
    if flt.hidden_type_prefix:
        where.append(not_(and_(*prefix_range(c.type, flt.hidden_type_prefix))))
    if flt.since is not None:
        where.append(c.occurred_at >= flt.since)
    if flt.until is not None:
        where.append(c.occurred_at < flt.until)
    return where


_EVENT_COLUMNS = [events.c[name] for name in COPY_COLUMNS]


class EventReader:
    """Every read of the log, through the reader role's async engine."""

    def __init__(self, reader: AsyncEngine):
        self._reader = reader

    async def close(self) -> None:
        await self._reader.dispose()

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A reader connection; a database that does not answer is Unavailable, not a 500,
        and a query cancelled for its time (statement_timeout) is QueryTooCostly."""
        try:
            async with self._reader.connect() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            if getattr(getattr(exc, "orig", None), "sqlstate", None) == QUERY_CANCELED:
                raise QueryTooCostly(
                    "the query ran longer than this service allows a read; narrow it (a "
                    "shorter since/until range, more filters, wider buckets or fewer groups)"
                ) from exc
            raise Unavailable("the database does not answer; try again shortly") from exc

    async def ping(self) -> None:
        async with self._read() as conn:
            await conn.execute(text("SELECT 1"))

    async def next_seq(self) -> int:
        """The seq the next stored event will get: every smaller seq is committed.

        Each batch records its tree head in the transaction that stores it, so the latest
        head's size is exactly the number of committed events.
        """
        async with self._read() as conn:
            size = await conn.scalar(
                select(tree_heads.c.tree_size).order_by(tree_heads.c.tree_size.desc()).limit(1)
            )
            if size is None:  # no head yet (an empty log, or one hashed by migration 0002)
                last = await conn.scalar(select(func.max(events.c.seq)))
                return 0 if last is None else int(last) + 1
        return int(size)

    async def find(
        self, event_id: uuid.UUID, *, service: str | None = None
    ) -> list[dict[str, Any]]:
        """The events with this id (one per service that used it; of `service` only, if
        given), in seq order: their occurred_at from the ledger, then their chunks.

        Two statements on purpose: with the times as constants the planner excludes every
        other chunk before planning them (a subquery would leave that to run time, after
        planning a scan of every chunk: milliseconds on a month of daily chunks).
        """
        route = select(event_ids.c.service, event_ids.c.occurred_at).where(
            event_ids.c.id == event_id
        )
        if service is not None:
            route = route.where(event_ids.c.service == service)
        async with self._read() as conn:
            found = (await conn.execute(route)).all()
            if not found:
                return []
            query = (
                select(*_EVENT_COLUMNS)
                .where(
                    events.c.occurred_at.in_(sorted({row.occurred_at for row in found})),
                    events.c.id == event_id,
                    events.c.service.in_([row.service for row in found]),
                )
                .order_by(events.c.seq)
            )
            rows = (await conn.execute(query)).all()
        return [stored_event(row) for row in rows]

    async def page(
        self,
        flt: EventFilter,
        *,
        order: Literal["asc", "desc"],
        limit: int,
        before_seq: int,
        after: tuple[datetime, int] | None = None,
    ) -> list[dict[str, Any]]:
        """One page in (occurred_at, seq) order, among events with seq < before_seq.

        `after` is the (occurred_at, seq) of the last event of the previous page: the keyset.
        """
        where = [*conditions(flt), events.c.seq < before_seq]
        key = tuple_(events.c.occurred_at, events.c.seq)
        if after is not None:
            where.append(key > tuple_(*after) if order == "asc" else key < tuple_(*after))
        if order == "asc":
            ordering = (events.c.occurred_at.asc(), events.c.seq.asc())
        else:
            ordering = (events.c.occurred_at.desc(), events.c.seq.desc())
        query = select(*_EVENT_COLUMNS).where(and_(*where)).order_by(*ordering).limit(limit)
        return await self._events(query)

    async def _events(self, query: Any) -> list[dict[str, Any]]:
        async with self._read() as conn:
            return [stored_event(row) for row in await conn.execute(query)]

    async def bucket_counts(
        self, flt: EventFilter, width: timedelta, group_by: str | None, *, top: int
    ) -> BucketCounts:
        """Counts per bucket (and group) of the events themselves."""
        start = func.time_bucket(literal(width), events.c.occurred_at, literal(BUCKET_ORIGIN))
        key = GROUP_KEYS[group_by] if group_by else None
        return await self._series(start, key, func.count(), conditions(flt), top)

    async def hourly_bucket_counts(
        self, flt: EventFilter, width: timedelta, group_by: str | None, *, top: int
    ) -> BucketCounts:
        """bucket_counts from the writer's hourly counts: the same answer when the range
        starts and ends on whole hours, the width is whole hours and every filter and the
        group are columns of event_counts (see `can_count_hourly`)."""
        async with self._read() as conn:  # first, as constants (storage/counts.py)
            starts = [int(start) for start in (await conn.execute(open_starts())).one()]
        c = live_counts(starts).c
        start = func.time_bucket(literal(width), c.hour, literal(BUCKET_ORIGIN))
        key: ColumnElement[Any] | None = None
        if group_by in ("action", "publisher"):
            key = func.nullif(c[group_by], "")
        elif group_by:
            key = c[group_by]
        where: list[ColumnElement[bool]] = [c.hour >= flt.since, c.hour < flt.until]
        for name in ("service", "type", "outcome"):
            if getattr(flt, name) is not None:
                where.append(c[name] == getattr(flt, name))
        for name in ("action", "publisher"):
            if getattr(flt, name) is not None:
                where.append(c[name] == getattr(flt, name))
        if flt.type_prefix:
            where += prefix_range(c.type, flt.type_prefix)
        if flt.hidden_type_prefix:
            where.append(not_(and_(*prefix_range(c.type, flt.hidden_type_prefix))))
        return await self._series(start, key, func.sum(c.n), where, top)

    async def _series(
        self,
        start: ColumnElement[Any],
        key: ColumnElement[Any] | None,
        amount: ColumnElement[Any],
        where: list[ColumnElement[bool]],
        top: int,
    ) -> BucketCounts:
        """The non-empty buckets of a range, per group for the `top` groups with the most
        events (the rest summed per bucket): the answer is bounded by buckets × (top + 1)
        rows, however many groups there are. Two statements: the groups (with how many there
        are), then the series with the kept groups as constants."""
        async with self._read() as conn:
            if key is None:
                rows = await conn.execute(
                    select(start.label("start"), amount.label("n"))
                    .where(*where)
                    .group_by(text("1"))
                    .order_by(text("1"))
                )
                return BucketCounts([(row.start, None, True, int(row.n)) for row in rows], [], 0)
            ranked = await conn.execute(
                select(key.label("k"), func.count().over().label("groups"))
                .where(*where)
                .group_by(key)
                .order_by(amount.desc(), key.asc().nulls_last())
                .limit(top)
            )
            ranking = ranked.all()
            kept = [row.k for row in ranking]
            groups = int(ranking[0].groups) if ranking else 0
            named = [k for k in kept if k is not None]
            is_kept: ColumnElement[bool] = key.in_(named) if named else literal(False)
            if None in kept:
                is_kept = or_(is_kept, key.is_(None))
            is_kept = func.coalesce(is_kept, False)
            rows = await conn.execute(
                select(
                    start.label("start"),
                    case((is_kept, key)).label("key"),
                    is_kept.label("kept"),
                    amount.label("n"),
                )
                .where(*where)
                .group_by(text("1"), text("2"), text("3"))
                # One order for one answer: by bucket, then the kept groups by name, then
                # the rest (two runs of a query give the same rows in the same order).
                .order_by(text("1"), text("3 DESC"), text("2 ASC NULLS LAST"))
            )
            return BucketCounts(
                [(row.start, row.key, bool(row.kept), int(row.n)) for row in rows],
                kept,
                max(0, groups - len(kept)),
            )

    # --- tail and export --------------------------------------------------------------------
    async def newest(self, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]:
        """The `limit` matching events with the highest seq, newest first (the tail)."""
        query = (
            select(*_EVENT_COLUMNS)
            .where(*conditions(flt))
            .order_by(events.c.seq.desc())
            .limit(limit)
        )
        return await self._events(query)

    async def after(self, seq: int, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]:
        """The first `limit` matching events with a seq above `seq`, in seq order (follow)."""
        query = (
            select(*_EVENT_COLUMNS)
            .where(*conditions(flt), events.c.seq > seq)
            .order_by(events.c.seq.asc())
            .limit(limit)
        )
        return await self._events(query)

    async def export(
        self, flt: EventFilter, *, fetch_rows: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every matching event in (occurred_at, seq) order, read through a server-side
        cursor, `fetch_rows` at a time (one list each): memory stays flat however many match.

        One statement, so one snapshot. The connection is held until the iterator is
        exhausted or closed (aclose).
        """
        query = (
            select(*_EVENT_COLUMNS)
            .where(*conditions(flt))
            .order_by(events.c.occurred_at.asc(), events.c.seq.asc())
        )
        async with self._read() as conn:
            # A server-side cursor lives in a transaction (the read path runs in autocommit).
            snapshot = await conn.execution_options(isolation_level="REPEATABLE READ")
            result = await snapshot.stream(query.execution_options(yield_per=fetch_rows))
            try:
                async for rows in result.partitions():
                    yield [stored_event(row) for row in rows]
            finally:
                await result.close()  # the server-side cursor, before its connection goes back
