"""An event as the client encodes it at `emit`."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from auditlog.client._events import Failure, encode


class TestEncode:
    def test_assigns_a_uuidv7_and_keeps_it_in_the_json(self):
        event_id, raw = encode({"type": "a.b", "service": "billing"})
        assert uuid.UUID(event_id).version == 7
        assert json.loads(raw)["id"] == event_id

    def test_ids_follow_time(self):
        ids = [encode({"type": "a", "service": "s"})[0] for _ in range(100)]
        assert ids == sorted(ids)

    def test_keeps_a_given_id(self):
        given = uuid.uuid4()
        assert encode({"id": given})[0] == str(given)
        assert encode({"id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"})[0] == (
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
        )

    def test_fills_occurred_at_with_now_in_utc(self):
        before = datetime.now(UTC)
        stamp = datetime.fromisoformat(json.loads(encode({})[1])["occurred_at"])
        assert before <= stamp <= datetime.now(UTC)

    def test_writes_datetimes_with_their_offset(self):
        moment = datetime(2026, 11, 28, 10, 0, tzinfo=timezone(timedelta(hours=1)))
        body = json.loads(encode({"occurred_at": moment, "data": {"due": moment}})[1])
        assert body["occurred_at"] == body["data"]["due"] == "2026-11-28T10:00:00+01:00"

    def test_does_not_change_the_callers_event(self):
        event = {"type": "a.b"}
        encode(event)
        assert event == {"type": "a.b"}

    def test_keeps_text_as_utf8(self):
        assert "Zürich".encode() in encode({"data": {"city": "Zürich"}})[1]

    @pytest.mark.parametrize(
        ("event", "error"),
        [
            ({"occurred_at": datetime(2026, 11, 28)}, ValueError),  # no offset
            ({"data": {"x": math.nan}}, ValueError),
            ({"data": {"x": "\ud800"}}, UnicodeEncodeError),
            ({"data": {"x": object()}}, TypeError),
        ],
    )
    def test_refuses_what_could_never_be_sent(self, event: dict[str, object], error: type):
        with pytest.raises(error):
            encode(event)


class TestFailure:
    def test_gives_the_event_back(self):
        event_id, raw = encode({"type": "a.b"})
        failure = Failure(event_id, "rejected", "type: bad", 422, raw)
        assert failure.event["type"] == "a.b"
