"""The suite's table: one row per fault, printed at the end of the run and written to a file.

`make test-faults` writes it to docs/faults.md (FAULTS_REPORT); any other run writes it to
pytest's temporary directory and prints where.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class FaultRow:
    """What one fault did to the events accepted while it happened."""

    order: int  # the order of faults, for the table
    fault: str
    accepted: int  # distinct ids answered 202
    stored: int  # of those, stored
    lost: int  # accepted, never stored
    duplicated: int  # extra rows beyond the first, over every id sent
    recovery_s: float | None  # see RECOVERY below
    notes: str = ""


ROWS: list[FaultRow] = []
REPORT_VARIABLE = "FAULTS_REPORT"
default_path: list[Path] = []  # set by the suite's conftest to pytest's temporary directory

RECOVERY = (
    "*Time to recover*: from the end of the fault (the worker restarted, the server back, "
    "every program of the topology stopped) until every event accepted before that moment "
    "is stored and so are the first ones accepted after it (without AOF: only the latter); "
    "for the overload, from the end of the load until the backlog is drained; for the "
    "poison, from the injection until both entries are dead-lettered."
)

SCENARIOS = """\
How each fault is made (`tests/faults/`, one file each):

- *Writers killed* (`test_worker_kills.py`): five times, SIGKILL every pool process of the
  Celery worker, when a batch is in flight if one is seen within a second (read from the
  stream, not yet acknowledged); Celery replaces them and re-queues their drains. Then
  SIGKILL the worker's main process alone: its pool processes exit, the suite starts a new
  worker. The killed drains' messages are not redelivered before Celery's visibility
  timeout (an hour), so the new worker's watchdog starts the chains once their slot leases
  lapse (`AUDITLOG_WRITER_LEASE_S`, 15 s): that is the time to recover.
- *PostgreSQL stopped* (`test_database_stop.py`): `pg_ctl stop -m immediate` (a crash: no
  checkpoint, recovery from the WAL at the next start) on the suite's own cluster, 30 s,
  then `pg_ctl start`. Ingest needs only Redis: every POST meanwhile must get a 202.
- *Redis restarted* (`test_redis_restart.py`): SIGKILL (a crash) or SHUTDOWN (clean) of the
  suite's `redis-server`, 3 s down, started again with the same persistence. For the
  rows "writers 3 s behind" the suite first holds the writers' advisory lock in PostgreSQL
  for 3 s, so that ~3,000 accepted events are in Redis only at the crash (released as Redis
  goes, so that the writers meet the outage with batches in hand). `appendonly no` is set
  with CONFIG SET before the crash and the server restarted without it: that variant is
  expected to lose what was not yet written, and the table says how much.
- *Whole topology* (`test_shutdown.py`): SIGTERM to nginx (SIGQUIT, as
  `deploy/nginx/run.sh` turns it), both gunicorn masters and the Celery main process alone
  (as docker signals PID 1) at once; every program must exit 0, no batch may be left
  pending, no writer slot held. Then everything is started again.
- *Overload* (`test_overload.py`): 8 producers posting 200-event batches as fast as they
  are answered, not retrying, for 15 s, against writers turned down to one slot of 10-event
  batches (so that, sharing two cores with the API, they store several times less than it
  accepts) and the suite's backlog limit of 50,000. Only 202 and 503 with Retry-After may
  come back; memory is sampled every 0.25 s.
- *Poison* (`test_poison.py`): two entries the database can never take, added to the stream
  directly (bypassing the API's checks): U+0000 in `type`, and a `context.trace_id` of 6,000
  bytes (past btree's 2,704-byte entries; the API refuses it now, it accepted it before the
  suite found it). Each must be dead-lettered after `AUDITLOG_WRITER_MAX_ATTEMPTS` (5)
  refusals, show in `/metrics` and `auditlog dead-letters`, while the load is stored.
"""


def record(row: FaultRow, *, replace: FaultRow | None = None) -> FaultRow:
    """Add a row to the table (or put it in the place of `replace`)."""
    if replace is not None:
        ROWS[ROWS.index(replace)] = row
    else:
        ROWS.append(row)
    return row


def table(rows: list[FaultRow]) -> str:
    lines = [
        "| fault | events accepted | stored | lost | duplicated | time to recover | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in sorted(rows, key=lambda r: r.order):
        recovery = "–" if row.recovery_s is None else f"{row.recovery_s:.1f} s"
        lines.append(
            f"| {row.fault} | {row.accepted:,} | {row.stored:,} | {row.lost:,} | "
            f"{row.duplicated:,} | {recovery} | {row.notes} |"
        )
    return "\n".join(lines)


def _version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def document(rows: list[FaultRow]) -> str:
    """The whole report, as docs/faults.md holds it."""
    redis_version = _version(["redis-server", "--version"]).split(" sha=")[0]
    return "\n".join(
        [
            "# Fault injection: measured",
            "",
            "Generated by `make test-faults` (`tests/faults/`); do not edit by hand.",
            f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {redis_version}, PostgreSQL 15 + TimescaleDB.",
            "",
            "Every scenario runs under continuous load from `tests/faults/load.py` (producers",
            "posting batches of 50 events through nginx over two API instances, retrying a",
            "batch that got no 202 with the same ids), and then checks, in the suite's own",
            "database, that every id answered 202 is stored exactly once and that",
            "`auditlog verify` exits 0.",
            "",
            table(rows),
            "",
            "*Events accepted*: distinct ids answered 202 during the scenario. *Stored* and",
            "*lost*: of those, counted by id in the database. *Duplicated*: rows beyond the",
            "first for any id sent (retries included).",
            RECOVERY,
            "",
            SCENARIOS,
        ]
    )


def write(rows: list[FaultRow]) -> Path | None:
    target = os.environ.get(REPORT_VARIABLE)
    if target:
        path = Path(target)
    elif default_path:
        path = default_path[0]
    else:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document(rows))
    return path
