"""GET /v1/events/export: every matching event, oldest first, as NDJSON or CSV."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from falcon import testing
from falcon.util import async_to_sync
from sqlalchemy import Engine

from auditlog.app import create_app
from auditlog.errors import Overloaded
from auditlog.runtime import ApiRuntime
from auditlog.services.export import csv_columns
from auditlog.settings import Settings
from auditlog.storage.events import EventFilter
from tests import factories
from tests.integration.conftest import admin_client, post, wait_stored

DAY = datetime(2025, 4, 7, tzinfo=UTC)


def at(minutes: float) -> str:
    return factories.timestamp(DAY + timedelta(minutes=minutes))


@pytest.fixture(scope="module")
def corpus(api: testing.TestClient, owner_db: Engine) -> dict[str, Any]:
    """Twenty-four events out of time order, with values CSV has to quote."""
    service = f"exp-{uuid.uuid4().hex[:8]}"
    sent = [
        factories.event(
            service=service,
            type=["customer.billed", "customer.created", "invoice.sent"][i % 3],
            occurred_at=at((i * 37) % 24 * 10),  # shuffled over four hours
            actor={"type": "user", "id": f"u-{i % 4}", "email": f'"quoted", u{i}@example.com'},
            outcome=["success", "failure"][i % 2],
            data={"line": f"first\nsecond, with a comma {i}", "nested": {"n": i, "ok": True}},
        )
        for i in range(24)
    ]
    sent.append(factories.event(service=service, occurred_at=at(50), actor=None, context=None))
    assert post(api, sent).status_code == 202
    wait_stored(owner_db, [e["id"] for e in sent])
    return {"service": service, "sent": sent}


def export(client: testing.TestClient, **params: Any) -> testing.Result:
    result = client.simulate_get("/v1/events/export", params=params)
    assert result.status_code == 200, result.text
    return result


def ndjson(result: testing.Result) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in result.content.splitlines()]


def listed_ids(client: testing.TestClient, **params: Any) -> list[str]:
    result = client.simulate_get("/v1/events", params={**params, "limit": 1000})
    assert result.json["next_cursor"] is None
    return [e["id"] for e in result.json["events"]]


class TestNdjson:
    def test_every_match_oldest_first_each_as_stored(
        self, api: testing.TestClient, corpus: dict[str, Any]
    ):
        result = export(api, service=corpus["service"])
        assert result.headers["content-type"] == "application/x-ndjson"
        events = ndjson(result)
        assert len(events) == len(corpus["sent"])
        keys = [(e["occurred_at"], e["seq"]) for e in events]
        assert keys == sorted(keys)
        for event in events:
            assert event == api.simulate_get(f"/v1/events/{event['id']}").json

    @pytest.mark.parametrize(
        "params",
        [
            {"type": "customer.*"},
            {"type": "invoice.sent", "outcome": "failure"},
            {"actor_id": "u-1"},
            {"since": at(60), "until": at(150)},
        ],
    )
    def test_filters_are_those_of_the_list(
        self, api: testing.TestClient, corpus: dict[str, Any], params: dict[str, str]
    ):
        params = {"service": corpus["service"], **params}
        exported = [e["id"] for e in ndjson(export(api, **params))]
        assert exported
        assert exported == list(reversed(listed_ids(api, **params)))

    def test_download_headers(self, api: testing.TestClient, corpus: dict[str, Any]):
        result = export(api, service=corpus["service"], format="ndjson")
        disposition = result.headers["content-disposition"]
        assert re.fullmatch(
            r'attachment; filename="auditlog-events-\d{8}T\d{6}Z\.ndjson"', disposition
        )
        assert "content-length" not in result.headers  # streamed, chunked

    def test_nothing_matches(self, api: testing.TestClient):
        assert export(api, service=f"none-{uuid.uuid4().hex}").content == b""


class TestCsv:
    def test_flattened_envelope_with_data_as_json(
        self, api: testing.TestClient, corpus: dict[str, Any]
    ):
        result = export(api, service=corpus["service"], format="csv")
        assert result.headers["content-type"] == "text/csv; charset=utf-8"
        assert result.headers["content-disposition"].endswith('.csv"')
        rows = list(csv.DictReader(io.StringIO(result.content.decode(), newline="")))
        stored = ndjson(export(api, service=corpus["service"]))
        assert len(rows) == len(stored)
        for row, event in zip(rows, stored, strict=True):
            assert row["id"] == event["id"]
            assert int(row["seq"]) == event["seq"]
            assert row["occurred_at"] == event["occurred_at"]
            assert orjson.loads(row["data"]) == event["data"]
            actor = event["actor"] or {}
            assert row["actor_id"] == actor.get("id", "")
            assert row["actor_type"] == actor.get("type", "")
            assert (orjson.loads(row["actor"]) if row["actor"] else None) == event["actor"]
            assert row["publisher"] == event["publisher"] == "test-admin"
            assert row["leaf_hash"] == event["leaf_hash"]

    def test_header_names_the_columns(self, api: testing.TestClient, corpus: dict[str, Any]):
        result = export(api, service=corpus["service"], format="csv", type="invoice.sent")
        header = next(csv.reader(io.StringIO(result.content.decode())))
        event = ndjson(export(api, service=corpus["service"], type="invoice.sent"))[0]
        assert header == csv_columns(event.keys())
        assert header[:4] == ["id", "seq", "type", "service"]
        assert "subject_id" in header
        assert header[-2:] == ["data", "leaf_hash"]

    def test_nothing_matches_is_a_header(self, api: testing.TestClient):
        result = export(api, service=f"none-{uuid.uuid4().hex}", format="csv")
        assert result.content.decode().count("\r\n") == 1


class TestRefusals:
    @pytest.mark.parametrize(
        ("query", "parameter"),
        [
            ("format=xml", "format"),
            ("limit=5", "limit"),
            ("cursor=abc", "cursor"),
            ("outcome=maybe", "outcome"),
            ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
        ],
    )
    def test_bad_parameter_is_400(self, client: testing.TestClient, query: str, parameter: str):
        result = client.simulate_get("/v1/events/export", query_string=query)
        assert result.status_code == 400
        assert result.json["description"].startswith(f"{parameter}:")

    def test_exports_are_bounded_per_key_and_per_process(
        self, runtime: ApiRuntime, settings: Settings, corpus: dict[str, Any]
    ):
        per_key, per_process = settings.export_max_per_key, settings.export_max_per_process
        query = {"service": corpus["service"]}

        async def scenario() -> None:
            async def allowed() -> bool:
                return True

            async def start(key: str) -> Any:
                return await runtime.exports.export(query, key=key, still_allowed=allowed)

            held = [await start("a") for _ in range(per_key)]
            with pytest.raises(Overloaded, match="per key"):  # one key cannot take them all
                await start("a")
            keys = iter(f"k{n}" for n in range(per_process))
            while runtime.exports.running < per_process:
                held.append(await start(next(keys)))
            with pytest.raises(Overloaded, match="this process already serves"):
                await start("another")
            assert await anext(held[0].body)  # streaming holds the slot...
            for export in held:
                await export.body.close()  # ...and closing gives it back, cursor and all
            assert runtime.exports.running == 0
            again = await start("a")
            assert b"".join([c async for c in again.body]).count(b"\n") == len(corpus["sent"])
            await again.body.close()
            assert runtime.exports.running == 0

        async_to_sync(scenario)

    def test_closing_early_gives_the_cursor_back(self, runtime: ApiRuntime, corpus: dict[str, Any]):
        """A client gone mid-stream: the server-side cursor and its connection are freed."""

        async def scenario() -> None:
            pages = runtime.store.export(EventFilter(service=corpus["service"]), fetch_rows=5)
            assert (await anext(pages))[0]["service"] == corpus["service"]
            await pages.aclose()  # warnings are errors here: a cursor left open would fail
            everything = runtime.store.export(EventFilter(service=corpus["service"]))
            assert sum([len(page) async for page in everything]) == len(corpus["sent"])

        async_to_sync(scenario)

    def test_database_down_is_503_before_any_byte(self, settings: Settings):
        down = settings.model_copy(
            update={"database_url": "postgresql://127.0.0.1:1/nothing", "db_pool_size": 1}
        )
        runtime = ApiRuntime.build(down)
        try:
            client = admin_client(create_app(down, runtime=runtime))
            result = client.simulate_get("/v1/events/export")
            assert result.status_code == 503
            assert result.headers["retry-after"]
            assert runtime.exports.running == 0
        finally:
            async_to_sync(runtime.close)
