"""Stop PostgreSQL for 30 s under load, then start it again."""

from __future__ import annotations

import time

import pytest

from tests.faults.load import Load
from tests.faults.outcome import recovery_time, settle, unexpected
from tests.faults.servers import wait_seconds
from tests.faults.stack import Ledger, Stack

pytestmark = [pytest.mark.faults, pytest.mark.slow]

OUTAGE_S = 30


class TestDatabaseStop:
    """Ingest needs only Redis: it keeps answering 202; the writers retry and catch up."""

    @pytest.mark.parametrize("mode", ["immediate"])
    def test_stopped_for_30_seconds(self, stack: Stack, ledger: Ledger, mode: str):
        with Load(stack.url("/v1/events"), stack.token) as load:
            load.wait_accepted(1000)
            stopped = time.monotonic()
            stack.pg.stop(mode)
            wait_seconds(OUTAGE_S)
            during = load.status_counts(since=stopped)
            backlog = stack.depth()
            stack.pg.start()
            recovery = recovery_time(load, ledger, time.monotonic())
            load.wait_accepted(1000)
        # Producers never noticed: every request during the outage was accepted.
        assert not unexpected(during, {"202"}), during
        assert during["202"] > 0
        row = settle(
            stack,
            ledger,
            load,
            order=20,
            fault=f"PostgreSQL stopped for {OUTAGE_S} s (pg_ctl stop -m {mode})",
            recovery_s=recovery,
            notes=f"all {during['202']:,} POSTs during the outage answered 202; "
            f"{backlog:,} events waiting at restart",
        )
        assert (row.lost, row.duplicated) == (0, 0)
