"""The integrity chain's cost on the write path: chained writer vs. the same writer without it.

Two throwaway databases with the same schema: one written by the writer's transaction
without the chain (lock, dedupe, number, COPY, hourly counts; zeros for leaf hashes), one by
`EventWriter.write` (the same plus leaf hashes, tree strata, the frontier and a signed head).
Same events, same batch size, alternating rounds so both see the same machine.

    .venv/bin/python bench/writer_chain.py [--events 100000] [--batch 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from auditlog.integrity.heads import HeadSigner, generate_key
from auditlog.settings import Settings
from auditlog.storage.admin import drop_database, migrate, setup_database
from auditlog.storage.batch import COPY_CHUNK, COPY_SQL, PreparedEvent
from auditlog.storage.event_writer import (
    DEDUPE_SQL,
    WRITE_LOCK_KEY,
    EventWriter,
    count_hourly,
    dedupe_parameters,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import factories

ZERO_LEAF = bytes(32)


def unchained_write(engine: Any, batch: list[dict[str, Any]], *, counts: bool = False) -> None:
    """The write transaction without the chain: lock, dedupe, number, COPY (the same
    prepared rows and COPY lines as the product; the leaf hash column gets zeros, and no
    tree nodes or head are written). With counts, the hourly counts are kept as the product
    keeps them, so that the difference to `EventWriter.write` is the chain alone."""
    prepared = [PreparedEvent.of(event) for event in batch]
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            cur.execute(DEDUPE_SQL, dedupe_parameters(prepared))
            new = {str(r[0]) for r in cur.fetchall()}
            cur.execute("SELECT seq FROM events ORDER BY seq DESC LIMIT 1")
            last = cur.fetchone()
            seq = 0 if last is None else last[0] + 1
            stored = []
            with cur.copy(COPY_SQL) as copy:
                lines = []
                for event in prepared:
                    if event.id in new:
                        new.discard(event.id)
                        lines.append(event.place(seq, ZERO_LEAF))
                        stored.append(event.document)
                        seq += 1
                        if len(lines) == COPY_CHUNK:
                            copy.write("".join(lines))
                            lines.clear()
                copy.write("".join(lines))
            if counts:
                count_hourly(cur, stored)


def stored_form(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "received_at": event["occurred_at"], "publisher": None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    key = Path(tempfile.mkdtemp()) / "key.pem"
    generate_key(key)
    run = uuid.uuid4().hex[:8]
    plain = Settings.from_env(database_url=f"postgresql://127.0.0.1:5432/bench_plain_{run}")
    chained = Settings.from_env(
        database_url=f"postgresql://127.0.0.1:5432/bench_chain_{run}", signing_key_path=key
    )
    results: dict[str, list[float]] = {"unchained": [], "chained": []}
    try:
        setup_database(plain)
        migrate(plain)
        setup_database(chained)
        migrate(chained)
        plain_engine = create_engine(plain.url_for("writer"))
        chain_engine = create_engine(chained.url_for("writer"))
        store = EventWriter(chain_engine, HeadSigner.from_file(key))
        for _ in range(args.rounds):
            for name in ("unchained", "chained"):
                events = [stored_form(e) for e in factories.events(args.events)]
                started = time.perf_counter()
                for i in range(0, len(events), args.batch):
                    batch = events[i : i + args.batch]
                    if name == "chained":
                        store.write(batch)
                    else:
                        unchained_write(plain_engine, batch, counts=True)
                results[name].append(args.events / (time.perf_counter() - started))
        plain_engine.dispose()
        chain_engine.dispose()
    finally:
        drop_database(plain)
        drop_database(chained)
    for name, rates in results.items():
        print(
            f"{name:10s} median {statistics.median(rates):8.0f} events/s"
            f"  (rounds: {', '.join(f'{r:.0f}' for r in rates)})"
        )
    ratio = statistics.median(results["chained"]) / statistics.median(results["unchained"])
    print(
        f"chained / unchained = {ratio:.1%}  ({args.events} events a round, batches of "
        f"{args.batch}, one connection)"
    )


if __name__ == "__main__":
    main()
