"""Load a large log straight into the database (COPY-speed SQL, no API, no queue), then give
it what the writer would have: tree strata and a signed head, and hourly counts.

The events are synthetic but shaped like real ones: 20 services each sending 4 of 20 types
(in dotted families), the action following from the type, 97 % successes, each service
writing with its own key, 10,000 actors, a million subjects, ~450-byte JSON, spread evenly
over 30 days.
Their leaf hashes are stand-ins (this log is for the query benchmark; `auditlog verify` on it
would report every leaf), and the tree is built over those stand-ins.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text

from auditlog.integrity.counts import PIECE
from auditlog.settings import Settings
from auditlog.storage.event_writer import append_rollups

ACTIONS = [
    "create",
    "deactivate",
    "bill",
    "correlate",
    "update",
    "send",
    "pay",
    "void",
    "capture",
    "refund",
    "fail",
    "login",
    "logout",
    "challenge",
    "grant",
    "revoke",
    "request",
    "download",
    "change",
    "rotate",
]
TYPES = [
    "customer.account.created",
    "customer.account.deactivated",
    "customer.billed",
    "customer.correlated",
    "customer.address.changed",
    "invoice.sent",
    "invoice.paid",
    "invoice.voided",
    "payment.captured",
    "payment.refunded",
    "payment.failed",
    "session.login",
    "session.logout",
    "session.mfa.challenged",
    "role.granted",
    "role.revoked",
    "export.requested",
    "export.downloaded",
    "config.changed",
    "key.rotated",
]
_INSERT = text(
    """
    INSERT INTO events (occurred_at, id, seq, received_at, type, service, publisher, action,
                        outcome, actor, subject, context, data, leaf_hash)
    SELECT at.t, gen_random_uuid(), :base + i, at.t + interval '150 milliseconds',
           (CAST(:types AS text[]))[1 + (4 * (i % 20) + (i / 20) % 4) % 20], 'svc-' || (i % 20),
           'writer-svc-' || (i % 20),
           (CAST(:actions AS text[]))[1 + (4 * (i % 20) + (i / 20) % 4) % 20],
           CASE WHEN i % 50 = 0 THEN 'failure' WHEN i % 97 = 0 THEN 'unknown'
                ELSE 'success' END,
           jsonb_build_object('type', 'user', 'id', 'u-' || (i % 10000)),
           jsonb_build_object('type', 'customer', 'id', 'c-' || (i % 1000000)),
           jsonb_build_object('host', 'h-' || (i % 50), 'ip', '10.0.' || (i % 250) || '.'
                              || (i % 200), 'trace_id', md5(i::text)),
           jsonb_build_object('amount', i % 100000, 'currency', 'EUR', 'invoice', 'INV-' || i,
                              'note', 'bulk loaded for the query benchmark'),
           sha256(('leaf-' || i)::bytea)
    FROM generate_series(:lo, :hi - 1) AS i,
         LATERAL (SELECT CAST(:t0 AS timestamptz)
                         + (i::float8 * :span / :n) * interval '1 second') AS at(t)
    """
)


def load(
    settings: Settings, events: int, *, chunk: int = 500_000, say: Callable[[str], None] = print
) -> dict[str, float]:
    """Append `events` events after whatever the log holds; return timings (seconds)."""
    engine = create_engine(settings.url_for("owner"))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    t0 = now - timedelta(days=30)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with engine.connect() as conn:
        base = conn.scalar(text("SELECT coalesce(max(seq) + 1, 0) FROM events"))
    for lo in range(0, events, chunk):
        hi = min(events, lo + chunk)
        with engine.begin() as conn:
            conn.execute(
                _INSERT,
                {
                    "base": base,
                    "types": TYPES,
                    "actions": ACTIONS,
                    "lo": lo,
                    "hi": hi,
                    "t0": t0,
                    "span": 30 * 86400,
                    "n": events,
                },
            )
            conn.execute(
                text(
                    "INSERT INTO event_ids SELECT id, service, occurred_at FROM events"
                    " WHERE seq >= :a AND seq < :b"
                ),
                {"a": base + lo, "b": base + hi},
            )
        say(f"  loaded {hi:,} / {events:,} events ({time.perf_counter() - started:.0f} s)")
    timings["insert_s"] = time.perf_counter() - started
    step = time.perf_counter()
    with engine.begin() as conn:
        # As the writer appends them (integrity/counts.py), the load being one batch: its
        # events per piece of 4,096 seqs, then the rows of each block it completes.
        conn.execute(
            text(
                "INSERT INTO event_counts SELECT 0, greatest(:a, seq / :piece * :piece),"
                " least(:b, seq / :piece * :piece + :piece), date_trunc('hour', occurred_at,"
                " 'UTC'), service, type, coalesce(action, ''), outcome, coalesce(publisher, ''),"
                " count(*) FROM events WHERE seq >= :a GROUP BY 2, 3, 4, 5, 6, 7, 8, 9"
            ),
            {"a": base, "b": base + events, "piece": PIECE},
        )
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            append_rollups(cur, base, base + events)
    timings["counts_s"] = time.perf_counter() - step
    step = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("events", "event_ids", "event_counts"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    timings["vacuum_s"] = time.perf_counter() - step
    engine.dispose()
    return timings
