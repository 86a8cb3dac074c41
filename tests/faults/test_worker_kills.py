"""SIGKILL the writers: pool processes again and again, then the worker's main process."""

from __future__ import annotations

import time

import pytest

from tests.faults.load import Load
from tests.faults.outcome import recovery_time, settle, unexpected
from tests.faults.stack import Ledger, Stack, alive, sigkill
from tests.helpers import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

POOL_KILLS = 5


class TestWorkerKills:
    """Killed writers lose nothing and store nothing twice; Celery and the watchdog recover."""

    def test_pool_processes_then_the_main_process(self, stack: Stack, ledger: Ledger):
        slots = stack.settings.writer_slots
        in_flight = 0
        with Load(stack.url("/v1/events"), stack.token) as load:
            load.wait_accepted(1000)
            for _ in range(POOL_KILLS):
                worker = stack.worker
                assert worker is not None
                pids = wait_for(
                    lambda w=worker: (p := w.pool_pids()) and len(p) == slots and p,
                    timeout=30,
                    what="a full pool",
                )
                # Kill while a batch is being written (entries read, not yet acknowledged)
                # when that can be caught within a second; every pool process, so that the
                # batch in hand is certainly among the victims.
                deadline = time.monotonic() + 1.0
                while stack.pending() == 0 and time.monotonic() < deadline:
                    time.sleep(0.005)
                in_flight += stack.pending() > 0
                for pid in pids:
                    assert sigkill(pid)
                wait_for(
                    lambda w=worker, gone=set(pids): (
                        len(p := w.pool_pids()) == slots and not gone & set(p)
                    ),
                    timeout=30,
                    what="Celery to replace the killed pool processes",
                )
                load.wait_accepted(500)

            # The main process alone: its pool processes are orphaned.
            worker = stack.worker
            assert worker is not None
            assert worker.proc is not None
            orphans = worker.pool_pids()
            assert sigkill(worker.proc.pid)
            worker.proc.wait(10)
            wait_for(
                lambda: not any(alive(pid) for pid in orphans),
                timeout=30,
                what=f"the orphaned pool processes {orphans} to exit",
            )
            stack.start_worker()
            recovery = recovery_time(load, ledger, time.monotonic())
            load.wait_accepted(1000)
        assert not unexpected(load.status_counts(), {"202"})
        row = settle(
            stack,
            ledger,
            load,
            order=10,
            fault="SIGKILL pool processes ×5, then the worker's main process",
            recovery_s=recovery,
            notes=f"{in_flight} of {POOL_KILLS} pool kills with a batch in flight; "
            "recovery after the main process is the lease (15 s)",
        )
        assert (row.lost, row.duplicated) == (0, 0)
