"""The live tail: the newest committed events, from the Redis cache when it can vouch for
the whole answer, else from the database; and `follow`, the same as a stream.

The cache only ever holds committed events (the writer adds a batch after its COMMIT), and
tells which seq range it holds completely (storage/tail.py). An answer comes from it only
when that range is enough to answer exactly; in every other case (cold, behind, trimmed,
a type too rare for the cached window, Redis away) the database gives the same answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import orjson
import structlog

from auditlog.errors import InvalidQuery, Unavailable
from auditlog.metrics_tail import (
    MISS_BEHIND,
    MISS_COLD,
    MISS_RANGE,
    MISS_SHORT,
    TAIL_FALLBACKS,
    TAIL_HITS,
    TAIL_MISSES,
    TAIL_UPDATE_FAILURES,
)
from auditlog.services.queries import Params, event_filter, single_values
from auditlog.services.streams import ClosingStream, KeyCheck, Slots, StillAllowed
from auditlog.storage.event_writer import WriteResult
from auditlog.storage.events import EventFilter, EventReader
from auditlog.storage.tail import CacheUnavailable, TailCache, TailReader

log = structlog.get_logger("auditlog.tail")

TAIL_PARAMS = ("service", "type", "limit")
DEFAULT_TAIL_LIMIT = 100
# After Redis fails, reads skip the cache this long instead of each paying a timeout.
CACHE_PAUSE_S = 1.0
# Events a follower sends per round; a full round is followed at once by the next.
FOLLOW_BATCH = 500
# A comment (with the position reached) when nothing else was sent for this long, so
# proxies keep the connection and a closed client is noticed.
HEARTBEAT_S = 15.0
# What a browser's EventSource waits before it reconnects (it sends Last-Event-ID).
RECONNECT_MS = 1000
# How often (at most) a process compares the cache's newest seq with the database's.
HEAD_CHECK_S = 1.0

Source = Literal["cache", "database"]
T = TypeVar("T")


@dataclass(frozen=True)
class TailAnswer:
    """The newest matching events (each its JSON, newest first) and the answer's ETag."""

    events: list[bytes]
    etag: str
    source: Source


class TailUpdater:
    """The batch writer's on_commit hook: adds each committed batch to the cache."""

    def __init__(self, cache: TailCache):
        self._cache = cache

    def record_batch(self, result: WriteResult) -> None:
        try:
            self._cache.record(result.stored)
        except CacheUnavailable:
            # The batch is committed all the same; the cache notices the hole it leaves
            # (its range stops short of the next batch, or BehindGuard in a quiet log) and
            # readers fall back until it refills.
            # TODO(ops): the hole is noticed, not filled: a reconciliation (the watchdog
            # compares the database's newest seq with the cache's and copies what is
            # missing) would make the cache useful again at once.
            TAIL_UPDATE_FAILURES.inc()
            raise


class BehindGuard:
    """Notices a cache behind the database.

    A batch whose hook never ran (the writer died between COMMIT and hook, or Redis failed
    just then) is invisible to the cache until the next batch shows the hole, which in a
    quiet log may take long. So at most every HEAD_CHECK_S this process reads the newest
    seq in the database (one indexed query): while the cache has not reached it, reads go
    to the database. A lost batch is thus in the tail within HEAD_CHECK_S; a check that
    lands between a COMMIT and its hook merely sends a few reads to the database.
    """

    def __init__(self, database_last: Callable[[], Awaitable[int]], clock: Callable[[], float]):
        self._database_last = database_last
        self._clock = clock
        self._next_check = 0.0
        self._behind_until: int | None = None  # the cache is behind until it has this seq

    async def behind(self, cache_last: int) -> bool:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + HEAD_CHECK_S
            try:
                database_last = await self._database_last()
            except Unavailable:
                database_last = -1  # the database's trouble is for the fallback to meet
            if cache_last < database_last:
                self._behind_until = max(self._behind_until or -1, database_last)
        if self._behind_until is not None and cache_last >= self._behind_until:
            self._behind_until = None
        return self._behind_until is not None


def answer_etag(seqs: list[int]) -> str:
    """A weak ETag naming the answer itself: events never change, so their seqs name it.

    Weak because the bytes of one answer may differ by source (the cache keeps an event's
    objects in the order the producer sent; PostgreSQL's JSONB returns them in its own).
    """
    digest = hashlib.blake2b(orjson.dumps(seqs), digest_size=12).hexdigest()
    return f'W/"tail-{digest}"'


class TailService:
    """Reads the tail for auditors: one answer (`tail`) or a stream of them (`follow`)."""

    def __init__(
        self,
        cache: TailReader,
        store: EventReader,
        *,
        size: int,
        follow_max_s: float,
        follow_max_per_process: int,
        follow_max_per_key: int,
        follow_poll_s: float,
        key_check_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._cache = cache
        self._store = store
        self._size = size
        self._follow_max_s = follow_max_s
        self._follow_poll_s = follow_poll_s
        self._key_check_s = key_check_s
        self._followers = Slots("followers", follow_max_per_process, per_key=follow_max_per_key)
        self._clock = clock
        self._sleep = sleep
        self._cache_paused_until = 0.0
        self._guard = BehindGuard(self._database_last, clock)

    async def _database_last(self) -> int:
        return await self._store.next_seq() - 1

    @property
    def followers(self) -> int:
        return self._followers.held

    async def close(self) -> None:
        await self._cache.close()

    # --- one answer -------------------------------------------------------------------------
    async def tail(self, params: Params) -> TailAnswer:
        """The `limit` most recently committed matching events, newest first."""
        values = single_values(params, TAIL_PARAMS)
        flt = event_filter(values)
        limit = self._limit(values)
        found = await self._cached_newest(flt, limit)
        if found is not None:
            events = [member for _, member in found]
            return TailAnswer(events, answer_etag([seq for seq, _ in found]), "cache")
        rows = await self._store.newest(flt, limit=limit)
        return TailAnswer(
            [orjson.dumps(row) for row in rows],
            answer_etag([row["seq"] for row in rows]),
            "database",
        )

    async def _cached_newest(self, flt: EventFilter, limit: int) -> list[tuple[int, bytes]] | None:
        """The answer from the cache if it can vouch for all of it, else None."""
        answered, cached = await self._read_cache(
            lambda: self._cache.newest(
                flt.service, limit=limit, type_exact=flt.type, type_prefix=flt.type_prefix
            ),
            "tail",
        )
        if not answered:
            return None
        if cached is None:
            TAIL_MISSES.labels(read="tail", reason=MISS_COLD).inc()
            return None
        if await self._guard.behind(cached.last):
            TAIL_MISSES.labels(read="tail", reason=MISS_BEHIND).inc()
            return None
        complete = len(cached.events) == limit or (
            # Fewer than asked: right only if the cache holds this set's whole history.
            cached.exhausted and cached.first == 0 and cached.trimmed_upto < 0
        )
        if not complete:
            TAIL_MISSES.labels(read="tail", reason=MISS_SHORT).inc()
            return None
        TAIL_HITS.labels(read="tail").inc()
        return cached.events

    async def _read_cache(
        self, read: Callable[[], Awaitable[T]], kind: str
    ) -> tuple[bool, T | None]:
        """(True, what the cache said), or (False, None) when Redis does not answer."""
        if self._clock() < self._cache_paused_until:
            TAIL_FALLBACKS.labels(read=kind).inc()
            return False, None
        try:
            return True, await read()
        except CacheUnavailable as exc:
            self._cache_paused_until = self._clock() + CACHE_PAUSE_S
            log.warning("tail cache unavailable; reading the database", error=str(exc))
            TAIL_FALLBACKS.labels(read=kind).inc()
            return False, None

    def _limit(self, values: dict[str, str]) -> int:
        raw = values.get("limit")
        if raw is None:
            return min(DEFAULT_TAIL_LIMIT, self._size)
        if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= self._size:
            raise InvalidQuery("limit", f"must be an integer from 1 to {self._size}")
        return int(raw)

    # --- a stream ---------------------------------------------------------------------------
    async def follow(
        self,
        params: Params,
        last_event_id: str | None,
        *,
        key: str,
        still_allowed: StillAllowed,
    ) -> ClosingStream:
        """Server-Sent Events: each matching event as it commits, from after last_event_id
        (a seq or an event id) or from now. Ends after follow_max_s, or when `still_allowed`
        says the key was revoked; the client reconnects with the Last-Event-ID it was last
        sent and misses nothing."""
        values = single_values(params, ("service", "type"))
        flt = event_filter(values)
        release = self._followers.acquire(key)
        try:
            start = await self._start(last_event_id)
        except BaseException:
            release()
            raise
        deadline = self._clock() + self._follow_max_s
        check = KeyCheck(still_allowed, self._key_check_s, self._clock)
        return ClosingStream(self._follow(flt, start, deadline, check), release)

    async def _start(self, last_event_id: str | None) -> int:
        """The seq after which to begin: the one named, or the newest committed."""
        if last_event_id is None or last_event_id.strip() == "":
            _, head = await self._read_cache(self._cache.head, "follow")
            if head is not None:
                return head
            return await self._store.next_seq() - 1
        value = last_event_id.strip()
        if re.fullmatch(r"-1|[0-9]{1,18}", value):
            return int(value)
        try:
            event_id = uuid.UUID(value)
        except ValueError:
            raise InvalidQuery(
                "Last-Event-ID", "must be a seq or an event id (a UUID) this server sent"
            ) from None
        event = await self._store.get(event_id)
        if event is None:
            raise InvalidQuery("Last-Event-ID", f"no stored event has the id {value}")
        return int(event["seq"])

    async def _follow(
        self, flt: EventFilter, position: int, deadline: float, check: KeyCheck
    ) -> AsyncIterator[bytes]:
        yield f"retry: {RECONNECT_MS}\nid: {position}\n\n".encode()
        quiet_since = self._clock()
        while self._clock() < deadline:
            if not await check.allowed():
                yield b": the key was revoked\n\n"
                return
            try:
                batch, position = await self._next_after(flt, position)
            except Unavailable:
                # Neither the cache nor the database could answer: try again next round
                # rather than cut the stream (heartbeats go on meanwhile).
                batch = []
            if batch:
                yield b"".join(b"id: %d\ndata: %s\n\n" % (seq, member) for seq, member in batch)
                quiet_since = self._clock()
                if len(batch) == FOLLOW_BATCH:
                    continue
            elif self._clock() - quiet_since >= HEARTBEAT_S:
                # An id alone moves the client's Last-Event-ID without an event.
                yield b": still following\nid: %d\n\n" % position
                quiet_since = self._clock()
            await self._sleep(min(self._follow_poll_s, max(0.0, deadline - self._clock())))
        yield b": time limit reached; reconnect with Last-Event-ID\nid: %d\n\n" % position

    async def _next_after(
        self, flt: EventFilter, position: int
    ) -> tuple[list[tuple[int, bytes]], int]:
        """The next matching events after `position`, and the position reached."""
        # TODO(scale): followers poll the cache every follow_poll_s; with many of them, let
        # the writer's hook publish each commit (pub/sub) and wake them instead.
        answered, cached = await self._read_cache(
            lambda: self._cache.after(
                flt.service,
                position,
                limit=FOLLOW_BATCH,
                type_exact=flt.type,
                type_prefix=flt.type_prefix,
            ),
            "follow",
        )
        if cached is not None and await self._guard.behind(cached.last):
            TAIL_MISSES.labels(read="follow", reason=MISS_BEHIND).inc()
        elif cached is not None:
            if cached.exhausted:
                TAIL_HITS.labels(read="follow").inc()
                # Everything up to the range's end was examined: that is the position now.
                return cached.events, max(position, cached.last)
            if cached.events:
                TAIL_HITS.labels(read="follow").inc()
                return cached.events, cached.events[-1][0]
            TAIL_MISSES.labels(read="follow", reason=MISS_RANGE).inc()
        elif answered:
            TAIL_MISSES.labels(read="follow", reason=MISS_COLD).inc()
        rows = await self._store.after(position, flt, limit=FOLLOW_BATCH)
        batch = [(row["seq"], orjson.dumps(row)) for row in rows]
        return batch, batch[-1][0] if batch else position
