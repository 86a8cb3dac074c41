"""Ids are deduplicated per service; the hourly counts are append-only and verifiable.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

1. `event_ids` is keyed on (id, service): an event is a duplicate only of an earlier event
   of its own service with the same id, so one service's key can no longer make another
   service's event vanish by sending its id first. The ledger is rebuilt from `events`.
2. `event_counts` is never updated again: each row counts one cell's events within a span
   of seqs (level 0: one batch's events within a piece of 4,096 seqs; levels 12 and 16: a
   whole block of 2^12 or 2^16 seqs), appended by the writer (integrity/counts.py). The
   writer role loses UPDATE, and the append-only triggers cover the table. The existing
   counts are recomputed from the events in the spans the writer would have written (a
   batch ends at each signed tree head), and the migration stops if they disagree with the
   counts kept until now.

Both rebuilds read the whole log once (a few minutes for tens of millions of events).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PIECE = 4096  # integrity/counts.py: level-0 spans stay within one of these
ROLLUP_LEVELS = (12, 16)

# TODO(ops): both rebuilds hold their tables' locks for the whole transaction, and the
# writers wait on them (lock_timeout does not apply to a lock already held): on a large log,
# stop the workers first (ingest goes on into the stream) and start them after.


def _append_only(table: str) -> None:
    op.execute(
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION auditlog_refuse_change()"
    )
    op.execute(
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
        " FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_change()"
    )
    op.execute(f"REVOKE ALL ON {table} FROM PUBLIC")
    op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM CURRENT_USER")
    op.execute(f"GRANT SELECT, INSERT ON {table} TO auditlog_writer")
    op.execute(f"GRANT SELECT ON {table} TO auditlog_reader")


def upgrade() -> None:
    _ids_per_service()
    _append_only_counts()


def _ids_per_service() -> None:
    # The ledger is derived from the events (one row each): dropped and rebuilt in this
    # transaction, so no other session sees it missing.
    op.execute("DROP TABLE event_ids")
    op.execute(
        """
        CREATE TABLE event_ids (
            id          uuid NOT NULL,
            service     text COLLATE "C" NOT NULL,
            occurred_at timestamptz NOT NULL
        )
        """
    )
    op.execute("INSERT INTO event_ids SELECT id, service, occurred_at FROM events")
    op.execute("ALTER TABLE event_ids ADD PRIMARY KEY (id, service)")
    _append_only("event_ids")


def _append_only_counts() -> None:
    op.execute("ALTER TABLE event_counts RENAME TO event_counts_0004")
    op.execute("ALTER TABLE event_counts_0004 RENAME CONSTRAINT event_counts_pkey TO old_pkey")
    op.execute(
        f"""
        CREATE TABLE event_counts (
            level     smallint NOT NULL,
            seq_lo    bigint NOT NULL,
            seq_hi    bigint NOT NULL,
            hour      timestamptz NOT NULL,
            service   text COLLATE "C" NOT NULL,
            type      text COLLATE "C" NOT NULL,
            action    text NOT NULL,
            outcome   text NOT NULL,
            publisher text NOT NULL,
            n         bigint NOT NULL,
            CONSTRAINT event_counts_level_check CHECK (level IN (0, 12, 16)),
            CONSTRAINT event_counts_span_check CHECK (
                seq_lo >= 0 AND seq_lo < seq_hi AND CASE WHEN level = 0
                THEN seq_lo / {PIECE} = (seq_hi - 1) / {PIECE}
                ELSE seq_lo % (1::bigint << level) = 0
                     AND seq_hi = seq_lo + (1::bigint << level) END),
            CONSTRAINT event_counts_n_check CHECK (n > 0)
        )
        """
    )
    # Level 0: the spans the writer would have written. A batch ends at each signed tree
    # head, a span also at each multiple of 4,096; width_bucket finds each event's span
    # start in the sorted array of those boundaries (a binary search, one pass over the
    # events).
    op.execute(
        f"""
        WITH size AS (SELECT coalesce(max(seq) + 1, 0) AS n FROM events),
        bounds AS (
            SELECT array_agg(b ORDER BY b) AS a FROM (
                SELECT tree_size AS b FROM tree_heads, size WHERE tree_size < size.n
                UNION SELECT generate_series(0, size.n - 1, {PIECE}) FROM size
            ) AS boundaries
        ),
        placed AS (
            SELECT e.*, width_bucket(e.seq, bounds.a) AS i, bounds.a, size.n
            FROM events AS e, bounds, size
        )
        INSERT INTO event_counts
        SELECT 0, a[i], least(coalesce(a[i + 1], n), n), date_trunc('hour', occurred_at, 'UTC'),
               service, type, coalesce(action, ''), outcome, coalesce(publisher, ''), count(*)
        FROM placed GROUP BY 2, 3, 4, 5, 6, 7, 8, 9
        """
    )
    # Each complete block of each level: the sum of the level below within it.
    for lower, level in zip((0, *ROLLUP_LEVELS), ROLLUP_LEVELS, strict=False):
        size = 1 << level
        op.execute(
            f"""
            INSERT INTO event_counts
            SELECT {level}, seq_lo / {size} * {size}, seq_lo / {size} * {size} + {size}, hour,
                   service, type, action, outcome, publisher, sum(n)
            FROM event_counts
            WHERE level = {lower}
              AND seq_lo < (SELECT coalesce(max(seq) + 1, 0) FROM events) / {size} * {size}
            GROUP BY 2, 3, 4, 5, 6, 7, 8, 9
            """
        )
    # No primary key (storage/schema.py says why): spans by where they start.
    op.execute("CREATE INDEX event_counts_spans_idx ON event_counts (level, seq_lo)")
    # A bucket query reads the top level's rows by hour: an index-only scan of this.
    op.execute(
        "CREATE INDEX event_counts_blocks_idx ON event_counts (hour)"
        " INCLUDE (type, service, action, outcome, publisher, n, seq_lo) WHERE level = 16"
    )
    _check_recount()
    op.execute("DROP TABLE event_counts_0004")
    _append_only("event_counts")


def _check_recount() -> None:
    """Stop if the counts kept so far are not what the events say: a migration must not
    quietly replace evidence."""
    cells = "hour, service, type, action, outcome, publisher"
    differences = (
        op.get_bind()
        .execute(
            sa.text(
                f"""
                SELECT {cells}, old.n AS kept, new.n AS recounted
                FROM event_counts_0004 AS old
                FULL JOIN (SELECT {cells}, sum(n) AS n FROM event_counts WHERE level = 0
                           GROUP BY {cells}) AS new USING ({cells})
                WHERE old.n IS DISTINCT FROM new.n
                ORDER BY {cells} LIMIT 5
                """
            )
        )
        .all()
    )
    if differences:
        shown = "; ".join(
            f"{row.hour:%Y-%m-%dT%H:00Z} {row.service}/{row.type}/{row.action or '-'}/"
            f"{row.outcome}/{row.publisher or '-'}: kept {row.kept or 0}, "
            f"events {row.recounted or 0}"
            for row in differences
        )
        raise RuntimeError(
            "the hourly counts kept until now disagree with the events, so they cannot be "
            f"carried over as they are (first cells: {shown}); find out why (`auditlog verify` "
            "checks the events) before upgrading"
        )


def downgrade() -> None:
    # The counts go back to one row per hour and cell, the writer may update them again.
    op.execute("ALTER TABLE event_counts RENAME TO event_counts_0006")
    op.execute(
        """
        CREATE TABLE event_counts (
            hour      timestamptz NOT NULL,
            service   text COLLATE "C" NOT NULL,
            type      text COLLATE "C" NOT NULL,
            action    text NOT NULL,
            outcome   text NOT NULL,
            publisher text NOT NULL,
            n         bigint NOT NULL,
            PRIMARY KEY (hour, service, type, action, outcome, publisher)
        )
        """
    )
    op.execute(
        "INSERT INTO event_counts SELECT hour, service, type, action, outcome, publisher,"
        " sum(n) FROM event_counts_0006 WHERE level = 0 GROUP BY 1, 2, 3, 4, 5, 6"
    )
    op.execute("DROP TABLE event_counts_0006")
    op.execute("REVOKE ALL ON event_counts FROM PUBLIC")
    op.execute("GRANT SELECT, INSERT, UPDATE ON event_counts TO auditlog_writer")
    op.execute("GRANT SELECT ON event_counts TO auditlog_reader")

    # One ledger row per id again: impossible once two services have used one id, and the
    # older code would answer for one of them only. Refuse rather than hide an event.
    reused = (
        op.get_bind()
        .execute(sa.text("SELECT id FROM event_ids GROUP BY id HAVING count(*) > 1 LIMIT 5"))
        .scalars()
        .all()
    )
    if reused:
        raise RuntimeError(
            "cannot go below revision 0006: these ids are used by several services, which "
            f"the older ledger cannot hold: {', '.join(str(i) for i in reused)}"
        )
    op.execute("DROP TABLE event_ids")
    op.execute("CREATE TABLE event_ids (id uuid PRIMARY KEY, occurred_at timestamptz NOT NULL)")
    op.execute("INSERT INTO event_ids SELECT id, occurred_at FROM events")
    _append_only("event_ids")
