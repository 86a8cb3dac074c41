"""After a fault: let the writers catch up, count what the database holds, verify the log."""

from __future__ import annotations

import time
from collections import Counter

from tests.faults.load import Load
from tests.faults.report import FaultRow, record
from tests.faults.stack import Ledger, Stack
from tests.helpers import wait_for


def settle(
    stack: Stack,
    ledger: Ledger,
    load: Load,
    *,
    order: int,
    fault: str,
    recovery_s: float | None,
    notes: str = "",
    loss_expected: bool = False,
) -> FaultRow:
    """Count the scenario's events in the database (the load has stopped) and record a row.

    Every accepted id must come: the wait ends when all are stored, or, where a loss is the
    point (Redis without AOF), when the stream is empty and nothing more arrives.
    """
    stats = load.stats()
    accepted = {i for _, ids in stats.accepted for i in ids}
    sent = set(stats.sent)
    assert accepted <= sent, "the API answered with ids it was not sent"
    ids = sorted(accepted)
    if loss_expected:
        wait_for(
            lambda: stack.depth() == 0 and stack.pending() == 0,
            timeout=120,
            interval=0.2,
            what="the stream drained",
        )
        _stable(ledger, ids)
    else:
        ledger.wait_stored(ids, timeout=180, what=f"{len(ids)} accepted events stored")
    rows = ledger.rows_per_id(sorted(sent))
    stored = sum(1 for i in ids if rows.get(i, 0) >= 1)
    duplicated = sum(count - 1 for count in rows.values() if count > 1)
    verified = stack.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return record(
        FaultRow(
            order=order,
            fault=fault,
            accepted=len(ids),
            stored=stored,
            lost=len(ids) - stored,
            duplicated=duplicated,
            recovery_s=recovery_s,
            notes=notes,
        )
    )


def recovery_time(
    load: Load, ledger: Ledger, since: float, *, timeout: float = 120, loss_expected: bool = False
) -> float:
    """Seconds from `since` (a fault's end) until the pipeline works again: every event
    accepted before it is stored (unless a loss is the point), and so are the first events
    accepted after it."""

    def first_after() -> list[str]:
        later = [(at, ids) for at, ids in load.stats().accepted if at > since]
        return min(later)[1] if later else []

    after = wait_for(first_after, timeout=timeout, what="an event accepted after the fault")
    before = [] if loss_expected else load.accepted_ids(until=since)
    ledger.wait_stored(
        before + after,
        timeout=timeout,
        what="events accepted before and right after the fault stored",
    )
    return time.monotonic() - since


def _stable(ledger: Ledger, ids: list[str], quiet_s: float = 3.0) -> None:
    """Until the stored count has not moved for quiet_s."""
    last, since = -1, time.monotonic()
    deadline = since + 120
    while time.monotonic() < deadline:
        now = ledger.stored(ids)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)
    raise AssertionError("the stored count kept moving for 120 s")


def unexpected(statuses: Counter[str], allowed: set[str]) -> dict[str, int]:
    """Answers outside `allowed` (status codes or exception names)."""
    return {status: n for status, n in statuses.items() if status not in allowed}
