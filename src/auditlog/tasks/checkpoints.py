"""The checkpoint publisher: a thread beside the writer in each pool process.

Publication is not a Celery task on purpose: the pool's processes are the writer slots,
and a task would take one from a drain for as long as the witnesses take to answer. A
thread started by a pool process after the fork costs the writer nothing but a few
milliseconds of CPU an interval. Every pool process runs one; a lock in PostgreSQL lets
one round run at a time, and the database's clock decides when the next checkpoint is
due (services/checkpoints.py), so that any number of them publish once per interval.
"""

from __future__ import annotations

import threading

import structlog

from auditlog.metrics import record_round
from auditlog.services.checkpoints import CheckpointPublisher

log = structlog.get_logger("auditlog.tasks")


class PublisherThread(threading.Thread):
    """Runs a publication round every poll_s until stopped (or the process exits)."""

    def __init__(self, publisher: CheckpointPublisher, poll_s: float):
        super().__init__(name="checkpoint-publisher", daemon=True)
        self._publisher = publisher
        self._poll_s = poll_s
        self._stopped = threading.Event()

    def run(self) -> None:
        log.info("checkpoint publisher started", origin=self._publisher.origin)
        while not self._stopped.wait(self._poll_s):
            try:
                record_round(self._publisher.run_once())
            except Exception as exc:  # the database away: the next round tries again
                log.warning("checkpoint publication round failed", error=str(exc))

    def stop(self) -> None:
        self._stopped.set()


def poll_interval(interval_s: float) -> float:
    """How often a publisher looks: often enough to publish within ~an interval."""
    return min(1.0, max(0.05, interval_s / 4))
