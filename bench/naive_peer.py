"""The naive peer: what the problem statement's first prototype did. Flask under gunicorn,
one INSERT per request (autocommit) into the same `events` hypertable, with the same
indexes. It checks the same fields, numbers the event from a sequence and hashes it with
a stand-in (its rows are not in a tree), and answers 201 after the INSERT.

    BENCH_DATABASE_URL=postgresql://auditlog_owner@127.0.0.1/auditlog_bench \\
        gunicorn -c deploy/gunicorn.conf.py bench.naive_peer:app
"""

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime

import psycopg
from flask import Flask, jsonify, request
from psycopg_pool import ConnectionPool

app = Flask(__name__)
_pool: ConnectionPool | None = None

INSERT = """
INSERT INTO events (occurred_at, id, seq, received_at, type, service, publisher, action,
                    outcome, actor, subject, context, data, leaf_hash)
VALUES (%s, %s, nextval('bench_naive_seq'), %s, %s, %s, NULL, %s, %s, %s, %s, %s, %s, %s)
"""


def pool() -> ConnectionPool:
    global _pool  # noqa: PLW0603 - one pool per gunicorn worker, made after the fork
    if _pool is None:
        _pool = ConnectionPool(
            os.environ["BENCH_DATABASE_URL"],
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True},
            open=True,
        )
    return _pool


@app.post("/v1/events")
def post_event():  # type: ignore[no-untyped-def]
    event = request.get_json(force=True)
    if not isinstance(event, dict) or not {"type", "service", "occurred_at"} <= event.keys():
        return jsonify(error="type, service and occurred_at are required"), 400
    event_id = event.get("id") or str(uuid.uuid4())
    now = datetime.now(UTC)
    data = json.dumps(event.get("data") or {})
    with pool().connection() as conn:
        conn.execute(
            INSERT,
            (
                event["occurred_at"],
                event_id,
                now,
                event["type"],
                event["service"],
                event.get("action"),
                event.get("outcome", "unknown"),
                json.dumps(event.get("actor")),
                json.dumps(event.get("subject")),
                json.dumps(event.get("context")),
                data,
                hashlib.sha256(data.encode()).digest(),
            ),
        )
    return jsonify(id=event_id), 201


@app.get("/healthz")
def health():  # type: ignore[no-untyped-def]
    return jsonify(status="ok")


__all__ = ["app", "psycopg"]
