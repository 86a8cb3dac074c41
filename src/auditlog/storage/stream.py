"""The ingest stream: a Redis Stream with one consumer group of batch writers.

An entry is added (XADD) before the API answers 202 and removed (XACK + XDEL) only after the
batch holding it has committed. Between the two it is either waiting or pending for exactly
one consumer, so a writer that dies leaves its entries pending, to be read again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog

from auditlog.errors import NotDurable, Overloaded, Unavailable
from auditlog.storage.ratelimit import BUCKET_LUA, Bucket, RateLimiter, Throttled

log = structlog.get_logger("auditlog.stream")

GROUP = "writers"
# How long an answer to "does this Redis put writes on disk, and how do we wait for it" is
# trusted before it is asked again (CONFIG SET can change it while Redis runs).
PERSISTENCE_CHECK_S = 10.0

# The appends of several requests in one round trip (see Coalescer). For each request, in
# order: spend its sender's rate-limit token (KEYS[1 + i]; no rate given: no limit), check
# the backlog, append all of its events or none. The answer holds one reply per request: the
# entry ids, the wait in ms (negated) of an empty bucket, or 0 for a full backlog.
# ARGV: backlog limit, then per request: request id, rate, burst, n, then its n payloads.
_APPEND = (
    BUCKET_LUA
    + """
local limit = tonumber(ARGV[1])
local depth = redis.call('XLEN', KEYS[1])
local replies = {}
local at = 2
for r = 2, #KEYS do
  local rid, rate, burst, n = ARGV[at], ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  local first = at + 4
  at = first + n
  local reply = nil
  if rate ~= '' then
    local wait = take(KEYS[r], tonumber(rate), tonumber(burst))
    if wait > 0 then reply = -wait end
  end
  if reply == nil and depth + n > limit then reply = 0 end
  if reply == nil then
    reply = {}
    for i = first, at - 1 do
      if rid == '' then
        reply[#reply + 1] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
      else
        reply[#reply + 1] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i], 'r', rid)
      end
    end
    depth = depth + n
  end
  replies[#replies + 1] = reply
end
return replies
"""
)
# A group holds whole requests, up to about this many events (one request may hold more).
GROUP_EVENTS_MAX = 2000


@dataclass(eq=False)
class _Append:
    """One request's events, waiting to go to Redis with other requests' events."""

    payloads: list[bytes]
    request_id: str
    bucket: Bucket | None
    ready: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    # The entry ids, the script's refusal (an int), or what went wrong.
    reply: list[bytes] | int | BaseException | None = None


@contextmanager
def answering(what: str) -> Iterator[None]:
    """Redis not answering (refused, dropped, timed out, still loading its data) is
    Unavailable: the callers retry it, as they do a database outage."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unavailable(f"Redis does not answer ({what}): {exc}") from exc


@dataclass(frozen=True)
class Entry:
    """One stream entry: its id, the serialized event and the request that sent it."""

    entry_id: str
    payload: bytes | None
    request_id: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    payload: bytes | None
    error: str


class EventStream:
    """XADD at the edge; XREADGROUP, XACK/XDEL, XAUTOCLAIM and a dead-letter stream behind."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        backlog_limit: int,
        buckets: RateLimiter,
        fsync_timeout_ms: int | None = None,
    ):
        # redis-py types replies as unions of every encoding; the replies are parsed here.
        self._redis: Any = client
        self.key = key
        self.dead_key = f"{key}:dead"
        self._backlog_limit = backlog_limit
        self._buckets = buckets
        self._append = client.register_script(_APPEND)
        self._fsync_timeout_ms = fsync_timeout_ms
        self._persistence: tuple[str, float] | None = None  # (how to wait, when checked)
        # Requests waiting for a round trip, and whether one is under way (see append).
        self._group_lock = threading.Lock()
        self._waiting: list[_Append] = []
        self._sending = False

    # --- producer side ---------------------------------------------------------------------
    def append(
        self,
        payloads: list[bytes],
        request_id: str | None = None,
        bucket: Bucket | None = None,
    ) -> list[str]:
        """Add every payload or none; refuse when the backlog would pass its limit, or
        (Throttled) when `bucket` is empty.

        Returning means Redis holds the entries in memory; how durable that is depends on
        Redis's own persistence (appendonly, see docs/DESIGN.md). Built with
        fsync_timeout_ms, returning means Redis has them on disk (fsynced), and NotDurable
        means they are queued but that was not confirmed in time.

        Concurrent calls (the threads of one API process) share round trips: the first
        caller sends its own events and those of every caller that arrives meanwhile wait
        for the next round trip, sent by the first of them (group commit). Each request is
        still all or nothing, refused or throttled on its own; at one request at a time
        nothing waits. A round trip costs the API process and Redis far more CPU than the
        events in it, so under load this is most of the ingest path's cost.
        """
        mine = _Append(payloads, request_id or "", bucket)
        with self._group_lock:
            self._waiting.append(mine)
            mine.leads = not self._sending
            self._sending = True
        if not mine.leads:
            mine.ready.wait()  # for the reply, or to lead the next round trip
        if mine.leads:
            self._send_next_group()
        return self._answer(mine)

    def _send_next_group(self) -> None:
        """Send the waiting requests (the caller's first) and wake their callers; hand the
        lead to the first of those that arrived meanwhile."""
        with self._group_lock:
            size = count = 0
            for waiting in self._waiting:
                if count and size + len(waiting.payloads) > GROUP_EVENTS_MAX:
                    break
                size += len(waiting.payloads)
                count += 1
            group, self._waiting = self._waiting[:count], self._waiting[count:]
        try:
            self._send(group)
        except Exception as exc:  # every caller in the group gets it, not only this one
            for request in group:
                if request.reply is None:
                    request.reply = exc
        finally:
            with self._group_lock:
                successor = self._waiting[0] if self._waiting else None
                if successor is None:
                    self._sending = False
                else:
                    successor.leads = True
            for sent in group:
                sent.leads = False
                sent.ready.set()
            if successor is not None:
                successor.ready.set()

    def _send(self, group: list[_Append]) -> None:
        """One script call for the group; each request gets its own reply."""
        keys = [self.key]
        args: list[Any] = [self._backlog_limit]
        for request in group:
            bucket = request.bucket
            keys.append(self._buckets.key(bucket.name) if bucket else self.key)
            limit = (bucket.rate_per_s, bucket.burst) if bucket else ("", "")
            args += [request.request_id, *limit, len(request.payloads), *request.payloads]
        unconfirmed: str | None = None
        try:
            if self._fsync_timeout_ms is None:
                replies = self._append(keys=keys, args=args)
            else:
                replies, unconfirmed = self._append_fsynced(keys, args, self._fsync_timeout_ms)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            for request in group:
                request.reply = Unavailable(f"the event queue (Redis) does not answer: {exc}")
            return
        for request, reply in zip(group, replies, strict=True):
            if unconfirmed is not None and isinstance(reply, list):
                request.reply = NotDurable(unconfirmed)
            else:
                request.reply = reply

    def _answer(self, request: _Append) -> list[str]:
        reply = request.reply
        if isinstance(reply, list):
            return [i.decode() for i in reply]
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, int) and reply < 0:
            raise Throttled(-reply / 1000)
        if reply == 0:
            # TODO(ops): Retry-After is a constant; derive it from the drain rate and depth.
            raise Overloaded(f"more than {self._backlog_limit} events are waiting to be written", 5)
        raise RuntimeError(f"unexpected reply of the append script: {reply!r}")

    def _append_fsynced(
        self, keys: list[str], args: list[Any], timeout_ms: int
    ) -> tuple[Any, str | None]:
        """The script's replies, and why the appended events are not confirmed on disk
        (None: they are)."""
        if self._wait_for_disk() == "always":
            # appendfsync always: Redis writes and fsyncs its AOF before it sends any reply,
            # so the script's answer is the confirmation.
            return self._append(keys=keys, args=args), None
        # WAITAOF waits for this connection's own writes: one pipeline, one connection.
        with self._redis.pipeline(transaction=False) as pipe:
            self._append(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAITAOF", 1, 0, timeout_ms)
            replies, fsynced = pipe.execute(raise_on_error=False)
        if isinstance(replies, Exception):
            raise replies
        if isinstance(fsynced, Exception):  # e.g. appendonly switched off meanwhile
            self._persistence = None
            return replies, f"the events are queued, but Redis cannot confirm them: {fsynced}"
        if int(fsynced[0]) < 1:
            return replies, (
                f"the events are queued, but Redis did not confirm them on disk within "
                f"{timeout_ms} ms"
            )
        return replies, None

    def _wait_for_disk(self) -> str:
        """How to know an append is on disk: "waitaof" or "always"; Unavailable if this
        Redis cannot say (no AOF, or an old Redis that does not fsync every write)."""
        now = time.monotonic()
        if self._persistence is not None and now - self._persistence[1] < PERSISTENCE_CHECK_S:
            return self._persistence[0]
        if not int(self._redis.info("persistence").get("aof_enabled", 0)):
            raise self._cannot_confirm("appendonly is off")
        try:
            self._redis.execute_command("WAITAOF", 0, 0, 0)  # a no-op where it exists
            how = "waitaof"
        except redis.ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            try:  # Redis < 7.2: only appendfsync always confirms every write
                policy = self._redis.config_get("appendfsync").get("appendfsync")
            except redis.ResponseError:  # CONFIG disabled or renamed
                policy = None
            if policy != "always":
                version = self._redis.info("server").get("redis_version", "?")
                raise self._cannot_confirm(
                    f"Redis {version} has no WAITAOF (7.2+) and its appendfsync is "
                    f"{policy or 'unknown'}, not always"
                ) from None
            how = "always"
        self._persistence = (how, now)
        return how

    @staticmethod
    def _cannot_confirm(reason: str) -> Unavailable:
        message = f"AUDITLOG_ACK_FSYNC is set, but {reason}: no event can be confirmed on disk"
        log.error("cannot confirm events on disk", reason=reason)
        return Unavailable(message, retry_after_s=5)

    def depth(self) -> int:
        """Events waiting or being written (acknowledged entries are deleted)."""
        return int(self._redis.xlen(self.key))

    def ping(self) -> None:
        self._redis.ping()

    def close(self) -> None:
        self._redis.close()

    # --- consumer side ---------------------------------------------------------------------
    def ensure_group(self) -> None:
        with answering("XGROUP CREATE"):
            try:
                # "0": everything in the stream is unwritten (written entries are deleted).
                self._redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(
        self, consumer: str, count: int, block_ms: int | None, *, pending: bool
    ) -> list[Entry]:
        """Read new entries (blocking up to block_ms; None: what is there now), or this
        consumer's own pending ones."""
        with answering("XREADGROUP"):
            try:
                reply = self._redis.xreadgroup(
                    GROUP,
                    consumer,
                    {self.key: "0" if pending else ">"},
                    count=count,
                    block=None if pending else block_ms,
                )
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.ensure_group()  # Redis lost the stream (restarted without persistence)
                return []
            return [_entry(eid, fields) for _, items in reply or [] for eid, fields in items]

    def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries another consumer has left pending for longer than min_idle_ms."""
        with answering("XAUTOCLAIM"):
            try:
                reply = self._redis.xautoclaim(
                    self.key,
                    GROUP,
                    consumer,
                    min_idle_time=min_idle_ms,
                    start_id="0-0",
                    count=count,
                )
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.ensure_group()
                return []
            return [_entry(eid, fields) for eid, fields in reply[1]]

    def deliveries(self, consumer: str, entry_id: str) -> int:
        """How many times entry_id has been delivered (to anyone)."""
        with answering("XPENDING"):
            rows = self._redis.xpending_range(
                self.key, GROUP, min=entry_id, max=entry_id, count=1, consumername=consumer
            )
            return int(rows[0]["times_delivered"]) if rows else 0

    def ack(self, entry_ids: list[str]) -> None:
        """Forget entries whose events are committed."""
        if not entry_ids:
            return
        with answering("XACK"), self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.key, GROUP, *entry_ids)
            pipe.xdel(self.key, *entry_ids)
            pipe.execute()

    def dead_letter(self, entry: Entry, error: str) -> None:
        """Move an entry that can never be written aside, so it stops blocking the others."""
        fields: dict[str, Any] = {"entry": entry.entry_id, "error": error[:2000]}
        if entry.payload is not None:
            fields["e"] = entry.payload
        with answering("dead letter"), self._redis.pipeline(transaction=True) as pipe:
            # TODO(ops): dead letters are kept in Redis (bounded); ship them to durable storage
            # and alert on them once there is an operator to page.
            pipe.xadd(self.dead_key, fields, maxlen=100_000, approximate=True)
            pipe.xack(self.key, GROUP, entry.entry_id)
            pipe.xdel(self.key, entry.entry_id)
            pipe.execute()

    def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        rows = self._redis.xrange(self.dead_key, count=count)
        return [
            DeadLetter(
                entry_id=fields[b"entry"].decode(),
                payload=fields.get(b"e"),
                error=fields[b"error"].decode(),
            )
            for _, fields in rows
        ]

    def dead_letter_count(self) -> int:
        return int(self._redis.xlen(self.dead_key))


def _entry(entry_id: bytes, fields: dict[bytes, bytes] | None) -> Entry:
    fields = fields or {}
    request_id = fields.get(b"r")
    return Entry(
        entry_id=entry_id.decode(),
        payload=fields.get(b"e"),
        request_id=request_id.decode() if request_id else None,
    )
