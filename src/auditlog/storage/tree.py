"""The stored Merkle tree: nodes, signed heads, and the streams `auditlog verify` reads."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from auditlog.canonical import stored_event
from auditlog.errors import Unavailable
from auditlog.integrity.heads import TreeHead
from auditlog.integrity.merkle import NodeKey, base_range, fold, frontier_keys

_HEAD_COLUMNS = "tree_size, root_hash, timestamp, signature"
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


def _fetch_base(
    cur: psycopg.Cursor[Any], level: int, ranges: list[tuple[int, int]]
) -> dict[int, bytes]:
    """Stored hashes of one stored level over index ranges: leaves (level 0) or strata."""
    los, his = [r[0] for r in ranges], [r[1] for r in ranges]
    if level == 0:
        # Range conditions, so each chunk's seq index is scanned once per range.
        # TODO(scale): events is chunked by occurred_at, so every chunk's seq index is probed
        # (a few dozen a month); keep leaf hashes in a table keyed by seq when that shows.
        cur.execute(
            "SELECT seq, leaf_hash FROM events, unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi)"
            " WHERE seq >= r.lo AND seq < r.hi",
            (los, his),
        )
    else:
        cur.execute(
            "SELECT node_index, hash FROM merkle_nodes,"
            " unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi)"
            " WHERE level = %s AND node_index >= r.lo AND node_index < r.hi",
            (los, his, level),
        )
    return {index: bytes(h) for index, h in cur.fetchall()}


def fetch_nodes(cur: psycopg.Cursor[Any], keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
    """Hashes of the given (level, index) nodes, each folded from the stored nodes below it.

    Every node costs one bounded range of at most 2^(STRATUM-1) stored rows, fetched with
    the others of its level in one query.
    """
    plan = {key: base_range(*key) for key in keys}
    wanted: dict[int, list[tuple[int, int]]] = {}
    for base, lo, hi in plan.values():
        wanted.setdefault(base, []).append((lo, hi))
    stored = {level: _fetch_base(cur, level, _merge(ranges)) for level, ranges in wanted.items()}
    found: dict[NodeKey, bytes] = {}
    for key, (base, lo, hi) in plan.items():
        try:
            found[key] = fold([stored[base][i] for i in range(lo, hi)])
        except KeyError as exc:
            raise TreeInconsistent(
                f"stored node ({base}, {exc.args[0]}) is missing, needed for node {key}"
            ) from None
    return found


def frontier_hashes(cur: psycopg.Cursor[Any], size: int) -> list[bytes]:
    """The hashes of the complete subtrees a tree of `size` leaves decomposes into."""
    keys = frontier_keys(size)
    nodes = fetch_nodes(cur, keys)
    return [nodes[key] for key in keys]


def _latest_size(cur: psycopg.Cursor[Any]) -> int:
    """The size of the latest signed tree head (0 for an empty log): what is committed."""
    cur.execute("SELECT tree_size FROM tree_heads ORDER BY tree_size DESC LIMIT 1")
    row = cur.fetchone()
    return 0 if row is None else int(row[0])


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
        except (
            sa_exc.OperationalError,
            sa_exc.InterfaceError,
            sa_exc.TimeoutError,
            psycopg.OperationalError,
        ) as exc:
            raise Unavailable("the database does not answer; try again shortly") from exc

    def latest_head(self) -> TreeHead | None:
        with self._cursor() as cur:
            cur.execute(f"SELECT {_HEAD_COLUMNS} FROM tree_heads ORDER BY tree_size DESC LIMIT 1")  # noqa: S608
            row = cur.fetchone()
        return None if row is None else _head(row)

    def head(self, size: int) -> TreeHead | None:
        with self._cursor() as cur:
            cur.execute(f"SELECT {_HEAD_COLUMNS} FROM tree_heads WHERE tree_size = %s", (size,))  # noqa: S608
            row = cur.fetchone()
        return None if row is None else _head(row)

    def nodes(self, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
        with self._cursor() as cur:
            return fetch_nodes(cur, keys)

    def frontier(self, size: int) -> list[bytes]:
        with self._cursor() as cur:
            return frontier_hashes(cur, size)

    # --- tiles (c2sp.org/tlog-tiles): stored strata read as they are -----------------------
    def tile_hashes(self, level: int, start: int, end: int) -> tuple[int, list[bytes]]:
        """The tree's size (its latest signed head) and the stored hashes of nodes
        [start, end) of tree level `level` (0: leaves; else a stored stratum) that a tree of
        that size has: fewer than asked when the tree is not that large yet.

        TreeInconsistent if a node the tree has is not stored.
        """
        with self._cursor() as cur:
            size = _latest_size(cur)
            end = min(end, size >> level)
            if end <= start:
                return size, []
            found = _fetch_base(cur, level, [(start, end)])
        try:
            return size, [found[i] for i in range(start, end)]
        except KeyError as exc:
            raise TreeInconsistent(f"stored node ({level}, {exc.args[0]}) is missing") from None

    def entries(self, start: int, end: int) -> tuple[int, list[dict[str, Any]]]:
        """The tree's size and the events with start <= seq < min(end, size), in seq order,
        as the API returns them (TreeInconsistent if one is missing or repeated)."""
        with self._cursor() as cur:
            size = _latest_size(cur)
            end = min(end, size)
            if end <= start:
                return size, []
            cur.row_factory = namedtuple_row
            cur.execute(f"{_EVENT_SELECT} WHERE seq >= %s AND seq < %s ORDER BY seq", (start, end))
            events = [stored_event(row) for row in cur.fetchall()]
        if [e["seq"] for e in events] != list(range(start, end)):
            raise TreeInconsistent(f"the events with seq {start}–{end - 1} are not all stored once")
        return size, events

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
