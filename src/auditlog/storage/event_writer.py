"""The write side of the event log: one batch, one transaction, chained and signed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import structlog
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from auditlog.integrity.counts import ROLLUP_LEVELS, batch_spans, below, completed_blocks
from auditlog.integrity.heads import HeadSigner, TreeHead
from auditlog.integrity.merkle import Frontier, is_stored
from auditlog.storage.batch import COPY_CHUNK, COPY_SQL, PreparedEvent
from auditlog.storage.tree import TreeInconsistent, frontier_hashes

log = structlog.get_logger("auditlog.store")

# One advisory lock serializes batches: seq is assigned in commit order, gapless.
# TODO(scale): one lock is one log. Its cost is a few hundred microseconds per batch, so it
# bounds throughput only at hundreds of batches a second; past that, run several logs (one
# per tenant or per service group), each with its own lock, sequence and tree.
WRITE_LOCK_KEY = 0x61756469746C6F67  # "auditlog"


# The ledger's key is (id, service): each new key comes back, with the services that had
# the id before this batch (the subquery sees the table as the statement began).
DEDUPE_SQL = (
    "WITH new AS (INSERT INTO event_ids (id, service, occurred_at)"
    " SELECT * FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[])"
    " ON CONFLICT (id, service) DO NOTHING RETURNING id, service)"
    " SELECT new.id, new.service, (SELECT array_agg(e.service) FROM event_ids AS e"
    " WHERE e.id = new.id) FROM new"
)


def dedupe_parameters(prepared: Sequence[PreparedEvent]) -> tuple[list[str], ...]:
    return (
        [p.id for p in prepared],
        [p.service for p in prepared],
        [p.occurred_at for p in prepared],
    )


class StoreUnavailable(Exception):
    """PostgreSQL did not answer or dropped the connection: worth retrying as is."""


class StoreRejected(Exception):
    """PostgreSQL refused the batch itself: retrying it unchanged will fail again."""


@dataclass(frozen=True)
class IdReuse:
    """A stored event whose id an earlier event of another service already has: both are
    kept (each service's ids are its own), and the reuse is made visible."""

    id: str
    service: str
    seq: int
    earlier_services: tuple[str, ...]


@dataclass(frozen=True)
class WriteResult:
    """What a batch write did: the events it stored, as the API returns them, how many it
    skipped as already stored (same id, same service), and the stored events whose id
    other services had used before."""

    stored: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    head: TreeHead | None = None
    reused: list[IdReuse] = field(default_factory=list)


class EventWriter:
    """Stores batches through the writer role's engine, signing a tree head for each."""

    def __init__(self, engine: Engine, signer: HeadSigner):
        self._engine = engine
        self._signer = signer

    def close(self) -> None:
        self._engine.dispose()

    def write(self, batch: Sequence[dict[str, Any]]) -> WriteResult:
        """Store a batch in one transaction: dedupe, number, hash, COPY, count, sign a tree
        head.

        Each item is an event in stored form (canonical timestamps, no seq). Items whose id is
        already stored for their service, or repeated within the batch, are skipped.
        """
        try:
            with self._engine.begin() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None
                with raw.cursor() as cur:
                    return self._append(cur, batch, self._signer)
        except TreeInconsistent as exc:
            # Not the batch's fault: writing stops (and retries) until an operator looks.
            log.error("the stored tree is inconsistent; not writing", error=str(exc))
            raise StoreUnavailable(str(exc)) from exc
        except Exception as exc:
            cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
            message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
            if refuses_content(cause):
                raise StoreRejected(message) from exc
            raise StoreUnavailable(message) from exc

    @staticmethod
    def _append(
        cur: psycopg.Cursor[Any], batch: Sequence[dict[str, Any]], signer: HeadSigner
    ) -> WriteResult:
        prepared = [PreparedEvent.of(event) for event in batch]  # before the lock
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        cur.execute(DEDUPE_SQL, dedupe_parameters(prepared))
        earlier: dict[str, list[str]] = {}  # id -> services of the events before this one
        new_keys: set[tuple[str, str]] = set()
        for event_id, service, before in cur.fetchall():
            new_keys.add((str(event_id), service))
            earlier[str(event_id)] = sorted(before or ())
        if not new_keys:
            return WriteResult(duplicates=len(batch))
        frontier, now = _tree_state(cur)
        stored: list[dict[str, Any]] = []
        reused: list[IdReuse] = []
        nodes: list[tuple[int, int, bytes]] = []
        # Chunks go out while the next ones are hashed: the server inserts rows meanwhile.
        with cur.copy(COPY_SQL) as copy:
            lines: list[str] = []
            for event in prepared:
                key = (event.id, event.service)
                if key not in new_keys:
                    continue
                new_keys.discard(key)  # a repeat within the batch is skipped
                seq = frontier.size
                others = earlier[event.id]
                if others:
                    reused.append(IdReuse(event.id, event.service, seq, tuple(others)))
                others.append(event.service)
                leaf = event.leaf(seq)
                nodes.extend(n for n in frontier.append(leaf) if is_stored(n[0]))
                lines.append(event.place(seq, leaf))
                stored.append(event.document)
                if len(lines) == COPY_CHUNK:
                    copy.write("".join(lines))
                    lines.clear()
            copy.write("".join(lines))
        if nodes:
            with cur.copy("COPY merkle_nodes (level, node_index, hash) FROM STDIN") as copy:
                for node in nodes:
                    copy.write_row(node)
        count_hourly(cur, stored)
        head = signer.sign(frontier.size, frontier.root(), now)
        cur.execute(
            "INSERT INTO tree_heads (tree_size, root_hash, timestamp, signature, frontier)"
            " VALUES (%s, %s, %s, %s, %s)",
            (
                head.tree_size,
                head.root_hash,
                head.timestamp,
                head.signature,
                b"".join(frontier.hashes()),
            ),
        )
        return WriteResult(
            stored=stored, duplicates=len(batch) - len(stored), head=head, reused=reused
        )


_COUNT_COLUMNS = "level, seq_lo, seq_hi, hour, service, type, action, outcome, publisher"


def count_hourly(cur: psycopg.Cursor[Any], stored: list[dict[str, Any]]) -> None:
    """Append the batch's hourly counts (stored: its events in seq order, numbered), in its
    own transaction, so they stay exact: one level-0 span per piece the batch falls in,
    then the rows of each block the batch completes (integrity/counts.py)."""
    if not stored:
        return
    rows = [row for span in batch_spans(stored) for row in span.rows()]
    cur.execute(
        f"INSERT INTO event_counts ({_COUNT_COLUMNS}, n)"  # noqa: S608 - constant columns
        " SELECT * FROM unnest(%s::smallint[], %s::bigint[], %s::bigint[], %s::timestamptz[],"
        " %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[])",
        [list(column) for column in zip(*rows, strict=True)],
    )
    append_rollups(cur, stored[0]["seq"], stored[-1]["seq"] + 1)


def append_rollups(cur: psycopg.Cursor[Any], lo: int, hi: int) -> None:
    """Append the rows of every block that seqs [lo, hi), just counted, complete: each the
    sum of the level below within it, smallest level first."""
    for level in ROLLUP_LEVELS:
        size = 1 << level
        for block in completed_blocks(level, lo, hi):
            start = block * size
            cur.execute(
                f"INSERT INTO event_counts ({_COUNT_COLUMNS}, n)"  # noqa: S608 - constant
                " SELECT %s, %s, %s, hour, service, type, action, outcome, publisher, sum(n)"
                " FROM event_counts WHERE level = %s AND seq_lo >= %s AND seq_lo < %s"
                " GROUP BY hour, service, type, action, outcome, publisher",
                (level, start, start + size, below(level), start, start + size),
            )


def _tree_state(cur: psycopg.Cursor[Any]) -> tuple[Frontier, datetime]:
    """The tree's right edge (its size is the next seq) and the database's clock, read under
    the write lock: from the latest head, which keeps the edge for exactly this."""
    cur.execute(
        "SELECT h.tree_size, h.frontier, h.root_hash, clock_timestamp() FROM (SELECT 1) AS one"
        " LEFT JOIN (SELECT tree_size, frontier, root_hash FROM tree_heads"
        " ORDER BY tree_size DESC LIMIT 1) AS h ON true"
    )
    row = cur.fetchone()
    assert row is not None
    size, edge, root, now = row
    if size is not None:
        edge = bytes(edge)
        try:
            frontier = Frontier(size, [edge[i : i + 32] for i in range(0, len(edge), 32)])
        except ValueError:
            raise TreeInconsistent(
                f"the stored right edge of the tree at size {size} is not one of that size"
            ) from None
        # The edge is not signed, the root is: an edited edge would have every later head
        # signed over a tree that is not the log's.
        if frontier.root() != bytes(root):
            raise TreeInconsistent(
                f"the stored right edge of the tree at size {size} does not match its "
                "signed root hash"
            )
        return frontier, now
    # No head yet: an empty log, or events hashed by migration 0002.
    cur.execute("SELECT seq FROM events ORDER BY seq DESC LIMIT 1")
    last = cur.fetchone()
    size = 0 if last is None else last[0] + 1
    return Frontier(size, frontier_hashes(cur, size)), now


# SQLSTATE classes of errors that are the batch's content's fault, so that the same batch
# will be refused every time: data exceptions (22: U+0000, a timestamp out of range, a bad
# UUID), integrity violations (23: a check constraint) and program limits (54: an indexed
# value past btree's 2704 bytes). psycopg files class 54 under OperationalError, with the
# broken connections: sorting by exception class alone retried such an event forever.
_CONTENT_CLASSES = ("22", "23", "54")
# ... except a unique violation: only the tree's own keys are unique (ids are deduplicated
# with ON CONFLICT), so one means two writers raced, not that the events are bad.
_NOT_CONTENT = ("23505",)


def refuses_content(exc: BaseException) -> bool:
    """True when exc says the batch itself can never be stored (retrying it unchanged will
    fail again); False when it is the server, the connection or the deployment (retry).

    Anything that is not a database error was raised while preparing the events (a value
    that does not parse): the content's fault too.
    """
    if isinstance(exc, sa_exc.SQLAlchemyError):  # pool timeout, a closed connection
        return False
    if not isinstance(exc, psycopg.Error):
        return True
    state = exc.sqlstate
    if state is None:
        # Raised by psycopg itself: a value it will not send (DataError: NUL in text), or a
        # connection that broke or never was.
        return isinstance(exc, psycopg.DataError)
    return state[:2] in _CONTENT_CLASSES and state not in _NOT_CONTENT
