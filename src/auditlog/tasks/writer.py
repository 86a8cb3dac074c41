"""The drain task (one running chain per writer slot) and the watchdog that starts chains.

Each slot has a lease in Redis held by the id of the task currently draining it. A drain
writes batches for a few seconds, hands the lease to its successor's id, and sends the
successor: so Flower shows the writer as a steady stream of short tasks. The watchdog, a
timer in every worker's main process, starts a chain for any slot whose lease has lapsed
(first start, a lost message, a Redis restart).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any, ClassVar, TypeVar

import structlog
from celery import Task, bootsteps
from celery.signals import worker_shutting_down
from kombu.exceptions import OperationalError as BrokerUnavailable

from auditlog.errors import Unavailable
from auditlog.tasks.celery import AuditlogCelery

log = structlog.get_logger("auditlog.tasks")

WATCHDOG_INTERVAL_S = 2.0

# Set when this pool process is asked to stop (SIGTERM: honcho, docker, systemd and Celery's
# cold shutdown all send it). The drain then writes the batch in hand, returns and does not
# pass its slot on; billiard's default would exit at once and leave the batch for the
# next start.
_stopping = threading.Event()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _stopping.set()


def _stop_gracefully_on_sigterm() -> None:
    # Installed from inside the first task: billiard resets the pool's signal handlers after
    # the worker_process_init hooks have run.
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        signal.signal(signal.SIGTERM, _on_sigterm)


T = TypeVar("T")


def _until_redis_answers(action: Callable[[], T], *, for_s: float, what: str) -> T | None:
    """action(), tried again while Redis (or the broker on it) does not answer, for up to
    for_s seconds or until the process is asked to stop; None if it never went through.

    A drain's lease outlives its drain, so a short Redis restart is waited out here instead
    of ending the slot's chain and leaving the watchdog to wait for the lease to lapse.
    """
    deadline = time.monotonic() + for_s
    delay = 0.1
    while True:
        try:
            return action()
        except (Unavailable, BrokerUnavailable) as exc:
            if time.monotonic() + delay >= deadline or _stopping.is_set():
                log.warning("Redis does not answer; giving up", step=what, error=str(exc))
                return None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def register(app: AuditlogCelery) -> None:
    @app.task(name="auditlog.drain", bind=True, acks_late=True, reject_on_worker_lost=True)
    def drain(self: Task, slot: int) -> dict[str, Any]:
        """Write batches for one slot, then pass the slot on to the next drain."""
        _stop_gracefully_on_sigterm()
        runtime = app.writer_runtime
        app.ensure_publisher()
        token = self.request.id
        lease_s = runtime.settings.writer_lease_s
        if _stopping.is_set():
            return {"slot": slot, "status": "pool process is stopping"}
        # A redelivery of this very task (its worker died) holds the same token: it resumes.
        acquired = _until_redis_answers(
            lambda: runtime.leases.acquire(slot, token), for_s=lease_s, what="taking the slot"
        )
        if not acquired:
            return {"slot": slot, "status": "slot held by another drain, or Redis away"}

        def pass_on() -> None:
            if _stopping.is_set():  # shutting down: the watchdog restarts the chain later
                _until_redis_answers(
                    lambda: runtime.leases.release(slot, token), for_s=1, what="releasing"
                )
                return
            successor = str(uuid.uuid4())
            handed = _until_redis_answers(
                lambda: runtime.leases.handover(slot, token, successor),
                for_s=lease_s,
                what="handing the slot over",
            )
            if handed:
                _until_redis_answers(
                    lambda: drain.apply_async(args=(slot,), task_id=successor),
                    for_s=lease_s,
                    what="sending the next drain",
                )

        try:
            report = runtime.writer.drain(
                f"slot-{slot}",
                deadline=time.monotonic() + runtime.settings.writer_drain_s,
                keep_going=lambda: not _stopping.is_set() and runtime.leases.renew(slot, token),
            )
        finally:
            pass_on()
        return {"slot": slot, **report.as_dict()}

    class WriterWatchdog(bootsteps.StartStopStep):
        """Every few seconds, start a drain for each slot nobody holds."""

        requires: ClassVar[set[str]] = {"celery.worker.components:Timer"}

        def __init__(self, worker: Any, **kwargs: Any):
            super().__init__(worker, **kwargs)
            self._timer_ref: Any = None
            self._shutting_down = False
            self._worker: Any = None

        def start(self, worker: Any) -> None:
            # From the first signal of a shutdown on, no new chain is started: the drains
            # running finish their batch and release their slots.
            self._worker = worker
            worker_shutting_down.connect(self._on_shutdown, weak=False)
            self._check()
            self._timer_ref = worker.timer.call_repeatedly(WATCHDOG_INTERVAL_S, self._check)

        def stop(self, worker: Any) -> None:
            self._shutting_down = True
            if self._timer_ref is not None:
                self._timer_ref.cancel()

        def _on_shutdown(self, **kwargs: Any) -> None:
            self._shutting_down = True
            # A SIGTERM sent to this process alone (docker and Kubernetes signal PID 1; honcho
            # and systemd signal the whole group) would leave the drains running to their
            # deadline and passing their slots on. Passed to the pool processes, it makes
            # them finish the batch in hand and release their slots, as a group signal does.
            pool = getattr(self._worker, "pool", None)
            for pid in pool.info.get("processes", []) if pool is not None else []:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)

        def _check(self) -> None:
            if self._shutting_down:
                return
            try:
                leases = app.watchdog_leases
                for slot in range(app.settings.writer_slots):
                    token = str(uuid.uuid4())
                    if leases.acquire_free(slot, token):
                        drain.apply_async(args=(slot,), task_id=token)
                        log.info("writer chain started", slot=slot, task_id=token)
            except Exception as exc:  # the timer must survive Redis being away
                log.warning("writer watchdog check failed", error=str(exc))

    app.steps["worker"].add(WriterWatchdog)
