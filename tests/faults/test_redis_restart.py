"""Restart Redis under load: with `appendonly yes` nothing accepted is lost; without it, what
the writers had not stored yet is gone, and the suite measures how much.

Redis is restarted two ways: SIGKILL (a crash: what redis-server had written to its AOF is in
the kernel's page cache and survives the process; with `appendfsync everysec`, only a
machine crash or power loss could cost the last second, which no test here simulates) and
SHUTDOWN (the clean stop). To make the difference visible, most restarts happen while the
writers are held behind (the database's write lock is taken for a few seconds), so that
thousands of accepted events are waiting in Redis, and only there, at that moment; the lock
is released as Redis goes, so that the writers meet the outage with batches in hand.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from tests.faults.load import Load
from tests.faults.outcome import recovery_time, settle, unexpected
from tests.faults.report import FaultRow, record
from tests.faults.servers import wait_seconds
from tests.faults.stack import Ledger, Stack

pytestmark = [pytest.mark.faults, pytest.mark.slow]

DOWN_S = 3  # Redis is away this long
BEHIND_S = 3  # the writers are held this long before the crash


@pytest.fixture
def without_aof(stack: Stack) -> Iterator[Stack]:
    stack.redis.set_appendonly(False)
    try:
        yield stack
    finally:
        stack.ensure_up()
        stack.redis.set_appendonly(True)


def restart_redis(
    stack: Stack, ledger: Ledger, load: Load, *, how: str, behind: bool
) -> tuple[float, float, int]:
    """Crash or stop Redis (with the writers held behind first, if `behind`), start it again;
    (the moment it went, the moment it was back, events in Redis just before)."""
    held = ledger.writers_held() if behind else contextlib.nullcontext()
    with held:
        if behind:
            wait_seconds(BEHIND_S)
        waiting = stack.depth()  # waiting or read but not stored: in Redis only
        down = time.monotonic()
        if how == "SIGKILL":
            stack.redis.kill()
        else:
            stack.redis.shutdown()
    # Released with Redis away: the writers commit the batches they hold, cannot acknowledge
    # them, and must wait Redis out.
    wait_seconds(DOWN_S)
    stack.redis.start()
    up = time.monotonic()
    return down, up, waiting


class TestRedisRestart:
    @pytest.mark.parametrize(
        ("how", "behind"), [("SIGKILL", True), ("SHUTDOWN", False)], ids=["SIGKILL", "SHUTDOWN"]
    )
    def test_with_aof_nothing_is_lost(self, stack: Stack, ledger: Ledger, how: str, behind: bool):
        with Load(stack.url("/v1/events"), stack.token) as load:
            load.wait_accepted(1000)
            down, up, waiting = restart_redis(stack, ledger, load, how=how, behind=behind)
            recovery = recovery_time(load, ledger, up)
            load.wait_accepted(1000)
        # While Redis was away, POST said 503 with Retry-After; nothing else.
        during = load.status_counts(since=down, until=up + 1)
        assert not unexpected(during, {"202", "503"}), during
        assert all(a.retry_after for a in load.stats().answers if a.status == "503")
        if behind:
            assert waiting > 1000  # there was something to lose
        row = settle(
            stack,
            ledger,
            load,
            order=30 if how == "SIGKILL" else 31,
            fault=f"Redis {how} + restart, appendonly yes (everysec), "
            + (f"writers {BEHIND_S} s behind" if behind else "writers keeping up"),
            recovery_s=recovery,
            notes=(
                f"{waiting:,} accepted events in Redis only at the {how}, all kept; "
                if behind
                else "no drain failed (they waited Redis out); "
            )
            + f"down {DOWN_S} s: {during['503']:,} POSTs answered 503 + Retry-After, retried",
        )
        assert (row.lost, row.duplicated) == (0, 0)
        # The writers waited Redis out: no drain failed (a failed drain ends its slot's
        # chain until its message is redelivered or its lease lapses).
        assert stack.worker is not None
        failed = [
            line["event"]
            for line in stack.worker.log_lines()
            if "raised unexpected" in str(line.get("event"))
        ]
        assert not failed, failed[:3]

    @pytest.mark.parametrize("behind", [False, True], ids=["writers-keeping-up", "behind"])
    def test_without_aof_the_unwritten_are_lost(
        self, without_aof: Stack, ledger: Ledger, behind: bool
    ):
        stack = without_aof
        with Load(stack.url("/v1/events"), stack.token) as load:
            load.wait_accepted(1000)
            crash, up, waiting = restart_redis(stack, ledger, load, how="SIGKILL", behind=behind)
            recovery = recovery_time(load, ledger, up, loss_expected=True)
            load.wait_accepted(1000)
        row = settle(
            stack,
            ledger,
            load,
            order=33 if behind else 32,
            fault="Redis SIGKILL + restart, appendonly no"
            + (f", writers {BEHIND_S} s behind" if behind else ", writers keeping up"),
            recovery_s=recovery,
            loss_expected=True,
        )
        accepted_at = {i: at for at, ids in load.stats().accepted for i in ids}
        stored = ledger.rows_per_id(sorted(accepted_at))
        lost = [i for i in accepted_at if i not in stored]
        assert row.duplicated == 0
        assert len(lost) == row.lost
        # What is lost is only what was in Redis at the crash, not yet written. Everything
        # accepted after the restart is stored. (A 202 may reach its producer a moment after
        # the crash was decided: hence the second of slack.)
        assert all(accepted_at[i] < crash + 1.0 for i in lost)
        assert row.lost <= waiting + 1000  # + what arrived between the count and the crash
        oldest = max((crash - accepted_at[i] for i in lost), default=0.0)
        newest = min((crash - accepted_at[i] for i in lost), default=0.0)
        record(
            FaultRow(
                **{
                    **row.__dict__,
                    "notes": f"{waiting:,} accepted events in the stream a moment before the "
                    "crash; lost: "
                    + (
                        f"those accepted {newest * 1000:,.0f}–{oldest * 1000:,.0f} ms before it"
                        if lost
                        else "none (the writers had stored them by the crash)"
                    ),
                }
            ),
            replace=row,
        )
