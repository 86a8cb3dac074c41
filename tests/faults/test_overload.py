"""Overload: offer several times what the writers can store, then stop and watch it recover."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
import requests

from tests import factories
from tests.faults.conftest import BACKLOG_LIMIT
from tests.faults.load import Load
from tests.faults.outcome import settle, unexpected
from tests.faults.stack import Ledger, Stack, process_tree_rss_mib
from tests.helpers import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

OVERLOAD_S = 15
# The writers are turned down for this scenario (one slot, small batches): with the API and
# the writers sharing two cores, the API can then offer several times what they store.
SLOW_WRITER = {"writer_slots": 1, "writer_batch_max": 10}


class MemoryWatch:
    """Peak resident memory of the API instances and the worker, and Redis's used_memory."""

    def __init__(self, stack: Stack):
        self._stack = stack
        self._stop = threading.Event()
        self.baseline = self._sample()
        self.peak = dict(self.baseline)
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _sample(self) -> dict[str, float]:
        stack = self._stack
        assert stack.worker is not None
        assert stack.worker.proc is not None
        values = {api.name: process_tree_rss_mib(api.proc.pid) for api in stack.apis if api.proc}
        values["worker"] = process_tree_rss_mib(stack.worker.proc.pid)
        values["redis"] = stack.redis.used_memory() / 2**20
        return values

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            for name, value in self._sample().items():
                self.peak[name] = max(self.peak[name], value)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def growth(self, name: str) -> float:
        return self.peak[name] - self.baseline[name]


class TestOverload:
    def test_several_times_the_sustainable_rate(self, stack: Stack, ledger: Ledger):
        wait_for(lambda: stack.depth() == 0, timeout=60, what="an empty stream to start from")
        assert stack.worker is not None
        stack.worker.stop()
        stack.start_worker(**SLOW_WRITER)
        stored_before = ledger.events()
        load = Load(
            stack.url("/v1/events"),
            stack.token,
            producers=8,
            batch=200,
            rate=None,
            retry=False,
        )
        with MemoryWatch(stack) as memory:
            began = time.monotonic()
            with load:
                time.sleep(OVERLOAD_S)
                ended = time.monotonic()
                stored_during = ledger.events() - stored_before
            drained = wait_for(
                lambda: stack.depth() == 0, timeout=120, interval=0.1, what="the backlog drained"
            )
            assert drained
            recovery = time.monotonic() - ended
        statuses = load.status_counts()
        offered = load.offered(began, ended) / (ended - began)
        sustained = stored_during / (ended - began)
        # Memory is bounded: Redis by the backlog limit (an event is ~0.6 KiB there), the
        # API instances and the worker by what one request or batch holds.
        assert memory.peak["redis"] < memory.baseline["redis"] + BACKLOG_LIMIT / 1024
        for api in stack.apis:
            assert memory.growth(api.name) < 64, memory.peak
        assert memory.growth("worker") < 128, memory.peak
        # Full recovery: accepted again, and stored.
        fresh = factories.events(10)
        answer = requests.post(
            stack.url("/v1/events"),
            data=orjson.dumps(fresh),
            headers={"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
        ledger.wait_stored([e["id"] for e in fresh], timeout=30, what="a fresh batch stored")
        # 503 with Retry-After, and no other 5xx, no connection error.
        assert not unexpected(statuses, {"202", "503"}), statuses
        assert statuses["503"] > 0
        assert all(a.retry_after for a in load.stats().answers if a.status == "503")
        api_growth = max(memory.growth(api.name) for api in stack.apis)
        row = settle(
            stack,
            ledger,
            load,
            order=50,
            fault=f"overload for {OVERLOAD_S} s",
            recovery_s=recovery,
            notes=f"offered {offered:,.0f} events/s to writers storing {sustained:,.0f}/s "
            f"(one slot, batches of 10); {statuses['503']:,} × 503 + Retry-After, no other "
            f"5xx; peak memory: Redis {memory.peak['redis']:.0f} MiB (backlog limit "
            f"{BACKLOG_LIMIT:,}), API instance +{api_growth:.0f} MiB, worker "
            f"+{memory.growth('worker'):.0f} MiB; recovery = the backlog drained",
        )
        assert (row.lost, row.duplicated) == (0, 0)
        assert offered > 3 * sustained
        assert stack.worker is not None
        stack.worker.stop()
        stack.start_worker()
