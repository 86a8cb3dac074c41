"""The canonical timestamp form and RFC 3339 parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditlog.canonical import format_timestamp, parse_timestamp


class TestParse:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
            ("2026-01-31t12:00:00z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
            ("2026-01-31T12:00:00+02:00", datetime(2026, 1, 31, 10, tzinfo=UTC)),
            ("2026-01-31T12:00:00-00:30", datetime(2026, 1, 31, 12, 30, tzinfo=UTC)),
            ("2026-01-31T12:00:00.5Z", datetime(2026, 1, 31, 12, 0, 0, 500000, tzinfo=UTC)),
            (
                "2026-01-31T12:00:00.1234567891Z",
                datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC),
            ),
            ("2026-01-01T00:30:00+01:00", datetime(2025, 12, 31, 23, 30, tzinfo=UTC)),
        ],
    )
    def test_valid(self, text: str, expected: datetime):
        assert parse_timestamp(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "2026-01-31T12:00:00",
            "2026-01-31",
            "2026-01-31 12:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-01-31T24:00:00Z",
            "2026-01-31T12:00:60Z",
            "2026-01-31T12:00:00+24:00",
            "2026-01-31T12:00:00+0200",
            " 2026-01-31T12:00:00Z",
            "２０２６-01-31T12:00:00Z",
            "0000-01-01T00:00:00+01:00",
        ],
    )
    def test_invalid(self, text: str):
        with pytest.raises(ValueError, match=r"."):
            parse_timestamp(text)


class TestFormat:
    def test_fixed_form(self):
        moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))
        assert format_timestamp(moment) == "2026-01-02T02:04:05.000000Z"

    def test_early_years_keep_four_digits(self):
        # Found by the API fuzz run: strftime("%Y") writes year 7 as "7", not "0007".
        assert format_timestamp(datetime(7, 1, 7, tzinfo=UTC)) == "0007-01-07T00:00:00.000000Z"

    @given(
        st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
        )
    )
    def test_round_trip(self, moment: datetime):
        text = format_timestamp(moment)
        assert parse_timestamp(text) == moment
        assert format_timestamp(parse_timestamp(text)) == text
        assert len(text) == 27
