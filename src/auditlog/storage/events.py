"""The event store: the batched write path and every read of `events`."""

from __future__ import annotations

import sys
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
import structlog
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy import exc as sa_exc

from auditlog.canonical import stored_event
from auditlog.errors import Unavailable
from auditlog.integrity.heads import HeadSigner, TreeHead
from auditlog.integrity.merkle import Frontier, is_stored
from auditlog.storage.batch import COPY_CHUNK, COPY_COLUMNS, COPY_SQL, PreparedEvent
from auditlog.storage.schema import event_counts, event_ids, events, tree_heads
from auditlog.storage.tree import TreeInconsistent, frontier_hashes

log = structlog.get_logger("auditlog.store")

# One advisory lock serializes batches: seq is assigned in commit order, gapless.
# TODO(scale): one lock is one log. Its cost is a few hundred microseconds per batch, so it
# bounds throughput only at hundreds of batches a second; past that, run several logs (one
# per tenant or per service group), each with its own lock, sequence and tree.
WRITE_LOCK_KEY = 0x61756469746C6F67  # "auditlog"


# time_bucket's own default origin for intervals without months (a Monday, midnight UTC);
# passed explicitly so that the zero-filled series computed in Python lines up with it.
BUCKET_ORIGIN = datetime.fromisoformat("2000-01-03T00:00:00+00:00")

GROUP_KEYS: dict[str, ColumnElement[Any]] = {
    "type": events.c.type,
    "service": events.c.service,
    "action": events.c.action,
    "outcome": events.c.outcome,
    "actor_id": literal_column("(actor ->> 'id')"),
}


class StoreUnavailable(Exception):
    """PostgreSQL did not answer or dropped the connection: worth retrying as is."""


class StoreRejected(Exception):
    """PostgreSQL refused the batch itself: retrying it unchanged will fail again."""


@dataclass(frozen=True)
class EventFilter:
    """Conditions of a list, export or bucket query; None means no condition."""

    service: str | None = None
    type: str | None = None
    type_prefix: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    trace_id: str | None = None
    publisher: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class WriteResult:
    """What a batch write did: the events it stored, as the API returns them, and how many
    it skipped as already stored."""

    stored: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    head: TreeHead | None = None


def _json_path(column: str, key: str) -> ColumnElement[Any]:
    # Spelled as the index expressions are, so the planner matches them.
    return literal_column(f"({column} ->> '{key}')")


_JSON_FILTERS = {
    "actor_type": _json_path("actor", "type"),
    "actor_id": _json_path("actor", "id"),
    "subject_type": _json_path("subject", "type"),
    "subject_id": _json_path("subject", "id"),
    "trace_id": _json_path("context", "trace_id"),
}


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with prefix (C collation:
    UTF-8 bytes, i.e. code point order), or None when there is none (all U+10FFFF)."""
    chars = list(prefix)
    while chars:
        following = ord(chars.pop()) + 1
        if following <= sys.maxunicode:
            if 0xD800 <= following <= 0xDFFF:  # surrogates are not characters
                following = 0xE000
            return "".join(chars) + chr(following)
    return None


def prefix_range(column: ColumnElement[str], prefix: str) -> list[ColumnElement[bool]]:
    """column starts with prefix, as a range an index on column can serve."""
    upper = prefix_upper_bound(prefix)
    return [column >= prefix] if upper is None else [column >= prefix, column < upper]


def conditions(flt: EventFilter) -> list[ColumnElement[bool]]:
    c = events.c
    where: list[ColumnElement[bool]] = []
    for name in ("service", "type", "action", "outcome", "publisher"):
        value = getattr(flt, name)
        if value is not None:
            where.append(c[name] == value)
    if flt.type_prefix:
        where += prefix_range(c.type, flt.type_prefix)
    for name, expression in _JSON_FILTERS.items():
        value = getattr(flt, name)
        if value is not None:
            where.append(expression == value)
    if flt.since is not None:
        where.append(c.occurred_at >= flt.since)
    if flt.until is not None:
        where.append(c.occurred_at < flt.until)
    return where


_EVENT_COLUMNS = [events.c[name] for name in COPY_COLUMNS]


class EventStore:
    """Reads through the reader engine, writes through the writer engine."""

    def __init__(
        self, reader: Engine, writer: Engine | None = None, signer: HeadSigner | None = None
    ):
        self._reader = reader
        self._writer = writer
        self._signer = signer

    def close(self) -> None:
        self._reader.dispose()
        if self._writer is not None:
            self._writer.dispose()

    # --- write path ------------------------------------------------------------------------
    def write(self, batch: Sequence[dict[str, Any]]) -> WriteResult:
        """Store a batch in one transaction: dedupe, number, hash, COPY, sign a tree head.

        Each item is an event in stored form (canonical timestamps, no seq). Items whose id is
        already stored, or repeated within the batch, are skipped.
        """
        if self._writer is None or self._signer is None:
            raise RuntimeError("this EventStore was built without a writer engine and signer")
        try:
            with self._writer.begin() as conn:
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
        cur.execute(
            "INSERT INTO event_ids (id, occurred_at)"
            " SELECT * FROM unnest(%s::uuid[], %s::timestamptz[])"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            ([p.id for p in prepared], [p.occurred_at for p in prepared]),
        )
        new_ids = {str(row[0]) for row in cur.fetchall()}
        if not new_ids:
            return WriteResult(duplicates=len(batch))
        frontier, now = _tree_state(cur)
        stored: list[dict[str, Any]] = []
        nodes: list[tuple[int, int, bytes]] = []
        # Chunks go out while the next ones are hashed: the server inserts rows meanwhile.
        with cur.copy(COPY_SQL) as copy:
            lines: list[str] = []
            for event in prepared:
                if event.id not in new_ids:
                    continue
                new_ids.discard(event.id)  # a repeat within the batch is skipped
                seq = frontier.size
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
        return WriteResult(stored=stored, duplicates=len(batch) - len(stored), head=head)

    # --- read path -------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A reader connection; a database that does not answer is Unavailable, not a 500."""
        try:
            with self._reader.connect() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            raise Unavailable("the database does not answer; try again shortly") from exc

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(text("SELECT 1"))

    def next_seq(self) -> int:
        """The seq the next stored event will get: every smaller seq is committed.

        Each batch records its tree head in the transaction that stores it, so the latest
        head's size is exactly the number of committed events.
        """
        with self._read() as conn:
            size = conn.execute(
                select(tree_heads.c.tree_size).order_by(tree_heads.c.tree_size.desc()).limit(1)
            ).scalar()
            if size is None:  # no head yet (an empty log, or one hashed by migration 0002)
                last = conn.execute(select(func.max(events.c.seq))).scalar()
                return 0 if last is None else int(last) + 1
        return int(size)

    def get(self, event_id: uuid.UUID) -> dict[str, Any] | None:
        """One event by id: its occurred_at from the ledger, then its one chunk.

        Two statements on purpose: with the time as a constant the planner excludes every
        other chunk before planning them (a subquery would leave that to run time, after
        planning a scan of every chunk: milliseconds on a month of daily chunks).
        """
        route = select(event_ids.c.occurred_at).where(event_ids.c.id == event_id)
        with self._read() as conn:
            occurred_at = conn.execute(route).scalar()
            if occurred_at is None:
                return None
            query = select(*_EVENT_COLUMNS).where(
                events.c.occurred_at == occurred_at, events.c.id == event_id
            )
            row = conn.execute(query).first()
        return None if row is None else stored_event(row)

    def page(
        self,
        flt: EventFilter,
        *,
        order: Literal["asc", "desc"],
        limit: int,
        before_seq: int,
        after: tuple[datetime, int] | None = None,
    ) -> list[dict[str, Any]]:
        """One page in (occurred_at, seq) order, among events with seq < before_seq.

        `after` is the (occurred_at, seq) of the last event of the previous page: the keyset.
        """
        where = [*conditions(flt), events.c.seq < before_seq]
        key = tuple_(events.c.occurred_at, events.c.seq)
        if after is not None:
            where.append(key > tuple_(*after) if order == "asc" else key < tuple_(*after))
        if order == "asc":
            ordering = (events.c.occurred_at.asc(), events.c.seq.asc())
        else:
            ordering = (events.c.occurred_at.desc(), events.c.seq.desc())
        query = select(*_EVENT_COLUMNS).where(and_(*where)).order_by(*ordering).limit(limit)
        with self._read() as conn:
            return [stored_event(row) for row in conn.execute(query)]

    def bucket_counts(
        self, flt: EventFilter, width: timedelta, group_by: str | None
    ) -> list[tuple[datetime, str | None, int]]:
        """(bucket start, group key, count) for every non-empty bucket, in order."""
        start = func.time_bucket(literal(width), events.c.occurred_at, literal(BUCKET_ORIGIN))
        key = GROUP_KEYS[group_by] if group_by else literal(None)
        query = (
            select(start.label("start"), key.label("key"), func.count().label("n"))
            .where(*conditions(flt))
            .group_by(text("1"), text("2"))
            .order_by(text("1"), text("2"))
        )
        with self._read() as conn:
            return [(row.start, row.key, row.n) for row in conn.execute(query)]

    def hourly_bucket_counts(
        self, flt: EventFilter, width: timedelta, group_by: str | None
    ) -> list[tuple[datetime, str | None, int]]:
        """bucket_counts from the writer's hourly counts: the same answer when the range
        starts and ends on whole hours, the width is whole hours and every filter and the
        group are columns of event_counts (see `can_count_hourly`)."""
        c = event_counts.c
        start = func.time_bucket(literal(width), c.hour, literal(BUCKET_ORIGIN))
        key: ColumnElement[Any] = literal(None)
        if group_by in ("action", "publisher"):
            key = func.nullif(c[group_by], "")
        elif group_by:
            key = c[group_by]
        where: list[ColumnElement[bool]] = [c.hour >= flt.since, c.hour < flt.until]
        for name in ("service", "type", "outcome"):
            if getattr(flt, name) is not None:
                where.append(c[name] == getattr(flt, name))
        for name in ("action", "publisher"):
            if getattr(flt, name) is not None:
                where.append(c[name] == getattr(flt, name))
        if flt.type_prefix:
            where += prefix_range(c.type, flt.type_prefix)
        query = (
            select(start.label("start"), key.label("key"), func.sum(c.n).label("n"))
            .where(*where)
            .group_by(text("1"), text("2"))
            .order_by(text("1"), text("2"))
        )
        with self._read() as conn:
            return [(row.start, row.key, int(row.n)) for row in conn.execute(query)]

    # --- tail and export --------------------------------------------------------------------
    def newest(self, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]:
        """The `limit` matching events with the highest seq, newest first (the tail)."""
        query = (
            select(*_EVENT_COLUMNS)
            .where(*conditions(flt))
            .order_by(events.c.seq.desc())
            .limit(limit)
        )
        with self._read() as conn:
            return [stored_event(row) for row in conn.execute(query)]

    def after(self, seq: int, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]:
        """The first `limit` matching events with a seq above `seq`, in seq order (follow)."""
        query = (
            select(*_EVENT_COLUMNS)
            .where(*conditions(flt), events.c.seq > seq)
            .order_by(events.c.seq.asc())
            .limit(limit)
        )
        with self._read() as conn:
            return [stored_event(row) for row in conn.execute(query)]

    def export(self, flt: EventFilter, *, fetch_rows: int = 2000) -> Iterator[dict[str, Any]]:
        """Every matching event in (occurred_at, seq) order, read through a server-side
        cursor `fetch_rows` at a time: memory stays flat however many match.

        One statement, so one snapshot. The connection is held until the iterator is
        exhausted or closed.
        """
        query = (
            select(*_EVENT_COLUMNS)
            .where(*conditions(flt))
            .order_by(events.c.occurred_at.asc(), events.c.seq.asc())
        )
        with self._read() as conn:
            # A server-side cursor lives in a transaction (the read path runs in autocommit).
            result = conn.execution_options(
                isolation_level="REPEATABLE READ", stream_results=True, yield_per=fetch_rows
            ).execute(query)
            try:
                for row in result:
                    yield stored_event(row)
            finally:
                result.close()  # the server-side cursor, before its connection goes back


def count_hourly(cur: psycopg.Cursor[Any], stored: list[dict[str, Any]]) -> None:
    """Add the batch to the hourly counts, in its own transaction: they stay exact."""
    counts = Counter(
        (
            d["occurred_at"][:13] + ":00:00Z",  # canonical form: the hour is a prefix
            d["service"],
            d["type"],
            d["action"] or "",
            d["outcome"],
            d["publisher"] or "",
        )
        for d in stored
    )
    columns = list(zip(*((*key, n) for key, n in counts.items()), strict=True))
    cur.execute(
        "INSERT INTO event_counts (hour, service, type, action, outcome, publisher, n)"
        " SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[],"
        " %s::text[], %s::text[], %s::bigint[])"
        " ON CONFLICT (hour, service, type, action, outcome, publisher)"
        " DO UPDATE SET n = event_counts.n + EXCLUDED.n",
        [list(column) for column in columns],
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
