"""SIGTERM the whole topology under load, then start it again: a graceful drain."""

from __future__ import annotations

import time

import pytest

from tests.faults.load import Load
from tests.faults.outcome import recovery_time, settle
from tests.faults.stack import Ledger, Stack

pytestmark = [pytest.mark.faults, pytest.mark.slow]


class TestShutdown:
    """Every program stops cleanly; the writers finish the batches in hand; nothing is lost."""

    def test_sigterm_everything_and_start_again(self, stack: Stack, ledger: Ledger):
        with Load(stack.url("/v1/events"), stack.token) as load:
            load.wait_accepted(2000)
            stopping = time.monotonic()
            codes = stack.terminate()
            stopped_s = time.monotonic() - stopping
            # The writers wrote the batches they held: nothing is read but unwritten. What
            # they had not read yet waits in the stream for the next start.
            pending = stack.pending()
            waiting = stack.depth()
            # The signal went to the worker's main process alone (as docker sends it to
            # PID 1): the drains were told all the same, and released their slots rather
            # than passing them on to drains of a worker that is going away.
            with stack.redis.client() as client:
                held = [
                    slot
                    for slot in range(stack.settings.writer_slots)
                    if client.exists(stack.settings.key("writer", "slot", str(slot)))
                ]
            stopped = time.monotonic()
            stack.start()
            started = time.monotonic()
            # From the moment everything was down: starting it all again is the recovery.
            recovery = recovery_time(load, ledger, stopped)
            load.wait_accepted(1000)
        assert codes == dict.fromkeys(codes, 0), codes
        assert pending == 0
        assert held == []
        refused = {s: n for s, n in load.status_counts(stopping, started).items() if s != "202"}
        row = settle(
            stack,
            ledger,
            load,
            order=40,
            fault="SIGTERM to every program (nginx, 2 API instances, worker), then start",
            recovery_s=recovery,
            notes=f"all exited 0 within {stopped_s:.1f} s (worker "
            f"{stack.stop_seconds['worker']:.1f} s), no batch left pending, slots released; "
            f"{waiting:,} waiting for the next start; started again in "
            f"{started - stopped:.1f} s; refused while down: "
            + (", ".join(f"{n}× {s}" for s, n in sorted(refused.items())) or "none"),
        )
        assert (row.lost, row.duplicated) == (0, 0)
