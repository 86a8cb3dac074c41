"""Hourly counts kept by the writer, so that long bucket queries do not scan the log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Derived data, not an audit record: the writer adds each batch's counts in the batch's own
transaction (so they are exact), and `GET /v1/stats/buckets` reads them whenever the
question can be answered from whole hours. Events stored before this revision are counted
here once.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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
    op.execute("REVOKE ALL ON event_counts FROM PUBLIC")
    op.execute("GRANT SELECT, INSERT, UPDATE ON event_counts TO auditlog_writer")
    op.execute("GRANT SELECT ON event_counts TO auditlog_reader")
    # Absent action and publisher are '' here: a primary key cannot hold NULL.
    op.execute(
        """
        INSERT INTO event_counts
        SELECT date_trunc('hour', occurred_at, 'UTC'), service, type, coalesce(action, ''),
               outcome, coalesce(publisher, ''), count(*)
        FROM events GROUP BY 1, 2, 3, 4, 5, 6
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE event_counts")
