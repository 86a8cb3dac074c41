"""GET /v1/events/tail: the newest committed events from the Redis cache, the same answer
from the database whenever the cache cannot vouch for it, and follow=true as a stream."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from falcon import testing
from falcon.util import async_to_sync
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from auditlog.app import create_app
from auditlog.integrity.heads import HeadSigner
from auditlog.runtime import ApiRuntime
from auditlog.settings import Settings
from auditlog.storage.engine import create_role_engine
from auditlog.storage.event_writer import EventWriter
from tests import factories
from tests.helpers import RedisServer, WorkerProcess, clear_redis, wait_for
from tests.integration.conftest import (
    Call,
    admin_client,
    concurrently,
    post,
    post_call,
    wait_stored,
)


def counter(name: str, **labels: str) -> float:
    """A tail counter's value in this process (prometheus_client's default registry)."""
    return REGISTRY.get_sample_value(f"auditlog_tail_{name}_total", labels) or 0.0


def all_misses() -> float:
    return sum(
        counter("misses", read="tail", reason=reason)
        for reason in ("cold", "short", "range", "behind")
    )


def tail(source: testing.TestClient | ApiRuntime, **params: Any) -> list[dict[str, Any]]:
    """The tail through HTTP, or straight from the service (a read through the API is itself
    audited: an event of service `auditlog` joins the whole-log tail right after)."""
    if isinstance(source, ApiRuntime):
        answer = async_to_sync(source.tail.tail, {k: str(v) for k, v in params.items()})
        return [orjson.loads(e) for e in answer.events]
    result = source.simulate_get("/v1/events/tail", params=params)
    assert result.status_code == 200, result.text
    return result.json["events"]


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


def send(client: testing.TestClient, owner_db: Engine, events: list[dict[str, Any]]) -> None:
    assert post(client, events).status_code == 202
    wait_stored(owner_db, [e["id"] for e in events])


def cached_up_to(settings: Settings, seq: int) -> Any:
    """Wait until the writer's hook has put `seq` in the cache (it runs after COMMIT)."""
    client = redis.Redis.from_url(settings.redis_url)
    cover = settings.key("tail", "cover")
    try:
        return wait_for(
            lambda: any(e >= seq for _, e in client.zrange(cover, 0, -1, withscores=True)),
            timeout=10,
            what=f"seq {seq} in the tail cache",
        )
    finally:
        client.close()


def top_seq(owner_db: Engine, sent: list[dict[str, Any]]) -> int:
    """The highest seq among stored events."""
    with owner_db.connect() as conn:
        return int(
            conn.scalar(
                text("SELECT max(seq) FROM events WHERE id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": [e["id"] for e in sent]},
            )
        )


@contextlib.contextmanager
def app_with(settings: Settings, **overrides: Any) -> Iterator[tuple[testing.TestClient, Any]]:
    """An app on the session's pipeline with some settings changed."""
    own = settings.model_copy(update=overrides)
    runtime = ApiRuntime.build(own)
    try:
        yield admin_client(create_app(own, runtime=runtime)), runtime
    finally:
        async_to_sync(runtime.close)


# Nothing listens on port 1: connections are refused at once.
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def no_redis(settings: Settings) -> Iterator[testing.TestClient]:
    """The session's app, but its Redis refuses connections: only the database answers."""
    with app_with(settings, redis_url=DEAD_REDIS) as (client, _):
        yield client


def sse(body: bytes) -> list[dict[str, str]]:
    """Parse an event stream into its blocks (comments kept under ':')."""
    blocks = []
    for raw in body.split(b"\n\n"):
        if not raw:
            continue
        block: dict[str, str] = {}
        for line in raw.decode().split("\n"):
            name, _, value = line.partition(":")
            block[name or ":"] = value.removeprefix(" ")
        blocks.append(block)
    return blocks


def streamed(blocks: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [orjson.loads(b["data"]) for b in blocks if "data" in b]


class TestTail:
    """The newest events, newest first, each exactly as GET /v1/events/{id} returns it."""

    def test_newest_first_from_the_cache(
        self, api: testing.TestClient, owner_db: Engine, settings: Settings
    ):
        service = f"tail-{uuid.uuid4().hex[:8]}"
        sent = factories.events(12, service=service)
        send(api, owner_db, sent[:5])
        send(api, owner_db, sent[5:])
        cached_up_to(settings, top_seq(owner_db, sent))
        hits = counter("hits", read="tail")
        events = tail(api, service=service, limit=10)
        assert counter("hits", read="tail") == hits + 1
        assert len(events) == 10
        assert seqs(events) == sorted(seqs(events), reverse=True)
        assert {e["id"] for e in events} <= {e["id"] for e in sent}
        for event in events:
            assert event == api.simulate_get(f"/v1/events/{event['id']}").json

    def test_whole_log_tail_is_the_highest_seqs(
        self, api: testing.TestClient, owner_db: Engine, settings: Settings, runtime: ApiRuntime
    ):
        sent = factories.events(3, service=f"tail-{uuid.uuid4().hex[:8]}")
        send(api, owner_db, sent)
        top = top_seq(owner_db, sent)
        cached_up_to(settings, top)
        events = tail(runtime, limit=3)
        # The newest three committed: ours, unless audit records of earlier reads landed after.
        assert seqs(events)[0] >= top
        with owner_db.connect() as conn:
            newest = conn.scalars(
                text("SELECT seq FROM events WHERE seq <= :s ORDER BY seq DESC LIMIT 3"),
                {"s": seqs(events)[0]},
            ).all()
        assert seqs(events) == newest

    def test_database_gives_the_same_answer(
        self,
        runtime: ApiRuntime,
        api: testing.TestClient,
        no_redis: testing.TestClient,
        owner_db: Engine,
        settings: Settings,
    ):
        service = f"tail-{uuid.uuid4().hex[:8]}"
        sent = [
            factories.event(service=service, type=["a.one", "a.two", "b.one"][i % 3])
            for i in range(9)
        ]
        send(api, owner_db, sent)
        cached_up_to(settings, top_seq(owner_db, sent))
        fallbacks = counter("fallbacks", read="tail")
        for params in (
            {"service": service, "limit": 4},
            {"service": service, "type": "a.two", "limit": 3},
            {"service": service, "type": "a.*", "limit": 5},
        ):
            hits = counter("hits", read="tail")
            cached = api.simulate_get("/v1/events/tail", params=params)
            assert counter("hits", read="tail") == hits + 1, params
            direct = no_redis.simulate_get("/v1/events/tail", params=params)
            assert direct.status_code == cached.status_code == 200
            assert direct.json == cached.json, params
            assert direct.headers["etag"] == cached.headers["etag"]
        assert counter("fallbacks", read="tail") >= fallbacks + 3
        # The whole log, from the services (reads through the API add audit records to it),
        # once the audit records of the reads above are in.
        with app_with(settings, redis_url="redis://127.0.0.1:1/0") as (_, direct):
            wait_for(
                lambda: tail(runtime, limit=7) == tail(direct, limit=7),
                timeout=10,
                what="the same whole-log tail from the cache and the database",
            )

    def test_type_filter(self, api: testing.TestClient, owner_db: Engine, settings: Settings):
        service = f"tail-{uuid.uuid4().hex[:8]}"
        sent = [
            factories.event(service=service, type=t)
            for t in ("customer.billed", "customer.created", "invoice.sent", "customer.billed")
        ]
        send(api, owner_db, sent)
        cached_up_to(settings, top_seq(owner_db, sent))
        exact = tail(api, service=service, type="customer.billed")
        assert [e["id"] for e in exact] == [sent[3]["id"], sent[0]["id"]]
        prefix = tail(api, service=service, type="customer.*")
        assert {e["id"] for e in prefix} == {sent[0]["id"], sent[1]["id"], sent[3]["id"]}
        assert tail(api, service=service, type="customer") == []  # exact, not a prefix

    @pytest.mark.parametrize(
        ("query", "parameter"),
        [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("since=2026-01-01T00:00:00Z", "since"),
            ("follow=yes", "follow"),
            ("service=a&service=b", "service"),
        ],
    )
    def test_bad_parameter_is_400(self, client: testing.TestClient, query: str, parameter: str):
        result = client.simulate_get("/v1/events/tail", query_string=query)
        assert result.status_code == 400
        assert result.json["description"].startswith(f"{parameter}:")

    def test_is_not_taken_for_an_event_id(self, client: testing.TestClient):
        assert client.simulate_get("/v1/events/tail").status_code == 200
        assert client.simulate_get("/v1/events/export").status_code == 200


class TestETag:
    def test_304_until_the_answer_itself_changes(
        self, api: testing.TestClient, owner_db: Engine, settings: Settings
    ):
        service = f"tail-{uuid.uuid4().hex[:8]}"
        send(api, owner_db, factories.events(3, service=service))
        first = api.simulate_get("/v1/events/tail", params={"service": service})
        etag = first.headers["etag"]
        assert etag.startswith('W/"')
        again = api.simulate_get(
            "/v1/events/tail", params={"service": service}, headers={"If-None-Match": etag}
        )
        assert again.status_code == 304
        assert again.content == b""
        # Events elsewhere in the log do not change this answer.
        other = factories.events(4, service=f"other-{uuid.uuid4().hex[:8]}")
        send(api, owner_db, other)
        cached_up_to(settings, top_seq(owner_db, other))
        unchanged = api.simulate_get(
            "/v1/events/tail", params={"service": service}, headers={"If-None-Match": etag}
        )
        assert unchanged.status_code == 304
        # A new event of this service does.
        mine = [factories.event(service=service)]
        send(api, owner_db, mine)
        cached_up_to(settings, top_seq(owner_db, mine))
        changed = api.simulate_get(
            "/v1/events/tail", params={"service": service}, headers={"If-None-Match": etag}
        )
        assert changed.status_code == 200
        assert changed.json["events"][0]["id"] == mine[0]["id"]
        assert changed.headers["etag"] != etag


@dataclass
class Lane:
    """A pipeline of its own (own Redis prefix, stream, writer and tail cache)."""

    settings: Settings
    client: testing.TestClient
    runtime: ApiRuntime
    worker: WorkerProcess

    def send(self, owner_db: Engine, events: list[dict[str, Any]]) -> int:
        """Post and wait until stored and cached; the highest seq stored."""
        send(self.client, owner_db, events)
        top = top_seq(owner_db, events)
        cached_up_to(self.settings, top)
        return top


@contextlib.contextmanager
def lane(settings: Settings, logs_dir: Path, **overrides: Any) -> Iterator[Lane]:
    own = settings.model_copy(
        update={"redis_prefix": f"{settings.redis_prefix}-{uuid.uuid4().hex[:6]}", **overrides}
    )
    runtime = ApiRuntime.build(own)
    worker = WorkerProcess(own, logs_dir, name="tail")
    try:
        worker.start()
        yield Lane(own, admin_client(create_app(own, runtime=runtime)), runtime, worker)
    finally:
        worker.stop()
        async_to_sync(runtime.close)
        with contextlib.suppress(redis.RedisError):
            clear_redis(own)


@pytest.fixture(scope="module")
def small(settings: Settings, logs_dir: Path) -> Iterator[Lane]:
    """A lane whose tail cache holds 5 events."""
    with lane(settings, logs_dir, tail_size=5) as own:
        yield own


class TestCacheCannotVouch:
    """Whenever the cache cannot answer exactly, the database answers, the same."""

    def test_limit_is_at_most_the_cache_size(self, small: Lane):
        result = small.client.simulate_get("/v1/events/tail", params={"limit": 6})
        assert result.status_code == 400

    def test_type_rarer_than_the_cached_window(self, small: Lane, owner_db: Engine):
        service = f"tail-{uuid.uuid4().hex[:8]}"
        rare = factories.events(2, service=service, type="rare.kind")
        small.send(owner_db, rare)
        small.send(owner_db, factories.events(6, service=service, type="common.kind"))
        misses = counter("misses", read="tail", reason="short")
        events = tail(small.client, service=service, type="rare.kind", limit=2)
        assert [e["id"] for e in events] == [rare[1]["id"], rare[0]["id"]]
        assert counter("misses", read="tail", reason="short") == misses + 1
        hits = counter("hits", read="tail")
        assert len(tail(small.client, service=service, type="common.kind", limit=5)) == 5
        assert counter("hits", read="tail") == hits + 1

    def test_cold_cache(self, small: Lane, owner_db: Engine):
        service = f"tail-{uuid.uuid4().hex[:8]}"
        small.send(owner_db, factories.events(3, service=service))
        before = tail(small.runtime, service=service)
        clear_redis_tail(small.settings)  # what a Redis restart without persistence leaves
        misses, hits = all_misses(), counter("hits", read="tail")
        assert tail(small.runtime, service=service) == before
        # Cold, or (when a batch of the lane's other events, written after the clear, has
        # started a range that holds none of this service's) short of them: either way the
        # database answered, not the cache.
        assert all_misses() == misses + 1
        assert counter("hits", read="tail") == hits

    def test_events_the_cache_never_saw(self, small: Lane, owner_db: Engine):
        """A writer killed between COMMIT and its hook: the cache is behind. The next batch
        does not join its range, so it cannot vouch for anything older."""
        service = f"tail-{uuid.uuid4().hex[:8]}"
        small.send(owner_db, factories.events(2, service=service))
        unseen = factories.events(2, service=service)
        write_without_hook(small.settings, unseen)
        later = factories.events(1, service=service)
        small.send(owner_db, later)
        events = tail(small.client, service=service, limit=3)
        assert [e["id"] for e in events] == [later[0]["id"], unseen[1]["id"], unseen[0]["id"]]

    def test_a_lost_batch_in_a_quiet_log(self, small: Lane, owner_db: Engine):
        """The same, with no batch after it: the cache is noticed behind within a second."""
        small.send(owner_db, factories.events(2))
        unseen = factories.events(2)
        write_without_hook(small.settings, unseen)
        behind = counter("misses", read="tail", reason="behind")
        wait_for(
            lambda: (
                [e["id"] for e in tail(small.runtime, limit=2)]
                == [unseen[1]["id"], unseen[0]["id"]]
            ),
            timeout=5,
            what="the lost batch in the tail",
        )
        assert counter("misses", read="tail", reason="behind") > behind

    def test_trimmed_cache_answers_from_the_database(self, small: Lane, owner_db: Engine):
        service = f"tail-{uuid.uuid4().hex[:8]}"
        sent = factories.events(7, service=service)
        small.send(owner_db, sent[:4])
        small.send(owner_db, sent[4:])
        # Five are cached; asking for five is a hit, and they are the newest five.
        hits = counter("hits", read="tail")
        assert [e["id"] for e in tail(small.client, service=service, limit=5)] == [
            e["id"] for e in reversed(sent[2:])
        ]
        assert counter("hits", read="tail") == hits + 1


def write_without_hook(settings: Settings, events: list[dict[str, Any]]) -> None:
    """Commit events as the writer does, but tell the cache nothing: what a writer killed
    between its COMMIT and its hook leaves behind."""
    writer = create_role_engine(settings, "writer", pool_size=1)
    EventWriter(writer, HeadSigner.from_file(settings.signing_key_path)).write(
        [{**e, "received_at": e["occurred_at"], "publisher": None} for e in events]
    )
    writer.dispose()


def clear_redis_tail(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(f"{settings.key('tail')}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class TestRedisStopped:
    def test_tail_stays_correct(self, settings: Settings, logs_dir: Path, owner_db: Engine):
        """A Redis of its own (stream, leases, cache) is killed, then comes back empty."""
        server = RedisServer(logs_dir / f"redis-{uuid.uuid4().hex[:6]}").start()
        try:
            with lane(
                settings,
                logs_dir,
                redis_url=server.url,
                broker_url=settings.celery_broker_url,
            ) as own:
                service = f"tail-{uuid.uuid4().hex[:8]}"
                own.send(owner_db, factories.events(4, service=service))
                params = {"service": service, "limit": 4}
                hits = counter("hits", read="tail")
                before = own.client.simulate_get("/v1/events/tail", params=params)
                assert counter("hits", read="tail") == hits + 1
                own.worker.stop()
                server.stop()
                fallbacks = counter("fallbacks", read="tail")
                during = own.client.simulate_get("/v1/events/tail", params=params)
                assert during.status_code == 200
                assert during.json == before.json
                assert during.headers["etag"] == before.headers["etag"]
                assert counter("fallbacks", read="tail") == fallbacks + 1
                server.start()  # empty: the cache is cold
                time.sleep(1.1)  # past the pause after a failure
                misses = counter("misses", read="tail", reason="cold")
                after = own.client.simulate_get("/v1/events/tail", params=params)
                assert after.json == before.json
                assert counter("misses", read="tail", reason="cold") == misses + 1
        finally:
            server.stop()


@pytest.fixture(scope="module")
def following(
    settings: Settings, api: testing.TestClient
) -> Iterator[tuple[testing.TestClient, Any]]:
    """The session's pipeline, with follow streams that end after 2 s, one at a time."""
    with app_with(
        settings, follow_max_s=2.0, follow_max_per_process=1, follow_poll_s=0.05
    ) as following:
        yield following


class TestFollow:
    def test_streams_events_as_they_commit(
        self, following: tuple[testing.TestClient, Any], owner_db: Engine
    ):
        client, _ = following
        service = f"follow-{uuid.uuid4().hex[:8]}"
        sent = factories.events(3, service=service)
        noise = factories.events(2, service=f"other-{uuid.uuid4().hex[:8]}")

        result, first, second = concurrently(
            client,
            Call(
                "GET", "/v1/events/tail", kwargs={"params": {"follow": "true", "service": service}}
            ),
            post_call(sent[:2] + noise, delay_s=0.3),
            post_call(sent[2:], delay_s=0.6),
        )
        assert first.status_code == second.status_code == 202
        assert result.status_code == 200
        assert result.headers["content-type"] == "text/event-stream"
        blocks = sse(result.content)
        assert blocks[0]["retry"] == "1000"
        events = streamed(blocks)
        assert [e["id"] for e in events] == [e["id"] for e in sent]
        assert [int(b["id"]) for b in blocks if "data" in b] == seqs(events)
        assert seqs(events) == sorted(seqs(events))
        for event in events:
            assert event == client.simulate_get(f"/v1/events/{event['id']}").json
        assert "time limit" in blocks[-1][":"]
        assert int(blocks[-1]["id"]) >= events[-1]["seq"]

    @pytest.mark.parametrize("by", ["seq", "id"])
    def test_resumes_after_last_event_id(
        self, following: tuple[testing.TestClient, Any], owner_db: Engine, by: str
    ):
        client, _ = following
        service = f"follow-{uuid.uuid4().hex[:8]}"
        sent = factories.events(4, service=service)
        send(client, owner_db, sent)
        second = client.simulate_get(f"/v1/events/{sent[1]['id']}").json
        result = client.simulate_get(
            "/v1/events/tail",
            params={"follow": "true", "service": service},
            headers={"Last-Event-ID": str(second[by])},
        )
        assert [e["id"] for e in streamed(sse(result.content))] == [e["id"] for e in sent[2:]]

    def test_unknown_last_event_id_is_400(self, following: tuple[testing.TestClient, Any]):
        client, _ = following
        for value in (str(uuid.uuid4()), "yesterday"):
            result = client.simulate_get(
                "/v1/events/tail", params={"follow": "true"}, headers={"Last-Event-ID": value}
            )
            assert result.status_code == 400
            assert result.json["description"].startswith("Last-Event-ID:")

    def test_followers_per_process_are_bounded(self, following: tuple[testing.TestClient, Any]):
        client, runtime = following
        follow = {"params": {"follow": "true"}}
        first, refused = concurrently(
            client,
            Call("GET", "/v1/events/tail", kwargs=follow),
            Call("GET", "/v1/events/tail", delay_s=0.5, kwargs=follow),
        )
        assert first.status_code == 200
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        assert runtime.tail.followers == 0  # the slot is given back when the stream ends

    def test_follows_from_the_database_without_redis(
        self, settings: Settings, api: testing.TestClient, owner_db: Engine
    ):
        service = f"follow-{uuid.uuid4().hex[:8]}"
        sent = factories.events(3, service=service)
        send(api, owner_db, sent)
        first = api.simulate_get(f"/v1/events/{sent[0]['id']}").json
        with app_with(settings, redis_url=DEAD_REDIS, follow_max_s=0.5, follow_poll_s=0.05) as (
            client,
            _,
        ):
            fallbacks = counter("fallbacks", read="follow")
            result = client.simulate_get(
                "/v1/events/tail",
                params={"follow": "true", "service": service},
                headers={"Last-Event-ID": str(first["seq"])},
            )
            assert [e["id"] for e in streamed(sse(result.content))] == [e["id"] for e in sent[1:]]
            assert counter("fallbacks", read="follow") > fallbacks
