"""Token buckets in Redis, shared by every API process."""

from __future__ import annotations

from dataclasses import dataclass

import redis

# One bucket per key name: `t` tokens left at `ts` (ms, Redis's own clock, the same for every
# API process). `take` returns 0 when the request may go, else the milliseconds until it may.
# Shared with the stream's append script, which spends the token in the same round trip.
BUCKET_LUA = """
local function take(key, rate, burst)
  local now_parts = redis.call('TIME')
  local now = now_parts[1] * 1000 + math.floor(now_parts[2] / 1000)
  local state = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil then
    tokens = burst
    ts = now
  end
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  local wait = 0
  if tokens < 1 then
    wait = math.ceil((1 - tokens) * 1000 / rate)
  else
    tokens = tokens - 1
  end
  redis.call('HSET', key, 't', tokens, 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
  return wait
end
"""
_TAKE = BUCKET_LUA + "return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))"


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
    def __init__(self, client: redis.Redis, prefix: str):
        self._prefix = prefix
        self._take = client.register_script(_TAKE)

    def take(self, name: str, rate_per_s: float, burst: int) -> float:
        """Take one token from the bucket of `name`; 0 if granted, else seconds to wait."""
        wait_ms = self._take(keys=[self.key(name)], args=[rate_per_s, burst])
        return int(wait_ms) / 1000

    def key(self, name: str) -> str:
        return f"{self._prefix}:{name}"
