"""The ingest stream, as the batch writers read it: a Redis Stream with one consumer group.

An entry is added (XADD, by the API: storage/stream_append.py) before the API answers 202 and
removed (XACK + XDEL) only after the batch holding it has committed. Between the two it is
either waiting or pending for exactly one consumer, so a writer that dies leaves its entries
pending, to be read again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from auditlog.errors import Unavailable

log = structlog.get_logger("auditlog.stream")

GROUP = "writers"


def dead_key(key: str) -> str:
    """Where entries that can never be written are set aside."""
    return f"{key}:dead"


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
    """XREADGROUP, XACK/XDEL, XAUTOCLAIM and a dead-letter stream: the writers' side."""

    def __init__(self, client: redis.Redis, key: str):
        # redis-py types replies as unions of every encoding; the replies are parsed here.
        self._redis: Any = client
        self.key = key
        self.dead_key = dead_key(key)

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
