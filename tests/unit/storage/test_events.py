"""The SQL-side helpers of the event store that need no database."""

from __future__ import annotations

import pytest

from auditlog.storage.events import prefix_upper_bound


class TestPrefixUpperBound:
    """The end of a type prefix's range in code point order."""

    @pytest.mark.parametrize(
        ("prefix", "bound"),
        [
            ("customer.", "customer/"),
            ("a", "b"),
            ("a\ud7ff", "a\ue000"),
            ("a\U0010ffff", "b"),
            ("ab\U0010ffff\U0010ffff", "ac"),
            ("\U0010ffff", None),
        ],
    )
    def test_bound(self, prefix: str, bound: str | None):
        assert prefix_upper_bound(prefix) == bound

    @pytest.mark.parametrize("prefix", ["customer.", "a\ud7ff", "z\U0010ffff", "é"])
    def test_every_extension_sorts_below_it(self, prefix: str):
        bound = prefix_upper_bound(prefix)
        assert bound is not None
        for tail in ("", "\x01", "zzz", "\U0010ffff\U0010ffff"):
            assert (prefix + tail).encode("utf-8", "surrogatepass") < bound.encode()
        assert bound.encode() > prefix.encode("utf-8", "surrogatepass")
