"""/healthz says the process answers; /readyz says whether its backends do, and which not."""

from __future__ import annotations

from typing import Any

import pytest
from falcon import testing
from falcon.util import async_to_sync

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
        async_to_sync(runtime.close)


class TestReadiness:
    def test_ready_when_both_answer(self, anonymous: testing.TestClient):
        answer = anonymous.simulate_get("/readyz")
        assert answer.status_code == 200
        assert answer.json == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}

    @pytest.mark.parametrize(("down", "up"), [("redis", "postgres"), ("postgres", "redis")])
    def test_not_ready_without_one_backend(self, app_with: Any, down: str, up: str):
        # Nothing listens on a free port: connections are refused at once.
        dead = {
            "redis": {"redis_url": f"redis://127.0.0.1:{free_port()}/0"},
            "postgres": {"database_url": f"postgresql://127.0.0.1:{free_port()}/auditlog"},
        }
        client = app_with(**dead[down])
        answer = client.simulate_get("/readyz")
        assert answer.status_code == 503
        assert answer.json["status"] == "not ready"
        assert answer.json["checks"][up] == "ok"
        assert answer.json["checks"][down] != "ok"
        assert client.simulate_get("/healthz").status_code == 200  # the process itself is up
