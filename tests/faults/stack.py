"""The topology under test: nginx over two API instances, a Celery worker, on the suite's
own PostgreSQL and Redis, started from the shipped configuration (tests/topology.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, text

from auditlog.runtime import async_redis_client, event_stream, stream_appender
from auditlog.settings import Settings
from auditlog.storage.event_writer import WRITE_LOCK_KEY
from auditlog.storage.stream import GROUP, EventStream
from tests.faults.servers import PrivatePostgres, RedisProcess
from tests.helpers import WorkerProcess, settings_env, wait_for
from tests.topology import ApiInstance, NginxProcess, free_port, scrape, total


@dataclass
class Stack:
    settings: Settings
    pg: PrivatePostgres
    redis: RedisProcess
    logs_dir: Path
    token: str
    apis: list[ApiInstance] = field(default_factory=list)
    nginx: NginxProcess | None = None
    worker: WorkerProcess | None = None
    _workers_started: int = 0
    stop_seconds: dict[str, float] = field(default_factory=dict)

    # --- processes -------------------------------------------------------------------------
    def start(self) -> Stack:
        if not self.apis:
            self.apis = [
                ApiInstance(self.settings, self.logs_dir, f"faults-api{n}", workers=1)
                for n in (1, 2)
            ]
        for api in self.apis:
            api.start()
        self.start_worker()
        if self.nginx is None:
            # No Flower in this topology: its upstream points at a port nobody listens on.
            self.nginx = NginxProcess(
                self.settings,
                [api.address for api in self.apis],
                f"127.0.0.1:{free_port()}",
                self.logs_dir,
            )
        self.nginx.start()
        return self

    def start_worker(self, **overrides: Any) -> WorkerProcess:
        """A fresh worker (a new log file, so that its readiness is its own), with the
        stack's settings changed by `overrides`."""
        self._workers_started += 1
        settings = self.settings.model_copy(update=overrides)
        self.worker = WorkerProcess(
            settings, self.logs_dir, name=f"faults-worker{self._workers_started}"
        ).start()
        return self.worker

    def ensure_up(self) -> None:
        """Whatever a failed scenario left down is started again."""
        if not self.pg.running():
            self.pg.start()
        if not self.redis.running():
            self.redis.start()
        for api in self.apis:
            if api.proc is None or api.proc.poll() is not None:
                api.start()
        if self.worker is None or self.worker.proc is None or self.worker.proc.poll() is not None:
            self.start_worker()
        assert self.nginx is not None
        if self.nginx.proc is None or self.nginx.proc.poll() is not None:
            self.nginx.start()

    def terminate(self, timeout: float = 60) -> dict[str, int]:
        """SIGTERM every program at once, as honcho or docker does (nginx gets SIGQUIT, what
        deploy/nginx/run.sh turns SIGTERM into); their exit codes, by name."""
        assert self.nginx is not None
        assert self.worker is not None
        programs: dict[str, subprocess.Popen[bytes]] = {}
        for name, proc in (
            ("nginx", self.nginx.proc),
            *((api.name, api.proc) for api in self.apis),
            ("worker", self.worker.proc),
        ):
            assert proc is not None, name
            assert proc.poll() is None, name
            programs[name] = proc
        started = time.monotonic()
        for name, proc in programs.items():
            proc.send_signal(signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
        codes: dict[str, int] = {}
        self.stop_seconds: dict[str, float] = {}
        while len(codes) < len(programs):
            for name, proc in programs.items():
                if name not in codes and proc.poll() is not None:
                    codes[name] = proc.returncode
                    self.stop_seconds[name] = time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"still running after {timeout} s: {set(programs) - set(codes)}"
                )
            time.sleep(0.02)
        return codes

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for api in self.apis:
            api.stop()
        if self.worker is not None:
            self.worker.stop()

    def url(self, path: str) -> str:
        assert self.nginx is not None
        return self.nginx.url(path)

    # --- what is in Redis ----------------------------------------------------------------------
    @contextlib.contextmanager
    def stream(self) -> Iterator[EventStream]:
        client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=10)
        try:
            yield event_stream(self.settings, client)
        finally:
            client.close()

    def depth(self) -> int:
        with self.stream() as stream:
            return stream.depth()

    def inject(self, payloads: list[bytes]) -> list[str]:
        """Append entries to the stream as the API does (its appender), bypassing its
        checks: what a poison or a redelivery looks like to the writers."""

        async def append() -> list[str]:
            client = async_redis_client(self.settings)
            try:
                return await stream_appender(self.settings, client).append(payloads)
            finally:
                await client.aclose()

        return asyncio.run(append())

    def pending(self) -> int:
        with self.redis.client() as client:
            try:
                return int(client.xpending(self.settings.key("events"), GROUP)["pending"])
            except redis.ResponseError:  # no group (yet, or lost with a Redis without AOF)
                return 0

    def api_metrics(self, name: str) -> float:
        """A metric as the first API instance's /metrics shows it."""
        return total(scrape(self.apis[0].url("/metrics")), name)

    # --- what is in PostgreSQL ---------------------------------------------------------------
    def verify(self) -> subprocess.CompletedProcess[str]:
        """`auditlog verify` against the suite's database, as an operator runs it."""
        return subprocess.run(
            [sys.executable, "-m", "auditlog.cli", "verify"],
            env=settings_env(self.settings),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "auditlog.cli", *args],
            env=settings_env(self.settings),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


class Ledger:
    """What the database holds, read as the owner: the ground truth of the suite."""

    def __init__(self, settings: Settings):
        self._engine: Engine = create_engine(
            settings.url_for("owner"), pool_pre_ping=True, connect_args={"connect_timeout": 3}
        )

    def close(self) -> None:
        self._engine.dispose()

    def stored(self, ids: list[str]) -> int:
        """How many of the ids are stored (by the dedupe ledger's primary key: cheap)."""
        if not ids:
            return 0
        with self._engine.connect() as conn:
            return int(
                conn.scalar(
                    text("SELECT count(*) FROM event_ids WHERE id = ANY(CAST(:ids AS uuid[]))"),
                    {"ids": ids},
                )
            )

    def rows_per_id(self, ids: list[str]) -> dict[str, int]:
        """How many rows of `events` each id has: exactly once means 1 for each."""
        if not ids:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT id::text, count(*) FROM events"
                    " WHERE id = ANY(CAST(:ids AS uuid[])) GROUP BY id"
                ),
                {"ids": ids},
            )
            return {row[0]: int(row[1]) for row in rows}

    @contextlib.contextmanager
    def writers_held(self) -> Iterator[None]:
        """Hold the writers' advisory lock: every batch waits inside its transaction, read
        but not stored, and the stream fills up behind (the writers are behind)."""
        with self._engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": WRITE_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": WRITE_LOCK_KEY})
                conn.commit()

    def events(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.scalar(text("SELECT count(*) FROM events")))

    def wait_stored(self, ids: list[str], *, timeout: float, what: str) -> float:
        """Seconds until every id is stored."""
        started = time.monotonic()
        wanted = len(set(ids))

        def done() -> bool:
            try:
                return self.stored(ids) >= wanted
            except Exception:  # the database may still be coming back
                return False

        wait_for(done, timeout=timeout, interval=0.1, what=what)
        return time.monotonic() - started


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def sigkill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (a gunicorn master and its workers)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return rss_mib(pid) + sum(rss_mib(int(child)) for child in out.stdout.split())
