"""POST /v1/events through the real app, stream, worker and database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from falcon import testing
from sqlalchemy import Engine

from auditlog.settings import Settings
from tests import factories
from tests.helpers import event_stream, wait_for
from tests.integration.conftest import post, stored_counts, wait_stored


class TestAccepting:
    """Valid events are answered 202 with their ids and stored exactly as sent."""

    def test_single_event_is_stored_as_sent(self, api: testing.TestClient, owner_db: Engine):
        sent = factories.event()
        result = post(api, sent)
        assert result.status_code == 202
        assert result.json == {"accepted": 1, "ids": [sent["id"]]}
        wait_stored(owner_db, [sent["id"]])

        stored = api.simulate_get(f"/v1/events/{sent['id']}").json
        for name in (
            "id",
            "type",
            "service",
            "actor",
            "subject",
            "action",
            "outcome",
            "context",
            "data",
        ):
            assert stored[name] == sent[name], name
        assert stored["occurred_at"] == sent["occurred_at"]
        received = datetime.fromisoformat(stored["received_at"])
        assert abs(datetime.now(UTC) - received) < timedelta(seconds=30)
        assert isinstance(stored["seq"], int)

    def test_array_ids_come_back_in_input_order(self, api: testing.TestClient, owner_db: Engine):
        batch = factories.events(25)
        result = post(api, batch)
        assert result.status_code == 202
        assert result.json["ids"] == [e["id"] for e in batch]
        assert wait_stored(owner_db, result.json["ids"]) == {e["id"]: 1 for e in batch}

    def test_server_assigns_uuid7_when_id_is_absent(
        self, api: testing.TestClient, owner_db: Engine
    ):
        result = post(api, [factories.event(drop=("id",)), factories.event(drop=("id",))])
        assert result.status_code == 202
        ids = [uuid.UUID(i) for i in result.json["ids"]]
        assert [i.version for i in ids] == [7, 7]
        assert ids[0] != ids[1]
        wait_stored(owner_db, result.json["ids"])

    def test_minimal_event_gets_defaults(self, api: testing.TestClient, owner_db: Engine):
        sent = {
            "type": "customer.account.deactivated",
            "service": "accounts",
            "occurred_at": "2026-01-31T12:00:00+02:00",
        }
        event_id = post(api, sent).json["ids"][0]
        wait_stored(owner_db, [event_id])
        stored = api.simulate_get(f"/v1/events/{event_id}").json
        assert stored["occurred_at"] == "2026-01-31T10:00:00.000000Z"
        assert stored["outcome"] == "unknown"
        assert stored["data"] == {}
        assert stored["actor"] is None
        assert stored["subject"] is None
        assert stored["context"] is None
        assert stored["action"] is None

    def test_nanoseconds_are_truncated_to_microseconds(
        self, api: testing.TestClient, owner_db: Engine
    ):
        sent = factories.event(occurred_at="2026-02-01T00:00:00.123456789-05:30")
        post(api, sent)
        wait_stored(owner_db, [sent["id"]])
        stored = api.simulate_get(f"/v1/events/{sent['id']}").json
        assert stored["occurred_at"] == "2026-02-01T05:30:00.123456Z"

    def test_new_event_types_need_no_change(self, api: testing.TestClient, owner_db: Engine):
        sent = factories.event(
            type="warehouse.pallet.v2.moved",
            service="wms-eu.1",
            data={
                "pallet": {"id": "P1", "dims": [1.2, 0.8, 1.0]},
                "ok": True,
                "note": None,
                "n": -(2**53 - 1),
            },
        )
        post(api, sent)
        wait_stored(owner_db, [sent["id"]])
        assert api.simulate_get(f"/v1/events/{sent['id']}").json["data"] == sent["data"]


class TestIdempotency:
    """The id is the idempotency key: a retry stores nothing new."""

    def test_retry_with_same_id_is_stored_once(
        self, api: testing.TestClient, owner_db: Engine, settings: Settings
    ):
        sent = factories.event()
        assert post(api, sent).status_code == 202
        wait_stored(owner_db, [sent["id"]])
        changed = {**sent, "data": {"amount": 1}}
        assert post(api, changed).status_code == 202
        # An entry leaves the stream only once its batch has committed (or was skipped).
        wait_for(lambda: event_stream(settings).depth() == 0, timeout=30, what="the retry written")
        assert stored_counts(owner_db, [sent["id"]]) == {sent["id"]: 1}
        # The first write wins; the retry changed nothing.
        assert api.simulate_get(f"/v1/events/{sent['id']}").json["data"] == sent["data"]

    def test_same_id_twice_in_one_request_is_refused(self, api: testing.TestClient):
        sent = factories.event()
        result = post(api, [sent, {**sent}])
        assert result.status_code == 422
        assert result.json["errors"] == [
            {"index": 1, "field": "id", "message": "repeats the id of event 0"}
        ]

    def test_uppercase_id_is_the_same_key(
        self, api: testing.TestClient, owner_db: Engine, settings: Settings
    ):
        sent = factories.event()
        assert post(api, sent).status_code == 202
        assert post(api, {**sent, "id": sent["id"].upper()}).status_code == 202
        wait_for(lambda: event_stream(settings).depth() == 0, timeout=30, what="both written")
        assert stored_counts(owner_db, [sent["id"]]) == {sent["id"]: 1}


class TestRefusals:
    """Bad input gets a precise 4xx and nothing of the request is enqueued."""

    def test_malformed_json_is_400(self, client: testing.TestClient):
        result = post(client, b'{"type": ')
        assert result.status_code == 400
        assert result.json["title"] == "Malformed body"
        assert "not valid JSON" in result.json["description"]

    @pytest.mark.parametrize("body", [b"", b"[]", b"42", b'"x"', b"null"])
    def test_wrong_shape_is_400(self, client: testing.TestClient, body: bytes):
        result = post(client, body)
        assert result.status_code == 400, result.json
        assert result.json["description"]

    @pytest.mark.parametrize("body", [b'{"a": NaN}', b'{"a": "\\ud800"}', b'{"a": "\xff"}'])
    def test_non_json_values_are_400(self, client: testing.TestClient, body: bytes):
        assert post(client, body).status_code == 400

    @pytest.mark.parametrize(
        "content_type",
        [
            None,
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin-1",
        ],
    )
    def test_wrong_content_type_is_415(self, client: testing.TestClient, content_type: str | None):
        headers = {} if content_type is None else {"Content-Type": content_type}
        result = client.simulate_post(
            "/v1/events", body=orjson.dumps(factories.event()), headers=headers
        )
        assert result.status_code == 415
        assert (
            "application/json" in result.json["description"]
            or "UTF-8" in result.json["description"]
        )

    def test_json_with_charset_utf8_is_accepted(self, client: testing.TestClient):
        result = post(client, factories.event(), content_type="application/json; charset=UTF-8")
        assert result.status_code == 202

    def test_body_over_the_limit_is_413(self, client: testing.TestClient):
        big = factories.event(data={"blob": "x" * 16000})
        body = orjson.dumps([big] * 400)  # ~6.5 MB > 5 MiB
        result = post(client, body)
        assert result.status_code == 413
        assert "limit" in result.json["description"]

    def test_more_than_1000_events_is_413(self, client: testing.TestClient):
        result = post(client, factories.events(1001))
        assert result.status_code == 413
        assert "1001 events" in result.json["description"]

    def test_every_problem_of_every_item_is_reported(self, client: testing.TestClient):
        good = factories.event()
        bad = factories.event(
            type="Customer Billed",
            service="",
            occurred_at="yesterday",
            outcome="maybe",
            extra=1,
            action="Bill!",
            actor={"type": "user"},
            data={"x": "a\x00b"},
        )
        bad2 = factories.event(id="not-a-uuid", data=[1, 2])
        result = post(client, [good, bad, bad2])
        assert result.status_code == 422
        fields = {(e["index"], e["field"]) for e in result.json["errors"]}
        assert fields == {
            (1, "type"),
            (1, "service"),
            (1, "occurred_at"),
            (1, "outcome"),
            (1, "extra"),
            (1, "action"),
            (1, "actor.id"),
            (1, "data.x"),
            (2, "id"),
            (2, "data"),
        }
        extra = next(e for e in result.json["errors"] if e["field"] == "extra")
        assert "data" in extra["message"]

    def test_refused_request_enqueues_nothing(self, api: testing.TestClient, owner_db: Engine):
        good = factories.event()
        assert post(api, [good, factories.event(type="BAD")]).status_code == 422
        marker = factories.event()
        post(api, marker)
        wait_stored(owner_db, [marker["id"]])
        assert stored_counts(owner_db, [good["id"]]) == {}

    def test_number_where_a_string_belongs_is_422(self, client: testing.TestClient):
        result = post(client, factories.event(service=42, actor={"id": 7}))
        assert result.status_code == 422
        assert {e["field"] for e in result.json["errors"]} == {"service", "actor.id"}

    def test_future_beyond_skew_is_refused(self, client: testing.TestClient):
        ahead = datetime.now(UTC) + timedelta(minutes=10)
        result = post(client, factories.event(occurred_at=factories.timestamp(ahead)))
        assert result.status_code == 422
        assert result.json["errors"][0]["field"] == "occurred_at"
        assert "ahead" in result.json["errors"][0]["message"]

    def test_slightly_ahead_clock_is_accepted(self, client: testing.TestClient):
        ahead = datetime.now(UTC) + timedelta(minutes=2)
        assert (
            post(client, factories.event(occurred_at=factories.timestamp(ahead))).status_code == 202
        )

    @pytest.mark.parametrize(
        "value",
        [
            "2026-01-31T12:00:00",
            "2026-01-31 12:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-31T23:59:60Z",
            1700000000,
        ],
    )
    def test_occurred_at_must_be_rfc3339_with_offset(
        self, client: testing.TestClient, value: object
    ):
        result = post(client, factories.event(occurred_at=value))
        assert result.status_code == 422
        assert result.json["errors"][0]["field"] == "occurred_at"

    def test_integers_beyond_ijson_range_are_refused(self, client: testing.TestClient):
        result = post(client, factories.event(data={"n": 2**53}))
        assert result.status_code == 422
        assert result.json["errors"][0]["field"] == "data.n"

    def test_data_over_64k_is_refused(self, client: testing.TestClient):
        result = post(
            client, factories.event(data={"blob": "x" * 15000, "more": ["y" * 15000] * 4})
        )
        assert result.status_code == 422
        assert result.json["errors"] == [
            {"index": 0, "field": "data", "message": result.json["errors"][0]["message"]}
        ]
        assert "65536" in result.json["errors"][0]["message"]

    def test_nul_anywhere_is_refused(self, client: testing.TestClient):
        result = post(client, factories.event(context={"ua\x00": "x"}, subject={"id": "a\x00"}))
        assert result.status_code == 422
        assert {e["field"] for e in result.json["errors"]} == {"context", "subject.id"}

    def test_deep_nesting_is_refused_with_the_field(self, client: testing.TestClient):
        deep: object = "leaf"
        for _ in range(40):
            deep = {"d": deep}
        result = post(client, factories.event(data=deep))
        assert result.status_code == 422
        assert result.json["errors"][0]["field"].startswith("data.d.d")
        assert "deeper than" in result.json["errors"][0]["message"]


class TestMethods:
    """There is no way to change or remove an event."""

    @pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
    def test_changing_an_event_is_405_with_allow(self, client: testing.TestClient, method: str):
        result = client.simulate_request(method, f"/v1/events/{uuid.uuid4()}")
        assert result.status_code == 405
        assert result.headers["allow"] == "GET, OPTIONS"
        assert "append-only" in result.json["description"]

    @pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
    def test_changing_the_collection_is_405(self, client: testing.TestClient, method: str):
        result = client.simulate_request(method, "/v1/events")
        assert result.status_code == 405
        assert "POST" in result.headers["allow"]


class TestCloudEvents:
    """CloudEvents 1.0 structured and batched modes map onto the envelope."""

    def test_structured_mode(self, api: testing.TestClient, owner_db: Engine):
        ce = factories.cloudevent(traceparent="00-abc-def-01", region="eu")
        result = post(api, ce, content_type="application/cloudevents+json")
        assert result.status_code == 202, result.json
        [event_id] = result.json["ids"]
        wait_stored(owner_db, [event_id])
        stored = api.simulate_get(f"/v1/events/{event_id}").json
        assert stored["service"] == "accounts"
        assert stored["type"] == "customer.account.created"
        assert stored["occurred_at"] == ce["time"]
        assert stored["subject"] == {"id": ce["subject"], "type": "customer"}
        assert stored["actor"] == {"id": "signup-service", "type": "service"}
        assert stored["action"] == "create"
        assert stored["outcome"] == "success"
        assert stored["data"] == {"plan": "pro"}
        assert stored["context"] == {
            "traceparent": "00-abc-def-01",
            "region": "eu",
            "cloudevents_id": ce["id"],
        }

    def test_non_uuid_id_maps_to_a_stable_uuid(self, api: testing.TestClient, owner_db: Engine):
        ce = factories.cloudevent()
        first = post(api, ce, content_type="application/cloudevents+json").json["ids"]
        again = post(api, ce, content_type="application/cloudevents+json").json["ids"]
        assert first == again
        wait_stored(owner_db, first)
        assert stored_counts(owner_db, first) == {first[0]: 1}

    def test_uuid_id_is_kept(self, client: testing.TestClient):
        ce = factories.cloudevent(id=str(uuid.uuid4()))
        result = post(client, ce, content_type="application/cloudevents+json")
        assert result.json["ids"] == [ce["id"]]

    def test_batched_mode(self, api: testing.TestClient, owner_db: Engine):
        batch = [factories.cloudevent() for _ in range(3)]
        result = post(api, batch, content_type="application/cloudevents-batch+json")
        assert result.status_code == 202
        assert result.json["accepted"] == 3
        wait_stored(owner_db, result.json["ids"])

    def test_errors_name_the_cloudevents_attribute(self, client: testing.TestClient):
        ce = factories.cloudevent(source="/Not A Service", time="soon", specversion="1.0")
        result = post(client, [ce], content_type="application/cloudevents-batch+json")
        assert result.status_code == 422
        assert {e["field"] for e in result.json["errors"]} == {"source", "time"}

    def test_wrong_specversion_and_binary_data_are_refused(self, client: testing.TestClient):
        ce = factories.cloudevent(specversion="0.3", data_base64="AAAA")
        result = post(client, ce, content_type="application/cloudevents+json")
        assert result.status_code == 422
        assert {e["field"] for e in result.json["errors"]} == {"specversion", "data_base64"}

    def test_batch_mode_needs_an_array(self, client: testing.TestClient):
        result = post(
            client, factories.cloudevent(), content_type="application/cloudevents-batch+json"
        )
        assert result.status_code == 400
