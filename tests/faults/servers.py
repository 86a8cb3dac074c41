"""PostgreSQL and Redis servers of a suite's own, on free ports: the faults stop, kill and
restart them; the integration suite runs on such a PostgreSQL with passwords required, and
proves the Redis ACLs on such a Redis.

The machine's shared PostgreSQL (5432) and Redis (6379) are never touched: a fault that
stops a database or restarts Redis does it to one of these, started on a free port.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from tests.helpers import wait_for
from tests.topology import free_port

# The suite's own user on a Redis with ACLs (what an operator with Redis's admin rights is).
ADMIN_USER = "suite-admin"
ADMIN_PASSWORD = "suite-admin-password"  # a throwaway server's
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory, with TimescaleDB, on a free port.

    pg_ctl refuses to run as root, so as root the cluster belongs to the `postgres` OS user.
    With a `password` (the superuser's), every connection must give its role's password
    (scram-sha-256 in pg_hba, for the socket and TCP alike) and DDL statements are logged,
    so that a test can read what the server kept; without one, authentication is `trust`
    (loopback only) and the tests connect as any role.
    """

    def __init__(self, *, password: str | None = None) -> None:
        self.password = password
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="auditlog-faults-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    @property
    def admin_url(self) -> str:
        user = "postgres" if self.password is None else f"postgres:{self.password}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self._as_owner, *args],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def init(self) -> PrivatePostgres:
        auth = ["-A", "trust"]
        if self.password is not None:
            pwfile = self.root / "superuser-password"
            pwfile.write_text(self.password + "\n")
            if self._as_owner:
                shutil.chown(pwfile, "postgres")
            pwfile.chmod(0o600)
            auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        try:
            self._run(
                str(PG_BIN / "initdb"),
                *("-D", str(self.data), "-U", "postgres", *auth),
                *("-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
            )
        finally:
            (self.root / "superuser-password").unlink(missing_ok=True)
        return self

    def start(self) -> None:
        options = " ".join(
            (
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                "-c shared_preload_libraries=timescaledb",
                "-c timescaledb.telemetry_level=off",
                "-c max_connections=100",
                *(() if self.password is None else ("-c log_statement=ddl",)),
            )
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            *("-D", str(self.data), "-l", str(self.log_path), "-o", options),
            *("-w", "-t", "60", "start"),
            timeout=90,
        )
        wait_for(self.answers, timeout=30, what="the private PostgreSQL to answer")

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: `fast` ends every session (what a service manager does),
        `immediate` is a crash (no checkpoint; recovery from the WAL at the next start)."""
        self._run(
            str(PG_BIN / "pg_ctl"), *("-D", str(self.data), "-m", mode, "-w", "stop"), timeout=90
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def remove(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def redis_version() -> tuple[int, int]:
    """The (major, minor) version of the redis-server the suites start."""
    out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True, check=True)
    word = next(w for w in out.stdout.split() if w.startswith("v="))
    major, minor = word.removeprefix("v=").split(".")[:2]
    return int(major), int(minor)


class RedisProcess:
    """A redis-server of the suite's own, on a free TCP port (Celery's broker needs TCP).

    `appendonly` is what the next start uses; `set_appendonly` switches a running server
    (CONFIG SET) and the next start alike, so that a crash is followed by a start with the
    persistence the crashed server had.
    """

    def __init__(self, directory: Path, *, appendonly: bool = True, acl: str | None = None) -> None:
        """`acl`: the users' ACL file (its text); with one, the suite's own clients log in
        as `ADMIN_USER`, a user it adds with every right."""
        self.directory = directory
        self.appendonly = appendonly
        self.acl = acl
        self.port = free_port()
        self.log_path = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        if self.acl is None:
            return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=10,
            username=ADMIN_USER,
            password=ADMIN_PASSWORD,
        )

    @property
    def admin_url(self) -> str:
        """A URL with every right (the suite's own inspections)."""
        if self.acl is None:
            return self.url
        return f"redis://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        acl: list[str] = []
        if self.acl is not None:
            path = self.directory / "users.acl"
            path.write_text(f"{self.acl}user {ADMIN_USER} on >{ADMIN_PASSWORD} ~* &* +@all\n")
            acl = ["--aclfile", str(path)]
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                *acl,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.directory), "--logfile", str(self.log_path)),
                *("--save", "", "--appendonly", "yes" if self.appendonly else "no"),
                # Production's choice (docker-compose): fsync once a second.
                *("--appendfsync", "everysec"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self.ready, timeout=60, interval=0.05, what=f"redis-server up ({self.log_path})")
        return self

    def ready(self) -> bool:
        """Answering, and done loading its AOF."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.proc.returncode}")
        try:
            with self.client() as client:
                return int(client.info("persistence")["loading"]) == 0
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: a crash. What the process wrote to its AOF is in the kernel's page cache
        and survives; what it had not written yet does not."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def shutdown(self) -> None:
        """SHUTDOWN: the clean stop (AOF flushed and fsynced; no RDB: `save ""`)."""
        with self.client() as client, contextlib.suppress(redis.ConnectionError):
            client.shutdown()
        assert self.proc is not None
        self.proc.wait(30)

    def set_appendonly(self, on: bool) -> None:
        with self.client() as client:
            client.config_set("appendonly", "yes" if on else "no")
            if on:  # switching on rewrites the AOF from memory first
                wait_for(
                    lambda: (
                        int(client.info("persistence")["aof_rewrite_in_progress"]) == 0
                        and int(client.info("persistence")["aof_enabled"]) == 1
                    ),
                    timeout=30,
                    what="the AOF rewrite",
                )
        self.appendonly = on

    def used_memory(self) -> int:
        with self.client() as client:
            return int(client.info("memory")["used_memory"])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_seconds(seconds: float) -> None:
    """A fault's duration (a named sleep, so the scenarios read as the issue does)."""
    time.sleep(seconds)
