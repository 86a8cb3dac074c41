"""The fault-injection suite's world: a PostgreSQL and a Redis of its own (the faults stop
and restart them), its own database, and the production topology on top (nginx, two API
instances, a Celery worker), under load. Nothing here touches the machine's shared servers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from auditlog.integrity.heads import generate_key
from auditlog.services.auth import KeyAdmin
from auditlog.settings import Settings
from auditlog.storage.keys import KeyStore
from tests.faults import report
from tests.faults.servers import PrivatePostgres, RedisProcess
from tests.faults.stack import Ledger, Stack
from tests.helpers import settings_env

# The suite's backlog limit: more than a 30 s database outage at the suite's load
# (1,000 events/s), small enough for the overload scenario to fill it within seconds.
BACKLOG_LIMIT = 50_000


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not report.ROWS:
        return
    terminalreporter.section("fault injection: every 202 stored exactly once?")
    terminalreporter.write_line(report.table(report.ROWS))
    terminalreporter.write_line(report.RECOVERY)
    path = report.write(report.ROWS)
    if path is not None:
        terminalreporter.write_line(f"(written to {path})")


@pytest.fixture(scope="session")
def faults_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults")
    report.default_path[:] = [path / "faults.md"]
    return path


@pytest.fixture(scope="session")
def pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().init()
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def redis_server(faults_dir: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(faults_dir / "redis", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def faults_settings(pg: PrivatePostgres, redis_server: RedisProcess, faults_dir: Path) -> Settings:
    key_dir = faults_dir / "signing-key"
    key_dir.mkdir()
    generate_key(key_dir / "signing-key.pem")
    settings = Settings.from_env(
        database_url=pg.url("auditlog_faults"),
        admin_database_url=pg.admin_url,
        redis_url=redis_server.url,
        redis_prefix="auditlog-faults",
        signing_key_path=key_dir / "signing-key.pem",
        backlog_limit=BACKLOG_LIMIT,
        log_format="json",
        cursor_key="faults-cursor-key",
    )
    # As an operator would: the CLI, with the admin URL pointing at the private cluster.
    migrated = subprocess.run(
        [sys.executable, "-m", "auditlog.cli", "migrate", "--setup"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    return settings


@pytest.fixture(scope="session")
def producer_token(faults_settings: Settings) -> str:
    engine = create_engine(faults_settings.url_for("owner"))
    try:
        made = KeyAdmin(KeyStore(engine)).create("faults-producer", "write", ["billing"])
    finally:
        engine.dispose()
    return made.token


@pytest.fixture(scope="session")
def stack(
    faults_settings: Settings,
    pg: PrivatePostgres,
    redis_server: RedisProcess,
    faults_dir: Path,
    producer_token: str,
) -> Iterator[Stack]:
    logs = faults_dir / "logs"
    logs.mkdir()
    topology = Stack(faults_settings, pg, redis_server, logs, producer_token)
    try:
        yield topology.start()
    finally:
        topology.stop()
        if topology.nginx is not None:
            topology.nginx.remove()


@pytest.fixture(autouse=True)
def stack_up(stack: Stack) -> Stack:
    """Each scenario starts with everything running, whatever the one before left."""
    stack.ensure_up()
    return stack


@pytest.fixture(scope="session")
def ledger(faults_settings: Settings, stack: Stack) -> Iterator[Ledger]:
    book = Ledger(faults_settings)
    yield book
    book.close()
