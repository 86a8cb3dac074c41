"""What integration tests share: settings for a throwaway deployment, real worker processes."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text

from auditlog.integrity.heads import HeadSigner
from auditlog.integrity.merkle import Frontier, is_stored
from auditlog.settings import FOREIGN, PREFIX, Settings
from auditlog.storage.stream import EventStream

ROOT = Path(__file__).resolve().parents[1]


def settings_env(settings: Settings) -> dict[str, str]:
    """The AUDITLOG_* variables that reproduce these settings in another process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(PREFIX) and k not in FOREIGN.values()
    }
    for name, value in settings.model_dump(exclude_defaults=True).items():
        env[FOREIGN.get(name, f"{PREFIX}{name.upper()}")] = str(value)
    return env


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def event_stream(settings: Settings) -> EventStream:
    """The ingest stream as the writers see it: its depth and dead letters, for assertions."""
    return EventStream(redis.Redis.from_url(settings.redis_url), settings.key("events"))


def clear_redis(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(f"{settings.redis_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


class WorkerProcess:
    """A real Celery worker (main process and its pool) in its own process group."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        *,
        name: str = "worker",
        concurrency: int | None = None,
    ):
        self.settings = settings
        self.log_path = log_dir / f"{name}-{settings.redis_prefix}.log"
        self.name = name
        self.concurrency = concurrency or settings.writer_slots
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, *, wait: bool = True) -> WorkerProcess:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            # A restarted worker appends to the same log: only this start's lines count.
            self._log_offset = log.tell()
            self.proc = self._spawn(log)
        if wait:
            wait_for(self._ready, timeout=30, what=f"worker ready (log {self.log_path})")
        return self

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "auditlog.tasks.worker",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(self.concurrency),
                "--hostname",
                f"{self.name}-{self.settings.redis_prefix}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            env=settings_env(self.settings),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}: {self.log_tail()}")
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return b" ready." in log.read()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_lines(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines (Celery's own non-JSON lines are skipped)."""
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(raw))
        return lines

    def pool_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool, no chance to clean up."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM: Celery's warm shutdown lets running drains finish."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class TcpProxy:
    """A TCP forwarder the tests can cut: a database 'outage' without stopping PostgreSQL."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self._target = (target_host, target_port)
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._lock:
            if self._listener is not None:
                # shutdown wakes the thread blocked in accept(); close alone would not.
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: a real server in a test without picking a port."""

    def __init__(self, path: Path, timeout: float = 30.0):
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ApiProcess:
    """The API under gunicorn (deploy/gunicorn.conf.py) on a Unix socket of its own."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        *,
        workers: int = 1,
        threads: int = 4,
        token: str | None = None,
    ):
        self.settings = settings
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.socket_path = log_dir / f"api-{settings.redis_prefix}.sock"
        self.log_path = log_dir / f"api-{settings.redis_prefix}.log"
        self.env = {
            **settings_env(settings),
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_THREADS": str(threads),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ApiProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    str(ROOT / "deploy" / "gunicorn.conf.py"),
                    "-b",
                    f"unix:{self.socket_path}",
                    "auditlog.asgi:app",
                ],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._ready, timeout=30, what=f"gunicorn ready (log {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited: {self.log_path.read_text(errors='replace')}")
        try:
            status, _ = self.get("/healthz")
        except OSError:
            return False
        return status == 200

    def connection(self, timeout: float = 30.0) -> UnixHTTPConnection:
        return UnixHTTPConnection(self.socket_path, timeout=timeout)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = self.connection()
        try:
            conn.request("GET", path, headers={**self.headers, **(headers or {})})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def worker_pid(self) -> int:
        """The one worker process (run with workers=1)."""
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        pids = [int(p) for p in out.stdout.split()]
        assert len(pids) == 1, pids
        return pids[0]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class RedisServer:
    """A throwaway redis-server on a Unix socket: a Redis the test may stop and start.

    No persistence unless `options` (redis-server arguments, which win over the defaults)
    ask for some, e.g. ("--appendonly", "yes").
    """

    def __init__(self, directory: Path, *options: str):
        self.directory = directory
        self.socket_path = directory / "redis.sock"
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis(unix_socket_path=str(self.socket_path))
        wait_for(lambda: self._pings(client), timeout=10, what="redis-server up")
        client.close()
        return self

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """SIGKILL: what a crash does, and it keeps nothing (no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def seal_tree(settings: Settings) -> int:
    """Give a log loaded straight into `events` (bypassing the writer) the tree the writer
    would have built over its stored leaf hashes: strata nodes and one signed head.

    Returns the tree size. The writer then continues from that head.
    """
    engine = create_engine(settings.url_for("owner"))
    frontier = Frontier()
    nodes: list[tuple[int, int, bytes]] = []
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                text("SELECT seq, leaf_hash FROM events ORDER BY seq").execution_options(
                    yield_per=10_000
                )
            )
            for seq, leaf in rows:
                assert seq == frontier.size, f"seq {frontier.size} missing"
                nodes.extend(n for n in frontier.append(bytes(leaf)) if is_stored(n[0]))
            for level, index, node in nodes:
                conn.execute(
                    text("INSERT INTO merkle_nodes VALUES (:l, :i, :h)"),
                    {"l": level, "i": index, "h": node},
                )
            head = HeadSigner.from_file(settings.signing_key_path).sign(
                frontier.size, frontier.root(), datetime.now(UTC)
            )
            conn.execute(
                text("INSERT INTO tree_heads VALUES (:s, :r, :t, :g, :f)"),
                {
                    "s": head.tree_size,
                    "r": head.root_hash,
                    "t": head.timestamp,
                    "g": head.signature,
                    "f": b"".join(frontier.hashes()),
                },
            )
    finally:
        engine.dispose()
    return frontier.size
