"""The tables, as SQLAlchemy sees them. Alembic's migrations create them; `alembic check`
keeps the two in step.

`events` is a TimescaleDB hypertable partitioned on `occurred_at`. Its unique key is `id`, but a
hypertable's unique indexes must include the partitioning column, so `event_ids` (a plain table
keyed on `id`) is the dedupe ledger and the route from an id to its chunk.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("occurred_at", TIMESTAMP(timezone=True), nullable=False),
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("received_at", TIMESTAMP(timezone=True), nullable=False),
    # C collation: byte order, so `type LIKE 'customer.%'` is an index range scan.
    Column("type", Text(collation="C"), nullable=False),
    Column("service", Text(collation="C"), nullable=False),
    Column("publisher", Text, nullable=True),
    Column("action", Text, nullable=True),
    Column("outcome", Text, nullable=False),
    Column("actor", JSONB, nullable=True),
    Column("subject", JSONB, nullable=True),
    Column("context", JSONB, nullable=True),
    Column("data", JSONB, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    CheckConstraint("outcome IN ('success', 'failure', 'unknown')", name="events_outcome_check"),
    # Every list query orders by (occurred_at, seq); each filter index ends with the same pair
    # so a filtered page is one index range scan in either direction.
    Index("events_occurred_at_seq_idx", "occurred_at", "seq"),
    Index("events_seq_idx", "seq"),
    Index("events_service_idx", "service", "occurred_at", "seq"),
    Index("events_type_idx", "type", "occurred_at", "seq"),
    Index(
        "events_actor_id_idx",
        text("(actor ->> 'id')"),
        "occurred_at",
        "seq",
        postgresql_where=text("(actor ->> 'id') IS NOT NULL"),
    ),
    Index(
        "events_subject_id_idx",
        text("(subject ->> 'id')"),
        "occurred_at",
        "seq",
        postgresql_where=text("(subject ->> 'id') IS NOT NULL"),
    ),
    Index(
        "events_trace_id_idx",
        text("(context ->> 'trace_id')"),
        "occurred_at",
        "seq",
        postgresql_where=text("(context ->> 'trace_id') IS NOT NULL"),
    ),
)

event_ids = Table(
    "event_ids",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("occurred_at", TIMESTAMP(timezone=True), nullable=False),
)

# The integrity tree (docs/INTEGRITY.md): complete subtrees of levels 8, 16, … (level 0 is
# events.leaf_hash; other levels are folded from these), and the signed head recorded after
# each batch.
merkle_nodes = Table(
    "merkle_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True),
    Column("node_index", BigInteger, primary_key=True),
    Column("hash", LargeBinary, nullable=False),
    CheckConstraint("level % 8 = 0 AND level BETWEEN 8 AND 56", name="merkle_nodes_level_check"),
)

tree_heads = Table(
    "tree_heads",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary, nullable=False),
    Column("timestamp", TIMESTAMP(timezone=True), nullable=False),
    Column("signature", LargeBinary, nullable=False),
    # The right edge of the tree at this size: its complete subtrees' hashes, largest first.
    Column("frontier", LargeBinary, nullable=False),
    CheckConstraint("tree_size > 0", name="tree_heads_size_check"),
)
