"""Token buckets in Redis, shared by every API process."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aredis

# One bucket per key name: `t` tokens left at `ts` (ms, Redis's own clock, the same for every
# API process). `take` spends one token and returns 0 when the request may go, else the
# milliseconds until it may. `charge` spends `cost` tokens after the fact (work a request
# caused although it was refused), going into debt if need be: the key then waits until the
# debt is paid back at its rate. Shared with the stream's append script, which spends the
# token in the same round trip as the append.
BUCKET_LUA = """
local function refill(key, rate, burst)
  local now_parts = redis.call('TIME')
  local now = now_parts[1] * 1000 + math.floor(now_parts[2] / 1000)
  local state = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil then
    tokens = burst
    ts = now
  end
  return math.min(burst, tokens + (now - ts) * rate / 1000), now
end
local function keep(key, rate, burst, tokens, now)
  redis.call('HSET', key, 't', tokens, 'ts', now)
  redis.call('PEXPIRE', key, math.ceil((burst - tokens + 1) * 1000 / rate) + 1000)
end
local function take(key, rate, burst)
  local tokens, now = refill(key, rate, burst)
  local wait = 0
  if tokens < 1 then
    wait = math.ceil((1 - tokens) * 1000 / rate)
  else
    tokens = tokens - 1
  end
  keep(key, rate, burst, tokens, now)
  return wait
end
local function charge(key, rate, burst, cost)
  local tokens, now = refill(key, rate, burst)
  -- The debt is bounded: at most one burst's worth below zero.
  tokens = math.max(tokens - cost, -burst)
  keep(key, rate, burst, tokens, now)
  if tokens >= 1 then return 0 end
  return math.ceil((1 - tokens) * 1000 / rate)
end
"""
_TAKE = BUCKET_LUA + "return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))"
_CHARGE = (
    BUCKET_LUA + "return charge(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))"
)


@dataclass(frozen=True)
class Bucket:
    """Whose bucket a request spends from, and its size."""

    name: str
    rate_per_s: float
    burst: int


class Throttled(Exception):
    """The bucket is empty: the request may go in `wait_s` seconds."""

    def __init__(self, wait_s: float):
        self.wait_s = wait_s
        super().__init__(f"retry in {wait_s:.3f} s")


class RateLimiter:
    def __init__(self, client: aredis.Redis, prefix: str):
        self._prefix = prefix
        self._take = client.register_script(_TAKE)
        self._charge = client.register_script(_CHARGE)

    async def take(self, bucket: Bucket) -> float:
        """Take one token from the bucket; 0 if granted, else seconds to wait."""
        wait_ms = await self._take(
            keys=[self.key(bucket.name)], args=[bucket.rate_per_s, bucket.burst]
        )
        return int(wait_ms) / 1000

    async def charge(self, bucket: Bucket, cost: int) -> float:
        """Spend `cost` tokens whatever is left (into debt); seconds until the next request
        may go (0: at once)."""
        wait_ms = await self._charge(
            keys=[self.key(bucket.name)], args=[bucket.rate_per_s, bucket.burst, cost]
        )
        return int(wait_ms) / 1000

    def key(self, name: str) -> str:
        return f"{self._prefix}:{name}"
