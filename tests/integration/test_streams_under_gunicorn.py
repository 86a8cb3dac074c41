"""Long answers through a real gunicorn (deploy/gunicorn.conf.py): an export of a few hundred
thousand events with the worker's memory flat, and followers that hold no worker hostage."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aredis
from falcon.util import async_to_sync
from sqlalchemy import create_engine, text

from auditlog.cli import drop_database, migrate, setup_database
from auditlog.runtime import ApiRuntime
from auditlog.services.ingest import EnvelopeFormat
from auditlog.settings import Settings
from auditlog.storage.tail import TailReader
from tests import factories
from tests.helpers import ApiProcess, WorkerProcess, clear_redis, rss_kib, seal_tree, wait_for
from tests.integration.conftest import create_key, make_settings, wait_stored

pytestmark = pytest.mark.slow

EVENTS = 300_000
MIB = 1024  # in KiB, as VmRSS counts


@pytest.fixture(scope="module")
def big_log() -> Iterator[Settings]:
    """A database of its own holding EVENTS events, loaded by the owner in one statement
    (numbered 0..EVENTS-1 as the writer would; nothing else writes here)."""
    own = make_settings(follow_max_s=3.0, follow_max_per_process=1, follow_poll_s=0.1)
    setup_database(own)
    migrate(own)
    owner = create_engine(own.url_for("owner"))
    with owner.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO events (occurred_at, id, seq, received_at, type, service, publisher,
                                    action, outcome, actor, subject, context, data,
                                    leaf_hash)
                SELECT t, gen_random_uuid(), i, t + interval '2 ms', 'load.kind' || (i % 7),
                       'svc-' || (i % 13), NULL, 'touch', 'success',
                       jsonb_build_object('type', 'user', 'id', 'u-' || (i % 1000)),
                       jsonb_build_object('type', 'customer', 'id', 'c-' || i),
                       jsonb_build_object('host', 'h-1', 'trace_id', md5(i::text)),
                       jsonb_build_object('n', i, 'note', repeat('x', 300)),
                       -- a stand-in: this log is about streaming, not the integrity tree
                       sha256(i::text::bytea)
                FROM generate_series(0, :n - 1) AS i,
                     LATERAL (SELECT timestamptz '2025-01-01' + i * interval '1 second') AS at(t)
                """
            ),
            {"n": EVENTS},
        )
        conn.execute(text("ANALYZE events"))  # as autovacuum would, for realistic plans
    owner.dispose()
    seal_tree(own)  # so that the writer can carry on from this log
    yield own
    drop_database(own)
    clear_redis(own)


@pytest.fixture(scope="module")
def server(big_log: Settings, logs_dir: Path) -> Iterator[ApiProcess]:
    token = create_key(big_log, "streams-reader", "read")
    process = ApiProcess(big_log, logs_dir, workers=1, threads=4, token=token).start()
    yield process
    process.stop()


class TestExportMemory:
    def test_whole_log_streams_with_flat_memory(self, server: ApiProcess):
        pid = server.worker_pid()
        # Warm up: every code path of an export once, so imports and pools are in place.
        status, _ = server.get("/v1/events/export?service=svc-1&until=2025-01-01T01:00:00Z")
        assert status == 200
        baseline = rss_kib(pid)
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(rss_kib(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        conn = server.connection(timeout=120)
        started = time.monotonic()
        conn.request("GET", "/v1/events/export?format=ndjson", headers=server.headers)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") == "chunked"
        sampler.start()
        total = lines = 0
        last_seq = -1
        pending = b""
        try:
            while chunk := response.read1(1 << 16):
                total += len(chunk)
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    seq = orjson.loads(line)["seq"]
                    assert seq == last_seq + 1  # occurred_at order is seq order here
                    last_seq = seq
                    lines += 1
        finally:
            done.set()
            sampler.join()
            conn.close()
        elapsed = time.monotonic() - started
        assert pending == b""
        assert lines == EVENTS
        assert total > 150 * 1024 * 1024  # far more than the growth allowed below
        assert len(samples) > 20
        peak = max(samples)
        print(  # the figure goes in the report (pytest -s)
            f"\nexported {lines} events, {total / 2**20:.0f} MiB in {elapsed:.1f} s; "
            f"worker RSS baseline {baseline / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB"
        )
        assert peak - baseline < 40 * MIB
        # Flat, not slowly growing: the last quarter is no higher than the first.
        quarter = len(samples) // 4
        assert max(samples[-quarter:]) - max(samples[:quarter]) < 8 * MIB


class TestFollowersUnderGunicorn:
    def test_a_follower_holds_a_thread_not_the_worker(self, server: ApiProcess):
        follower = server.connection(timeout=10)
        follower.request("GET", "/v1/events/tail?follow=true", headers=server.headers)
        stream = follower.getresponse()
        assert stream.status == 200
        assert stream.getheader("Content-Type") == "text/event-stream"
        assert stream.getheader("X-Accel-Buffering") == "no"
        assert stream.readline().startswith(b"retry:")
        try:
            # The same (single) worker answers other requests meanwhile...
            started = time.monotonic()
            status, body = server.get("/v1/events/tail?limit=2")
            assert status == 200
            assert [e["seq"] for e in orjson.loads(body)["events"]] == [EVENTS - 1, EVENTS - 2]
            assert time.monotonic() - started < 2
            # ...but refuses a second follower (one per process here).
            status, body = server.get("/v1/events/tail?follow=true")
            assert status == 503
        finally:
            rest = stream.read()  # the stream ends by itself after follow_max_s
            follower.close()
        assert b"time limit reached" in rest
        wait_for(
            lambda: server.get("/v1/events/tail?follow=true&service=none")[0] == 200,
            timeout=10,
            what="the follower's slot given back",
        )


def timed(call: Callable[[], Any], rounds: int = 300) -> tuple[float, float]:
    """Median and 95th percentile of a call's duration, in milliseconds."""
    durations = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        durations.append((time.perf_counter() - started) * 1000)
    durations.sort()
    return statistics.median(durations), durations[int(rounds * 0.95)]


class TestTailSpeed:
    def test_warm_cache_against_the_database(self, big_log: Settings, logs_dir: Path):
        """The tail's server time (the service call) on a warm cache and from the database,
        on a log of EVENTS + 1000 events; the same answers from both."""
        worker = WorkerProcess(big_log, logs_dir, name="speed").start()
        cached = ApiRuntime.build(big_log)
        direct = ApiRuntime.build(big_log.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
        owner = create_engine(big_log.url_for("owner"))
        try:
            ids: list[str] = []
            for _ in range(2):  # the writer fills the cache after each COMMIT
                ids += async_to_sync(
                    cached.ingest.submit, orjson.dumps(factories.events(500)), EnvelopeFormat.NATIVE
                )
            wait_stored(owner, ids)
            with owner.begin() as conn:
                conn.execute(text("ANALYZE events"))
            with owner.connect() as conn:  # reads through the API were audited: the log grew
                last = conn.scalar(text("SELECT max(seq) FROM events"))
            cache = TailReader(aredis.Redis.from_url(big_log.redis_url), big_log.key("tail"))
            wait_for(lambda: async_to_sync(cache.head) == last, what="the last batch cached")
            async_to_sync(cache.close)
            figures = {}
            for name, params in (
                ("whole log, 100", {"limit": "100"}),
                ("one service, 100", {"service": "billing", "limit": "100"}),
                ("one type, 20", {"type": "customer.billed", "limit": "20"}),
            ):
                hit = async_to_sync(cached.tail.tail, params)
                miss = async_to_sync(direct.tail.tail, params)
                assert (hit.source, miss.source) == ("cache", "database")
                assert [orjson.loads(e) for e in hit.events] == [
                    orjson.loads(e) for e in miss.events
                ]
                figures[name] = (
                    timed(lambda p=params: async_to_sync(cached.tail.tail, p)),  # type: ignore[misc]
                    timed(lambda p=params: async_to_sync(direct.tail.tail, p)),  # type: ignore[misc]
                )
            print()  # the figures go in the report (pytest -s)
            for name, ((cache_med, cache_p95), (db_med, db_p95)) in figures.items():
                print(
                    f"tail {name}: cache median {cache_med:.3f} ms (p95 {cache_p95:.3f}); "
                    f"database median {db_med:.3f} ms (p95 {db_p95:.3f})"
                )
                assert cache_med < db_med
        finally:
            owner.dispose()
            async_to_sync(direct.close)
            async_to_sync(cached.close)
            worker.stop()
