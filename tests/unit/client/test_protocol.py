"""What each answer of POST /v1/events does to a batch (auditlog.client's Delivery)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from auditlog.client import Options
from auditlog.client._events import Item
from auditlog.client._protocol import Delivery, batch_body, retry_after_s

OPTIONS = Options(backoff_base_s=0.1, backoff_max_s=2.0)


def items(count: int) -> list[Item]:
    return [Item(f"id-{n}", json.dumps({"n": n}).encode(), n) for n in range(count)]


def problems(*indexes: int) -> bytes:
    return json.dumps(
        {
            "title": "Invalid events",
            "description": f"{len(indexes)} problems",
            "errors": [{"index": i, "field": "type", "message": "is bad"} for i in indexes],
        }
    ).encode()


class TestBatchBody:
    def test_is_a_json_array_of_the_events_as_emitted(self):
        assert json.loads(batch_body(items(3))) == [{"n": 0}, {"n": 1}, {"n": 2}]


class TestAccepted:
    def test_202_settles_the_whole_batch(self):
        delivery = Delivery(items(3), OPTIONS)
        settled, wait = delivery.answered(202, None, b'{"accepted":3}')
        assert [s.kind for s in settled] == [None]
        assert [i.id for i in settled[0].items] == ["id-0", "id-1", "id-2"]
        assert (wait, delivery.part, delivery.requests, delivery.retries) == (0, None, 1, 0)


class TestRejected:
    def test_422_fails_the_named_events_and_keeps_the_rest_to_resend_at_once(self):
        delivery = Delivery(items(5), OPTIONS)
        settled, wait = delivery.answered(422, None, problems(1, 3, 3))
        assert wait == 0
        assert [(s.kind, s.status, [i.id for i in s.items]) for s in settled] == [
            ("rejected", 422, ["id-1"]),
            ("rejected", 422, ["id-3"]),
        ]
        assert settled[1].detail == "type: is bad; type: is bad"
        assert [i.id for i in delivery.part or []] == ["id-0", "id-2", "id-4"]
        settled, _ = delivery.answered(202, None, b"{}")
        assert [i.id for i in settled[0].items] == ["id-0", "id-2", "id-4"]
        assert delivery.part is None

    def test_422_naming_every_event_ends_the_delivery(self):
        delivery = Delivery(items(2), OPTIONS)
        settled, _ = delivery.answered(422, None, problems(0, 1))
        assert len(settled) == 2
        assert delivery.part is None

    @pytest.mark.parametrize(
        "body",
        [b"not json", b"{}", problems(7), json.dumps({"errors": [{"index": "0"}]}).encode()],
    )
    def test_422_without_usable_indexes_fails_the_whole_part(self, body: bytes):
        delivery = Delivery(items(3), OPTIONS)
        settled, _ = delivery.answered(422, None, body)
        assert [(s.kind, len(s.items)) for s in settled] == [("rejected", 3)]
        assert delivery.part is None


class TestNotRetried:
    @pytest.mark.parametrize(
        ("status", "kind"),
        [(401, "unauthorized"), (403, "forbidden"), (404, "refused"), (415, "refused")],
    )
    def test_the_part_fails_at_once(self, status: int, kind: str):
        delivery = Delivery(items(2), OPTIONS)
        body = json.dumps({"title": "No", "description": "not this key"}).encode()
        settled, wait = delivery.answered(status, None, body)
        assert [(s.kind, s.status, s.detail, len(s.items)) for s in settled] == [
            (kind, status, f"{status} No: not this key", 2)
        ]
        assert (wait, delivery.part, delivery.retries) == (0, None, 0)

    @pytest.mark.parametrize("status", [400, 413])
    def test_400_and_413_halve_the_part_until_the_culprit_is_alone(self, status: int):
        delivery = Delivery(items(4), OPTIONS)
        assert delivery.answered(status, None, b"{}") == ([], 0.0)
        assert [i.id for i in delivery.part or []] == ["id-0", "id-1"]
        delivery.answered(202, None, b"{}")
        assert [i.id for i in delivery.part or []] == ["id-2", "id-3"]
        delivery.answered(status, None, b"{}")
        assert [i.id for i in delivery.part or []] == ["id-2"]
        settled, _ = delivery.answered(status, None, b"{}")
        assert [(s.kind, [i.id for i in s.items]) for s in settled] == [("refused", ["id-2"])]
        delivery.answered(202, None, b"{}")
        assert delivery.part is None
        assert delivery.requests == 5


class TestRetried:
    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_the_part_is_kept_and_sent_again_after_a_backoff(self, status: int):
        delivery = Delivery(items(2), OPTIONS, random.Random(1))
        waits = [delivery.answered(status, None, b"")[1] for _ in range(8)]
        assert [len(delivery.part or []), delivery.retries] == [2, 8]
        # Full jitter under a ceiling that doubles from the base up to the maximum.
        ceilings = [min(2.0, 0.1 * 2**n) for n in range(8)]
        assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
        assert max(waits[4:]) > 0.2

    def test_retry_after_is_honoured_never_sooner(self):
        delivery = Delivery(items(1), OPTIONS, random.Random(2))
        waits = [delivery.answered(429, "7", b"")[1] for _ in range(20)]
        assert all(7 <= w <= 7.7 for w in waits), waits
        assert len(set(waits)) > 1  # a little jitter past it

    def test_transport_errors_back_off_and_count(self):
        delivery = Delivery(items(1), OPTIONS, random.Random(3))
        assert 0 <= delivery.failed() <= 0.1
        assert (delivery.requests, delivery.retries) == (1, 1)

    def test_success_resets_the_backoff(self):
        delivery = Delivery(items(2), OPTIONS, random.Random(4))
        for _ in range(6):
            delivery.answered(503, None, b"")
        delivery.answered(422, None, problems(0))
        assert 0 <= delivery.answered(503, None, b"")[1] <= 0.1


class TestRetryAfter:
    def test_seconds(self):
        assert retry_after_s("5") == 5.0
        assert retry_after_s(" 0 ") == 0.0

    def test_http_date(self):
        now = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
        later = format_datetime(now + timedelta(seconds=30), usegmt=True)
        assert retry_after_s(later, now) == 30.0
        earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
        assert retry_after_s(earlier, now) == 0.0

    @pytest.mark.parametrize("value", [None, "", "soon", "-1", "1.5"])
    def test_anything_else_is_no_hint(self, value: str | None):
        assert retry_after_s(value) is None
