"""The real stack for integration tests: a fresh database migrated for this run, a Redis
prefix of its own, a real Celery worker, and the app built with create_app."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import structlog
from falcon import testing
from falcon.util import async_to_sync
from sqlalchemy import Engine, create_engine, text

from auditlog.app import create_app
from auditlog.cli import drop_database, migrate, setup_database
from auditlog.integrity.heads import generate_key
from auditlog.log import configure_logging
from auditlog.runtime import ApiRuntime
from auditlog.services.auth import MISS_RELOAD_S, KeyAdmin
from auditlog.settings import Settings
from auditlog.storage.keys import KeyStore
from tests.helpers import WorkerProcess, clear_redis, wait_for

# One signing key for the run (tree heads are signed by the workers with it).
_KEY_DIR = Path(tempfile.mkdtemp(prefix="auditlog-test-key-"))
SIGNING_KEY = _KEY_DIR / "signing-key.pem"
PUBLIC_KEY = generate_key(SIGNING_KEY)

TEST_OVERRIDES: dict[str, Any] = {
    "signing_key_path": SIGNING_KEY,
    "log_format": "json",
    "writer_lease_s": 3.0,
    "writer_drain_s": 2.0,
    "writer_claim_idle_s": 5.0,
    "key_cache_s": 0.5,
    "cursor_key": "test-cursor-key",
}


def make_settings(**overrides: Any) -> Settings:
    run = uuid.uuid4().hex[:10]
    return Settings.from_env(
        database_url=f"postgresql://127.0.0.1:5432/auditlog_test_{run}",
        redis_prefix=f"auditlog-test-{run}",
        **{**TEST_OVERRIDES, **overrides},
    )


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


# Lines a test wants shown after the run (the fuzz figures), whatever the capture mode.
SUMMARY = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SUMMARY] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for line in config.stash.get(SUMMARY, []):
        terminalreporter.write_line(line)


class LogCapture(logging.Handler):
    """Every line the app logs, rendered as production writes it (JSON): the service's own
    structlog events (seen by an observer just before rendering) and other libraries'
    records (through the standard library's logging)."""

    active: ClassVar[list[LogCapture]] = []

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        # configure_logging installs one handler whose formatter is structlog's renderer.
        self.setFormatter(
            next(
                handler.formatter
                for handler in logging.getLogger().handlers
                if isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter)
            )
        )
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @staticmethod
    def observe(logger: Any, method: str, event: Any) -> Any:
        """A structlog processor: hand each event to the captures open now."""
        for capture in LogCapture.active:
            capture.lines.append(json.dumps(event, default=str))
        return event

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def problems(self) -> list[str]:
        """Lines that a refused request must never cause: errors and tracebacks."""
        return [
            line
            for line, record in zip(self.lines, self.records(), strict=True)
            if record.get("level") in ("error", "critical")
            or "exception" in record
            or "Traceback (most recent call last)" in line
        ]

    def __enter__(self) -> LogCapture:
        logging.getLogger().addHandler(self)
        LogCapture.active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        LogCapture.active.remove(self)
        logging.getLogger().removeHandler(self)


@pytest.fixture(scope="session")
def production_logging(settings: Settings) -> None:
    """Logs go through structlog and the standard library as in production (JSON lines)."""
    configure_logging(settings, observers=[LogCapture.observe])


@pytest.fixture
def server_log(production_logging: None) -> Iterator[LogCapture]:
    """What the app logs during one test."""
    with LogCapture() as capture:
        yield capture


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    settings = make_settings()
    setup_database(settings)
    migrate(settings)
    yield settings
    drop_database(settings)
    clear_redis(settings)


@pytest.fixture(scope="session")
def worker(settings: Settings, logs_dir: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, logs_dir).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def owner_db(settings: Settings) -> Iterator[Engine]:
    """The owner's connection, for assertions that look under the API."""
    engine = create_engine(settings.url_for("owner"))
    yield engine
    engine.dispose()


def create_key(settings: Settings, name: str, scope: str, *services: str, **limits: Any) -> str:
    """A new API key in the settings' database; its token."""
    engine = create_engine(settings.url_for("owner"))
    try:
        token = KeyAdmin(KeyStore(engine)).create(name, scope, list(services), **limits).token
    finally:
        engine.dispose()
    # An API process looks for new keys at most every MISS_RELOAD_S after a miss.
    time.sleep(MISS_RELOAD_S * 1.5)
    return token


def authorized(app: Any, token: str) -> testing.TestClient:
    return testing.TestClient(app, headers={"Authorization": f"Bearer {token}"})


@dataclass(frozen=True)
class Tokens:
    admin: str
    billing_writer: str
    reader: str


_SESSION_TOKENS: list[Tokens] = []


@pytest.fixture(scope="session", autouse=True)
def tokens(settings: Settings) -> Tokens:
    made = Tokens(
        admin=create_key(settings, "test-admin", "admin"),
        billing_writer=create_key(settings, "billing-writer", "write", "billing"),
        reader=create_key(settings, "auditor", "read"),
    )
    _SESSION_TOKENS.append(made)
    return made


def admin_client(app: Any) -> testing.TestClient:
    """A client with the session's admin key, for apps built inside a test."""
    return authorized(app, _SESSION_TOKENS[0].admin)


@pytest.fixture(scope="session")
def runtime(settings: Settings) -> Iterator[ApiRuntime]:
    runtime = ApiRuntime.build(settings)
    yield runtime
    async_to_sync(runtime.close)


@pytest.fixture(scope="session")
def app(settings: Settings, runtime: ApiRuntime) -> Any:
    return create_app(settings, runtime=runtime)


@pytest.fixture(scope="session")
def client(app: Any, tokens: Tokens) -> testing.TestClient:
    """The app, every request with an admin key (tests of auth use their own clients)."""
    return authorized(app, tokens.admin)


@pytest.fixture(scope="session")
def anonymous(app: Any) -> testing.TestClient:
    return testing.TestClient(app)


@pytest.fixture(scope="session")
def api(client: testing.TestClient, worker: WorkerProcess) -> testing.TestClient:
    """The app with a worker draining behind it: what is accepted gets stored."""
    return client


def stored_counts(engine: Engine, ids: list[str]) -> dict[str, int]:
    """How many rows each id has in events (exactly-once means 1 for each)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id::text, count(*) FROM events WHERE id = ANY(CAST(:ids AS uuid[]))"
                " GROUP BY id"
            ),
            {"ids": ids},
        )
        return {row[0]: row[1] for row in rows}


def wait_stored(engine: Engine, ids: list[str], timeout: float = 30.0) -> dict[str, int]:
    def all_stored() -> dict[str, int] | None:
        counts = stored_counts(engine, ids)
        return counts if len(counts) == len(set(ids)) else None

    return wait_for(all_stored, timeout=timeout, what=f"{len(set(ids))} events stored")


@dataclass(frozen=True)
class Call:
    """One simulated request for `concurrently`: after `delay_s`, `method path`."""

    method: str
    path: str
    delay_s: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)


def concurrently(client: testing.TestClient, *calls: Call) -> list[testing.Result]:
    """Run simulated requests at the same time, on one event loop (the ASGI app's clients
    belong to the loop they first ran on, so threads cannot share it), with the client's
    default headers."""

    async def scenario() -> list[testing.Result]:
        async with testing.ASGIConductor(client.app, headers=client._default_headers) as conductor:

            async def one(call: Call) -> testing.Result:
                await asyncio.sleep(call.delay_s)
                return await conductor.simulate_request(call.method, call.path, **call.kwargs)

            return list(await asyncio.gather(*(one(call) for call in calls)))

    return async_to_sync(scenario)


def post_call(body: Any, delay_s: float = 0.0) -> Call:
    """A POST /v1/events for `concurrently`."""
    return Call(
        "POST",
        "/v1/events",
        delay_s,
        {"body": orjson.dumps(body), "headers": {"Content-Type": "application/json"}},
    )


def post(
    client: testing.TestClient, body: Any, *, content_type: str = "application/json", **kwargs: Any
) -> testing.Result:
    data = body if isinstance(body, bytes | str) else orjson.dumps(body)
    headers = {"Content-Type": content_type, **kwargs.pop("headers", {})}
    return client.simulate_post("/v1/events", body=data, headers=headers, **kwargs)
