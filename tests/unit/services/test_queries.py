"""Cursor encoding, parameter rules, bucket widths and starts, without a database."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from auditlog.errors import InvalidQuery
from auditlog.services.queries import MAX_BUCKETS, Cursor, bucket_starts, parse_width

KEY = b"server-key"


def altered(token: str, **changes: object) -> str:
    """The cursor with fields changed and its MAC kept: what a client might try."""
    body, _, mac = token.partition(".")
    fields = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    fields.update(changes)
    return base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=").decode() + "." + mac


class TestCursor:
    def test_round_trip(self):
        cursor = Cursor("asc", datetime(2026, 1, 1, 0, 0, 0, 7, tzinfo=UTC), 42, 100, "abc")
        assert Cursor.decode(cursor.encode(KEY), KEY) == cursor

    @pytest.mark.parametrize(
        "changes",
        [
            {"s": 41},
            {"s": 10**9},
            {"n": 10**12},
            {"o": "desc"},
            {"q": "other"},
            {"t": "2025-01-01T00:00:00.000000Z"},
        ],
    )
    def test_a_changed_field_is_refused(self, changes: dict[str, object]):
        token = Cursor("asc", datetime(2026, 1, 1, tzinfo=UTC), 42, 100, "abc").encode(KEY)
        with pytest.raises(InvalidQuery, match="not a cursor this server issued"):
            Cursor.decode(altered(token, **changes), KEY)

    def test_another_servers_key_is_refused(self):
        token = Cursor("asc", datetime(2026, 1, 1, tzinfo=UTC), 42, 100, "abc").encode(KEY)
        with pytest.raises(InvalidQuery, match="cursor"):
            Cursor.decode(token, b"another key")

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "!!!",
            base64.urlsafe_b64encode(b"[]").decode(),
            base64.urlsafe_b64encode(b'{"v":2}').decode(),
            Cursor("asc", datetime(2026, 1, 1, tzinfo=UTC), 1, 2, "q").encode(KEY)[:-3],
            base64.urlsafe_b64encode(
                b'{"v":1,"o":"asc","t":"2026-01-01T00:00:00Z","s":"1","n":2,"q":"x"}'
            ).decode(),
        ],
    )
    def test_garbage_is_refused(self, token: str):
        with pytest.raises(InvalidQuery, match="cursor"):
            Cursor.decode(token, KEY)


class TestWidth:
    @pytest.mark.parametrize(
        ("text", "width"),
        [
            ("1m", timedelta(minutes=1)),
            ("15m", timedelta(minutes=15)),
            ("6h", timedelta(hours=6)),
            ("1d", timedelta(days=1)),
            ("366d", timedelta(days=366)),
        ],
    )
    def test_valid(self, text: str, width: timedelta):
        assert parse_width(text) == width

    @pytest.mark.parametrize("text", ["", "0m", "1", "m", "1w", "1.5h", "367d", "01h", "-1h"])
    def test_invalid(self, text: str):
        with pytest.raises(InvalidQuery, match="width"):
            parse_width(text)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


class TestBucketStarts:
    """Every bucket overlapping [since, until), aligned, even at the ends of the calendar."""

    def test_aligned_on_the_origin(self):
        starts = bucket_starts(utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 2), timedelta(hours=1))
        assert starts == [utc(2026, 1, 1, 0), utc(2026, 1, 1, 1)]

    def test_last_day_of_the_calendar(self):
        # Found by the API fuzz run: stepping past the last bucket overflowed (a 500).
        starts = bucket_starts(utc(9999, 12, 31), utc(9999, 12, 31, 23), timedelta(days=1))
        assert starts == [utc(9999, 12, 31)]

    def test_a_first_bucket_before_year_one_is_refused(self):
        with pytest.raises(InvalidQuery, match="since: is too early"):
            bucket_starts(utc(1, 1, 1), utc(1, 1, 2), timedelta(days=5))

    def test_too_many_buckets(self):
        until = utc(2026, 1, 1) + timedelta(minutes=MAX_BUCKETS)
        assert len(bucket_starts(utc(2026, 1, 1), until, timedelta(minutes=1))) == MAX_BUCKETS
        with pytest.raises(InvalidQuery, match="width: gives more than"):
            bucket_starts(utc(2026, 1, 1), until + timedelta(minutes=1), timedelta(minutes=1))
