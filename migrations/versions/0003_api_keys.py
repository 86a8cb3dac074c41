"""API keys: who may write which services' events, who may read.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Only a SHA-256 of each token is stored. Keys are configuration, not audit records: the
owner (the `auditlog keys` command) may revoke one or change its rate limit, and every such
change is itself recorded in the log as an event. The API processes only read this table.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE api_keys (
            name        text PRIMARY KEY,
            token_hash  bytea NOT NULL UNIQUE,
            scope       text NOT NULL,
            services    text[] NOT NULL DEFAULT '{}',
            rate_per_s  double precision,
            burst       integer,
            created_at  timestamptz NOT NULL DEFAULT now(),
            revoked_at  timestamptz,
            CONSTRAINT api_keys_name_check CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
            CONSTRAINT api_keys_scope_check CHECK (scope IN ('write', 'read', 'admin')),
            CONSTRAINT api_keys_hash_check CHECK (length(token_hash) = 32),
            CONSTRAINT api_keys_limits_check CHECK (
                (rate_per_s IS NULL OR rate_per_s > 0) AND (burst IS NULL OR burst > 0))
        )
        """
    )
    op.execute("REVOKE ALL ON api_keys FROM PUBLIC")
    op.execute("GRANT SELECT ON api_keys TO auditlog_reader")
    # The publisher of each event (the key's name) is worth an index: auditors filter on it.
    op.execute(
        "CREATE INDEX events_publisher_idx ON events (publisher, occurred_at, seq)"
        " WHERE publisher IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX events_publisher_idx")
    op.execute("DROP TABLE api_keys")
