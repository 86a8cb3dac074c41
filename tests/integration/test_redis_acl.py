"""Least privilege in Redis: each process logs in as its role's ACL user (the ACL file is the
one `auditlog redis-acl` writes for `make run` and compose), may do what its code does and
nothing else, and the whole pipeline works that way.

On a redis-server of the module's own: the machine's Redis (6379) is shared and keeps its
default user.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aredis
import requests
from falcon import testing
from falcon.util import async_to_sync
from sqlalchemy import Engine

from auditlog.app import create_app
from auditlog.runtime import ApiRuntime
from auditlog.settings import REDIS_USERS, RedisRole, Settings
from auditlog.storage.ratelimit import Bucket, RateLimiter
from auditlog.storage.redis_users import DEFAULT_USER, RedisKeys, acl_file
from auditlog.storage.stream import GROUP
from auditlog.storage.stream_append import _APPEND
from tests import factories
from tests.faults.servers import RedisProcess, redis_version
from tests.helpers import WorkerProcess, settings_env, wait_for
from tests.integration.conftest import Tokens, authorized, post, wait_stored
from tests.topology import FlowerProcess

NOPERM = redis.exceptions.NoPermissionError
Attempt = Callable[[redis.Redis, RedisKeys], object]

# What a client that does not log in tries.
ANYBODY_REFUSED: dict[str, Attempt] = {
    "PING": lambda c, k: c.ping(),
    "XLEN": lambda c, k: c.xlen(k.stream),
    "GET": lambda c, k: c.get("anything"),
    "KEYS": lambda c, k: c.keys("*"),
    "CONFIG SET": lambda c, k: c.config_set("appendonly", "no"),
    "FLUSHALL": lambda c, k: c.flushall(),
    "ACL SETUSER": lambda c, k: c.acl_setuser("me", enabled=True, commands=["+@all"]),
}
# What the API's user tries beyond its needs.
API_REFUSED: dict[str, Attempt] = {
    "XREADGROUP": lambda c, k: c.xreadgroup(GROUP, "thief", {k.stream: ">"}, count=1),
    "XRANGE": lambda c, k: c.xrange(k.stream, count=1),
    "XACK": lambda c, k: c.xack(k.stream, GROUP, "0-1"),
    "XDEL": lambda c, k: c.xdel(k.stream, "0-1"),
    "dead letters": lambda c, k: c.xrange(k.dead_letters, count=1),
    "lease": lambda c, k: c.get(f"{k.slots}:0"),
    "tail write": lambda c, k: c.zadd(f"{k.tail}:all", {"forged": 10**9}),
    "task queue": lambda c, k: c.lpush(f"{k.broker}{k.tasks}", "x"),
    "other keys": lambda c, k: c.get("something-else"),
    "KEYS": lambda c, k: c.keys("*"),
    "FLUSHALL": lambda c, k: c.flushall(),
    "CONFIG SET": lambda c, k: c.config_set("appendonly", "no"),
}


@pytest.fixture(scope="module")
def acl_redis(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RedisProcess, Settings]]:
    """A Redis whose only users are the four roles' (and a default no one can log in as), the
    session's deployment moved onto it (its own key prefix, the same database)."""
    own = settings.model_copy(
        update={
            "redis_prefix": f"{settings.redis_prefix}-acl",
            "flower_password": "acl-test",
            **{f"redis_{role}_password": secrets.token_urlsafe(18) for role in REDIS_USERS},
        }
    )
    server = RedisProcess(
        tmp_path_factory.mktemp("acl-redis"),
        appendonly=False,
        acl=acl_file(own, redis_version()),
    ).start()
    yield server, own.model_copy(update={"redis_url": server.url})
    server.stop()


@pytest.fixture(scope="module")
def acl_settings(acl_redis: tuple[RedisProcess, Settings]) -> Settings:
    return acl_redis[1]


def login(settings: Settings, role: RedisRole) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url_for(role), socket_timeout=5)


def denials(server: RedisProcess) -> list[dict[str, Any]]:
    with server.client() as admin:
        return list(admin.acl_log(count=1000))


class TestAclFile:
    """The file `make run` and compose load: hashes, never passwords; no all-powerful user."""

    def test_the_command_writes_what_the_tests_load(self, acl_settings: Settings):
        version = ".".join(map(str, redis_version()))
        written = subprocess.run(
            [sys.executable, "-m", "auditlog.cli", "redis-acl", "--redis-version", version],
            env=settings_env(acl_settings),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert written == acl_file(acl_settings, redis_version())
        for role in REDIS_USERS:
            password = acl_settings.redis_password_for(role)
            assert password not in written
        default, *users = written.splitlines()
        assert default == DEFAULT_USER
        assert not any("+@all" in user for user in users)

    def test_a_missing_password_is_refused_by_name(self, acl_settings: Settings):
        result = subprocess.run(
            [sys.executable, "-m", "auditlog.cli", "redis-acl", "--redis-version", "7.0"],
            env=settings_env(acl_settings.model_copy(update={"redis_broker_password": ""})),
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 2
        assert "AUDITLOG_REDIS_BROKER_PASSWORD" in result.stderr


class TestEachUserHasOnlyItsRights:
    """What each role may not do is refused by Redis itself (NOPERM)."""

    @pytest.mark.parametrize("attempt", list(ANYBODY_REFUSED), ids=list(ANYBODY_REFUSED))
    def test_nothing_runs_without_a_password(self, acl_settings: Settings, attempt: str):
        anonymous = redis.Redis.from_url(acl_settings.redis_url, socket_timeout=5)
        with pytest.raises(redis.AuthenticationError, match=r"(?i)authenticat"):
            ANYBODY_REFUSED[attempt](anonymous, RedisKeys.of(acl_settings))

    @pytest.mark.parametrize("user", ["default", "auditlog-api"])
    def test_no_one_logs_in_without_the_password(self, acl_settings: Settings, user: str):
        """Not even as the default user, which has no password to give."""
        for password in ("", "wrong", acl_settings.redis_api_password + "x"):
            client = redis.Redis.from_url(
                acl_settings.redis_url, username=user, password=password or None
            )
            with pytest.raises(redis.AuthenticationError):
                client.ping()

    @pytest.mark.parametrize("attempt", list(API_REFUSED), ids=list(API_REFUSED))
    def test_the_api_cannot_read_the_stream_or_keys_it_does_not_need(
        self, acl_settings: Settings, attempt: str
    ):
        keys = RedisKeys.of(acl_settings)
        api = login(acl_settings, "api")
        assert api.ping()
        assert api.xlen(keys.stream) >= 0  # the queue depth, for /metrics
        with pytest.raises(NOPERM):
            API_REFUSED[attempt](api, keys)

    def test_the_writer_cannot_run_the_append_script_nor_add_to_the_stream(
        self, acl_settings: Settings
    ):
        keys = RedisKeys.of(acl_settings)
        writer = login(acl_settings, "writer")
        append = writer.register_script(_APPEND)
        payload = orjson.dumps(factories.event())
        # ARGV: backlog limit, then one request: request id, rate, burst, 1 payload. Refused
        # for the stream as one of its keys, and for its XADD were that let through.
        with pytest.raises(NOPERM, match="keys used as arguments"):
            append(keys=[keys.stream, keys.stream], args=[1000, "", "", "", 1, payload])
        with pytest.raises(NOPERM):
            writer.xadd(keys.stream, {"e": payload})
        # The rate-limit buckets are the API's: neither spent nor charged by the writer.
        bucket = Bucket("somebody", 1.0, 1)
        buckets = aredis.Redis.from_url(acl_settings.redis_url_for("writer"))
        limiter = RateLimiter(buckets, keys.ratelimit)
        try:
            with pytest.raises(NOPERM):
                async_to_sync(limiter.take, bucket)
            with pytest.raises(NOPERM):
                async_to_sync(limiter.charge, bucket, 1)
        finally:
            async_to_sync(buckets.aclose)
        with pytest.raises(NOPERM):
            writer.lpush(f"{keys.broker}{keys.tasks}", "x")
        assert writer.xlen(keys.stream) == 0

    def test_celerys_users_touch_nothing_of_the_log(self, acl_settings: Settings):
        keys = RedisKeys.of(acl_settings)
        for role in ("broker", "flower"):
            client = login(acl_settings, role)
            for attempt in (
                lambda c=client: c.xlen(keys.stream),
                lambda c=client: c.xrange(keys.stream, count=1),
                lambda c=client: c.zrange(f"{keys.tail}:all", 0, 0),
                lambda c=client: c.get(f"{keys.slots}:0"),
                lambda c=client: c.set(f"{keys.slots}:0", "mine"),
            ):
                with pytest.raises(NOPERM):
                    attempt()
        # Flower reads the task queue's length, and cannot push a task into it.
        flower = login(acl_settings, "flower")
        assert flower.llen(f"{keys.broker}{keys.tasks}") >= 0
        with pytest.raises(NOPERM):
            flower.lpush(f"{keys.broker}{keys.tasks}", "a forged task")

    def test_flower_with_its_control_api_on_still_cannot_queue_a_task(
        self, acl_redis: tuple[RedisProcess, Settings], logs_dir: Path
    ):
        """AUDITLOG_FLOWER_CONTROL=true lets an operator shut workers down or revoke tasks
        (broadcasts on the control channel, Flower's to make); sending a task would declare
        and push into the worker's queue, which Flower's user may not."""
        server, own = acl_redis
        keys = RedisKeys.of(own)
        queue = f"{keys.broker}{keys.tasks}"
        with server.client() as admin:
            admin.acl_log_reset()
            before = admin.llen(queue)
        flower = FlowerProcess(own.model_copy(update={"flower_control": True}), logs_dir)
        try:
            flower.start()
            answer = requests.post(
                f"http://{flower.address}/flower/api/task/send-task/auditlog.drain",
                auth=flower.auth,
                json={},
                timeout=30,
            )
        finally:
            flower.kill()  # a throwaway: no need to wait for its graceful stop
        assert answer.status_code == 503, answer.text[:300]  # "Broker ... unavailable"
        with server.client() as admin:
            assert admin.llen(queue) == before
        # Refused by Redis, as Flower's user, on the task queue's keys (its binding first).
        refused = denials(server)
        assert refused
        assert {(d["username"], d["reason"]) for d in refused} == {("auditlog-flower", "key")}
        assert all(keys.tasks in d["object"] for d in refused), refused


class TestRestartKeepsWhatWasAccepted:
    """Redis replays its append-only file as the default user and checks the ACLs again at
    each EXEC in it (redis/redis#14541); a request's append script with several events
    reaches the file as MULTI/EXEC. So the default user keeps its rights (no one can log in
    as it: DEFAULT_USER), or a restart would drop accepted events without a word."""

    @pytest.mark.parametrize(
        ("default", "kept"),
        [(DEFAULT_USER, 5), ("user default reset on nopass +ping", 0)],
        ids=["our-default-user", "a-ping-only-default-user"],
    )
    def test_events_appended_before_a_restart_are_there_after_it(
        self, acl_settings: Settings, tmp_path: Path, default: str, kept: int
    ):
        """The second case shows why (if it ever fails, this Redis has the fix, and
        DEFAULT_USER may lose its rights)."""
        users = acl_file(acl_settings, redis_version()).replace(DEFAULT_USER, default)
        server = RedisProcess(tmp_path / "redis", appendonly=True, acl=users).start()
        own = acl_settings.model_copy(update={"redis_url": server.url})
        runtime = ApiRuntime.build(own)
        try:
            async_to_sync(runtime.ingest.record, factories.events(5), publisher="restart-test")
            keys = RedisKeys.of(own)
            with server.client() as admin:
                assert admin.xlen(keys.stream) == 5
            server.shutdown()  # AOF flushed and fsynced
            server.start()
            with server.client() as admin:
                assert admin.xlen(keys.stream) == kept
        finally:
            async_to_sync(runtime.close)
            server.stop()


class TestPipelineWithAclUsers:
    """Ingest -> writer -> query, the tail cache, the reads' audit records, refused work
    charged against a key's rate, /metrics' queue depth, readiness and Flower, each as its
    own user (the API's asyncio clients as auditlog-api): everything works and Redis refused
    nothing."""

    def test_everything_works_and_nothing_is_refused(
        self,
        acl_redis: tuple[RedisProcess, Settings],
        tokens: Tokens,
        owner_db: Engine,
        logs_dir: Path,
    ):
        server, own = acl_redis
        with server.client() as admin:
            admin.acl_log_reset()  # what the tests above were refused on purpose
        worker = WorkerProcess(own, logs_dir, name="acl-worker").start()
        flower = FlowerProcess(own, logs_dir)
        runtime = ApiRuntime.build(own)
        try:
            flower.start()
            client = authorized(create_app(own, runtime=runtime), tokens.admin)
            sent = factories.events(20)
            answer = post(client, sent)
            assert answer.status_code == 202, answer.text
            wait_stored(owner_db, [e["id"] for e in sent])
            got = client.simulate_get(f"/v1/events/{sent[0]['id']}")
            assert got.status_code == 200
            assert got.json["publisher"] == "test-admin"
            # Refused work is charged against the key's rate (the buckets' charge script).
            refused = post(client, [factories.event(service="auditlog")])
            assert refused.status_code == 422, refused.text
            with server.client() as admin:
                assert admin.exists(f"{RedisKeys.of(own).ratelimit}:test-admin")

            def tail_from_cache() -> Any:
                answer = async_to_sync(
                    runtime.tail.tail,
                    {"service": "billing", "limit": "5"},
                    viewer=factories.principal(),
                )
                return answer.source == "cache" and answer

            tail = wait_for(tail_from_cache, timeout=10, what="the tail served from the cache")
            assert [orjson.loads(e)["id"] for e in tail.events] == [e["id"] for e in sent[:-6:-1]]
            metrics = testing.TestClient(client.app).simulate_get("/metrics")
            assert metrics.status_code == 200
            assert "auditlog_queue_depth" in metrics.text
            ready = testing.TestClient(client.app).simulate_get("/readyz")
            assert ready.status_code == 200, ready.text

            def flower_sees_the_worker() -> bool:
                workers = requests.get(
                    f"http://{flower.address}/flower/api/workers",
                    auth=("auditlog", "acl-test"),
                    params={"refresh": "1"},
                    timeout=30,
                ).json()
                return any("acl-worker" in name for name in workers)

            wait_for(flower_sees_the_worker, timeout=30, interval=1, what="Flower's inspect")
        finally:
            async_to_sync(runtime.close)
            flower.stop()
            worker.stop()
        assert denials(server) == []
        logs = worker.log_path.read_text(errors="replace") + flower.log_path.read_text()
        assert "auditlog-broker:**@" in logs  # Celery names the user, masks the password
        passwords = [own.redis_password_for(role) for role in REDIS_USERS]
        assert [p for p in passwords if p in logs] == []

    def test_strict_acknowledgement_as_the_api_user(
        self, acl_redis: tuple[RedisProcess, Settings], tokens: Tokens
    ):
        """AUDITLOG_ACK_FSYNC reads Redis's persistence (INFO, and CONFIG GET where there is
        no WAITAOF) and waits for the fsync: all within the API user's rights."""
        server, own = acl_redis
        server.set_appendonly(True)
        with server.client() as admin:
            admin.config_set("appendfsync", "always")
            admin.acl_log_reset()
        strict = own.model_copy(update={"ack_fsync": True})
        runtime = ApiRuntime.build(strict)
        try:
            client = authorized(create_app(strict, runtime=runtime), tokens.admin)
            answer = post(client, factories.events(3))
            assert answer.status_code == 202, answer.text
        finally:
            async_to_sync(runtime.close)
            server.set_appendonly(False)
        assert denials(server) == []

    def test_the_waitaof_round_trip_as_the_api_user(self, acl_redis: tuple[RedisProcess, Settings]):
        """Where Redis has WAITAOF (7.2+), a strict append is the append script and WAITAOF
        in one pipeline, whose script redis-py loads with SCRIPT EXISTS (and SCRIPT LOAD)
        first. This Redis may be older: the appender is told it has WAITAOF, so that the
        same round trip runs (WAITAOF then answers "unknown command": not confirmed), and
        everything in it must be allowed."""
        server, own = acl_redis
        with server.client() as admin:
            admin.script_flush()  # the script is loaded by the pipeline, not found cached
            admin.acl_log_reset()
            before = admin.xlen(RedisKeys.of(own).stream)
        runtime = ApiRuntime.build(own)
        appender = runtime.appender
        appender._persistence = ("waitaof", time.monotonic())
        payload = orjson.dumps(factories.event())
        try:
            replies, _ = async_to_sync(
                appender._append_fsynced,
                [appender.key, appender.key],
                [1000, "", "", "", 1, payload],
                1000,
            )
        finally:
            async_to_sync(runtime.close)
        assert [len(reply) for reply in replies] == [1]  # one request, one entry id
        with server.client() as admin:
            assert admin.xlen(RedisKeys.of(own).stream) == before + 1
        assert denials(server) == []
