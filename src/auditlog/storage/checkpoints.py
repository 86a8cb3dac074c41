"""The published checkpoints, their cosignatures and the witnesses' refusals (migration 0007).

Reads go through the reader role (CheckpointReader for the API, asyncio; CheckpointStore
for `auditlog verify`); publication goes through the writer role, one publisher at a time
across every worker: a round holds a session-level advisory lock on its own connection,
released when the round ends or the connection dies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from auditlog.integrity.heads import TreeHead
from auditlog.integrity.merkle import NodeKey
from auditlog.storage.tree import async_reader_cursor, fetch_nodes, reader_cursor

PUBLISH_LOCK_KEY = 0x61756469746C6370  # "auditlcp"

_LATEST = (
    "SELECT c.tree_size, c.note, c.published_at,"
    " coalesce(array_agg(s.signature ORDER BY s.received_at, s.witness)"
    " FILTER (WHERE s.signature IS NOT NULL), '{}')"
    " FROM (SELECT * FROM checkpoints ORDER BY tree_size DESC LIMIT 1) AS c"
    " LEFT JOIN checkpoint_cosignatures AS s ON s.tree_size = c.tree_size"
    " GROUP BY c.tree_size, c.note, c.published_at"
)


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint as the log signed it, when, and the cosignature lines it received."""

    tree_size: int
    note: str
    published_at: datetime
    cosignatures: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The signed note with every cosignature line appended."""
        return self.note + "".join(self.cosignatures)


def _stored(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(int(row[0]), row[1], row[2], list(row[3]))


class CheckpointStore:
    """Checkpoints as `auditlog verify` reads them (reader role)."""

    def __init__(self, reader: Engine):
        self._reader = reader

    def latest(self) -> StoredCheckpoint | None:
        with reader_cursor(self._reader) as cur:
            cur.execute(_LATEST)
            row = cur.fetchone()
        return None if row is None else _stored(row)


class CheckpointReader:
    """Checkpoints as the API reads them (reader role, asyncio)."""

    def __init__(self, reader: AsyncEngine):
        self._reader = reader

    async def latest(self) -> StoredCheckpoint | None:
        async with async_reader_cursor(self._reader) as cur:
            await cur.execute(_LATEST)
            row = await cur.fetchone()
        return None if row is None else _stored(row)


class PublicationLog:
    """What one publication round reads and records, on the connection holding the lock.

    Every statement commits on its own (autocommit): a checkpoint is recorded before any
    witness sees it, and each cosignature as soon as it arrives.
    """

    def __init__(self, conn: psycopg.Connection[Any]):
        self._conn = conn

    def latest_checkpoint(self) -> tuple[StoredCheckpoint, float] | None:
        """The latest checkpoint and its age in seconds by the database's clock."""
        with self._conn.cursor() as cur:
            cur.execute(_LATEST)
            row = cur.fetchone()
            if row is None:
                return None
            stored = _stored(row)
            cur.execute("SELECT extract(epoch FROM clock_timestamp() - %s)", (stored.published_at,))
            age = cur.fetchone()
        assert age is not None
        return stored, float(age[0])

    def latest_head(self) -> TreeHead | None:
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT tree_size, root_hash, timestamp, signature FROM tree_heads"
                " ORDER BY tree_size DESC LIMIT 1"
            )
            row = cur.fetchone()
        return None if row is None else TreeHead(row[0], bytes(row[1]), row[2], bytes(row[3]))

    def record_checkpoint(self, tree_size: int, note: str) -> StoredCheckpoint:
        with self._conn.cursor() as cur:
            cur.execute(
                "INSERT INTO checkpoints (tree_size, note) VALUES (%s, %s)"
                " RETURNING tree_size, note, published_at, '{}'::text[]",
                (tree_size, note),
            )
            row = cur.fetchone()
        assert row is not None
        return _stored(row)

    def cosigned_sizes(self, witnesses: Collection[str]) -> dict[str, int]:
        """The largest checkpoint size each witness (by verifier key) has cosigned."""
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT witness, max(tree_size) FROM checkpoint_cosignatures"
                " WHERE witness = ANY(%s) GROUP BY witness",
                (list(witnesses),),
            )
            return {row[0]: int(row[1]) for row in cur.fetchall()}

    def refusals(self, tree_size: int) -> dict[str, int]:
        """The witnesses (by verifier key) that refused this checkpoint, and their status."""
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT witness, status FROM witness_refusals WHERE tree_size = %s", (tree_size,)
            )
            return {row[0]: int(row[1]) for row in cur.fetchall()}

    def record_cosignature(self, tree_size: int, witness: str, line: str) -> None:
        with self._conn.cursor() as cur:
            cur.execute(
                "INSERT INTO checkpoint_cosignatures (tree_size, witness, signature)"
                " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (tree_size, witness, line),
            )

    def record_refusal(self, tree_size: int, witness: str, status: int, answer: str) -> None:
        with self._conn.cursor() as cur:
            cur.execute(
                "INSERT INTO witness_refusals (tree_size, witness, status, answer)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (tree_size, witness, status, answer),
            )

    def nodes(self, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
        with self._conn.cursor() as cur:
            return fetch_nodes(cur, keys)


class Publications:
    """Publication rounds through the writer role, one at a time across every process."""

    def __init__(self, writer: Engine):
        self._writer = writer

    def close(self) -> None:
        self._writer.dispose()

    @contextmanager
    def round(self) -> Iterator[PublicationLog | None]:
        """A PublicationLog holding the publication lock, or None if another round holds it.

        psycopg and SQLAlchemy errors propagate: the caller retries at its next round.
        """
        with self._writer.connect() as plain:
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (PUBLISH_LOCK_KEY,))
                row = cur.fetchone()
            if row is None or not row[0]:
                yield None
                return
            try:
                yield PublicationLog(raw)
            finally:
                # A broken connection has released the lock already.
                with contextlib.suppress(psycopg.Error), raw.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (PUBLISH_LOCK_KEY,))
