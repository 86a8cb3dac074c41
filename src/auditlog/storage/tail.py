"""The tail cache in Redis: the newest committed events, whole and per service.

Layout, under `<prefix>:tail`:

- `all` and `svc:<service>`: sorted sets, member = the event's type, a newline and the
  event's JSON (its API form), score = its seq. Each is trimmed to the newest `size` members.
- `cover`: the seq ranges the writer has delivered completely (member = first seq, score =
  last seq). Every committed event inside a range is in its sets (unless trimmed). Batches
  from two writer slots may arrive out of order; adjacent ranges merge, so a late batch
  closes the gap it left. The range with the highest end is the one readers trust.
- `trimmed`: a hash giving, for each set that has lost members to trimming, the highest seq
  it lost (a set never trimmed holds every event of every range).

Both scripts run atomically, so a reader never sees a range before its events, or events
of a range half written. This module only moves data; services/tail.py decides whether a
slice answers a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio as aredis

# Ranges kept in `cover`: enough for any plausible reordering of batches between slots.
MAX_RANGES = 64
# Members a type-filtered read examines per step (after a first step of `limit`).
_SCAN_PAGE = 256

# KEYS: all, cover, trimmed, service sets...
# ARGV: size, #ranges, (first, last) × #ranges, #marks, (key index, seq) × #marks,
#       then (service key index or 0, "1" to add to `all` too, seq, member) per event.
# `trimmed` maps a set to the highest seq trimming has removed from it.
_RECORD = r"""
local size = tonumber(ARGV[1])
local function mark_trimmed(key, seq)
  local old = redis.call('HGET', KEYS[3], key)
  if not old or tonumber(old) < tonumber(seq) then redis.call('HSET', KEYS[3], key, seq) end
end
local i = 2
local nranges = tonumber(ARGV[i]); i = i + 1
for _ = 1, nranges do
  local a, b = tonumber(ARGV[i]), tonumber(ARGV[i + 1]); i = i + 2
  local lo, hi = a, b
  local near = redis.call('ZRANGEBYSCORE', KEYS[2], a - 1, '+inf', 'WITHSCORES')
  for j = 1, #near, 2 do
    local s, e = tonumber(near[j]), tonumber(near[j + 1])
    if s <= b + 1 then
      if s < lo then lo = s end
      if e > hi then hi = e end
      redis.call('ZREM', KEYS[2], near[j])
    end
  end
  redis.call('ZADD', KEYS[2], string.format('%d', hi), string.format('%d', lo))
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(@MAX_RANGES@ + 1))
local nmarks = tonumber(ARGV[i]); i = i + 1
for _ = 1, nmarks do
  mark_trimmed(KEYS[tonumber(ARGV[i])], ARGV[i + 1]); i = i + 2
end
local touched = {}
while i <= #ARGV do
  local seq, member = ARGV[i + 2], ARGV[i + 3]
  if ARGV[i + 1] == '1' then
    redis.call('ZADD', KEYS[1], seq, member)
    touched[KEYS[1]] = true
  end
  local service = KEYS[tonumber(ARGV[i])]
  if service then
    redis.call('ZADD', service, seq, member)
    touched[service] = true
  end
  i = i + 4
end
for key in pairs(touched) do
  local excess = redis.call('ZCARD', key) - size
  if excess > 0 then
    local highest = redis.call('ZRANGE', key, excess - 1, excess - 1, 'WITHSCORES')[2]
    redis.call('ZREMRANGEBYRANK', key, 0, excess - 1)
    mark_trimmed(key, highest)
  end
end
return 1
"""

# KEYS: the set, cover, trimmed. ARGV: mode ("newest" or "after"), limit, exact type or "",
# type prefix or "", after seq (mode "after").
# Reply: {} when no range is covered; else {first, last, trimmed up to, exhausted, then
# member, seq, member, seq, ...}. "newest": the newest `limit` matching members of the
# trusted range, newest first; exhausted = 1 if the whole range was examined. "after": the
# oldest `limit` matching members with seq > after, oldest first; exhausted = -1 if the
# range does not reach back to after + 1 (or trimming may have dropped some).
_READ = r"""
local first_last = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #first_last == 0 then return {} end
local s, e = first_last[1], first_last[2]
local trimmed = redis.call('HGET', KEYS[3], KEYS[1])
if not trimmed then trimmed = '-1' end
local mode, limit, exact, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local lo, hi = s, e
local newest = mode == 'newest'
if not newest then
  local after = tonumber(ARGV[5])
  if tonumber(s) > after + 1 then return {s, e, trimmed, -1} end
  if tonumber(trimmed) > after then return {s, e, trimmed, -1} end
  lo = '(' .. ARGV[5]
end
-- A member is "<type>\n<json>" and the JSON holds no raw newline, so the first line is
-- the type: matched without parsing anything.
local filtered = exact ~= '' or prefix ~= ''
local function matches(member)
  if exact ~= '' then return string.sub(member, 1, #exact + 1) == exact .. '\n' end
  if string.find(prefix, '\n', 1, true) then return false end
  return string.sub(member, 1, #prefix) == prefix
end
local out = {s, e, trimmed, 0}
local found, offset = 0, 0
local page = limit  -- often enough; a filtered scan then goes on in larger steps
while true do
  local items
  if newest then
    items = redis.call('ZREVRANGEBYSCORE', KEYS[1], hi, lo, 'WITHSCORES', 'LIMIT', offset, page)
  else
    items = redis.call('ZRANGEBYSCORE', KEYS[1], lo, hi, 'WITHSCORES', 'LIMIT', offset, page)
  end
  for j = 1, #items, 2 do
    if not filtered or matches(items[j]) then
      out[#out + 1] = items[j]
      out[#out + 1] = items[j + 1]
      found = found + 1
      if found == limit then return out end
    end
  end
  if #items < 2 * page then out[4] = 1; return out end
  offset = offset + page
  page = math.max(limit, @SCAN_PAGE@)
end
"""


class CacheUnavailable(Exception):
    """Redis did not answer (or refused the script): the caller falls back to the database."""


@dataclass(frozen=True)
class TailSlice:
    """What the cache holds for one read: the trusted range and the members found in it."""

    first: int  # the trusted (highest) covered range is [first, last]
    last: int
    trimmed_upto: int  # the highest seq trimming has removed from the set; -1: none
    exhausted: bool  # the whole range was examined (fewer matches than asked exist in it)
    events: list[tuple[int, bytes]]  # (seq, the event's JSON), in the order asked for


class _Layout:
    """The cache's keys under its prefix (see the module's docstring)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.all = f"{prefix}:all"
        self.cover = f"{prefix}:cover"
        self.trimmed = f"{prefix}:trimmed"

    def service(self, service: str) -> str:
        return f"{self.prefix}:svc:{service}"

    def set_for(self, service: str | None) -> str:
        return self.all if service is None else self.service(service)


class TailCache:
    """Writes committed batches into the tail sets (the batch writer, after COMMIT).

    TODO(scale): a cold cache is not warmed from the database; after a Redis restart the
    tail of a rare service is read from the database until enough of its events arrived.
    Way out: on a cold start, the writer's hook loads the newest `size` events per set.
    TODO(scale): one set per service ever seen, never expired (each bounded to `size`);
    expire the sets of services that stopped sending.
    TODO(scale): the scripts touch several keys, so one Redis, not a Cluster; put the
    tail's keys under one hash tag to run on a Cluster.
    """

    def __init__(self, client: redis.Redis, prefix: str, *, size: int):
        self._redis: Any = client
        self._keys = _Layout(prefix)
        self.prefix = prefix
        self.size = size
        self._record = client.register_script(_RECORD.replace("@MAX_RANGES@", str(MAX_RANGES)))

    def service_key(self, service: str) -> str:
        return self._keys.service(service)

    def close(self) -> None:
        self._redis.close()

    def record(self, stored: Sequence[dict[str, Any]]) -> None:
        """Add committed events (API form, any order) and mark their seqs as covered."""
        if not stored:
            return
        events = sorted(stored, key=lambda e: e["seq"])
        keys = [self._keys.all, self._keys.cover, self._keys.trimmed]
        index: dict[str, int] = {}
        per_key: dict[int, list[dict[str, Any]]] = {1: []}
        for event in events:
            key = self.service_key(event["service"])
            if key not in index:
                keys.append(key)
                index[key] = len(keys)
                per_key[index[key]] = []
            per_key[1].append(event)
            per_key[index[key]].append(event)
        args: list[Any] = [self.size]
        ranges = _runs([e["seq"] for e in events])
        args.append(len(ranges))
        for first, last in ranges:
            args += [first, last]
        # Only the newest `size` of a set can survive trimming: add no more than those, and
        # mark the set trimmed when some were left out.
        marks = [(k, ms[-self.size - 1]["seq"]) for k, ms in per_key.items() if len(ms) > self.size]
        args.append(len(marks))
        for key_index, seq in marks:
            args += [key_index, seq]
        kept = {id(e): k for k, ms in per_key.items() if k != 1 for e in ms[-self.size :]}
        newest_overall = {id(e) for e in per_key[1][-self.size :]}
        for event in events:
            in_all = id(event) in newest_overall
            service_index = kept.get(id(event), 0)
            if in_all or service_index:
                args += [service_index, "1" if in_all else "0", event["seq"], _member(event)]
        try:
            self._record(keys=keys, args=args)
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc


class TailReader:
    """Reads slices of the tail sets (the API, asyncio): one script call each."""

    def __init__(self, client: aredis.Redis, prefix: str):
        self._redis: Any = client
        self._keys = _Layout(prefix)
        self._read = client.register_script(_READ.replace("@SCAN_PAGE@", str(_SCAN_PAGE)))

    async def close(self) -> None:
        await self._redis.aclose()

    async def newest(
        self, service: str | None, *, limit: int, type_exact: str | None, type_prefix: str | None
    ) -> TailSlice | None:
        """The newest matching events of the trusted range, newest first; None if cold."""
        return await self._slice(service, "newest", limit, type_exact, type_prefix, after=-1)

    async def after(
        self,
        service: str | None,
        after: int,
        *,
        limit: int,
        type_exact: str | None,
        type_prefix: str | None,
    ) -> TailSlice | None:
        """The oldest matching events with seq > after, oldest first; None if cold.

        `exhausted` is False and `events` empty when the cache cannot vouch for every event
        after `after` (its range starts later, or trimming reached past it).
        """
        return await self._slice(service, "after", limit, type_exact, type_prefix, after=after)

    async def _slice(
        self,
        service: str | None,
        mode: str,
        limit: int,
        type_exact: str | None,
        type_prefix: str | None,
        *,
        after: int,
    ) -> TailSlice | None:
        key = self._keys.set_for(service)
        try:
            reply = await self._read(
                keys=[key, self._keys.cover, self._keys.trimmed],
                args=[mode, limit, type_exact or "", type_prefix or "", after],
            )
        except (redis.RedisError, OSError) as exc:
            raise CacheUnavailable(str(exc)) from exc
        if not reply:
            return None
        first, last, trimmed, status = (int(v) for v in reply[:4])
        items = reply[4:]
        return TailSlice(
            first=first,
            last=last,
            trimmed_upto=int(trimmed),
            exhausted=status == 1,
            events=[(int(items[i + 1]), _event_json(items[i])) for i in range(0, len(items), 2)]
            if status != -1
            else [],
        )

    async def head(self) -> int | None:
        """The last seq of the trusted range: the newest event the cache vouches for."""
        try:
            top = await self._redis.zrevrange(self._keys.cover, 0, 0, withscores=True)
        except (redis.RedisError, OSError) as exc:
            raise CacheUnavailable(str(exc)) from exc
        return int(top[0][1]) if top else None


def _member(event: dict[str, Any]) -> bytes:
    """The set member: the type on a line of its own (the scripts filter on it), then the
    event's JSON, which orjson writes without a raw newline."""
    kind: str = event["type"]
    return kind.encode() + b"\n" + orjson.dumps(event)


def _event_json(member: bytes) -> bytes:
    return member[member.index(b"\n") + 1 :]


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as runs of consecutive values: [1, 2, 3, 7, 8] -> [(1, 3), (7, 8)]."""
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs
