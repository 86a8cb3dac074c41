"""`make bench`: auditlog against its limits and a naive peer, in one run on one machine.

Writes docs/benchmarks.md (tables, ratios, commands, versions), docs/benchmarks/*.png and
bench/results/latest.json. Every server and load generator shares the machine's cores (no
pinning): the ratios are the result, the absolute figures are context.

    .venv/bin/python bench/run.py [--quick]

Environment: BENCH_LARGE_EVENTS (10,000,000), BENCH_SOAK_S (600), BENCH_DURATION_S (30),
BENCH_KEEP_DATABASE (1: keep the large log's database, auditlog_bench, afterwards).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson
import requests
from sqlalchemy import Engine, create_engine, text
from tests import factories
from tests.helpers import WorkerProcess, clear_redis, seal_tree, wait_for
from tests.topology import ApiInstance, NginxProcess

from auditlog.cli import drop_database, migrate, setup_database
from auditlog.integrity.heads import HeadSigner, generate_key
from auditlog.services.auth import KeyAdmin
from auditlog.settings import Settings
from auditlog.storage.event_writer import EventWriter
from auditlog.storage.keys import KeyStore
from bench import loader, report, tools
from bench.writer_chain import stored_form, unchained_write

RESULTS = ROOT / "bench" / "results"
LOGS = Path(tempfile.mkdtemp(prefix="auditlog-bench-"))


def say(message: str) -> None:
    print(message, flush=True)


@dataclass
class Run:
    settings: Settings
    token: str
    quick: bool
    duration: int
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}


class App(ApiInstance):
    """A gunicorn instance of another WSGI target (the bare app, the naive peer)."""

    def __init__(self, settings: Settings, name: str, target: str, env: dict[str, str]):
        super().__init__(settings, LOGS, name)
        self.target = target
        self.extra_env = env

    def command(self) -> list[str]:
        return [*super().command()[:-1], self.target]

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **self.extra_env, "PYTHONPATH": str(ROOT)}


@contextmanager
def topology(
    settings: Settings,
    target: str = "auditlog.asgi:app",
    *,
    worker: bool = True,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[NginxProcess, list[Any]]]:
    """nginx over two gunicorn instances (deploy/ as `make run` uses it) and a worker."""
    apis: list[Any] = [
        App(settings, f"{target.split(':', maxsplit=1)[0]}-{n}", target, env or {}) for n in (1, 2)
    ]
    for api in apis:
        api.metrics_dir = LOGS / f"metrics-{api.name}-{uuid.uuid4().hex[:6]}"
    processes: list[Any] = list(apis)
    if worker:
        processes.append(WorkerProcess(settings, LOGS, name="bench-worker"))
    nginx = NginxProcess(settings, [api.address for api in apis], "127.0.0.1:9", LOGS)
    processes.append(nginx)
    started: list[Any] = []
    try:
        for process in processes:
            process.start()
            started.append(process)
        yield nginx, processes
    finally:
        for process in reversed(started):
            process.stop()
        nginx.remove()


def event_body(count: int) -> bytes:
    """A request body of `count` events without ids (the server assigns them): reusable."""
    now = datetime.now(UTC)
    events = [
        factories.event(drop=("id",), occurred_at=factories.timestamp(now)) for _ in range(count)
    ]
    return orjson.dumps(events if count > 1 else events[0])


def saturate(
    run: Run, url: str, body: bytes, *, apis: list[Any] | None = None
) -> tuple[tools.LoadResult, dict[str, Any]]:
    """wrk with 32 connections for the run's duration, and the CPU each kind of process
    spent per request meanwhile; given the API instances, a profile of one of their workers
    (where its Python time goes)."""
    spy = raw = None
    if apis:
        raw = LOGS / f"profile-{uuid.uuid4().hex[:6]}.txt"
        spy = tools.start_profile(tools.children(apis[0].proc.pid)[0], run.duration, raw)
    before = tools.cpu_by_kind()
    result = tools.wrk(url, body, connections=32, seconds=run.duration, headers=run.headers)
    after = tools.cpu_by_kind()
    extras: dict[str, Any] = {
        "cpu_us_per_request": tools.cpu_per_request(before, after, result.requests)
    }
    if spy is not None and raw is not None:
        spy.wait(timeout=60)
        extras["profile"] = tools.profile_shares(raw) if raw.exists() else {}
    return result, extras


def stored_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(text("SELECT tree_size FROM tree_heads ORDER BY tree_size DESC LIMIT 1"))
            or 0
        )


def settle(engine: Engine, run: Run, label: str, *, interval: float = 0.2) -> None:
    """Wait until the writers have caught up (the stream is empty)."""
    import redis  # noqa: PLC0415 - bench only

    client = redis.Redis.from_url(run.settings.redis_url)
    key = run.settings.key("events")
    wait_for(lambda: client.xlen(key) == 0, timeout=900, interval=interval, what=f"{label} drained")
    client.close()


# --- 1. the database limit ------------------------------------------------------------------
def database_limit(run: Run) -> None:
    say("1. database limit: bulk insert with dedupe, no HTTP, no queue")
    events = 50_000 if run.quick else 200_000
    databases = {
        name: Settings.from_env(
            database_url=f"postgresql://127.0.0.1:5432/auditlog_bench_{name}",
            signing_key_path=run.settings.signing_key_path,
        )
        for name in ("copy", "nochain", "chain")
    }
    for s in databases.values():
        drop_database(s)
        setup_database(s)
        migrate(s)
    engines = {name: create_engine(s.url_for("writer")) for name, s in databases.items()}
    store = EventWriter(engines["chain"], HeadSigner.from_file(key_path(run)))
    variants: dict[str, Callable[[list[dict[str, Any]]], Any]] = {
        # The database limit: lock, dedupe, number, COPY into the same hypertable.
        "copy_dedupe": lambda b: unchained_write(engines["copy"], b),
        # The writer's transaction without the integrity chain (hourly counts kept).
        "writer_without_chain": lambda b: unchained_write(engines["nochain"], b, counts=True),
        # The writer's whole transaction: leaves, tree strata, signed head, counts.
        "writer_transaction": store.write,
    }
    out: dict[str, Any] = {}
    # The variants take turns, a quarter of the events each time, so that the machine's
    # drifts (other tenants, caches) fall on all of them alike: the ratios are the result.
    spent = dict.fromkeys(variants, 0.0)
    rounds = 4
    try:
        for _ in range(rounds):
            for name, write in variants.items():
                batch = [stored_form(e) for e in factories.events(events // rounds)]
                started = time.perf_counter()
                for i in range(0, len(batch), 2000):
                    write(batch[i : i + 2000])
                spent[name] += time.perf_counter() - started
        for name in variants:
            out[name] = events // rounds * rounds / spent[name]
            say(f"   {name}: {out[name]:,.0f} events/s")
    finally:
        for engine in engines.values():
            engine.dispose()
        for s in databases.values():
            drop_database(s)
    out["events"] = events
    out["chain_ratio"] = out["writer_transaction"] / out["writer_without_chain"]
    run.results["database_limit"] = out


def key_path(run: Run) -> Path:
    return run.settings.signing_key_path


# --- 2. the HTTP limit and 3. the naive peer ------------------------------------------------
def http_limit(run: Run) -> None:
    say("2. HTTP limit: a bare Falcon app answering 202, same gunicorn, same nginx")
    body = event_body(1)
    with topology(run.settings, "bench.bare_app:app", worker=False) as (nginx, _):
        tools.wrk(nginx.url("/v1/events"), body, connections=32, seconds=3, headers=run.headers)
        result, cpu = saturate(run, nginx.url("/v1/events"), body)
    say(f"   {result.rate:,.0f} requests/s, p99 {result.p99_ms:.1f} ms")
    run.results["http_limit"] = {**result.as_dict(), **cpu}


def naive_peer(run: Run) -> None:
    say("3. naive peer: Flask under gunicorn, one INSERT per request")
    peer = Settings.from_env(
        database_url="postgresql://127.0.0.1:5432/auditlog_bench_naive",
        signing_key_path=run.settings.signing_key_path,
    )
    drop_database(peer)
    setup_database(peer)
    migrate(peer)
    owner = create_engine(peer.url_for("owner"))
    with owner.begin() as conn:
        conn.execute(text("CREATE SEQUENCE bench_naive_seq"))
    owner.dispose()
    url = peer.url_for("owner").render_as_string(hide_password=False).replace("+psycopg", "")
    body = event_body(1)
    try:
        with topology(
            run.settings, "bench.naive_peer:app", worker=False, env={"BENCH_DATABASE_URL": url}
        ) as (nginx, _):
            tools.wrk(nginx.url("/v1/events"), body, connections=32, seconds=3, headers=run.headers)
            result, cpu = saturate(run, nginx.url("/v1/events"), body)
    finally:
        drop_database(peer)
    say(f"   {result.rate:,.0f} requests/s, p99 {result.p99_ms:.1f} ms")
    run.results["naive_peer"] = {**result.as_dict(), **cpu}


# --- 4-6. auditlog ingest, end to end -------------------------------------------------------
def ingest(run: Run, engine: Engine) -> None:
    with topology(run.settings) as (nginx, processes):
        url = nginx.url("/v1/events")
        tools.wrk(url, event_body(1), connections=8, seconds=3, headers=run.headers)
        settle(engine, run, "warm-up")

        say(
            "4. auditlog batch ingest: arrays of 500 through nginx, 4 clients, "
            f"{run.duration} s, to the last row committed"
        )
        before = stored_count(engine)
        cpu_before = tools.cpu_by_kind()
        started = time.perf_counter()
        batch = tools.wrk(
            url, event_body(500), connections=4, seconds=run.duration, headers=run.headers
        )
        # wrk counts a reply it did not read at the end of the run (socket errors) as an
        # error, though the events may have been queued: the rate is what was committed,
        # up to the moment the stream was empty again (entries leave it only after COMMIT).
        accepted = (batch.requests - batch.errors) * 500
        settle(engine, run, "batch ingest", interval=0.02)
        elapsed = time.perf_counter() - started
        cpu_after = tools.cpu_by_kind()
        stored = stored_count(engine) - before
        assert stored >= accepted, f"{accepted:,} accepted, only {stored:,} stored"
        run.results["batch_ingest"] = {
            **batch.as_dict(),
            "events_accepted": accepted,
            "events_stored": stored,
            "seconds_to_last_commit": elapsed,
            "events_per_s": stored / elapsed,
            "cpu_us_per_event": tools.cpu_per_request(cpu_before, cpu_after, accepted),
        }
        say(
            f"   {stored / elapsed:,.0f} events/s ({stored:,} in {elapsed:.1f} s; "
            f"202s stopped at {batch.seconds:.1f} s)"
        )

        say("5. auditlog single-event ingest: saturation, then half of it")
        apis = [p for p in processes if isinstance(p, App)]
        saturated, cpu = saturate(run, url, event_body(1), apis=apis)
        say(
            f"   saturation: {saturated.rate:,.0f} requests/s; CPU µs per request "
            f"{cpu['cpu_us_per_request']}"
        )
        settle(engine, run, "saturation")
        probe = LagProbe(nginx.url("/v1/events"), run, engine)
        probe.start()
        half = half_load(nginx, run, saturated.rate)
        lags = probe.stop()
        say(
            f"   half load {half['client'].rate:,.0f} requests/s: 202 p50 "
            f"{half['client'].p50_ms:.1f} ms, p99 {half['client'].p99_ms:.1f} ms "
            f"(nginx's own: p50 {half['nginx']['p50_ms']:.1f} ms, "
            f"p99 {half['nginx']['p99_ms']:.1f} ms)"
        )
        run.results["single_ingest"] = {
            "saturated": {**saturated.as_dict(), **cpu},
            "half_load": half["client"].as_dict(),
            "half_load_nginx": half["nginx"],
        }
        say("6. lag from 202 to queryable, at half load")
        run.results["lag"] = {
            "samples": len(lags),
            "p50_ms": percentile(lags, 50),
            "p99_ms": percentile(lags, 99),
            "max_ms": max(lags, default=float("nan")),
            "never_seen": probe.missing,
        }
        say(
            f"   p50 {percentile(lags, 50):.0f} ms, p99 {percentile(lags, 99):.0f} ms "
            f"({len(lags)} probes)"
        )
        settle(engine, run, "half load")
        run.results["rss_after_ingest"] = rss_by_kind(processes)


def half_load(nginx: NginxProcess, run: Run, saturated_rate: float) -> dict[str, Any]:
    """Single events at half the saturating rate (hey, 8 connections), with nginx's own
    request times for the same requests beside the client's."""
    offset = nginx.access_log.stat().st_size
    client = tools.hey(
        nginx.url("/v1/events"),
        event_body(1),
        rate=saturated_rate / 2,
        connections=8,
        seconds=run.duration,
        headers=run.headers,
    )
    server = tools.nginx_request_times(nginx.access_log, offset, "/v1/events")
    return {"client": client, "nginx": summary(server)}


class LagProbe:
    """Posts a marked event every 100 ms and times it from its 202 to its row in the log."""

    def __init__(self, url: str, run: Run, engine: Engine):
        self._url, self._run, self._engine = url, run, engine
        self._stop = threading.Event()
        self._acked: dict[str, float] = {}
        self._lags: list[float] = []
        self._threads = [threading.Thread(target=self._post), threading.Thread(target=self._poll)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[float]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self._lags

    def _post(self) -> None:
        with requests.Session() as http:
            while not self._stop.wait(0.1):
                event = factories.event()
                answer = http.post(
                    self._url, data=orjson.dumps(event), headers=self._run.headers, timeout=10
                )
                if answer.status_code == 202:
                    self._acked[event["id"]] = time.perf_counter()

    @property
    def missing(self) -> int:
        """Probes answered 202 that were not queryable within a minute of the stop."""
        return len(self._acked)

    def _poll(self) -> None:
        give_up = float("inf")
        with self._engine.connect() as conn:
            while not self._stop.is_set() or (self._acked and time.perf_counter() < give_up):
                if self._stop.is_set() and give_up == float("inf"):
                    give_up = time.perf_counter() + 60
                pending = list(self._acked)
                if pending:
                    rows = conn.execute(
                        text("SELECT id::text FROM event_ids WHERE id = ANY(CAST(:ids AS uuid[]))"),
                        {"ids": pending},
                    )
                    now = time.perf_counter()
                    for (found,) in rows:
                        self._lags.append((now - self._acked.pop(found)) * 1000)
                    conn.commit()
                time.sleep(0.005)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def rss_by_kind(processes: list[Any]) -> dict[str, float]:
    """Peak RSS (MiB) of each kind of process, read from /proc (VmHWM)."""
    kinds: dict[str, list[int]] = {
        "api_worker": [],
        "api_master": [],
        "celery_main": [],
        "celery_pool": [],
        "nginx": [],
    }
    for process in processes:
        pid = process.proc.pid if process.proc else None
        if pid is None:
            continue
        if isinstance(process, WorkerProcess):
            kinds["celery_main"].append(pid)
            kinds["celery_pool"] += tools.children(pid)
        elif isinstance(process, NginxProcess):
            kinds["nginx"] += [pid, *tools.children(pid)]
        else:
            kinds["api_master"].append(pid)
            kinds["api_worker"] += tools.children(pid)
    return {kind: round(tools.peak_rss_mib(pids), 1) for kind, pids in kinds.items()}


# --- 7-8. queries on a large log, footprint -------------------------------------------------
def large_log(run: Run, engine: Engine) -> None:
    events = 300_000 if run.quick else int(os.environ.get("BENCH_LARGE_EVENTS", "10000000"))
    say(f"7. queries on a large log: loading {events:,} events (SQL, no API)")
    timings = loader.load(run.settings, events, say=say)
    started = time.perf_counter()
    size = seal_tree(run.settings)
    timings["seal_s"] = time.perf_counter() - started
    # The load leaves gigabytes of dirty pages: write them out now, so that the checkpoint
    # they would force does not land in the middle of the ingest and query measurements.
    started = time.perf_counter()
    admin = create_engine(run.settings.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CHECKPOINT"))
    admin.dispose()
    timings["checkpoint_s"] = time.perf_counter() - started
    say(f"   loaded and sealed: tree size {size:,} ({timings})")
    run.results["large_log"] = {"events": size, "timings": timings}


def queries(run: Run, engine: Engine) -> None:
    with topology(run.settings) as (nginx, processes):
        base = nginx.url("")
        http = requests.Session()
        http.headers.update(run.headers)
        with engine.connect() as conn:
            ids = [
                str(i)
                for i in conn.scalars(
                    text("SELECT id FROM event_ids TABLESAMPLE SYSTEM (1) LIMIT 300")
                )
            ]
            newest = conn.scalar(text("SELECT max(occurred_at) FROM events"))
        day = newest.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
        rounds = 60 if run.quick else 200

        tag = f"q{uuid.uuid4().hex[:6]}"
        sent = iter(range(10**9))

        def timed(path: str, params: dict[str, Any] | None = None, what: str = "x") -> float:
            # The request id names the query, so that the app's own time for it can be
            # found in its log afterwards (server_times).
            request_id = f"{tag}.{what}.{next(sent)}"
            started = time.perf_counter()
            answer = http.get(
                base + path, params=params, timeout=60, headers={"X-Request-ID": request_id}
            )
            elapsed = (time.perf_counter() - started) * 1000
            assert answer.status_code == 200, (path, answer.text[:300])
            return elapsed

        results: dict[str, Any] = {}
        for _ in range(20):  # warm the caches as a running service would be
            timed(f"/v1/events/{ids[0]}")
        results["get_by_id"] = summary(
            [timed(f"/v1/events/{ids[i % len(ids)]}", what="get") for i in range(rounds)]
        )
        # The same events again: what caches give (the first pass read each from disk).
        results["get_by_id_again"] = summary(
            [timed(f"/v1/events/{ids[i % len(ids)]}", what="get2") for i in range(rounds)]
        )
        filtered = []
        for i in range(rounds):
            start = day - timedelta(days=i % 20)
            filtered.append(
                timed(
                    "/v1/events",
                    {
                        "service": f"svc-{i % 20}",
                        "type": "customer.*",
                        "limit": 100,
                        "since": start.isoformat(),
                        "until": (start + timedelta(days=1)).isoformat(),
                    },
                    what="filtered",
                )
            )
        results["filtered_page"] = summary(filtered)
        # 20 distinct (service, day) pairs: the first 20 queries read theirs from disk.
        results["filtered_page_again"] = summary(filtered[20:])
        first, hundredth = [], []
        for walk in range(3 if run.quick else 10):
            params: dict[str, Any] = {"service": f"svc-{walk}", "limit": 100}
            for page in range(100):
                started = time.perf_counter()
                reply = http.get(base + "/v1/events", params=params, timeout=60)
                elapsed = (time.perf_counter() - started) * 1000
                assert reply.status_code == 200, (params, reply.text[:300])
                answer = reply.json()
                if page == 0:
                    first.append(elapsed)
                params["cursor"] = answer["next_cursor"]
            hundredth.append(elapsed)
        results["first_page"] = summary(first)
        results["page_100"] = summary(hundredth)
        until = newest.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        since = until - timedelta(days=30)
        results["buckets_30d_hourly_by_type"] = summary(
            [
                timed(
                    "/v1/stats/buckets",
                    {
                        "width": "1h",
                        "group_by": "type",
                        "since": since.isoformat(),
                        "until": until.isoformat(),
                    },
                )
                for _ in range(20)
            ]
        )
        run.results["queries"] = results
        apis = [p for p in processes if isinstance(p, App)]
        run.results["queries_server"] = {
            name: summary(server_times(apis, f"{tag}.{what}."))
            for name, what in (
                ("get_by_id", "get"),
                ("get_by_id_again", "get2"),
                ("filtered_page", "filtered"),
            )
        }
        for name, figures in results.items():
            say(f"   {name}: p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms")
        run.results["rss_after_queries"] = rss_by_kind(processes)
    run.results["footprint"] = footprint(run, engine)


def server_times(apis: list[Any], request_id_prefix: str) -> list[float]:
    """The app's own duration_ms of each request whose id starts with the prefix."""
    times = []
    for api in apis:
        for line in api.log_path.read_bytes().splitlines():
            start = line.find(b"{")
            if start < 0 or request_id_prefix.encode() not in line:
                continue
            try:
                entry = orjson.loads(line[start:])
            except orjson.JSONDecodeError:
                continue
            if entry.get("event") == "request" and str(entry.get("request_id", "")).startswith(
                request_id_prefix
            ):
                times.append(float(entry["duration_ms"]))
    return times


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "mean_ms": statistics.fmean(values),
    }


def footprint(run: Run, engine: Engine) -> dict[str, Any]:
    say("8. footprint: bytes on disk per event against the event's JSON size")
    with engine.connect() as conn:
        sizes = conn.execute(
            text(
                "SELECT hypertable_size('events'), pg_total_relation_size('event_ids'),"
                " pg_total_relation_size('merkle_nodes'), pg_total_relation_size('tree_heads'),"
                " pg_total_relation_size('event_counts'), (SELECT count(*) FROM event_ids)"
            )
        ).one()
        sample = conn.scalars(
            text("SELECT id FROM event_ids TABLESAMPLE SYSTEM (0.1) LIMIT 500")
        ).all()
    http = requests.Session()
    http.headers.update(run.headers)
    json_sizes = []
    with topology(run.settings, worker=False) as (nginx, _):
        for event_id in sample:
            answer = http.get(nginx.url(f"/v1/events/{event_id}"), timeout=30)
            assert answer.status_code == 200, (event_id, answer.text[:300])
            json_sizes.append(len(answer.content))
    events_bytes, ids_bytes, nodes_bytes, heads_bytes, counts_bytes, count = sizes
    total = events_bytes + ids_bytes + nodes_bytes + heads_bytes
    json_size = statistics.fmean(json_sizes)
    out = {
        "events": count,
        "events_table_bytes": events_bytes,
        "event_ids_bytes": ids_bytes,
        "merkle_nodes_bytes": nodes_bytes,
        "tree_heads_bytes": heads_bytes,
        "event_counts_bytes": counts_bytes,
        "bytes_per_event": total / count,
        "json_bytes_per_event": json_size,
        "ratio": total / count / json_size,
    }
    say(
        f"   {total / count:,.0f} bytes/event on disk, JSON {json_size:,.0f} bytes: "
        f"{out['ratio']:.2f}x"
    )
    return out


# --- soak -----------------------------------------------------------------------------------
def soak(run: Run, engine: Engine) -> None:
    seconds = 60 if run.quick else int(os.environ.get("BENCH_SOAK_S", "600"))
    say(f"9. soak: {seconds} s of steady load, worker memory sampled every 10 s")
    with topology(run.settings) as (nginx, processes):
        worker = next(p for p in processes if isinstance(p, WorkerProcess))
        stop = threading.Event()

        def produce() -> None:
            body = event_body(100)
            with requests.Session() as http:
                while not stop.wait(0.1):  # ~1,000 events/s
                    http.post(nginx.url("/v1/events"), data=body, headers=run.headers, timeout=30)

        producer = threading.Thread(target=produce)
        producer.start()
        samples: list[tuple[float, float, float]] = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            time.sleep(10)
            pool = tools.children(worker.proc.pid)  # type: ignore[union-attr]
            main_kib = tools.memory_kib(worker.proc.pid)[0]  # type: ignore[union-attr]
            pool_kib = max((tools.memory_kib(p)[0] for p in pool), default=0)
            samples.append((time.perf_counter() - started, main_kib / 1024, pool_kib / 1024))
        stop.set()
        producer.join()
        settle(engine, run, "soak")
    run.results["soak"] = {
        "seconds": seconds,
        "samples": samples,
        "pool_rss_first_mib": samples[0][2],
        "pool_rss_last_mib": samples[-1][2],
        "main_rss_first_mib": samples[0][1],
        "main_rss_last_mib": samples[-1][1],
    }
    say(
        f"   pool RSS {samples[0][2]:.1f} → {samples[-1][2]:.1f} MiB, main "
        f"{samples[0][1]:.1f} → {samples[-1][1]:.1f} MiB"
    )


# --- 10. strict acknowledgement -------------------------------------------------------------
def strict_ack(run: Run, engine: Engine) -> None:
    """Single-event ingest with the stream in a Redis of its own that persists (AOF): fsync
    once a second (production's compose), then AUDITLOG_ACK_FSYNC with appendfsync always."""
    from tests.faults.servers import RedisProcess  # noqa: PLC0415 - a test helper, bench only

    say("10. strict acknowledgement: AOF everysec, then AUDITLOG_ACK_FSYNC (appendfsync always)")
    server = RedisProcess(LOGS / f"redis-{uuid.uuid4().hex[:6]}", appendonly=True).start()
    out: dict[str, Any] = {}
    try:
        for name, ack in (("aof_everysec", False), ("ack_fsync_always", True)):
            if ack:
                with server.client() as client:
                    client.config_set("appendfsync", "always")
            own = run.settings.model_copy(
                update={
                    "redis_url": server.url,
                    "broker_url": run.settings.celery_broker_url,
                    "ack_fsync": ack,
                }
            )
            with topology(own) as (nginx, _):
                url = nginx.url("/v1/events")
                tools.wrk(url, event_body(1), connections=8, seconds=3, headers=run.headers)
                saturated = tools.wrk(
                    url, event_body(1), connections=32, seconds=run.duration, headers=run.headers
                )
                half = half_load(nginx, run, saturated.rate)
                out[name] = {
                    "saturated": saturated.as_dict(),
                    "half_load": half["client"].as_dict(),
                    "half_load_nginx": half["nginx"],
                }
                say(
                    f"   {name}: {saturated.rate:,.0f} requests/s; at half load p50 "
                    f"{half['client'].p50_ms:.1f} ms, p99 {half['client'].p99_ms:.1f} ms"
                )
    finally:
        server.kill()
    run.results["strict_ack"] = out


# --- the run --------------------------------------------------------------------------------
def prepare(quick: bool) -> Run:
    key = LOGS / "signing-key.pem"
    generate_key(key)
    settings = Settings.from_env(
        database_url="postgresql://127.0.0.1:5432/auditlog_bench",
        redis_prefix=f"auditlog-bench-{uuid.uuid4().hex[:6]}",
        signing_key_path=key,
        log_level="INFO",
        backlog_limit=5_000_000,
    )
    drop_database(settings)
    setup_database(settings)
    migrate(settings)
    engine = create_engine(settings.url_for("owner"))
    token = (
        KeyAdmin(KeyStore(engine)).create("bench", "admin", [], rate_per_s=1e9, burst=10**9).token
    )
    engine.dispose()
    duration = 10 if quick else int(os.environ.get("BENCH_DURATION_S", "30"))
    return Run(settings, token, quick, duration)


def database_versions(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {
            "postgresql": conn.scalar(text("SHOW server_version")),
            "timescaledb": conn.scalar(
                text("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
            ),
            "shared_buffers": conn.scalar(text("SHOW shared_buffers")),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    args = parser.parse_args()
    run = prepare(args.quick)
    engine = create_engine(run.settings.url_for("owner"))
    run.results["environment"] = tools.environment(database_versions(engine))
    run.results["started"] = datetime.now(UTC).isoformat()
    phases: list[Callable[[], None]] = [
        lambda: database_limit(run),
        lambda: http_limit(run),
        lambda: naive_peer(run),
        lambda: large_log(run, engine),
        lambda: ingest(run, engine),
        lambda: queries(run, engine),
        lambda: strict_ack(run, engine),
        lambda: soak(run, engine),
    ]
    try:
        for phase in phases:
            phase()
    finally:
        run.results["finished"] = datetime.now(UTC).isoformat()
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "latest.json").write_bytes(
            orjson.dumps(run.results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )
        engine.dispose()
        clear_redis(run.settings)
        # The large log is some 13 GiB: kept only when asked for (to look at it afterwards).
        if os.environ.get("BENCH_KEEP_DATABASE") != "1":
            drop_database(run.settings)
        say(f"raw results: {RESULTS / 'latest.json'}; logs: {LOGS}")
    report.write(run.results, ROOT / "docs")
    say("report: docs/benchmarks.md")


if __name__ == "__main__":
    main()


__all__ = ["subprocess"]
