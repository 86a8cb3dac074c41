"""The stored Merkle tree: nodes, signed heads, and the streams `auditlog verify` reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from auditlog.canonical import stored_event
from auditlog.errors import Unavailable
from auditlog.integrity.heads import TreeHead
from auditlog.integrity.merkle import NodeKey, base_range, fold, frontier_keys

_HEAD_COLUMNS = "tree_size, root_hash, timestamp, signature"
_LATEST_HEAD_SQL = f"SELECT {_HEAD_COLUMNS} FROM tree_heads ORDER BY tree_size DESC LIMIT 1"  # noqa: S608
_HEAD_SQL = f"SELECT {_HEAD_COLUMNS} FROM tree_heads WHERE tree_size = %s"  # noqa: S608
_DOWN = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    psycopg.OperationalError,
)
_EVENT_SELECT = (
    "SELECT occurred_at, id, seq, received_at, type, service, publisher, action, outcome,"
    " actor, subject, context, data, leaf_hash FROM events"
)


class TreeInconsistent(Exception):
    """A node the tree must have is not stored: the tables were tampered with or damaged."""


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


_LEAVES_SQL = (
    # Range conditions, so each chunk's seq index is scanned once per range.
    # TODO(scale): events is chunked by occurred_at, so every chunk's seq index is probed
    # (a few dozen a month); keep leaf hashes in a table keyed by seq when that shows.
    "SELECT seq, leaf_hash FROM events, unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi)"
    " WHERE seq >= r.lo AND seq < r.hi"
)
_STRATUM_SQL = (
    "SELECT node_index, hash FROM merkle_nodes, unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi)"
    " WHERE level = %s AND node_index >= r.lo AND node_index < r.hi"
)
Plan = dict[NodeKey, tuple[int, int, int]]


def _base_query(level: int, ranges: list[tuple[int, int]]) -> tuple[str, tuple[Any, ...]]:
    """The query for stored hashes of one stored level over index ranges: leaves (level 0)
    or strata."""
    los, his = [r[0] for r in ranges], [r[1] for r in ranges]
    if level == 0:
        return _LEAVES_SQL, (los, his)
    return _STRATUM_SQL, (los, his, level)


def plan_nodes(keys: Collection[NodeKey]) -> tuple[Plan, dict[int, list[tuple[int, int]]]]:
    """For each wanted node, the stored range it folds from; and per stored level, the merged
    ranges to fetch (one query per level)."""
    plan = {key: base_range(*key) for key in keys}
    wanted: dict[int, list[tuple[int, int]]] = {}
    for base, lo, hi in plan.values():
        wanted.setdefault(base, []).append((lo, hi))
    return plan, {level: _merge(ranges) for level, ranges in wanted.items()}


def fold_nodes(plan: Plan, stored: dict[int, dict[int, bytes]]) -> dict[NodeKey, bytes]:
    found: dict[NodeKey, bytes] = {}
    for key, (base, lo, hi) in plan.items():
        try:
            found[key] = fold([stored[base][i] for i in range(lo, hi)])
        except KeyError as exc:
            raise TreeInconsistent(
                f"stored node ({base}, {exc.args[0]}) is missing, needed for node {key}"
            ) from None
    return found


def fetch_nodes(cur: psycopg.Cursor[Any], keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
    """Hashes of the given (level, index) nodes, each folded from the stored nodes below it.

    Every node costs one bounded range of at most 2^(STRATUM-1) stored rows, fetched with
    the others of its level in one query.
    """
    plan, wanted = plan_nodes(keys)
    stored: dict[int, dict[int, bytes]] = {}
    for level, ranges in wanted.items():
        cur.execute(*_base_query(level, ranges))
        stored[level] = {index: bytes(h) for index, h in cur.fetchall()}
    return fold_nodes(plan, stored)


async def fetch_nodes_async(
    cur: psycopg.AsyncCursor[Any], keys: Collection[NodeKey]
) -> dict[NodeKey, bytes]:
    """fetch_nodes on an asyncio cursor (the API's proofs)."""
    plan, wanted = plan_nodes(keys)
    stored: dict[int, dict[int, bytes]] = {}
    for level, ranges in wanted.items():
        await cur.execute(*_base_query(level, ranges))
        stored[level] = {index: bytes(h) for index, h in await cur.fetchall()}
    return fold_nodes(plan, stored)


def frontier_hashes(cur: psycopg.Cursor[Any], size: int) -> list[bytes]:
    """The hashes of the complete subtrees a tree of `size` leaves decomposes into."""
    keys = frontier_keys(size)
    nodes = fetch_nodes(cur, keys)
    return [nodes[key] for key in keys]


def _head(row: Any) -> TreeHead:
    return TreeHead(row[0], bytes(row[1]), row[2], bytes(row[3]))


class TreeStore:
    """Reads of the tree through the reader role."""

    def __init__(self, reader: Engine):
        self._reader = reader

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        try:
            with self._reader.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None
                with raw.cursor() as cur:
                    yield cur
                conn.rollback()
        except _DOWN as exc:
            raise Unavailable("the database does not answer; try again shortly") from exc

    def latest_head(self) -> TreeHead | None:
        with self._cursor() as cur:
            cur.execute(_LATEST_HEAD_SQL)
            row = cur.fetchone()
        return None if row is None else _head(row)

    def head(self, size: int) -> TreeHead | None:
        with self._cursor() as cur:
            cur.execute(_HEAD_SQL, (size,))
            row = cur.fetchone()
        return None if row is None else _head(row)

    def nodes(self, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
        with self._cursor() as cur:
            return fetch_nodes(cur, keys)

    def frontier(self, size: int) -> list[bytes]:
        with self._cursor() as cur:
            return frontier_hashes(cur, size)

    # --- streams for the verifier and export: one snapshot, constant memory ----------------
    @contextmanager
    def snapshot(self) -> Iterator[LogSnapshot]:
        """Events and heads as of one instant (REPEATABLE READ), read with server-side cursors.

        Heads are committed in the same transaction as the events they cover, so in a
        snapshot every event written by the writer is covered by a head.
        """
        with self._reader.connect() as plain:
            conn = plain.execution_options(isolation_level="REPEATABLE READ")
            raw = conn.connection.driver_connection
            assert raw is not None
            yield LogSnapshot(raw)
            conn.rollback()


class TreeReader:
    """The tree as the API reads it (asyncio): signed heads and the nodes of proofs."""

    def __init__(self, reader: AsyncEngine):
        self._reader = reader

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        try:
            async with self._reader.connect() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                async with driver.cursor() as cur:
                    yield cur
        except _DOWN as exc:
            raise Unavailable("the database does not answer; try again shortly") from exc

    async def latest_head(self) -> TreeHead | None:
        async with self._cursor() as cur:
            await cur.execute(_LATEST_HEAD_SQL)
            row = await cur.fetchone()
        return None if row is None else _head(row)

    async def head(self, size: int) -> TreeHead | None:
        async with self._cursor() as cur:
            await cur.execute(_HEAD_SQL, (size,))
            row = await cur.fetchone()
        return None if row is None else _head(row)

    async def nodes(self, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
        async with self._cursor() as cur:
            return await fetch_nodes_async(cur, keys)


class LogSnapshot:
    def __init__(self, conn: psycopg.Connection[Any]):
        self._conn = conn

    def events(self, start: int = 0, end: int | None = None) -> Iterator[dict[str, Any]]:
        """Every event with start <= seq < end, in seq order, as the API returns it; rows
        whose seq repeats are included, so the verifier sees them."""
        with self._conn.cursor(name="auditlog_events", row_factory=namedtuple_row) as cur:
            cur.itersize = 2000
            cur.execute(
                f"{_EVENT_SELECT} WHERE seq >= %s AND (%s::bigint IS NULL OR seq < %s)"
                " ORDER BY seq, id",
                (start, end, end),
            )
            for row in cur:
                yield stored_event(row)

    def heads(self, start: int = 0, end: int | None = None) -> Iterator[TreeHead]:
        """Signed heads with start < tree_size <= end, smallest first."""
        with self._conn.cursor(name="auditlog_heads") as cur:
            cur.itersize = 2000
            cur.execute(
                f"SELECT {_HEAD_COLUMNS} FROM tree_heads WHERE tree_size > %s"  # noqa: S608
                " AND (%s::bigint IS NULL OR tree_size <= %s) ORDER BY tree_size",
                (start, end, end),
            )
            for row in cur:
                yield _head(row)

    def frontier(self, size: int) -> list[bytes]:
        with self._conn.cursor() as cur:
            return frontier_hashes(cur, size)

    def seq_range(self, since: Any, until: Any) -> tuple[int, int] | None:
        """The smallest and largest seq of events with occurred_at in [since, until)."""
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT min(seq), max(seq) FROM events WHERE (%s::timestamptz IS NULL OR"
                " occurred_at >= %s) AND (%s::timestamptz IS NULL OR occurred_at < %s)",
                (since, since, until, until),
            )
            row = cur.fetchone()
        return None if row is None or row[0] is None else (row[0], row[1])

    def head_at_or_after(self, size: int) -> TreeHead | None:
        with self._conn.cursor() as cur:
            cur.execute(
                f"SELECT {_HEAD_COLUMNS} FROM tree_heads WHERE tree_size >= %s"  # noqa: S608
                " ORDER BY tree_size LIMIT 1",
                (size,),
            )
            row = cur.fetchone()
        return None if row is None else _head(row)
