"""The stored counts across a block boundary: written append-only by the writer, read as the
log says, recounted by `auditlog verify`, and carried over by migration 0006.

A database of its own, written by `EventWriter` itself past seq 65,536 + 4,096 (a whole
block of each level, and open ones), about five seconds.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, text

from auditlog.integrity.counts import PIECE, TOP_LEVEL
from auditlog.integrity.heads import HeadSigner
from auditlog.settings import Settings
from auditlog.storage.admin import alembic_config, drop_database, migrate, setup_database
from auditlog.storage.engine import create_async_role_engine
from auditlog.storage.event_writer import EventWriter
from auditlog.storage.events import EventFilter, EventReader
from tests.helpers import settings_env
from tests.integration.conftest import SIGNING_KEY, make_settings

pytestmark = pytest.mark.slow

START = datetime(2026, 11, 2, 8, tzinfo=UTC)
TOP = 1 << TOP_LEVEL
SIZE = TOP + PIECE + 700  # a whole top block, a whole piece of the next, and some
TYPES = ("customer.billed", "customer.created", "invoice.sent", "session.login")
SERVICES = ("billing", "accounts", "web")
BATCH = 2500


def queued(seq: int) -> dict[str, Any]:
    """The event the writer will store at seq: a few cells an hour, hours in seq order, the
    last hour of block 0 shared with block 1."""
    moment = START + timedelta(seconds=seq * 0.6)
    return {
        "id": f"00000000-0000-4000-8000-{seq:012d}",
        "type": TYPES[seq % len(TYPES)],
        "service": SERVICES[seq % len(SERVICES)],
        "occurred_at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "received_at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "publisher": None if seq % 5 else "billing-writer",
        "actor": None,
        "subject": None,
        "action": None if seq % 7 else "bill",
        "outcome": "failure" if seq % 11 == 0 else "success",
        "context": None,
        "data": {"n": seq},
    }


@pytest.fixture(scope="module")
def log() -> Iterator[Settings]:
    settings = make_settings()
    setup_database(settings)
    migrate(settings)
    engine = create_engine(settings.url_for("writer"))
    writer = EventWriter(engine, HeadSigner.from_file(SIGNING_KEY))
    try:
        # Batches up to 100 short of the top block's end, then one across it, then the rest.
        ends = [*range(BATCH, TOP - 100, BATCH), TOP - 100, TOP + 50, TOP + PIECE + 10, SIZE]
        for lo, hi in zip([0, *ends], ends, strict=False):
            assert writer.write([queued(seq) for seq in range(lo, hi)]).head is not None
        yield settings
    finally:
        writer.close()
        drop_database(settings)


@pytest.fixture(scope="module")
def owner(log: Settings) -> Iterator[Engine]:
    engine = create_engine(log.url_for("owner"))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def superuser(log: Settings) -> Iterator[Engine]:
    engine = create_engine(log.admin_url.set(database=log.database_name))
    yield engine
    engine.dispose()


def verify(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditlog.cli", "verify"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def count_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM event_counts ORDER BY 1, 2, 4, 5, 6, 7, 8, 9"))
        return [tuple(row) for row in rows]


def tamper(engine: Engine, statements: str) -> None:
    """Change the tables as a superuser would: triggers off for the transaction."""
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements.split(";"):
            conn.execute(text(statement))


class TestWriter:
    """The writer appends a span per batch and block, and a block's sum when it completes."""

    def test_spans_tile_the_log_and_the_block_is_summed(self, owner: Engine):
        with owner.connect() as conn:
            spans = conn.execute(
                text(
                    "SELECT level, seq_lo, seq_hi, sum(n) FROM event_counts"
                    " GROUP BY 1, 2, 3 ORDER BY 1, 2"
                )
            ).all()
        batches = [s for s in spans if s.level == 0]
        assert [s.seq_lo for s in batches[1:]] == [s.seq_hi for s in batches[:-1]]
        assert (batches[0].seq_lo, batches[-1].seq_hi) == (0, SIZE)
        pieces = {(s.seq_lo, s.seq_hi) for s in batches}
        assert {(TOP - 100, TOP), (TOP, TOP + 50)} <= pieces  # one batch, split
        assert all(s.seq_lo // PIECE == (s.seq_hi - 1) // PIECE for s in batches)
        assert all(s.sum == s.seq_hi - s.seq_lo for s in spans)
        blocks = [(s.level, s.seq_lo, s.seq_hi) for s in spans if s.level]
        assert blocks == [
            *((12, lo, lo + PIECE) for lo in range(0, TOP + PIECE, PIECE)),
            (16, 0, TOP),
        ]

    def test_the_log_with_its_counts_verifies(self, log: Settings):
        result = verify(log)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"intact: {SIZE} events" in result.stdout
        assert "spans of stored counts" in result.stdout


class TestReads:
    """A bucket query reads the block's rows and the open block's batches: the scan's answer."""

    @pytest.mark.parametrize(
        ("width", "group_by", "filters"),
        [
            (timedelta(hours=1), None, {}),
            (timedelta(hours=1), "type", {}),
            (timedelta(hours=2), "service", {"outcome": "success"}),
            (timedelta(hours=3), "action", {"type_prefix": "customer."}),
            (timedelta(days=1), "outcome", {"service": "web"}),
        ],
    )
    async def test_same_as_the_scan(
        self, log: Settings, width: timedelta, group_by: str | None, filters: dict[str, Any]
    ):
        reader = EventReader(create_async_role_engine(log, "reader", pool_size=1))
        try:
            flt = EventFilter(since=START, until=START + timedelta(days=1), **filters)
            hourly = await reader.hourly_bucket_counts(flt, width, group_by, top=5)
            assert hourly == await reader.bucket_counts(flt, width, group_by, top=5)
            assert sum(n for _, _, _, n in hourly.rows) > 0
        finally:
            await reader.close()


class TestTampering:
    """Block rows changed or removed by the owner are caught, and located."""

    @pytest.mark.parametrize(
        ("change", "undo", "says"),
        [
            (
                "UPDATE event_counts SET n = n + 1 WHERE level = 16 AND type = 'invoice.sent'"
                " AND hour = (SELECT min(hour) FROM event_counts)",
                "UPDATE event_counts SET n = n - 1 WHERE level = 16 AND type = 'invoice.sent'"
                " AND hour = (SELECT min(hour) FROM event_counts)",
                "(a whole block of level 16) disagree with the events",
            ),
            (
                "CREATE TABLE saved AS SELECT * FROM event_counts WHERE level = 16;"
                " DELETE FROM event_counts WHERE level = 16",
                "INSERT INTO event_counts SELECT * FROM saved; DROP TABLE saved",
                f"no counts of the whole block seq 0–{TOP - 1} (level 16) are stored",
            ),
            (
                "CREATE TABLE saved AS SELECT * FROM event_counts WHERE level = 0"
                f" AND seq_lo = {TOP - 100}; DELETE FROM event_counts WHERE level = 0"
                f" AND seq_lo = {TOP - 100}",
                "INSERT INTO event_counts SELECT * FROM saved; DROP TABLE saved",
                f"no counts are stored for seq {TOP - 100}–{TOP - 1}",
            ),
        ],
        ids=["block-altered", "block-removed", "batch-removed"],
    )
    def test_caught(self, log: Settings, superuser: Engine, change: str, undo: str, says: str):
        tamper(superuser, change)
        try:
            result = verify(log)
            assert result.returncode == 1, result.stdout
            assert "[counts]" in result.stdout
            assert says in result.stdout
        finally:
            tamper(superuser, undo)


class TestMigration:
    """0006 recounts what 0004 kept, span by span as the writer writes, and refuses to
    replace counts that disagree with the events."""

    def test_down_and_up_gives_back_the_writers_rows(self, log: Settings, owner: Engine):
        written = count_rows(owner)
        command.downgrade(alembic_config(log), "0005")
        with owner.connect() as conn:
            assert conn.scalar(text("SELECT sum(n) FROM event_counts")) == SIZE
        migrate(log)
        assert count_rows(owner) == written
        command.check(alembic_config(log))

    def test_counts_that_disagree_stop_the_upgrade(self, log: Settings, owner: Engine):
        command.downgrade(alembic_config(log), "0005")
        try:
            with owner.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO event_counts VALUES"
                        " ('2026-11-02T09:00:00Z', 'web', 'web.forged', '', 'success', '', 2)"
                    )
                )
            with pytest.raises(RuntimeError, match=r"disagree with the events.*web\.forged"):
                migrate(log)
        finally:
            with owner.begin() as conn:
                conn.execute(text("DELETE FROM event_counts WHERE type = 'web.forged'"))
            migrate(log)
