"""Ids are deduplicated per service.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

`event_ids` is keyed on (id, service): an event is a duplicate only of an earlier event of
its own service with the same id, so one service's key can no longer make another
service's event vanish by sending its id first. The ledger is rebuilt from `events`, which
reads the whole log once (a few minutes for tens of millions of events).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


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


def downgrade() -> None:
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
