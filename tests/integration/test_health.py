"""/healthz says the process answers; /readyz says whether its backends do, and which not."""

from __future__ import annotations

from typing import Any

import pytest
from falcon import testing

from auditlog.app import create_app
from auditlog.runtime import ApiRuntime
from auditlog.settings import Settings
from tests.topology import free_port


@pytest.fixture
def app_with(settings: Settings) -> Any:
    runtimes: list[ApiRuntime] = []

    def build(**overrides: Any) -> testing.TestClient:
        own = settings.model_copy(update=overrides)
        runtimes.append(ApiRuntime.build(own))
        return testing.TestClient(create_app(own, runtime=runtimes[-1]))

    yield build
    for runtime in runtimes:
        runtime.close()


class TestReadiness:
    def test_ready_when_both_answer(self, anonymous: testing.TestClient):
        answer = anonymous.simulate_get("/readyz")
        assert answer.status_code == 200
        assert answer.json == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}

    def test_not_ready_without_redis(self, app_with: Any):
        client = app_with(redis_url=f"redis://127.0.0.1:{free_port()}/0")
        answer = client.simulate_get("/readyz")
        assert answer.status_code == 503
        assert answer.json["checks"]["postgres"] == "ok"
        assert answer.json["checks"]["redis"] != "ok"
        assert client.simulate_get("/healthz").status_code == 200  # the process itself is up

    def test_not_ready_without_postgres(self, app_with: Any):
        client = app_with(database_url=f"postgresql://127.0.0.1:{free_port()}/auditlog")
        answer = client.simulate_get("/readyz")
        assert answer.status_code == 503
        assert answer.json["checks"]["redis"] == "ok"
        assert answer.json["checks"]["postgres"] != "ok"
