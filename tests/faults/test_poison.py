"""Poison: entries the database will never take, put straight into the stream under load."""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson
import pytest

from tests import factories
from tests.faults.load import Load
from tests.faults.outcome import settle, unexpected
from tests.faults.stack import Ledger, Stack
from tests.helpers import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _queued(**overrides: Any) -> dict[str, Any]:
    """An event in the stored form the API would have queued (bypassing its checks)."""
    event = factories.event(**overrides)
    event.update(received_at=event["occurred_at"], publisher="faults-producer")
    return event


POISONS = {
    # PostgreSQL cannot store U+0000 in text (a data exception, SQLSTATE 22021).
    "U+0000 in a text column": _queued(type="poison\x00type"),
    # An indexed value past btree's limit of 2704 bytes (program limit exceeded, 54000).
    "a 6,000-byte trace_id (indexed)": _queued(context={"trace_id": secrets.token_hex(3000)}),
}


class TestPoison:
    """Each poison is dead-lettered after AUDITLOG_WRITER_MAX_ATTEMPTS refusals, shows in
    /metrics and `auditlog dead-letters`, and the events around it are stored meanwhile."""

    def test_poison_entries_are_dead_lettered_and_block_nothing(self, stack: Stack, ledger: Ledger):
        attempts = stack.settings.writer_max_attempts
        with stack.stream() as stream:
            dead_before = stream.dead_letter_count()
        with Load(stack.url("/v1/events"), stack.token) as load:
            load.wait_accepted(1000)
            injected = time.monotonic()
            entries = {
                stack.inject([orjson.dumps(event)])[0]: name for name, event in POISONS.items()
            }
            with stack.stream() as stream:
                wait_for(
                    lambda: stream.dead_letter_count() == dead_before + len(POISONS),
                    timeout=60,
                    what="the poison entries dead-lettered",
                )
            dead_lettered = time.monotonic() - injected
            # The load went on being stored while the poison was tried and set aside.
            during = load.accepted_ids(until=time.monotonic())
            stored_in = ledger.wait_stored(during, timeout=30, what="the load around the poison")
            load.wait_accepted(1000)
        assert not unexpected(load.status_counts(), {"202"})

        with stack.stream() as stream:
            letters = {d.entry_id: d for d in stream.dead_letters(1000)}
        for entry_id, name in entries.items():
            assert entry_id in letters, name
            assert letters[entry_id].error.startswith(f"refused {attempts} times: "), (
                name,
                letters[entry_id].error,
            )
        assert ledger.rows_per_id([e["id"] for e in POISONS.values()]) == {}
        # Visible to an operator: the gauge on every API instance, and the CLI.
        assert stack.api_metrics("auditlog_dead_letters") == dead_before + len(POISONS)
        listing = stack.cli("dead-letters")
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.startswith(f"{dead_before + len(POISONS)} dead-lettered entries")
        for entry_id in entries:
            assert entry_id in listing.stdout

        row = settle(
            stack,
            ledger,
            load,
            order=60,
            fault="poison entries in the stream: " + " and ".join(POISONS),
            recovery_s=dead_lettered,
            notes=f"each dead-lettered after {attempts} refusals, shown by /metrics "
            "(auditlog_dead_letters) and `auditlog dead-letters`; every event accepted "
            f"meanwhile stored (the last {stored_in:.1f} s after the dead-lettering)",
        )
        assert (row.lost, row.duplicated) == (0, 0)
