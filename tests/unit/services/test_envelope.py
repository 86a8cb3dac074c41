"""Envelope rules and the CloudEvents mapping, without any I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from auditlog.services import envelope
from auditlog.services.envelope import (
    Limits,
    check_event,
    cloudevent_field,
    cloudevent_id,
    from_cloudevent,
    suspect,
)
from tests import factories

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
LIMITS = Limits(
    max_data_bytes=1024,
    max_event_bytes=4096,
    max_string_chars=100,
    max_depth=6,
    future_skew=timedelta(minutes=5),
)


def problems(raw: Any) -> dict[str, str]:
    event, errors = check_event(raw, 3, NOW, LIMITS)
    assert event is None
    assert {e.index for e in errors} == {3}
    return {e.field: e.message for e in errors}


def valid(**overrides: Any) -> dict[str, Any]:
    return factories.event(
        **{"occurred_at": "2026-06-01T11:00:00Z", "data": {"amount": 1}, **overrides}
    )


class TestAccepted:
    def test_stored_form(self):
        raw = valid(id=str(uuid.uuid4()).upper(), occurred_at="2026-06-01T13:00:00+02:00")
        event, errors = check_event(raw, 0, NOW, LIMITS)
        assert errors == []
        assert event is not None
        assert event["id"] == raw["id"].lower()
        assert event["occurred_at"] == "2026-06-01T11:00:00.000000Z"
        assert event["actor"] == raw["actor"]

    def test_party_may_carry_more_keys(self):
        event, _ = check_event(
            valid(actor={"id": "u", "type": "user", "email": "a@b"}), 0, NOW, LIMITS
        )
        assert event is not None
        assert event["actor"]["email"] == "a@b"

    def test_indexed_context_value_up_to_its_limit(self):
        raw = valid(context={"trace_id": "t" * 256, "note": "n" * 1000})
        event, errors = check_event(raw, 0, NOW, Limits(max_string_chars=1000))
        assert errors == []
        assert event is not None

    def test_skew_is_allowed_up_to_the_limit(self):
        event, _ = check_event(valid(occurred_at="2026-06-01T12:04:59Z"), 0, NOW, LIMITS)
        assert event is not None


class TestRefused:
    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"type": "a..b"}, "type"),
            ({"type": "a." * 70 + "b"}, "type"),
            ({"type": "Upper"}, "type"),
            ({"service": "-svc"}, "service"),
            ({"service": "s" * 65}, "service"),
            ({"action": ""}, "action"),
            ({"outcome": "ok"}, "outcome"),
            ({"id": "123"}, "id"),
            ({"id": 5}, "id"),
            ({"actor": "alice"}, "actor"),
            ({"actor": {"id": ""}}, "actor.id"),
            ({"subject": {"id": "x", "type": 3}}, "subject.type"),
            ({"context": []}, "context"),
            ({"data": "text"}, "data"),
            ({"data": None}, "data"),
            ({"occurred_at": "2026-06-01T12:05:01Z"}, "occurred_at"),
            ({"occurred_at": "1969-12-31T23:59:59Z"}, "occurred_at"),
            ({"severity": "high"}, "severity"),
            ({"data": {"s": "x" * 101}}, "data.s"),
            ({"data": {"k" * 101: 1}}, "data"),
            ({"data": {"n": -(2**53)}}, "data.n"),
            ({"data": {"a": [{"b": [{"c": {"d": 1}}]}]}}, "data.a.0.b.0.c"),
            ({"context": {"ip": "\x00"}}, "context.ip"),
            # Indexed: a btree entry cannot hold more (the writer could never store it).
            ({"context": {"trace_id": "t" * 257}}, "context.trace_id"),
            ({"context": {"trace_id": {"id": "t"}}}, "context.trace_id"),
        ],
    )
    def test_rule(self, overrides: dict[str, Any], field: str):
        assert field in problems(valid(**overrides))

    def test_missing_required_fields(self):
        assert problems({}) == {
            "type": "is required",
            "service": "is required",
            "occurred_at": "is required",
        }

    def test_not_an_object(self):
        assert problems([1]) == {"$": "must be a JSON object"}

    def test_data_size_limit(self):
        found = problems(valid(data={f"k{i}": "v" * 90 for i in range(20)}))
        assert "limit is 1024" in found["data"]

    def test_event_size_limit(self):
        # Each part within its own rules, together past the event's limit.
        big = {f"k{i}": "v" * 90 for i in range(15)}
        found = problems(valid(context=big, actor={"id": "a", **big}, subject={"id": "s", **big}))
        assert set(found) == {"$"}
        assert "limit is 4096" in found["$"]

    def test_event_size_limit_counts_data_too(self):
        big = {f"k{i}": "v" * 90 for i in range(10)}  # ~1 KiB each
        found = problems(
            valid(context=big, actor={"id": "a", **big}, data=big, subject={"id": "s", **big})
        )
        assert set(found) == {"$"}  # data alone (~1 KiB) is within its own limit

    def test_all_problems_at_once(self):
        found = problems(valid(type="X", service="Y", data={"z": "\x00"}, extra=True))
        assert set(found) == {"type", "service", "data.z", "extra"}


class TestCloudEvents:
    def test_mapping(self):
        ce = factories.cloudevent(id="abc", source="accounts", ext1="v")
        event, errors = from_cloudevent(ce, 0)
        assert errors == []
        assert event is not None
        assert event["service"] == "accounts"
        assert event["occurred_at"] == ce["time"]
        assert event["subject"] == {"id": ce["subject"], "type": "customer"}
        assert event["actor"] == {"id": "signup-service", "type": "service"}
        assert event["context"] == {"ext1": "v", "cloudevents_id": "abc"}
        assert event["id"] == cloudevent_id("accounts", "abc")

    def test_uuid5_depends_on_source_and_id(self):
        assert cloudevent_id("a", "1") == cloudevent_id("a", "1")
        assert cloudevent_id("a", "1") != cloudevent_id("b", "1")
        assert uuid.UUID(cloudevent_id("a", "1")).version == 5
        same = str(uuid.uuid4())
        assert cloudevent_id("a", same.upper()) == same

    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"specversion": "1.1"}, "specversion"),
            ({"id": ""}, "id"),
            ({"datacontenttype": "text/plain"}, "datacontenttype"),
            ({"data_base64": "AA=="}, "data_base64"),
        ],
    )
    def test_refused(self, overrides: dict[str, Any], field: str):
        _, errors = from_cloudevent(factories.cloudevent(**overrides), 0)
        assert [e.field for e in errors] == [field]

    def test_json_content_types_are_accepted(self):
        for ct in ("application/json; charset=utf-8", "application/vnd.x+json"):
            _, errors = from_cloudevent(factories.cloudevent(datacontenttype=ct), 0)
            assert errors == []

    @pytest.mark.parametrize(
        ("field", "attribute"),
        [
            ("service", "source"),
            ("occurred_at", "time"),
            ("subject.id", "subject"),
            ("subject.type", "subjecttype"),
            ("actor.id", "actorid"),
            ("data.x.y", "data.x.y"),
            ("context.foo", "context.foo"),
        ],
    )
    def test_errors_are_named_by_attribute(self, field: str, attribute: str):
        assert cloudevent_field(field) == attribute


class TestSuspect:
    """`suspect` lets ingest skip the walk through every value: it must never skip a body
    the walk would refuse."""

    LIMITS = Limits(max_string_chars=100, max_depth=6)

    @pytest.mark.parametrize(
        "body",
        [
            b'{"data": {"x": "\\u0000"}}',
            b'{"data": {"x": "' + b"y" * 101 + b'"}}',
            b'{"data": {"a": {"b": {"c": {"d": {"e": 1}}}}}}',
            b'{"data": {"n": 9007199254740993}}',
            b'{"data": {"f": 1e400}}',
        ],
    )
    def test_what_the_walk_finds_is_suspect(self, body: bytes):
        assert suspect(body, self.LIMITS)

    def test_a_plain_event_is_not(self):
        assert not suspect(orjson.dumps(valid()), Limits())

    @given(
        data=st.recursive(
            st.none()
            | st.booleans()
            | st.integers(min_value=-(2**60), max_value=2**60)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=120),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(st.text(max_size=120), children, max_size=3)
            ),
            max_leaves=12,
        )
    )
    @hypothesis_settings(max_examples=300, deadline=None)
    def test_never_skips_what_the_walk_refuses(self, data: Any):
        raw = valid(data={"v": data})
        body = orjson.dumps(raw)
        walked = list(envelope._walk(raw["data"], "data", 2, self.LIMITS))
        if walked:
            assert suspect(body, self.LIMITS), walked
