"""Writer slot leases: at most one running drain per slot, across every worker process."""

from __future__ import annotations

import redis

from auditlog.storage.stream import answering

# Each script acts only when the slot is free or held by the caller's token.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# Idempotent: asked again after its reply was lost, it says yes once more (the successor
# holds the slot already).
_HANDOVER = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or holder == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SlotLeases:
    """A lease per writer slot, held by a token (the Celery task id) for ttl seconds.

    Redis not answering is Unavailable: the lease may or may not still be held.
    """

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: float):
        self._client = client
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._handover = client.register_script(_HANDOVER)
        self._release = client.register_script(_RELEASE)

    def _key(self, slot: int) -> str:
        return f"{self._prefix}:{slot}"

    def acquire(self, slot: int, token: str) -> bool:
        """Take the slot if free, or keep it if this token already holds it."""
        with answering("lease acquire"):
            return bool(self._acquire(keys=[self._key(slot)], args=[token, self._ttl_ms]))

    def acquire_free(self, slot: int, token: str) -> bool:
        """Take the slot only if nobody holds it (for a task about to be sent)."""
        with answering("lease acquire free"):
            return bool(self._client.set(self._key(slot), token, nx=True, px=self._ttl_ms))

    def renew(self, slot: int, token: str) -> bool:
        with answering("lease renew"):
            return bool(self._renew(keys=[self._key(slot)], args=[token, self._ttl_ms]))

    def handover(self, slot: int, token: str, successor: str) -> bool:
        """Pass the slot to the next task of the chain before that task is even sent."""
        with answering("lease handover"):
            return bool(
                self._handover(keys=[self._key(slot)], args=[token, self._ttl_ms, successor])
            )

    def release(self, slot: int, token: str) -> bool:
        with answering("lease release"):
            return bool(self._release(keys=[self._key(slot)], args=[token]))
