"""GET /metrics of the app: Prometheus text that the client's own parser reads, and counters
that move with what the API answers."""

from __future__ import annotations

import uuid
from typing import Any

from falcon import testing
from falcon.util import async_to_sync
from prometheus_client.parser import text_string_to_metric_families

from auditlog.app import create_app
from auditlog.runtime import ApiRuntime
from auditlog.settings import Settings
from tests import factories
from tests.helpers import clear_redis, event_stream
from tests.integration.conftest import admin_client, post


def samples(client: testing.TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain; version=0.0.4")
    parsed = {}
    for family in text_string_to_metric_families(result.text):
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return parsed


def value(parsed: dict[Any, float], name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


class TestMetricsEndpoint:
    """Counters move by exactly what was accepted or refused, and why."""

    def test_counters_move(self, client: testing.TestClient):
        before = samples(client)
        assert post(client, factories.events(3)).status_code == 202
        assert post(client, factories.event()).status_code == 202
        assert post(client, [factories.event(type="Not A Type")]).status_code == 422
        assert post(client, b"{").status_code == 400
        assert post(client, factories.event(), content_type="text/plain").status_code == 415
        assert post(client, factories.events(1001)).status_code == 413
        assert client.simulate_get("/no/such/route").status_code == 404
        after = samples(client)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta("auditlog_events_accepted_total") == 4
        refused = "auditlog_ingest_refused_total"
        assert delta(refused, reason="invalid_events") == 1
        assert delta(refused, reason="malformed_body") == 1
        assert delta(refused, reason="unsupported_media_type") == 1
        assert delta(refused, reason="body_too_large") == 1
        latency = "auditlog_http_request_duration_seconds_count"
        assert delta(latency, method="POST", route="/v1/events", status="202") == 2
        assert delta(latency, method="POST", route="/v1/events", status="422") == 1
        # Unknown paths share one label: a scanner cannot grow the series without bound.
        assert delta(latency, method="GET", route="unmatched", status="404") == 1

    def test_queue_depth_is_the_stream_length(self, settings: Settings):
        # A stream of its own that no worker drains: the depth stays put while it is read.
        own = settings.model_copy(
            update={"redis_prefix": f"{settings.redis_prefix}-{uuid.uuid4().hex[:6]}"}
        )
        runtime = ApiRuntime.build(own)
        try:
            client = admin_client(create_app(own, runtime=runtime))
            assert value(samples(client), "auditlog_queue_depth") == 0
            assert post(client, factories.events(3)).status_code == 202
            parsed = samples(client)
            queue = event_stream(own)
            assert value(parsed, "auditlog_queue_depth") == queue.depth() == 3
            assert value(parsed, "auditlog_dead_letters") == queue.dead_letter_count()
        finally:
            async_to_sync(runtime.close)
            clear_redis(own)
