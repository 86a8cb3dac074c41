"""The writer's on_commit hook and the refusal labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from auditlog.metrics import record_batch, refusal_reason
from auditlog.storage.event_writer import IdReuse, WriteResult


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class TestRecordBatch:
    """Batch size counts duplicates; lag is per stored event, from received_at to commit."""

    def test_lag_and_sizes(self):
        now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
        stored = [
            {"id": "a", "received_at": "2026-01-01T12:00:09.500000Z"},
            {"id": "b", "received_at": "2026-01-01T12:00:07.000000Z"},
        ]
        before = {
            name: sample(name)
            for name in (
                "auditlog_commit_lag_seconds_count",
                "auditlog_commit_lag_seconds_sum",
                "auditlog_writer_batch_events_sum",
                "auditlog_events_committed_total",
                "auditlog_events_duplicate_total",
                "auditlog_events_id_reused_total",
                'auditlog_commit_lag_seconds_bucket{le="0.5"}',
            )
        }
        reused = [IdReuse("b", "accounts", 8, ("billing",))]
        record_batch(WriteResult(stored=stored, duplicates=1, reused=reused), now=lambda: now)

        def delta(name: str) -> float:
            return sample(name) - before[name]

        assert delta("auditlog_commit_lag_seconds_count") == 2
        assert abs(delta("auditlog_commit_lag_seconds_sum") - 3.5) < 1e-9
        assert delta("auditlog_writer_batch_events_sum") == 3
        assert delta("auditlog_events_committed_total") == 2
        assert delta("auditlog_events_duplicate_total") == 1
        assert delta("auditlog_events_id_reused_total") == 1

    def test_clock_skew_never_gives_a_negative_lag(self):
        now = datetime(2026, 1, 1, tzinfo=UTC)
        ahead = (now + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        before = sample("auditlog_commit_lag_seconds_sum")
        record_batch(WriteResult(stored=[{"received_at": ahead}]), now=lambda: now)
        assert sample("auditlog_commit_lag_seconds_sum") == before


class TestRefusalReason:
    def test_domain_errors_are_snake_cased(self):
        assert refusal_reason("InvalidEvents", 422) == "invalid_events"
        assert refusal_reason("Overloaded", 503) == "overloaded"

    def test_other_refusals_by_status(self):
        assert refusal_reason(None, 405) == "http_405"
