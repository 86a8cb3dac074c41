"""The ingest stream, as the API appends to it (asyncio): all of a request's events or none.

Returning from `append` means Redis holds the entries; the batch writers (storage/stream.py)
take them from there. Concurrent requests of one API process share round trips (group
commit): a round trip costs the process and Redis far more CPU than the events in it, so
under load this is most of the ingest path's cost.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aredis
import structlog

from auditlog.errors import NotDurable, Overloaded, Unavailable
from auditlog.storage.ratelimit import BUCKET_LUA, Bucket, Throttled
from auditlog.storage.stream import dead_key

log = structlog.get_logger("auditlog.stream")

# How long an answer to "does this Redis put writes on disk, and how do we wait for it" is
# trusted before it is asked again (CONFIG SET can change it while Redis runs).
PERSISTENCE_CHECK_S = 10.0

# The appends of several requests in one round trip. For each request, in order: spend its
# sender's rate-limit token (KEYS[1 + i]; no rate given: no limit), check the backlog, append
# all of its events or none. The answer holds one reply per request: the entry ids, the wait
# in ms (negated) of an empty bucket, or 0 for a full backlog.
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

_DOWN = (redis.ConnectionError, redis.TimeoutError)


@dataclass(eq=False)
class _Append:
    """One request's events, waiting to go to Redis with other requests' events."""

    payloads: list[bytes]
    request_id: str
    bucket: Bucket | None
    # The entry ids, the script's refusal (an int), or what went wrong.
    reply: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class StreamAppender:
    """XADD at the edge, in groups, with the backlog limit and the senders' rate limits."""

    def __init__(
        self,
        client: aredis.Redis,
        key: str,
        *,
        backlog_limit: int,
        bucket_prefix: str,
        fsync_timeout_ms: int | None = None,
    ):
        self._redis: Any = client
        self.key = key
        self.dead_key = dead_key(key)
        self._backlog_limit = backlog_limit
        self._bucket_prefix = bucket_prefix
        self._append = client.register_script(_APPEND)
        self._fsync_timeout_ms = fsync_timeout_ms
        self._persistence: tuple[str, float] | None = None  # (how to wait, when checked)
        self._waiting: list[_Append] = []
        self._sender: asyncio.Task[None] | None = None

    async def append(
        self, payloads: list[bytes], request_id: str | None = None, bucket: Bucket | None = None
    ) -> list[str]:
        """Add every payload or none; refuse when the backlog would pass its limit, or
        (Throttled) when `bucket` is empty.

        Returning means Redis holds the entries in memory; how durable that is depends on
        Redis's own persistence (appendonly, see docs/DESIGN.md). Built with
        fsync_timeout_ms, returning means Redis has them on disk (fsynced), and NotDurable
        means they are queued but that was not confirmed in time.

        The request waits in line; one sender task per process sends whatever is waiting in
        one script call, again and again until nothing waits. Each request is still all or
        nothing, refused or throttled on its own; at one request at a time nothing waits.
        The sender is a task of its own, so a request that is cancelled (its client gone)
        never cancels a round trip that carries other requests' events.
        """
        mine = _Append(payloads, request_id or "", bucket)
        self._waiting.append(mine)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_waiting())
        return self._answer(await mine.reply)

    async def _send_waiting(self) -> None:
        try:
            while self._waiting:
                size = count = 0
                for waiting in self._waiting:
                    if count and size + len(waiting.payloads) > GROUP_EVENTS_MAX:
                        break
                    size += len(waiting.payloads)
                    count += 1
                group, self._waiting = self._waiting[:count], self._waiting[count:]
                try:
                    await self._send(group)
                except Exception as exc:  # every caller in the group gets it
                    for request in group:
                        if not request.reply.done():
                            request.reply.set_result(exc)
        finally:
            self._sender = None

    async def _send(self, group: list[_Append]) -> None:
        """One script call for the group; each request gets its own reply."""
        keys = [self.key]
        args: list[Any] = [self._backlog_limit]
        for request in group:
            bucket = request.bucket
            keys.append(f"{self._bucket_prefix}:{bucket.name}" if bucket else self.key)
            limit = (bucket.rate_per_s, bucket.burst) if bucket else ("", "")
            args += [request.request_id, *limit, len(request.payloads), *request.payloads]
        unconfirmed: str | None = None
        try:
            if self._fsync_timeout_ms is None:
                replies = await self._append(keys=keys, args=args)
            else:
                replies, unconfirmed = await self._append_fsynced(
                    keys, args, self._fsync_timeout_ms
                )
        except _DOWN as exc:
            down = Unavailable(f"the event queue (Redis) does not answer: {exc}")
            for request in group:
                request.reply.set_result(down)
            return
        for request, reply in zip(group, replies, strict=True):
            if unconfirmed is not None and isinstance(reply, list):
                request.reply.set_result(NotDurable(unconfirmed))
            else:
                request.reply.set_result(reply)

    def _answer(self, reply: Any) -> list[str]:
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

    async def _append_fsynced(
        self, keys: list[str], args: list[Any], timeout_ms: int
    ) -> tuple[Any, str | None]:
        """The script's replies, and why the appended events are not confirmed on disk
        (None: they are)."""
        if await self._wait_for_disk() == "always":
            # appendfsync always: Redis writes and fsyncs its AOF before it sends any reply,
            # so the script's answer is the confirmation.
            return await self._append(keys=keys, args=args), None
        # WAITAOF waits for this connection's own writes: one pipeline, one connection.
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._append(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAITAOF", 1, 0, timeout_ms)
            replies, fsynced = await pipe.execute(raise_on_error=False)
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

    async def _wait_for_disk(self) -> str:
        """How to know an append is on disk: "waitaof" or "always"; Unavailable if this
        Redis cannot say (no AOF, or an old Redis that does not fsync every write)."""
        now = time.monotonic()
        if self._persistence is not None and now - self._persistence[1] < PERSISTENCE_CHECK_S:
            return self._persistence[0]
        if not int((await self._redis.info("persistence")).get("aof_enabled", 0)):
            raise self._cannot_confirm("appendonly is off")
        try:
            await self._redis.execute_command("WAITAOF", 0, 0, 0)  # a no-op where it exists
            how = "waitaof"
        except redis.ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            try:  # Redis < 7.2: only appendfsync always confirms every write
                policy = (await self._redis.config_get("appendfsync")).get("appendfsync")
            except redis.ResponseError:  # CONFIG disabled or renamed
                policy = None
            if policy != "always":
                version = (await self._redis.info("server")).get("redis_version", "?")
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

    async def depth(self) -> tuple[int, int]:
        """Events waiting or being written, and entries set aside as unwritable."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.key)
            pipe.xlen(self.dead_key)
            waiting, dead = await pipe.execute()
        return int(waiting), int(dead)

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
