"""An event id is deduplicated within its service only: another service's key that sent the
id first cannot make an event vanish, and the reuse is counted, logged and never silent.

A pipeline of its own (the session's database, its own stream, a worker with its metrics
exporter), fed by two write keys of two services through the API.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from falcon import testing
from falcon.util import async_to_sync
from sqlalchemy import Engine, text

from auditlog.app import create_app
from auditlog.runtime import ApiRuntime
from auditlog.settings import Settings
from tests import factories
from tests.helpers import WorkerProcess, clear_redis, wait_for
from tests.integration.conftest import Tokens, authorized, create_key, post
from tests.topology import free_port, scrape, total

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Scene:
    reader: testing.TestClient
    billing: testing.TestClient
    worker: WorkerProcess
    settings: Settings
    shared: str  # the id billing's key sent first, then accounts' key
    billing_event: dict[str, Any]

    def metrics(self) -> dict[Any, float]:
        return scrape(f"http://127.0.0.1:{self.settings.worker_metrics_port}/metrics")


def rows(engine: Engine, event_id: str) -> list[tuple[str, int]]:
    """(service, seq) of every stored event with this id, in seq order."""
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT service, seq FROM events WHERE id = :id ORDER BY seq"), {"id": event_id}
        )
        return [(row.service, row.seq) for row in found]


@pytest.fixture(scope="module")
def scene(settings: Settings, logs_dir: Path, tokens: Tokens, owner_db: Engine) -> Iterator[Scene]:
    prefix = f"{settings.redis_prefix}-ids{uuid.uuid4().hex[:4]}"
    own = settings.model_copy(
        update={
            "redis_prefix": prefix,
            "worker_metrics_port": free_port(),
            "metrics_dir": logs_dir / f"metrics-worker-{prefix}",
            "follow_max_s": 0.3,
            "follow_poll_s": 0.05,
        }
    )
    assert own.metrics_dir is not None
    own.metrics_dir.mkdir()
    runtime = ApiRuntime.build(own)
    app = create_app(own, runtime=runtime)
    accounts_key = create_key(
        settings, f"accounts-writer-{uuid.uuid4().hex[:6]}", "write", "accounts"
    )
    billing, accounts = authorized(app, tokens.billing_writer), authorized(app, accounts_key)
    worker = WorkerProcess(own, logs_dir, name="ids").start()
    try:
        shared = str(uuid.uuid4())
        first = factories.event(id=shared, service="billing")
        assert post(billing, first).status_code == 202
        wait_for(lambda: len(rows(owner_db, shared)) == 1, what="billing's event stored")
        squatted = factories.event(id=shared, service="accounts", type="customer.account.created")
        assert post(accounts, squatted).status_code == 202
        wait_for(lambda: len(rows(owner_db, shared)) == 2, what="accounts' event stored too")
        yield Scene(authorized(app, tokens.reader), billing, worker, own, shared, first)
    finally:
        worker.stop()
        async_to_sync(runtime.close)
        clear_redis(own)


class TestStored:
    def test_both_services_events_are_kept(self, scene: Scene, owner_db: Engine):
        assert [service for service, _ in rows(owner_db, scene.shared)] == ["billing", "accounts"]

    def test_the_reuse_is_counted_and_logged_with_both_services(
        self, scene: Scene, owner_db: Engine
    ):
        assert total(scene.metrics(), "auditlog_events_id_reused_total") == 1
        (line,) = [
            record
            for record in scene.worker.log_lines()
            if record.get("event") == "event id reused across services"
        ]
        accounts_seq = rows(owner_db, scene.shared)[1][1]
        assert line["level"] == "warning"
        assert (line["id"], line["service"], line["seq"]) == (
            scene.shared,
            "accounts",
            accounts_seq,
        )
        assert line["earlier_services"] == ["billing"]

    def test_the_same_service_twice_is_stored_once(self, scene: Scene, owner_db: Engine):
        before = total(scene.metrics(), "auditlog_events_duplicate_total")
        assert post(scene.billing, scene.billing_event).status_code == 202
        wait_for(
            lambda: total(scene.metrics(), "auditlog_events_duplicate_total") == before + 1,
            what="the retry skipped as a duplicate",
        )
        assert [service for service, _ in rows(owner_db, scene.shared)] == ["billing", "accounts"]
        assert total(scene.metrics(), "auditlog_events_id_reused_total") == 1


class TestReads:
    """One event per id answers as ever; an id two services used needs ?service=."""

    def test_get_is_a_409_naming_both_services(self, scene: Scene):
        result = scene.reader.simulate_get(f"/v1/events/{scene.shared}")
        assert result.status_code == 409, result.text
        assert result.json["title"] == "Ambiguous id"
        assert result.json["services"] == ["billing", "accounts"]
        assert "?service=" in result.json["description"]

    @pytest.mark.parametrize("service", ["billing", "accounts"])
    def test_service_chooses(self, scene: Scene, service: str, owner_db: Engine):
        result = scene.reader.simulate_get(
            f"/v1/events/{scene.shared}", params={"service": service}
        )
        assert result.status_code == 200, result.text
        assert (result.json["id"], result.json["service"]) == (scene.shared, service)
        assert result.json["seq"] == dict(rows(owner_db, scene.shared))[service]

    def test_a_service_without_the_id_is_404(self, scene: Scene):
        result = scene.reader.simulate_get(f"/v1/events/{scene.shared}", params={"service": "web"})
        assert result.status_code == 404
        assert "of service 'web'" in result.json["description"]

    def test_other_parameters_are_refused(self, scene: Scene):
        result = scene.reader.simulate_get(f"/v1/events/{scene.shared}", params={"type": "x"})
        assert result.status_code == 400
        assert result.json["description"].startswith("type: unknown parameter")

    def test_proof_follows_the_same_rule(self, scene: Scene, owner_db: Engine):
        path = f"/v1/events/{scene.shared}/proof"
        assert scene.reader.simulate_get(path).status_code == 409
        result = scene.reader.simulate_get(path, params={"service": "accounts"})
        assert result.status_code == 200, result.text
        assert result.json["leaf_index"] == dict(rows(owner_db, scene.shared))["accounts"]

    def test_follow_from_an_ambiguous_id(self, scene: Scene, owner_db: Engine):
        header = {"Last-Event-ID": scene.shared}
        refused = scene.reader.simulate_get(
            "/v1/events/tail", params={"follow": "true"}, headers=header
        )
        assert refused.status_code == 409
        assert "SSE id" in refused.json["description"]
        result = scene.reader.simulate_get(
            "/v1/events/tail", params={"follow": "true", "service": "billing"}, headers=header
        )
        assert result.status_code == 200
        first_id = next(line for line in result.text.splitlines() if line.startswith("id: "))
        assert first_id == f"id: {dict(rows(owner_db, scene.shared))['billing']}"
