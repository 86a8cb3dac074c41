"""The stream's append on a real Redis: concurrent requests share round trips (group commit)
and each is still all or nothing, throttled and refused on its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from falcon.util import async_to_sync

from auditlog.errors import Overloaded, Unavailable
from auditlog.settings import Settings
from auditlog.storage.ratelimit import Bucket, Throttled
from auditlog.storage.stream_append import StreamAppender

REQUESTS = 12


class SlowFirstRedis(aredis.Redis):
    """A real client that counts script calls and holds the first one back a moment, so
    that the requests arriving meanwhile queue up behind it."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.script_calls = 0

    async def evalsha(self, *args: Any, **kwargs: Any) -> Any:
        self.script_calls += 1
        if self.script_calls == 1:
            await asyncio.sleep(0.3)
        return await super().evalsha(*args, **kwargs)


@pytest.fixture
def client(settings: Settings) -> Iterator[SlowFirstRedis]:
    client = SlowFirstRedis.from_url(settings.redis_url)
    yield client
    async_to_sync(client.aclose)


@pytest.fixture
def plain(settings: Settings) -> Iterator[redis.Redis]:
    """A plain client to look at what was stored."""
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


def stream_for(client: aredis.Redis, *, backlog_limit: int = 1_000_000) -> StreamAppender:
    prefix = f"test-append-{uuid.uuid4().hex[:8]}"
    return StreamAppender(
        client,
        f"{prefix}:events",
        backlog_limit=backlog_limit,
        bucket_prefix=f"{prefix}:ratelimit",
    )


def concurrently(stream: StreamAppender, requests: list[dict[str, Any]]) -> list[Any]:
    """Send the requests, the first alone and the rest while its round trip is under way;
    each one's result or exception, in request order."""

    async def send(i: int) -> Any:
        if i:
            await asyncio.sleep(0.1)  # the first is now in its (slowed) round trip
        try:
            return await stream.append(**requests[i])
        except Exception as exc:  # the refusals under test
            return exc

    async def scenario() -> list[Any]:
        return list(await asyncio.gather(*(send(i) for i in range(len(requests)))))

    return async_to_sync(scenario)


def entries(client: redis.Redis, stream: StreamAppender) -> dict[str, bytes]:
    return {eid.decode(): fields[b"e"] for eid, fields in client.xrange(stream.key)}


class TestGroupedAppend:
    def test_requests_arriving_meanwhile_share_one_round_trip(
        self, client: SlowFirstRedis, plain: redis.Redis
    ):
        """Twelve concurrent requests take two script calls; each gets its own ids, in order."""
        stream = stream_for(client)
        requests = [
            {"payloads": [f"r{r}-e{e}".encode() for e in range(r + 1)], "request_id": f"req-{r}"}
            for r in range(REQUESTS)
        ]
        try:
            results = concurrently(stream, requests)
            assert client.script_calls == 2
            stored = entries(plain, stream)
            assert len(stored) == sum(r + 1 for r in range(REQUESTS))
            for r, ids in enumerate(results):
                assert [stored[i] for i in ids] == requests[r]["payloads"]
                assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
            # Each request's entries carry its own request id.
            for _, fields in plain.xrange(stream.key):
                payload = fields[b"e"].decode()
                assert fields[b"r"].decode() == "req-" + payload[1 : payload.index("-")]
        finally:
            plain.delete(stream.key)

    def test_each_request_is_all_or_nothing_against_the_backlog(
        self, client: SlowFirstRedis, plain: redis.Redis
    ):
        """Requests that would pass the backlog limit are refused whole; the others, in the
        same round trip, are stored whole."""
        stream = stream_for(client, backlog_limit=10)
        sizes = [1, 4, 4, 3, 2, 1]  # 1 | 4 + 4 fit (9); 3 does not; 1 fits (10); 2 does not
        requests = [{"payloads": [f"{n}-{i}".encode() for i in range(n)]} for n in sizes]
        try:
            results = concurrently(stream, requests)
            refused = [i for i, r in enumerate(results) if isinstance(r, Overloaded)]
            stored = entries(plain, stream)
            assert sum(len(r) for r in results if isinstance(r, list)) == len(stored) <= 10
            assert refused, "some request must have found the backlog full"
            for i, result in enumerate(results):
                if isinstance(result, list):
                    assert [stored[e] for e in result] == requests[i]["payloads"]
            assert all(isinstance(r, list | Overloaded) for r in results)
        finally:
            plain.delete(stream.key)

    def test_an_empty_bucket_throttles_its_own_requests_only(
        self, client: SlowFirstRedis, plain: redis.Redis
    ):
        """One key's bucket holds two tokens: two of its requests pass, the rest are throttled,
        and another key's requests in the same round trips all pass."""
        stream = stream_for(client)
        tight = Bucket("tight", rate_per_s=0.01, burst=2)
        loose = Bucket("loose", rate_per_s=1000, burst=1000)
        requests = [
            {"payloads": [b"x"], "bucket": tight if i % 2 else loose} for i in range(REQUESTS)
        ]
        try:
            results = concurrently(stream, requests)
            tight_results = [r for i, r in enumerate(results) if i % 2]
            loose_results = [r for i, r in enumerate(results) if not i % 2]
            assert sum(isinstance(r, list) for r in tight_results) == 2
            throttled = [r for r in tight_results if not isinstance(r, list)]
            assert all(isinstance(r, Throttled) and r.wait_s > 0 for r in throttled)
            assert all(isinstance(r, list) and len(r) == 1 for r in loose_results)
            assert len(entries(plain, stream)) == 2 + len(loose_results)
        finally:
            plain.delete(stream.key)

    def test_redis_not_answering_fails_every_request_of_the_group(self, settings: Settings):
        """A round trip that fails is Unavailable for each caller, none left waiting."""
        dead = SlowFirstRedis(host="127.0.0.1", port=9, socket_connect_timeout=0.5)
        stream = stream_for(dead)
        results = concurrently(stream, [{"payloads": [b"x"]} for _ in range(4)])
        assert all(isinstance(r, Unavailable) for r in results), results
