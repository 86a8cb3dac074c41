"""Token buckets in Redis, shared by every API process."""

from __future__ import annotations

import redis

# One bucket per key name: `t` tokens left at `ts` (ms, Redis's own clock, the same for every
# API process). Returns 0 when the request may go, else the milliseconds until it may.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now_parts = redis.call('TIME')
local now = now_parts[1] * 1000 + math.floor(now_parts[2] / 1000)
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
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
redis.call('HSET', KEYS[1], 't', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"""


class RateLimiter:
    def __init__(self, client: redis.Redis, prefix: str):
        self._prefix = prefix
        self._take = client.register_script(_TAKE)

    def take(self, name: str, rate_per_s: float, burst: int) -> float:
        """Take one token from the bucket of `name`; 0 if granted, else seconds to wait."""
        wait_ms = self._take(keys=[f"{self._prefix}:{name}"], args=[rate_per_s, burst])
        return int(wait_ms) / 1000
