"""The production topology end to end: nginx over two gunicorn instances, a worker, Flower.

Everything runs from the shipped configuration (deploy/nginx/ rendered for free ports,
deploy/gunicorn.conf.py, deploy/flowerconfig.py), with the session's database and a Redis
prefix of its own.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from sqlalchemy import Engine

from auditlog.settings import Settings
from tests import factories
from tests.helpers import WorkerProcess, clear_redis, wait_for
from tests.integration.conftest import Tokens, stored_counts, wait_stored
from tests.topology import (
    ApiInstance,
    FlowerProcess,
    NginxProcess,
    free_port,
    json_lines,
    scrape,
    total,
)

pytestmark = pytest.mark.slow

BACKLOG_LIMIT = 400
MAX_BODY_BYTES = 64 * 1024
FLOWER_PASSWORD = "flower-test-password"


@dataclass
class Stack:
    settings: Settings
    nginx: NginxProcess
    apis: list[ApiInstance]
    worker: WorkerProcess
    flower: FlowerProcess
    http: requests.Session

    def post(self, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        return self.http.post(
            self.nginx.url("/v1/events"),
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=30,
        )

    def worker_metrics(self) -> dict[Any, float]:
        return scrape(f"http://127.0.0.1:{self.settings.worker_metrics_port}/metrics")

    def api_metrics(self) -> list[dict[Any, float]]:
        return [scrape(api.url("/metrics")) for api in self.apis]

    def depth(self) -> int:
        """The queue depth, as an API instance reports it (the worker may be stopped)."""
        return int(total(scrape(self.apis[1].url("/metrics")), "auditlog_queue_depth"))


@pytest.fixture(scope="module")
def stack(settings: Settings, logs_dir: Path, tokens: Tokens) -> Iterator[Stack]:
    prefix = f"{settings.redis_prefix}-e2e{uuid.uuid4().hex[:4]}"
    own = settings.model_copy(
        update={
            "redis_prefix": prefix,
            "backlog_limit": BACKLOG_LIMIT,
            "max_body_bytes": MAX_BODY_BYTES,
            "worker_metrics_port": free_port(),
            "metrics_dir": logs_dir / f"metrics-worker-{prefix}",
            "flower_password": FLOWER_PASSWORD,
        }
    )
    assert own.metrics_dir is not None
    own.metrics_dir.mkdir()  # prometheus-client writes there from its import on
    apis = [ApiInstance(own, logs_dir, f"api{n}") for n in (1, 2)]
    worker = WorkerProcess(own, logs_dir, name="e2e")
    flower = FlowerProcess(own, logs_dir)
    nginx = NginxProcess(own, [api.address for api in apis], flower.address, logs_dir)
    started: list[Any] = []
    try:
        for service in (*apis, worker, flower, nginx):
            service.start()
            started.append(service)
        with requests.Session() as http:
            http.headers["Authorization"] = f"Bearer {tokens.admin}"
            yield Stack(own, nginx, apis, worker, flower, http)
    finally:
        for service in reversed(started):
            service.stop()
        nginx.remove()
        clear_redis(own)


def post_concurrently(stack: Stack, requests_count: int, per_request: int) -> list[str]:
    def one(_: int) -> list[str]:
        with requests.Session() as http:
            http.headers["Authorization"] = stack.http.headers["Authorization"]
            answer = http.post(
                stack.nginx.url("/v1/events"),
                data=orjson.dumps(factories.events(per_request)),
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
        assert answer.status_code == 202, answer.text
        return list(answer.json()["ids"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [i for ids in pool.map(one, range(requests_count)) for i in ids]


class TestThroughNginx:
    """Events posted to nginx are stored; both instances serve; metrics add up."""

    def test_events_are_stored_and_both_instances_serve(self, stack: Stack, owner_db: Engine):
        before = stack.api_metrics()
        ids = post_concurrently(stack, requests_count=40, per_request=5)
        assert set(wait_stored(owner_db, ids).values()) == {1}
        after = stack.api_metrics()
        accepted = [
            total(a, "auditlog_events_accepted_total") - total(b, "auditlog_events_accepted_total")
            for a, b in zip(after, before, strict=True)
        ]
        # Each instance served some (round robin), and each instance's /metrics counts what
        # all its gunicorn workers did: together, exactly what was sent.
        assert all(n > 0 for n in accepted), accepted
        assert sum(accepted) == len(ids)
        upstreams = {line["upstream_addr"] for line in stack.nginx.access_lines()}
        assert {api.address for api in stack.apis} <= upstreams

    def test_request_id_travels_from_nginx_to_the_writer(self, stack: Stack, owner_db: Engine):
        """nginx makes the request's id (a client's own is kept apart, never taken for it);
        the access log, the answer and the writer's batch name the same id."""
        client_id = f"e2e-{uuid.uuid4().hex}"
        sent = factories.event()
        answer = stack.post(sent, headers={"X-Request-ID": client_id})
        assert answer.status_code == 202
        request_id = answer.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        wait_stored(owner_db, [sent["id"]])

        access = [line for line in stack.nginx.access_lines() if line["request_id"] == request_id]
        assert len(access) == 1
        assert access[0]["status"] == 202
        assert access[0]["client_request_id"] == client_id
        # An accepted request is nginx's line only (the app logs refusals, failures and slow
        # requests), and the writer's: its batch names the request.
        api_lines = [
            line
            for api in stack.apis
            for line in json_lines(api.log_path)
            if line.get("request_id") == request_id
        ]
        assert api_lines == []
        wait_for(
            lambda: any(
                request_id in line.get("request_ids", [])
                for line in stack.worker.log_lines()
                if line.get("event") == "batch written"
            ),
            timeout=10,
            what="the batch that wrote the event logs its request id",
        )

    def test_request_id_is_made_by_nginx_when_absent_or_unfit(self, stack: Stack):
        for headers in ({}, {"X-Request-ID": "not plain!"}):
            # Refused (no key): the API logs it, with the request id nginx made.
            answer = requests.get(stack.nginx.url("/v1/events"), headers=headers, timeout=10)
            assert answer.status_code == 401
            request_id = answer.headers["X-Request-ID"]
            assert len(request_id) == 32
            assert request_id != headers.get("X-Request-ID")
            wait_for(
                lambda rid=request_id: any(
                    line.get("request_id") == rid
                    for api in stack.apis
                    for line in json_lines(api.log_path)
                ),
                timeout=5,
                what="the API logs nginx's request id",
            )

    def test_body_over_the_limit_is_refused_by_nginx_in_the_apps_words(self, stack: Stack):
        at_limit = b"x" * MAX_BODY_BYTES
        over = at_limit + b"x"
        headers = {"Content-Type": "application/json"}
        refused = stack.http.post(stack.nginx.url("/v1/events"), data=over, headers=headers)
        assert refused.status_code == 413
        assert refused.json()["title"] == "Payload too large"
        assert refused.headers["X-Request-ID"]
        # At the limit nginx passes it on, and the app reads it (and finds it is not JSON).
        passed = stack.http.post(stack.nginx.url("/v1/events"), data=at_limit, headers=headers)
        assert passed.status_code == 400
        assert passed.json()["title"] == "Malformed body"


class TestInstanceDown:
    def test_requests_keep_succeeding_with_one_instance_killed(
        self, stack: Stack, owner_db: Engine
    ):
        down, up = stack.apis
        down.kill()
        try:
            ids = []
            for _ in range(20):
                answer = stack.post(factories.events(3))
                assert answer.status_code == 202, answer.text
                ids += answer.json()["ids"]
                assert stack.http.get(stack.nginx.url("/healthz"), timeout=10).ok
            wait_stored(owner_db, ids)
            served = [line["upstream_addr"] for line in stack.nginx.access_lines()[-40:]]
            # Every request ended on the live instance; the first ones after the kill tried
            # the dead one first (connection refused) and were passed on.
            assert all(addr.endswith(up.address) for addr in served), served
        finally:
            down.start()


class TestMetrics:
    """The worker's exporter adds up its pool; the counters move as events are written."""

    def test_writer_metrics_move(self, stack: Stack, owner_db: Engine):
        before = stack.worker_metrics()
        ids = post_concurrently(stack, requests_count=4, per_request=25)
        wait_stored(owner_db, ids)

        def moved() -> dict[Any, float] | None:
            after = stack.worker_metrics()
            done = total(after, "auditlog_events_committed_total") - total(
                before, "auditlog_events_committed_total"
            )
            return after if done >= len(ids) else None

        after = wait_for(moved, timeout=10, what="the worker's counters to move")

        def delta(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)

        assert delta("auditlog_events_committed_total") == len(ids)
        assert delta("auditlog_commit_lag_seconds_count") == len(ids)
        assert 0 < delta("auditlog_commit_lag_seconds_sum") < 30 * len(ids)
        assert delta("auditlog_writer_batch_events_sum") == len(ids)
        batches = delta("auditlog_writer_batch_events_count")
        assert 1 <= batches <= len(ids)
        assert delta("auditlog_writer_write_seconds_count", result="committed") == batches
        assert total(after, "auditlog_queue_depth") == 0

    def test_api_latency_is_recorded_per_route(self, stack: Stack):
        before = stack.api_metrics()
        for _ in range(6):
            assert stack.http.get(stack.nginx.url("/healthz"), timeout=10).ok
        after = stack.api_metrics()
        name = "auditlog_http_request_duration_seconds_count"
        labels = {"route": "/healthz", "method": "GET", "status": "200"}
        served = sum(total(a, name, **labels) for a in after) - sum(
            total(b, name, **labels) for b in before
        )
        assert served == 6


class TestFlower:
    def test_flower_asks_for_basic_auth_directly_and_behind_nginx(self, stack: Stack):
        for base in (f"http://{stack.flower.address}", stack.nginx.url("")):
            assert requests.get(f"{base}/flower/", timeout=10).status_code == 401
            wrong = requests.get(f"{base}/flower/", auth=("auditlog", "nope"), timeout=10)
            assert wrong.status_code == 401
            page = requests.get(f"{base}/flower/", auth=("auditlog", FLOWER_PASSWORD), timeout=10)
            assert page.status_code == 200
            assert "/flower/static/" in page.text  # links carry the prefix

    def test_flower_sees_the_worker(self, stack: Stack):
        auth = ("auditlog", FLOWER_PASSWORD)

        def listed() -> bool:
            answer = requests.get(
                stack.nginx.url("/flower/api/workers?refresh=1"), auth=auth, timeout=20
            )
            return answer.ok and any(name.startswith("e2e-") for name in answer.json())

        wait_for(listed, timeout=30, interval=1, what="Flower to list the worker")


class TestBackpressure:
    """With the writers stopped, POST is refused at the backlog limit; nothing accepted is lost."""

    def test_refused_at_the_limit_then_recovers(self, stack: Stack, owner_db: Engine):
        stack.worker.stop()
        try:
            wait_for(lambda: stack.depth() == 0, what="an empty queue")
            before = stack.api_metrics()
            accepted: list[str] = []
            refused = None
            for _ in range(BACKLOG_LIMIT // 50 + 3):
                answer = stack.post(factories.events(50))
                if answer.status_code != 202:
                    refused = answer
                    break
                accepted += answer.json()["ids"]
            assert refused is not None
            assert refused.status_code == 503
            assert refused.json()["title"] == "Overloaded"
            assert int(refused.headers["Retry-After"]) > 0
            assert len(accepted) == BACKLOG_LIMIT
            assert stack.depth() == BACKLOG_LIMIT
            # Still refused while nothing drains; each refusal is counted with its reason.
            assert stack.post(factories.events(1)).status_code == 503
            after = stack.api_metrics()
            name = "auditlog_ingest_refused_total"
            refusals = sum(total(a, name, reason="overloaded") for a in after) - sum(
                total(b, name, reason="overloaded") for b in before
            )
            assert refusals == 2
            assert stored_counts(owner_db, accepted) == {}
        finally:
            stack.worker.start()
        counts = wait_stored(owner_db, accepted, timeout=60)
        assert set(counts.values()) == {1}
        wait_for(lambda: stack.depth() == 0, timeout=30, what="the queue to drain")
        # It recovers by itself: accepted again.
        assert stack.post(factories.events(1)).status_code == 202
