"""Events hypertable, dedupe ledger, roles and the append-only triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Roles are cluster-wide: several databases (a test database per run) share them, so they
# are created when missing and never dropped by a downgrade.
ROLES = ("auditlog_writer", "auditlog_reader")


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    for role in ROLES:
        op.execute(
            f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} LOGIN;
              END IF;
            END $$
            """
        )

    op.execute(
        """
        CREATE TABLE events (
            occurred_at timestamptz NOT NULL,
            id          uuid        NOT NULL,
            seq         bigint      NOT NULL,
            received_at timestamptz NOT NULL,
            type        text COLLATE "C" NOT NULL,
            service     text COLLATE "C" NOT NULL,
            publisher   text,
            action      text,
            outcome     text        NOT NULL,
            actor       jsonb,
            subject     jsonb,
            context     jsonb,
            data        jsonb       NOT NULL,
            CONSTRAINT events_outcome_check CHECK (outcome IN ('success', 'failure', 'unknown'))
        )
        """
    )
    # One chunk a day: a day's indexes stay small enough to live in memory while being
    # written, and a query bounded in time touches only the days it asks for.
    # TODO(scale): at well over ~50 M events a day, shorten it (set_chunk_time_interval) so
    # that one chunk's indexes still fit in a quarter of the memory.
    op.execute(
        "SELECT create_hypertable('events', by_range('occurred_at', INTERVAL '1 day'),"
        " create_default_indexes => false)"
    )
    op.execute("CREATE INDEX events_occurred_at_seq_idx ON events (occurred_at, seq)")
    op.execute("CREATE INDEX events_seq_idx ON events (seq)")
    op.execute("CREATE INDEX events_service_idx ON events (service, occurred_at, seq)")
    op.execute("CREATE INDEX events_type_idx ON events (type, occurred_at, seq)")
    for name, expression in (
        ("actor_id", "(actor ->> 'id')"),
        ("subject_id", "(subject ->> 'id')"),
        ("trace_id", "(context ->> 'trace_id')"),
    ):
        op.execute(
            f"CREATE INDEX events_{name}_idx ON events ({expression}, occurred_at, seq)"
            f" WHERE {expression} IS NOT NULL"
        )

    # TODO(scale): a plain table is fine to a few billion ids; past that, hash-partition it
    # on id (PostgreSQL declarative partitioning) so each partition's index stays in memory.
    op.execute(
        """
        CREATE TABLE event_ids (
            id          uuid PRIMARY KEY,
            occurred_at timestamptz NOT NULL
        )
        """
    )

    # Nobody changes history: not the writer, not the reader, not the owner.
    op.execute(
        """
        CREATE FUNCTION auditlog_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'auditlog: % on % is refused: the audit log is append-only',
            TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    for table in ("events", "event_ids"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION auditlog_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_change()"
        )
        op.execute(f"REVOKE ALL ON {table} FROM PUBLIC")
        # The owner gives up its own right to change rows too. It could grant it back (an
        # owner can), but then it is a deliberate act, and the integrity tree shows it. The
        # revocation reaches every chunk, which the trigger on the hypertable does not for
        # TRUNCATE.
        op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM CURRENT_USER")
        op.execute(f"GRANT SELECT, INSERT ON {table} TO auditlog_writer")
        op.execute(f"GRANT SELECT ON {table} TO auditlog_reader")
    op.execute("GRANT USAGE ON SCHEMA public TO auditlog_writer, auditlog_reader")


def downgrade() -> None:
    for table in ("event_ids", "events"):
        op.execute(f"DROP TABLE {table}")
    op.execute("DROP FUNCTION auditlog_refuse_change()")
