"""The integrity chain: leaf hashes, the Merkle tree's nodes, signed tree heads.

`merkle_nodes` keeps the complete subtrees of levels 8, 16, … (the others are folded from
them); each `tree_heads` row also keeps the tree's right edge (`frontier`: the hashes of its
complete subtrees, largest first), so the next batch starts without reading the tree.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Events stored before this revision get their leaf hashes and tree nodes here, in seq order,
by the same rule the writer uses (docs/INTEGRITY.md). The first batch written afterwards
signs a tree head covering them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from auditlog.canonical import stored_event
from auditlog.integrity.leaf import leaf_hash
from auditlog.integrity.merkle import Frontier, is_stored

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("merkle_nodes", "tree_heads")


def upgrade() -> None:
    op.execute("ALTER TABLE events ADD COLUMN leaf_hash bytea")
    op.execute(
        """
        CREATE TABLE merkle_nodes (
            level      smallint NOT NULL,
            node_index bigint   NOT NULL,
            hash       bytea    NOT NULL,
            PRIMARY KEY (level, node_index),
            CONSTRAINT merkle_nodes_level_check CHECK (level % 8 = 0 AND level BETWEEN 8 AND 56)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE tree_heads (
            tree_size  bigint      PRIMARY KEY,
            root_hash  bytea       NOT NULL,
            timestamp  timestamptz NOT NULL,
            signature  bytea       NOT NULL,
            frontier   bytea       NOT NULL,
            CONSTRAINT tree_heads_size_check CHECK (tree_size > 0)
        )
        """
    )
    for table in TABLES:
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
    _backfill()
    op.execute("ALTER TABLE events ALTER COLUMN leaf_hash SET NOT NULL")


def _backfill() -> None:
    """Hash the events stored before this revision (an empty log skips this)."""
    conn = op.get_bind()
    if conn.scalar(sa.text("SELECT count(*) FROM events")) == 0:
        return
    # Hypertables cannot disable a trigger; within this one transaction it is dropped and
    # created again, so no other session ever sees the table without it.
    op.execute("DROP TRIGGER events_append_only ON events")
    op.execute("GRANT UPDATE ON events TO CURRENT_USER")
    frontier = Frontier()
    # TODO(scale): one UPDATE a row is fine for the logs that predate this revision (a dev
    # database); batch it if a large one ever needs upgrading.
    rows = conn.execute(sa.text("SELECT * FROM events ORDER BY seq")).yield_per(1000)
    for row in rows:
        if row.seq != frontier.size:
            raise RuntimeError(f"seq {frontier.size} is missing; the log cannot be hashed")
        leaf = leaf_hash(stored_event(row))
        conn.execute(
            sa.text("UPDATE events SET leaf_hash = :h WHERE occurred_at = :t AND seq = :s"),
            {"h": leaf, "t": row.occurred_at, "s": row.seq},
        )
        for level, index, node in frontier.append(leaf):
            if not is_stored(level):
                continue
            conn.execute(
                sa.text("INSERT INTO merkle_nodes VALUES (:l, :i, :h)"),
                {"l": level, "i": index, "h": node},
            )
    op.execute("REVOKE UPDATE ON events FROM CURRENT_USER")
    op.execute(
        "CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events"
        " FOR EACH ROW EXECUTE FUNCTION auditlog_refuse_change()"
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE {table}")
    op.execute("ALTER TABLE events DROP COLUMN leaf_hash")
