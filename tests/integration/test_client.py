"""auditlog.client against the production topology: nginx over two gunicorn instances and a
worker, from the shipped configuration, with the session's database and a Redis prefix of
its own. Every check counts rows per id in the database (exactly once means 1 for each)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from auditlog.client import (
    AsyncAuditClient,
    AuditClient,
    AuditLogHandler,
    BufferFullError,
    ClientClosedError,
    DeliveryError,
    Failure,
    Options,
    Overflow,
)
from auditlog.services.auth import MISS_RELOAD_S
from auditlog.settings import Settings
from tests import factories
from tests.helpers import WorkerProcess, clear_redis, settings_env, wait_for
from tests.integration.conftest import Tokens, stored_counts, wait_stored
from tests.topology import ApiInstance, NginxProcess, free_port

pytestmark = pytest.mark.slow

AUDITLOG = Path(sys.executable).with_name("auditlog")


@dataclass
class Stack:
    settings: Settings
    nginx: NginxProcess
    apis: list[ApiInstance]

    @property
    def url(self) -> str:
        return self.nginx.url("")

    def answers(self, user_agent: str, count: int) -> list[int]:
        """The statuses nginx answered one client (each test's clients name themselves),
        once it has logged `count` of them (it logs a request just after answering it)."""

        def logged() -> list[int] | None:
            statuses = [
                line["status"]
                for line in self.nginx.access_lines()
                if line["user_agent"] == user_agent
            ]
            return statuses if len(statuses) >= count else None

        return list(wait_for(logged, timeout=10, what=f"{count} requests in the access log"))

    def kill_apis(self) -> None:
        for api in self.apis:
            api.kill()

    def start_apis(self, *, only_dead: bool = False) -> None:
        for api in self.apis:
            if not only_dead or api.proc is None or api.proc.poll() is not None:
                api.start()


@pytest.fixture(scope="module")
def stack(settings: Settings, logs_dir: Path) -> Iterator[Stack]:
    own = settings.model_copy(
        update={"redis_prefix": f"{settings.redis_prefix}-client{uuid.uuid4().hex[:4]}"}
    )
    apis = [ApiInstance(own, logs_dir, f"client-api{n}") for n in (1, 2)]
    worker = WorkerProcess(own, logs_dir, name="client")
    # No Flower here: nginx's /flower/ points at the discard port.
    nginx = NginxProcess(own, [api.address for api in apis], "127.0.0.1:9", logs_dir)
    started: list[Any] = []
    try:
        for service in (*apis, worker, nginx):
            service.start()
            started.append(service)
        yield Stack(own, nginx, apis)
    finally:
        # Each takes seconds to stop gracefully (gunicorn, Celery's warm shutdown): together.
        with ThreadPoolExecutor() as pool:
            list(pool.map(lambda service: service.stop(), started))
        nginx.remove()
        clear_redis(own)


def named(**options: Any) -> tuple[str, Options]:
    """Options whose requests nginx's access log can tell apart (by User-Agent)."""
    agent = f"client-test-{uuid.uuid4().hex[:8]}"
    return agent, Options(headers={"User-Agent": agent}, **options)


def emit_from_threads(client: AuditClient, threads: int, per_thread: int) -> list[str]:
    """Events emitted one at a time from several threads; their ids."""
    ids: list[list[str]] = [[] for _ in range(threads)]

    def produce(mine: list[str]) -> None:
        for _ in range(per_thread):
            mine.append(client.emit(factories.event(drop=("id",))))

    workers = [threading.Thread(target=produce, args=(mine,)) for mine in ids]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [i for mine in ids for i in mine]


def logged(engine: Engine, logger: str) -> list[Any]:
    """The stored events a logger's records became."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT type, action, outcome, subject, context, data FROM events"
                    " WHERE context->>'logger' = :name ORDER BY seq"
                ),
                {"name": logger},
            ).all()
        )


def assert_stored_once(engine: Engine, ids: list[str], timeout: float = 60) -> None:
    assert len(set(ids)) == len(ids), "the client assigned an id twice"
    counts = wait_stored(engine, ids, timeout=timeout)
    assert set(counts.values()) == {1}, {i: n for i, n in counts.items() if n != 1}


class TestManyThreads:
    """100,000 events emitted one at a time from 8 threads are all stored exactly once."""

    def test_every_event_is_stored_once(self, stack: Stack, tokens: Tokens, owner_db: Engine):
        failures: list[Failure] = []
        agent, options = named()
        with AuditClient(stack.url, tokens.admin, options, on_failure=failures.append) as audit:
            ids = emit_from_threads(audit, threads=8, per_thread=12_500)
        assert failures == []
        stats = audit.stats
        assert (stats.emitted, stats.delivered, stats.failed) == (100_000, 100_000, 0)
        # Batched: far fewer requests than events (each at most max_batch_events).
        answers = stack.answers(agent, stats.requests)
        assert answers.count(202) == stats.requests - stats.retries
        assert 200 <= len(answers) < 10_000, len(answers)
        assert_stored_once(owner_db, ids, timeout=120)
        # UUIDv7: the id's version nibble.
        assert {uuid.UUID(i).version for i in ids} == {7}


class TestServiceDown:
    """The API instances killed mid-run and restarted: with the spill policy, nothing lost."""

    def test_killed_mid_run_and_restarted_loses_nothing(
        self, stack: Stack, tokens: Tokens, owner_db: Engine, tmp_path: Path
    ):
        failures: list[Failure] = []
        _, options = named(
            overflow=Overflow.SPILL,
            spill_path=tmp_path / "spill",
            buffer_events=500,
            backoff_max_s=0.5,
            close_timeout_s=60,
        )
        stop = threading.Event()
        ids: list[str] = []
        audit = AuditClient(stack.url, tokens.admin, options, on_failure=failures.append)

        def produce() -> None:
            while not stop.is_set():
                ids.append(audit.emit(factories.event(drop=("id",))))
                time.sleep(0.001)

        producers = [threading.Thread(target=produce) for _ in range(4)]
        for producer in producers:
            producer.start()
        try:
            time.sleep(1)
            stack.kill_apis()
            # Down long enough for the buffer (500) to fill and the rest to go to disk.
            wait_for(lambda: audit.stats.spilled > 1000, timeout=30, what="events spilled")
            stack.start_apis()
            time.sleep(1)
        finally:
            stop.set()
            for producer in producers:
                producer.join()
            stack.start_apis(only_dead=True)
        audit.close()
        stats = audit.stats
        assert failures == []
        assert stats.failed == 0
        assert stats.spilled > 1000, stats
        assert stats.replayed == stats.spilled, stats
        assert stats.delivered == stats.emitted == len(ids), stats
        assert (tmp_path / "spill").stat().st_size == 0
        assert_stored_once(owner_db, ids)

    def test_spilled_at_close_is_sent_by_the_next_client(
        self, stack: Stack, tokens: Tokens, owner_db: Engine, tmp_path: Path
    ):
        spill = tmp_path / "spill"
        _, options = named(
            overflow=Overflow.SPILL, spill_path=spill, buffer_events=100, backoff_max_s=0.2
        )
        failures: list[Failure] = []
        stack.kill_apis()
        try:
            first = AuditClient(stack.url, tokens.admin, options, on_failure=failures.append)
            ids = [first.emit(factories.event()) for _ in range(300)]
            first.close(timeout=1)
        finally:
            stack.start_apis()
        assert failures == []
        assert first.stats.delivered == 0
        assert len(spill.read_bytes().splitlines()) == 300
        assert stored_counts(owner_db, ids) == {}

        # The next process on the same file replays it as soon as the service answers.
        with AuditClient(stack.url, tokens.admin, options, on_failure=failures.append) as second:
            wait_for(lambda: second.stats.delivered == 300, timeout=30, what="spill replayed")
        assert failures == []
        assert second.stats.replayed == 300
        assert spill.stat().st_size == 0
        assert_stored_once(owner_db, ids)


class TestNothingLostSilently:
    """With nothing listening (a refused connection, retried until close), every policy
    accounts for every event: stored, or given to on_failure."""

    @pytest.fixture
    def nowhere(self) -> str:
        return f"http://127.0.0.1:{free_port()}"

    def test_block_waits_then_refuses_and_close_reports_the_rest(self, nowhere: str):
        failures: list[Failure] = []
        options = Options(buffer_events=5, block_timeout_s=0.2, linger_s=0, backoff_base_s=0.05)
        audit = AuditClient(nowhere, "alk_x", options, on_failure=failures.append)
        taken: list[str] = []

        def emit_until_refused() -> None:
            for _ in range(100):
                taken.append(audit.emit(factories.event()))

        with pytest.raises(BufferFullError):
            emit_until_refused()
        assert 5 <= len(taken) <= 10  # the buffer, and the batch the sender holds
        audit.close(timeout=0.2)
        assert sorted(f.id for f in failures) == sorted(taken)
        assert {f.kind for f in failures} == {"undelivered"}
        assert audit.stats.emitted == audit.stats.failed == len(taken)
        with pytest.raises(ClientClosedError):
            audit.emit(factories.event())

    def test_close_frees_an_emit_waiting_for_room(self, nowhere: str):
        audit = AuditClient(nowhere, "alk_x", Options(buffer_events=1, linger_s=0))
        outcome: list[BaseException] = []

        def fill() -> None:
            try:
                while True:
                    audit.emit(factories.event())
            except Exception as exc:
                outcome.append(exc)

        filler = threading.Thread(target=fill)
        filler.start()
        time.sleep(0.3)
        audit.close(timeout=0)
        filler.join(5)
        assert [type(e) for e in outcome] == [ClientClosedError]

    def test_drop_oldest_reports_each_dropped_event(self, nowhere: str):
        failures: list[Failure] = []
        options = Options(buffer_events=5, overflow=Overflow.DROP_OLDEST, linger_s=0)
        audit = AuditClient(nowhere, "alk_x", options, on_failure=failures.append)
        ids = [audit.emit(factories.event()) for _ in range(50)]
        dropped = [f.id for f in failures if f.kind == "dropped"]
        assert len(dropped) == audit.stats.dropped >= 40
        assert dropped == [i for i in ids if i in set(dropped)]  # oldest first
        audit.close(timeout=0.1)
        assert sorted(f.id for f in failures) == sorted(ids)
        assert audit.stats.failed == 50

    def test_emit_sync_times_out_and_the_event_stays_queued(self, nowhere: str):
        failures: list[Failure] = []
        audit = AuditClient(nowhere, "alk_x", on_failure=failures.append)
        with pytest.raises(TimeoutError, match=r"not accepted within 0\.2 s"):
            audit.emit_sync(factories.event(), timeout=0.2)
        assert audit.stats.buffered + audit.stats.failed == 0  # in the sender's hands
        assert not audit.flush(timeout=0.1)
        audit.close(timeout=0)
        assert [f.kind for f in failures] == ["undelivered"]


class TestRefusals:
    def test_a_422_fails_the_bad_events_and_the_rest_is_stored(
        self, stack: Stack, tokens: Tokens, owner_db: Engine
    ):
        failures: list[Failure] = []
        agent, options = named(linger_s=30)  # nothing leaves before the flush: one batch
        with AuditClient(stack.url, tokens.admin, options, on_failure=failures.append) as audit:
            good = [audit.emit(factories.event()) for _ in range(3)]
            bad_type = audit.emit(factories.event(type="Not A Type"))
            good.append(audit.emit(factories.event()))
            bad_data = audit.emit(factories.event(data={"card": "4111\x00"}))
            assert audit.flush(timeout=30)
            with pytest.raises(DeliveryError) as refused:
                audit.emit_sync(factories.event(occurred_at="2026-13-45T00:00:00Z"))
        assert [(f.id, f.kind, f.status) for f in failures] == [
            (bad_type, "rejected", 422),
            (bad_data, "rejected", 422),
            (refused.value.failure.id, "rejected", 422),
        ]
        assert failures[0].detail.startswith("type: ")
        assert failures[1].detail.startswith("data.card: ")
        assert failures[1].event["data"] == {"card": "4111\x00"}
        # One POST with all six, refused; the four good ones again, stored; then emit_sync's.
        assert stack.answers(agent, 3) == [422, 202, 422]
        assert_stored_once(owner_db, good)
        assert stored_counts(owner_db, [bad_type, bad_data]) == {}

    def test_retry_after_is_honoured(self, stack: Stack, tokens: Tokens, owner_db: Engine):
        env = settings_env(stack.settings)
        name = f"client-limited-{uuid.uuid4().hex[:6]}"
        created = subprocess.run(
            [AUDITLOG, "keys", "create", "--name", name, "--scope", "write", "--service=billing"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        token = created.stdout.splitlines()[-1]
        subprocess.run(
            [AUDITLOG, "keys", "limit", name, "--rate", "1", "--burst", "1"], env=env, check=True
        )
        time.sleep(MISS_RELOAD_S * 1.5)  # the instances look for new keys this often
        # One event per request, and a backoff of at most 20 ms: a client that ignored
        # Retry-After would come back some fifty times a second.
        agent, options = named(
            max_batch_events=1, linger_s=0, backoff_base_s=0.01, backoff_max_s=0.02
        )
        started = time.monotonic()
        with AuditClient(stack.url, token, options) as audit:
            ids = [audit.emit(factories.event()) for _ in range(3)]
            assert audit.flush(timeout=30)
        elapsed = time.monotonic() - started
        answers = stack.answers(agent, audit.stats.requests)
        assert answers.count(202) == 3
        # Each 429 said "Retry-After: 1"; one second later the bucket had a token again.
        assert 1 <= answers.count(429) <= 2, answers
        assert audit.stats.retries == answers.count(429)
        assert elapsed >= 2 * 0.9, elapsed
        assert_stored_once(owner_db, ids)

    @pytest.mark.parametrize(
        "case",
        [
            ("nobody", "billing", "unauthorized", 401),
            ("billing_writer", "accounts", "forbidden", 403),
        ],
        ids=["401", "403"],
    )
    def test_nothing_is_retried_on_401_and_403(
        self, stack: Stack, tokens: Tokens, case: tuple[str, str, str, int]
    ):
        who, service, kind, status = case
        token = getattr(tokens, who, "alk_not-a-live-key")
        failures: list[Failure] = []
        agent, options = named(linger_s=30)
        with AuditClient(stack.url, token, options, on_failure=failures.append) as audit:
            ids = [audit.emit(factories.event(service=service)) for _ in range(2)]
            assert audit.flush(timeout=30)
        assert [(f.id, f.kind, f.status) for f in failures] == [
            (ids[0], kind, status),
            (ids[1], kind, status),
        ]
        assert stack.answers(agent, 1) == [status]
        assert audit.stats.retries == 0


class TestAsyncClient:
    def test_tasks_emit_and_every_event_is_stored_once(
        self, stack: Stack, tokens: Tokens, owner_db: Engine
    ):
        failures: list[Failure] = []

        async def run() -> tuple[list[str], str, Failure]:
            async with AsyncAuditClient(
                stack.url, tokens.admin, on_failure=failures.append
            ) as audit:

                async def produce() -> list[str]:
                    ids = []
                    for n in range(1000):
                        ids.append(await audit.emit(factories.event(drop=("id",))))
                        if n % 100 == 0:
                            await asyncio.sleep(0)
                    return ids

                batches = await asyncio.gather(*(produce() for _ in range(10)))
                confirmed = await audit.emit_sync(factories.event(), timeout=30)
                with pytest.raises(DeliveryError) as refused:
                    await audit.emit_sync(factories.event(service="Not A Service"), timeout=30)
            return [i for ids in batches for i in ids], confirmed, refused.value.failure

        ids, confirmed, refused = asyncio.run(run())
        assert [f.id for f in failures] == [refused.id]
        assert refused.kind == "rejected"
        assert_stored_once(owner_db, [*ids, confirmed])


class TestLoggingHandler:
    def test_log_records_become_events(self, stack: Stack, tokens: Tokens, owner_db: Engine):
        logger = logging.getLogger(f"billing.invoices.{uuid.uuid4().hex[:6]}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        with AuditClient(stack.url, tokens.admin) as audit:
            handler = AuditLogHandler(audit, "billing")
            logger.addHandler(handler)
            try:
                logger.info(
                    "invoice %s paid",
                    "INV-7",
                    extra={
                        "audit": {
                            "type": "invoice.paid",
                            "action": "pay",
                            "outcome": "success",
                            "subject": {"type": "invoice", "id": "INV-7"},
                            "data": {"amount": 1999},
                        }
                    },
                )
                logger.warning("disk %d%% full", 91)
                assert audit.flush(timeout=30)
            finally:
                logger.removeHandler(handler)
        assert audit.stats.delivered == 2
        rows = wait_for(
            lambda: found if len(found := logged(owner_db, logger.name)) == 2 else None,
            timeout=30,
            what="both records stored",
        )
        paid, warning = sorted(rows, key=lambda row: row.type)
        assert (paid.type, paid.action, paid.outcome) == ("invoice.paid", "pay", "success")
        assert paid.subject == {"type": "invoice", "id": "INV-7"}
        assert paid.data == {"message": "invoice INV-7 paid", "level": "INFO", "amount": 1999}
        assert (warning.type, warning.outcome) == ("log.warning", "unknown")
        assert warning.data == {"message": "disk 91% full", "level": "WARNING"}
