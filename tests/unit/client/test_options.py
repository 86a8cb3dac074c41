"""Options refuse what cannot work, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditlog.client import Options, Overflow


class TestOptions:
    def test_defaults_are_within_the_apis_limits(self):
        options = Options()
        assert options.max_batch_events <= 1000
        assert options.max_batch_bytes <= 5 * 1024 * 1024
        assert options.overflow is Overflow.BLOCK

    def test_strings_are_taken_for_the_policy_and_the_path(self):
        options = Options(overflow="spill", spill_path="var/spill")  # type: ignore[arg-type]
        assert options.overflow is Overflow.SPILL
        assert options.spill_path == Path("var/spill")

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"max_batch_events": 1001}, "max_batch_events must be 1 to 1000"),
            ({"max_batch_events": 0}, "max_batch_events must be 1 to 1000"),
            ({"overflow": Overflow.SPILL}, "overflow=spill needs a spill_path"),
            ({"linger_s": -1}, "linger_s must not be negative"),
            ({"backoff_base_s": 1, "backoff_max_s": 0.5}, "backoff_max_s must be >= the base"),
        ],
    )
    def test_refuses(self, kwargs: dict[str, object], message: str):
        with pytest.raises(ValueError, match=message):
            Options(**kwargs)  # type: ignore[arg-type]

    def test_names_every_problem(self):
        with pytest.raises(
            ValueError, match=r"buffer_events must be at least 1; .*timeout_s must be positive"
        ):
            Options(timeout_s=0, buffer_events=0)

    def test_an_unknown_policy_is_refused(self):
        with pytest.raises(ValueError, match="'sometimes'"):
            Options(overflow="sometimes")  # type: ignore[arg-type]
