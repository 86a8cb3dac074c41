"""The write path under failure: SIGKILL, redelivery, database outage, poison entries."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import redis
from falcon import testing
from falcon.util import async_to_sync
from sqlalchemy import Engine, text

from auditlog.app import create_app
from auditlog.runtime import ApiRuntime
from auditlog.settings import Settings
from auditlog.storage.event_writer import WRITE_LOCK_KEY
from auditlog.storage.stream import GROUP
from tests import factories
from tests.helpers import TcpProxy, WorkerProcess, clear_redis, event_stream, settings_env, wait_for
from tests.integration.conftest import Tokens, authorized, post, stored_counts, wait_stored

pytestmark = pytest.mark.slow


@dataclass
class Lane:
    """A pipeline of its own: the session's database, but its own stream and workers."""

    settings: Settings
    client: testing.TestClient
    runtime: ApiRuntime
    logs_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker(self, **kwargs: object) -> WorkerProcess:
        process = WorkerProcess(
            self.settings, self.logs_dir, name=f"w{len(self.workers)}", **kwargs
        )  # type: ignore[arg-type]
        self.workers.append(process)
        return process

    def post_many(self, count: int, per_request: int = 500) -> list[str]:
        ids: list[str] = []
        for start in range(0, count, per_request):
            batch = factories.events(min(per_request, count - start))
            result = post(self.client, batch)
            assert result.status_code == 202
            ids += result.json["ids"]
        return ids

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url)

    def pending(self) -> int:
        try:
            return int(self.redis.xpending(self.settings.key("events"), GROUP)["pending"])
        except redis.ResponseError:  # no group yet: the worker has not started reading
            return 0


def _lane(settings: Settings, logs_dir: Path, token: str, **overrides: object) -> Iterator[Lane]:
    own = settings.model_copy(
        update={"redis_prefix": f"{settings.redis_prefix}-{uuid.uuid4().hex[:6]}", **overrides}
    )
    runtime = ApiRuntime.build(own)
    lane = Lane(own, authorized(create_app(own, runtime=runtime), token), runtime, logs_dir)
    yield lane
    for process in lane.workers:
        process.stop()
    async_to_sync(runtime.close)
    clear_redis(own)


@pytest.fixture
def lane(settings: Settings, logs_dir: Path, tokens: Tokens) -> Iterator[Lane]:
    yield from _lane(settings, logs_dir, tokens.admin)


@pytest.fixture
def write_lock(owner_db: Engine) -> Iterator[object]:
    """Hold the writers' advisory lock: every batch blocks inside its transaction."""
    conn = owner_db.connect()
    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": WRITE_LOCK_KEY})
    conn.commit()

    class Lock:
        held = True

        def release(self) -> None:
            if self.held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": WRITE_LOCK_KEY})
                conn.commit()
                self.held = False

    lock = Lock()
    yield lock
    lock.release()
    conn.close()


class TestWorkerDeath:
    """A worker SIGKILLed in the middle of a batch loses nothing and duplicates nothing."""

    def test_whole_worker_killed_mid_batch(self, lane: Lane, owner_db: Engine, write_lock: object):
        ids = lane.post_many(3000)
        first = lane.worker().start()
        # The batch is read (pending in the stream) and blocked inside its transaction.
        wait_for(lambda: lane.pending() > 0, what="a batch in flight")
        first.kill()
        write_lock.release()  # type: ignore[attr-defined]
        assert stored_counts(owner_db, ids) == {}  # the open transaction died with it
        lane.worker().start()
        counts = wait_stored(owner_db, ids, timeout=60)
        assert set(counts.values()) == {1}
        wait_for(lambda: event_stream(lane.settings).depth() == 0, what="stream drained")

    def test_pool_process_killed_mid_batch(self, lane: Lane, owner_db: Engine, write_lock: object):
        ids = lane.post_many(2000)
        process = lane.worker().start()
        wait_for(lambda: lane.pending() > 0, what="a batch in flight")
        children = process.pool_pids()
        assert children
        for pid in children:
            subprocess.run(["kill", "-9", str(pid)], check=True)
        write_lock.release()  # type: ignore[attr-defined]
        # The main process survives, re-queues the drain, and its successor resumes.
        counts = wait_stored(owner_db, ids, timeout=60)
        assert set(counts.values()) == {1}
        assert process.proc is not None
        assert process.proc.poll() is None


class TestRedelivery:
    def test_entry_of_a_committed_batch_delivered_again_is_not_duplicated(
        self, lane: Lane, owner_db: Engine
    ):
        lane.worker().start()
        sent = factories.event()
        post(lane.client, sent)
        wait_stored(owner_db, [sent["id"]])
        stored = lane.client.simulate_get(f"/v1/events/{sent['id']}").json
        # What a kill between COMMIT and XACK leaves behind: the same entry once more.
        again = {
            **sent,
            "received_at": stored["received_at"],
            "publisher": None,
            "occurred_at": stored["occurred_at"],
        }
        async_to_sync(lane.runtime.appender.append, [orjson.dumps(again)])
        marker = factories.event()
        post(lane.client, marker)
        wait_stored(owner_db, [marker["id"]])
        wait_for(lambda: event_stream(lane.settings).depth() == 0, what="stream drained")
        assert stored_counts(owner_db, [sent["id"]]) == {sent["id"]: 1}
        assert lane.client.simulate_get(f"/v1/events/{sent['id']}").json == stored


class TestDatabaseOutage:
    """With PostgreSQL unreachable, ingest keeps answering 202 and writers retry."""

    def test_nothing_is_lost(
        self, settings: Settings, logs_dir: Path, owner_db: Engine, tokens: Tokens
    ):
        proxy = TcpProxy(5432).start()
        url = settings.database_url.replace(":5432/", f":{proxy.port}/")
        for lane in _lane(settings, logs_dir, tokens.admin, database_url=url):
            lane.worker().start()
            before = lane.post_many(100)
            wait_stored(owner_db, before)
            proxy.stop()
            during = lane.post_many(500, per_request=50)  # all 202: the stream takes them
            time.sleep(3)  # writers meet the outage and back off
            assert stored_counts(owner_db, during) == {}
            proxy.start()
            counts = wait_stored(owner_db, during, timeout=60)
            assert set(counts.values()) == {1}
            log = lane.workers[0].log_tail(400)
            assert "store unavailable; retrying" in log
        proxy.stop()


class TestPoison:
    def test_unwritable_entries_are_dead_lettered_and_do_not_block(
        self, lane: Lane, owner_db: Engine
    ):
        lane.worker().start()
        good = factories.events(5)
        unreadable = b"{not json"
        refused = factories.event(type="nul\x00in.type")  # PostgreSQL cannot store U+0000
        refused.update(received_at=refused["occurred_at"], publisher=None)
        async_to_sync(lane.runtime.appender.append, [unreadable, orjson.dumps(refused)])
        result = post(lane.client, good)
        wait_stored(owner_db, result.json["ids"])
        wait_for(
            lambda: event_stream(lane.settings).dead_letter_count() == 2,
            timeout=30,
            what="two dead letters",
        )
        wait_for(lambda: event_stream(lane.settings).depth() == 0, what="stream drained")
        assert stored_counts(owner_db, [refused["id"]]) == {}
        letters = event_stream(lane.settings).dead_letters()
        errors = sorted(letter.error for letter in letters)
        assert errors[0].startswith("refused ")
        assert errors[1].startswith("unreadable entry")

        listing = subprocess.run(
            [sys.executable, "-m", "auditlog.cli", "dead-letters"],
            env=settings_env(lane.settings),
            capture_output=True,
            text=True,
            check=True,
        )
        assert listing.stdout.startswith("2 dead-lettered entries")


class TestBatching:
    def test_backlog_is_written_in_large_batches(self, lane: Lane, owner_db: Engine):
        ids = lane.post_many(6000)
        process = lane.worker().start()
        wait_stored(owner_db, ids, timeout=60)
        sizes = [
            line["batch"] for line in process.log_lines() if line.get("event") == "batch written"
        ]
        assert max(sizes) >= 1000, sizes
        assert len(sizes) <= 20, sizes

    def test_low_load_event_is_queryable_within_two_seconds(self, lane: Lane):
        lane.worker().start()
        time.sleep(1)
        sent = factories.event()
        accepted = time.monotonic()
        post(lane.client, sent)
        wait_for(
            lambda: lane.client.simulate_get(f"/v1/events/{sent['id']}").status_code == 200,
            timeout=2.0,
            interval=0.02,
            what="the event to be queryable",
        )
        assert time.monotonic() - accepted < 2.0

    def test_stream_lost_by_redis_is_recreated(self, lane: Lane, owner_db: Engine):
        lane.worker().start()
        lane.redis.delete(lane.settings.key("events"))  # as a Redis restart without AOF does
        sent = factories.events(3)
        result = post(lane.client, sent)
        wait_stored(owner_db, result.json["ids"], timeout=30)
