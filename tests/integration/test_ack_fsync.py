"""AUDITLOG_ACK_FSYNC: a 202 only once Redis has the events on disk (its AOF, fsynced).

Redis >= 7.2 confirms with WAITAOF. An older Redis (Debian 12 ships 7.0) can only confirm by
fsyncing every write before it replies (appendonly yes, appendfsync always); any other
persistence is refused with 503 before anything is queued.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from falcon import testing
from falcon.util import async_to_sync

from auditlog.app import create_app
from auditlog.runtime import ApiRuntime
from auditlog.settings import Settings
from tests import factories
from tests.helpers import RedisServer
from tests.integration.conftest import Tokens, authorized, post

AOF = ("--appendonly", "yes")


@pytest.fixture
def strict_api(
    settings: Settings, logs_dir: Path, tokens: Tokens
) -> Iterator[Callable[..., tuple[testing.TestClient, redis.Redis, Settings]]]:
    """An app with AUDITLOG_ACK_FSYNC on a redis-server started with the given options."""
    started: list[tuple[RedisServer, ApiRuntime, redis.Redis]] = []

    def build(*options: str) -> tuple[testing.TestClient, redis.Redis, Settings]:
        server = RedisServer(logs_dir / f"redis-fsync-{uuid.uuid4().hex[:6]}", *options).start()
        own = settings.model_copy(update={"redis_url": server.url, "ack_fsync": True})
        runtime = ApiRuntime.build(own)
        client = redis.Redis(unix_socket_path=str(server.socket_path))
        started.append((server, runtime, client))
        return authorized(create_app(own, runtime=runtime), tokens.admin), client, own

    yield build
    for server, runtime, client in started:
        client.close()
        async_to_sync(runtime.close)
        server.stop()


def has_waitaof(client: redis.Redis) -> bool:
    major, minor = (
        int(part) for part in str(client.info("server")["redis_version"]).split(".")[:2]
    )
    return (major, minor) >= (7, 2)


def aof_bytes(client: redis.Redis) -> bytes:
    """Everything in the server's AOF files, as they are on disk."""
    directory = Path(str(client.config_get("dir")["dir"]))
    return b"".join(path.read_bytes() for path in directory.rglob("*.aof"))


class TestAckFsync:
    def test_confirmed_events_are_on_disk_when_answered(self, strict_api):
        api, client, own = strict_api(*AOF, "--appendfsync", "always")
        sent = factories.events(3)
        result = post(api, sent)
        assert result.status_code == 202, result.json
        assert client.xlen(own.key("events")) == 3
        on_disk = aof_bytes(client)
        assert all(event["id"].encode() in on_disk for event in sent)

    def test_redis_without_aof_is_refused_before_anything_is_queued(self, strict_api):
        api, client, own = strict_api()
        result = post(api, factories.events(2))
        assert result.status_code == 503
        assert "AUDITLOG_ACK_FSYNC" in result.json["description"]
        assert "appendonly is off" in result.json["description"]
        assert int(result.headers["Retry-After"]) > 0
        assert client.xlen(own.key("events")) == 0

    def test_fsync_once_a_second(self, strict_api):
        api, client, own = strict_api(*AOF, "--appendfsync", "everysec")
        sent = factories.events(2)
        result = post(api, sent)
        if has_waitaof(client):  # WAITAOF waits for the next fsync
            assert result.status_code == 202, result.json
            assert client.xlen(own.key("events")) == 2
        else:  # nothing can say when a write reaches the disk: refused, nothing queued
            assert result.status_code == 503
            assert "has no WAITAOF" in result.json["description"]
            assert client.xlen(own.key("events")) == 0

    def test_off_by_default(self, settings: Settings, logs_dir: Path, tokens: Tokens):
        server = RedisServer(logs_dir / f"redis-nofsync-{uuid.uuid4().hex[:6]}").start()
        own = settings.model_copy(update={"redis_url": server.url})
        runtime = ApiRuntime.build(own)
        try:
            api = authorized(create_app(own, runtime=runtime), tokens.admin)
            assert post(api, factories.events(1)).status_code == 202  # in memory only
        finally:
            async_to_sync(runtime.close)
            server.stop()
