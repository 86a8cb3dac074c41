"""The tables, as SQLAlchemy sees them. Alembic's migrations create them; `alembic check`
keeps the two in step.

`events` is a TimescaleDB hypertable partitioned on `occurred_at`. Its unique key is
(`id`, `service`): an id names an event within its service (migration 0006). A hypertable's
unique indexes must include the partitioning column, so `event_ids` (a plain table keyed on
(`id`, `service`)) is the dedupe ledger and the route from an id to its chunk.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP, UUID

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
    # Every list query orders by (occurred_at, seq); each filter index has the same pair after
    # its column so a filtered page is one index range scan in either direction. The service
    # and type indexes also carry the other low-selectivity filters, which btree then tests
    # on the index entries instead of fetching every row to test them (migration 0005).
    Index("events_occurred_at_seq_idx", "occurred_at", "seq"),
    Index("events_seq_idx", "seq"),
    Index("events_service_idx", "service", "occurred_at", "seq", "type", "action", "outcome"),
    Index("events_type_idx", "type", "occurred_at", "seq", "service", "action", "outcome"),
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
        "events_publisher_idx",
        "publisher",
        "occurred_at",
        "seq",
        postgresql_where=text("publisher IS NOT NULL"),
    ),
    Index(
        "events_trace_id_idx",
        text("(context ->> 'trace_id')"),
        "occurred_at",
        "seq",
        postgresql_where=text("(context ->> 'trace_id') IS NOT NULL"),
    ),
)

# The dedupe ledger: an event is a duplicate of an earlier one of the same service with
# the same id, never of another service's (whose key may not write this one's events).
event_ids = Table(
    "event_ids",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("service", Text(collation="C"), primary_key=True),
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

# Checkpoints (migration 0007, docs/INTEGRITY.md): the C2SP signed notes the log published
# (one per interval, each at a signed tree head's size), the witnesses' cosignature lines,
# and the answers of witnesses that refused a checkpoint as inconsistent.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("note", Text, nullable=False),
    Column("published_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
)

checkpoint_cosignatures = Table(
    "checkpoint_cosignatures",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("witness", Text, primary_key=True),  # the witness's verifier key
    Column("signature", Text, nullable=False),  # its signature line
    Column("received_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    Index("checkpoint_cosignatures_witness_idx", "witness", "tree_size"),
)

witness_refusals = Table(
    "witness_refusals",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("witness", Text, primary_key=True),
    Column("status", SmallInteger, nullable=False),
    Column("answer", Text, nullable=False),
    Column("refused_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
)

# API keys (migration 0003): only a SHA-256 of each token is stored.
api_keys = Table(
    "api_keys",
    metadata,
    Column("name", Text, primary_key=True),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("scope", Text, nullable=False),
    Column("services", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("rate_per_s", Double, nullable=True),
    Column("burst", Integer, nullable=True),
    Column("created_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", TIMESTAMP(timezone=True), nullable=True),
    CheckConstraint("name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'", name="api_keys_name_check"),
    CheckConstraint("scope IN ('write', 'read', 'admin')", name="api_keys_scope_check"),
    CheckConstraint("length(token_hash) = 32", name="api_keys_hash_check"),
    CheckConstraint(
        "(rate_per_s IS NULL OR rate_per_s > 0) AND (burst IS NULL OR burst > 0)",
        name="api_keys_limits_check",
    ),
)

# Hourly counts (migration 0006; integrity/counts.py has the rule): each row counts one
# cell's events within a span of seqs [seq_lo, seq_hi): level 0 is one batch's events within
# a piece of 4,096 seqs, levels 12 and 16 whole aligned blocks of 2^12 and 2^16 seqs.
# Appended by the writer in each batch's transaction, never updated; absent action and
# publisher are '' (cells are compared as keys: never NULL).
event_counts = Table(
    "event_counts",
    metadata,
    Column("level", SmallInteger, nullable=False),
    Column("seq_lo", BigInteger, nullable=False),
    Column("seq_hi", BigInteger, nullable=False),
    Column("hour", TIMESTAMP(timezone=True), nullable=False),
    Column("service", Text(collation="C"), nullable=False),
    Column("type", Text(collation="C"), nullable=False),
    Column("action", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("publisher", Text, nullable=False),
    Column("n", BigInteger, nullable=False),
    CheckConstraint("level IN (0, 12, 16)", name="event_counts_level_check"),
    CheckConstraint(
        "seq_lo >= 0 AND seq_lo < seq_hi AND CASE WHEN level = 0"
        " THEN seq_lo / 4096 = (seq_hi - 1) / 4096"
        " ELSE seq_lo % (1::bigint << level) = 0 AND seq_hi = seq_lo + (1::bigint << level) END",
        name="event_counts_span_check",
    ),
    CheckConstraint("n > 0", name="event_counts_n_check"),
    # No primary key: its index would be as large as the rows, and the verifier catches a
    # cell stored twice (the span's sum disagrees). Spans are found by where they start:
    # the open block's batches for a read, every span in order for the verifier.
    Index("event_counts_spans_idx", "level", "seq_lo"),
    # The top level's rows by hour, whole: most of what a bucket query reads is an
    # index-only scan of this (the open blocks' rows are found by event_counts_spans_idx).
    Index(
        "event_counts_blocks_idx",
        "hour",
        postgresql_include=["type", "service", "action", "outcome", "publisher", "n", "seq_lo"],
        postgresql_where=text("level = 16"),
    ),
)
