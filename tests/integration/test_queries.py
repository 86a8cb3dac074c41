"""GET /v1/events, GET /v1/events/{id} and GET /v1/stats/buckets on stored events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from falcon import testing
from falcon.util import async_to_sync
from sqlalchemy import Engine

from auditlog.services.queries import can_count_hourly
from auditlog.storage.events import EventFilter
from tests import factories
from tests.integration.conftest import post, wait_stored

# A private day in the past so these tests see only their own events.
DAY = datetime(2025, 3, 10, tzinfo=UTC)


def at(minutes: float) -> str:
    return factories.timestamp(DAY + timedelta(minutes=minutes))


@pytest.fixture(scope="module")
def corpus(api: testing.TestClient, owner_db: Engine) -> dict[str, Any]:
    """Forty events spread over one day, with every filterable field varied."""
    scope = uuid.uuid4().hex[:8]
    service = f"svc-{scope}"
    sent = []
    for i in range(40):
        sent.append(
            factories.event(
                service=service,
                type=[
                    "customer.billed",
                    "customer.account.created",
                    "customerx.other",
                    "invoice.sent",
                ][i % 4],
                occurred_at=at(i * 30),  # every 30 minutes: hours 0..19
                actor={"type": "user" if i % 2 else "service", "id": f"a-{i % 5}"},
                subject={"type": "customer", "id": f"c-{i % 3}"},
                action=["bill", "create"][i % 2],
                outcome=["success", "failure", "unknown"][i % 3],
                context={"trace_id": f"t-{i % 4}", "host": "h"},
            )
        )
    # Two events at the same instant: the tie is broken by seq.
    sent.append(factories.event(service=service, occurred_at=at(5)))
    sent.append(factories.event(service=service, occurred_at=at(5)))
    assert post(api, sent).status_code == 202
    wait_stored(owner_db, [e["id"] for e in sent])
    return {"service": service, "sent": sent}


def listing(api: testing.TestClient, **params: Any) -> dict[str, Any]:
    result = api.simulate_get("/v1/events", params=params)
    assert result.status_code == 200, result.json
    return result.json


def ids(page: dict[str, Any]) -> list[str]:
    return [e["id"] for e in page["events"]]


class TestGetOne:
    def test_get_by_id(self, api: testing.TestClient, corpus: dict[str, Any]):
        sent = corpus["sent"][3]
        stored = api.simulate_get(f"/v1/events/{sent['id']}").json
        assert stored["id"] == sent["id"]
        assert stored["data"] == sent["data"]

    def test_unknown_id_is_404(self, api: testing.TestClient):
        result = api.simulate_get(f"/v1/events/{uuid.uuid4()}")
        assert result.status_code == 404
        assert result.json["description"]

    def test_malformed_id_is_404(self, api: testing.TestClient):
        assert api.simulate_get("/v1/events/not-a-uuid").status_code == 404


class TestFilters:
    """Each filter narrows the list to exactly the matching events."""

    @pytest.mark.parametrize(
        ("param", "value", "predicate"),
        [
            ("type", "invoice.sent", lambda e: e["type"] == "invoice.sent"),
            ("type", "customer.*", lambda e: e["type"].startswith("customer.")),
            ("type", "customer*", lambda e: e["type"].startswith("customer")),
            ("actor_type", "user", lambda e: e["actor"]["type"] == "user"),
            ("actor_id", "a-3", lambda e: e["actor"]["id"] == "a-3"),
            ("subject_type", "customer", lambda e: e["subject"]["type"] == "customer"),
            ("subject_id", "c-1", lambda e: e["subject"]["id"] == "c-1"),
            ("action", "create", lambda e: e["action"] == "create"),
            ("outcome", "failure", lambda e: e["outcome"] == "failure"),
            ("trace_id", "t-2", lambda e: e["context"]["trace_id"] == "t-2"),
        ],
    )
    def test_filter(
        self,
        api: testing.TestClient,
        corpus: dict[str, Any],
        param: str,
        value: str,
        predicate: Any,
    ):
        page = listing(api, service=corpus["service"], limit=1000, **{param: value})
        expected = {e["id"] for e in corpus["sent"] if predicate(e)}
        assert expected
        assert set(ids(page)) == expected

    def test_since_until_is_half_open(self, api: testing.TestClient, corpus: dict[str, Any]):
        page = listing(api, service=corpus["service"], since=at(60), until=at(120), limit=100)
        times = sorted(e["occurred_at"] for e in page["events"])
        assert times == [at(60), at(90)]  # 120 is excluded, 60 included

    def test_filters_combine(self, api: testing.TestClient, corpus: dict[str, Any]):
        page = listing(
            api, service=corpus["service"], type="customer.*", outcome="success", limit=1000
        )
        expected = {
            e["id"]
            for e in corpus["sent"]
            if e["type"].startswith("customer.") and e["outcome"] == "success"
        }
        assert set(ids(page)) == expected

    @pytest.mark.parametrize(
        "value",
        ["' OR 1=1 --", "%", "_", "customer.%", "\\", "a'; DROP TABLE events; --", "*' OR ''='"],
    )
    def test_sql_metacharacters_match_nothing(
        self, api: testing.TestClient, corpus: dict[str, Any], value: str
    ):
        for param in (
            "service",
            "type",
            "actor_id",
            "subject_id",
            "action",
            "trace_id",
            "actor_type",
            "subject_type",
            "publisher",
        ):
            page = listing(api, **{param: value})
            assert page == {"events": [], "next_cursor": None}, param


class TestOrderAndCursor:
    def test_default_order_is_newest_first(self, api: testing.TestClient, corpus: dict[str, Any]):
        page = listing(api, service=corpus["service"], limit=1000)
        keys = [(e["occurred_at"], e["seq"]) for e in page["events"]]
        assert keys == sorted(keys, reverse=True)
        assert len(keys) == len(corpus["sent"])

    def test_ascending_order(self, api: testing.TestClient, corpus: dict[str, Any]):
        page = listing(api, service=corpus["service"], order="asc", limit=1000)
        keys = [(e["occurred_at"], e["seq"]) for e in page["events"]]
        assert keys == sorted(keys)

    @pytest.mark.parametrize("order", ["asc", "desc"])
    def test_cursor_walk_returns_each_event_once(
        self, api: testing.TestClient, corpus: dict[str, Any], order: str
    ):
        seen: list[str] = []
        params: dict[str, Any] = {"service": corpus["service"], "limit": 3, "order": order}
        pages = 0
        while True:
            page = listing(api, **params)
            seen += ids(page)
            pages += 1
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert len(seen) == len(set(seen)) == len(corpus["sent"])
        assert pages == 14  # 42 events, 3 a page: the last full page has no next cursor

    def test_walk_is_a_snapshot_while_events_arrive(
        self, api: testing.TestClient, owner_db: Engine, corpus: dict[str, Any]
    ):
        params: dict[str, Any] = {"service": corpus["service"], "limit": 10}
        first = listing(api, **params)
        # New events land both after and inside the range still to walk.
        late = [
            factories.event(service=corpus["service"], occurred_at=at(m)) for m in (1, 2, 700, 2000)
        ]
        post(api, late)
        wait_stored(owner_db, [e["id"] for e in late])
        seen = ids(first)
        params["cursor"] = first["next_cursor"]
        while params.get("cursor"):
            page = listing(api, **params)
            seen += ids(page)
            params["cursor"] = page["next_cursor"]
        assert sorted(seen) == sorted(e["id"] for e in corpus["sent"])
        corpus["sent"].extend(late)  # later tests see them too

    def test_cursor_for_other_filters_is_refused(
        self, api: testing.TestClient, corpus: dict[str, Any]
    ):
        page = listing(api, service=corpus["service"], limit=2)
        result = api.simulate_get(
            "/v1/events",
            params={
                "service": corpus["service"],
                "type": "invoice.sent",
                "cursor": page["next_cursor"],
            },
        )
        assert result.status_code == 400
        assert "cursor" in result.json["description"]

    def test_cursor_for_other_order_is_refused(
        self, api: testing.TestClient, corpus: dict[str, Any]
    ):
        page = listing(api, service=corpus["service"], limit=2)
        result = api.simulate_get(
            "/v1/events",
            params={"service": corpus["service"], "order": "asc", "cursor": page["next_cursor"]},
        )
        assert result.status_code == 400


class TestBadParameters:
    @pytest.mark.parametrize(
        ("query", "parameter"),
        [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=ten", "limit"),
            ("limit=%C2%B2", "limit"),
            ("order=up", "order"),
            ("outcome=maybe", "outcome"),
            ("since=yesterday", "since"),
            ("until=2026-01-01", "until"),
            ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
            ("since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
            ("cursor=garbage", "cursor"),
            ("cursor=eyJ2IjoxfQ", "cursor"),
            ("colour=red", "colour"),
            ("service=a&service=b", "service"),
            ("service=a%00b", "service"),
            ("service=", "service"),
        ],
    )
    def test_bad_parameter_is_400_naming_it(
        self, api: testing.TestClient, query: str, parameter: str
    ):
        result = api.simulate_get("/v1/events", query_string=query)
        assert result.status_code == 400, result.json
        assert result.json["description"].startswith(f"{parameter}:")


class TestBuckets:
    def buckets(self, api: testing.TestClient, **params: Any) -> dict[str, Any]:
        result = api.simulate_get("/v1/stats/buckets", params=params)
        assert result.status_code == 200, result.json
        return result.json

    def test_hourly_counts_with_empty_buckets(
        self, api: testing.TestClient, corpus: dict[str, Any]
    ):
        body = self.buckets(
            api, service=corpus["service"], width="1h", since=at(0), until=at(24 * 60)
        )
        assert body["width"] == "1h"
        counts = [b["count"] for b in body["buckets"]]
        assert len(counts) == 24
        starts = [b["start"] for b in body["buckets"]]
        assert starts[0] == at(0)
        assert starts[-1] == at(23 * 60)
        expected = [0] * 24
        for e in corpus["sent"]:
            when = datetime.fromisoformat(e["occurred_at"])
            if DAY <= when < DAY + timedelta(days=1):
                expected[int((when - DAY).total_seconds() // 3600)] += 1
        assert counts == expected
        assert counts[20:] == [0, 0, 0, 0]

    def test_group_by_type(self, api: testing.TestClient, corpus: dict[str, Any]):
        body = self.buckets(
            api,
            service=corpus["service"],
            width="6h",
            group_by="type",
            since=at(0),
            until=at(12 * 60),
            type="customer.*",
        )
        keys = {b["key"] for b in body["buckets"]}
        assert keys == {"customer.account.created", "customer.billed"}
        assert len(body["buckets"]) == 2 * 2  # two buckets, two keys, zero-filled
        total = sum(b["count"] for b in body["buckets"])
        assert total == sum(
            1
            for e in corpus["sent"]
            if e["type"].startswith("customer.") and at(0) <= e["occurred_at"] < at(12 * 60)
        )

    def test_bucket_is_aligned_when_since_is_not(
        self, api: testing.TestClient, corpus: dict[str, Any]
    ):
        body = self.buckets(
            api, service=corpus["service"], width="1d", since=at(90), until=at(24 * 60)
        )
        assert [b["start"] for b in body["buckets"]] == [at(0)]
        assert body["buckets"][0]["count"] == sum(
            1 for e in corpus["sent"] if at(90) <= e["occurred_at"] < at(24 * 60)
        )

    @pytest.mark.parametrize(
        ("query", "parameter"),
        [
            ("until=2026-01-02T00:00:00Z", "since"),
            ("since=2026-01-01T00:00:00Z", "until"),
            ("since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z&width=1x", "width"),
            ("since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z&width=0m", "width"),
            ("since=2020-01-01T00:00:00Z&until=2026-01-02T00:00:00Z&width=1m", "width"),
            ("since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z&group_by=data", "group_by"),
            ("since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z&limit=5", "limit"),
        ],
    )
    def test_bad_parameter_is_400(self, api: testing.TestClient, query: str, parameter: str):
        result = api.simulate_get("/v1/stats/buckets", query_string=query)
        assert result.status_code == 400
        assert result.json["description"].startswith(f"{parameter}:")


class TestHourlyCounts:
    """The writer's hourly counts give exactly the answer a scan of the log gives."""

    @pytest.mark.parametrize(
        ("width", "group_by", "filters"),
        [
            (timedelta(hours=1), None, {}),
            (timedelta(hours=6), "type", {}),
            (timedelta(days=1), "outcome", {"type_prefix": "customer."}),
            (timedelta(hours=2), "action", {"outcome": "failure"}),
            (timedelta(hours=3), "service", {"action": "bill"}),
        ],
    )
    def test_same_counts_as_the_log(
        self,
        runtime: Any,
        corpus: dict[str, Any],
        width: timedelta,
        group_by: str | None,
        filters: dict[str, Any],
    ):
        flt = EventFilter(
            service=corpus["service"], since=DAY, until=DAY + timedelta(days=2), **filters
        )
        assert can_count_hourly(flt, width, group_by)
        hourly = async_to_sync(runtime.store.hourly_bucket_counts, flt, width, group_by)
        scanned = async_to_sync(runtime.store.bucket_counts, flt, width, group_by)
        assert hourly == scanned
        assert sum(n for _, _, n in hourly) > 0

    def test_what_hours_cannot_answer_goes_to_the_log(self):
        hour = timedelta(hours=1)
        day = EventFilter(since=DAY, until=DAY + timedelta(days=1))
        assert can_count_hourly(day, hour, "type")
        assert not can_count_hourly(day, timedelta(minutes=30), None)
        assert not can_count_hourly(day, hour, "actor_id")
        assert not can_count_hourly(
            EventFilter(since=DAY + timedelta(minutes=5), until=DAY + timedelta(days=1)), hour, None
        )
        assert not can_count_hourly(
            EventFilter(since=DAY, until=DAY + hour, actor_id="a"), hour, None
        )
