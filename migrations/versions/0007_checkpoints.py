"""C2SP checkpoints, the witnesses' cosignatures on them, and the witnesses' refusals.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

`checkpoints` keeps every checkpoint the log signed (c2sp.org/tlog-checkpoint: origin, size,
root hash, and the log's signature line), one per publication interval, each at the size of
a signed tree head; `checkpoint_cosignatures` the cosignature lines witnesses returned for
them; `witness_refusals` what a witness answered when it refused one as inconsistent with
what it saw before (the evidence of a fork, kept). All three are append-only like the log.
No foreign keys: PostgreSQL checks them before the append-only triggers, so a TRUNCATE of
`tree_heads` would be refused for the reference instead of as a change to the log.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("checkpoints", "checkpoint_cosignatures", "witness_refusals")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE checkpoints (
            tree_size    bigint      PRIMARY KEY,
            note         text        NOT NULL,
            published_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE checkpoint_cosignatures (
            tree_size   bigint      NOT NULL,
            witness     text        NOT NULL,
            signature   text        NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tree_size, witness)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE witness_refusals (
            tree_size  bigint      NOT NULL,
            witness    text        NOT NULL,
            status     smallint    NOT NULL,
            answer     text        NOT NULL,
            refused_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tree_size, witness)
        )
        """
    )
    # The latest cosigned size per witness is the `old` size of its next submission.
    op.execute(
        "CREATE INDEX checkpoint_cosignatures_witness_idx"
        " ON checkpoint_cosignatures (witness, tree_size)"
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


def downgrade() -> None:
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE {table}")
