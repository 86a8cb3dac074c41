"""Prometheus metrics: what each process counts, and what one scrape shows.

An API instance (gunicorn master and its workers) or a Celery worker (main process and its
pool) is several processes. With PROMETHEUS_MULTIPROC_DIR set (Settings.metrics_dir),
prometheus-client keeps every process's values in files there, and a scrape adds them up;
without it, a scrape shows this process alone (tests, one-off commands).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from auditlog.storage.event_writer import EventWriter, StoreRejected, StoreUnavailable, WriteResult

log = structlog.get_logger("auditlog.metrics")

# --- the API ------------------------------------------------------------------------------
HTTP_REQUEST_SECONDS = Histogram(
    "auditlog_http_request_duration_seconds",
    "Time from the app receiving a request to its answer, by route template and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EVENTS_ACCEPTED = Counter(
    "auditlog_events_accepted",
    "Events answered 202: in the queue, to be written.",
)
INGEST_REFUSED = Counter(
    "auditlog_ingest_refused",
    "POST /v1/events requests refused, by reason; a refused request queues none of its events.",
    ["reason"],
)

# --- the writer ---------------------------------------------------------------------------
BATCH_EVENTS = Histogram(
    "auditlog_writer_batch_events",
    "Events per committed batch (duplicates included).",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
WRITE_SECONDS = Histogram(
    "auditlog_writer_write_seconds",
    "Time of one batch transaction, commit included, by result.",
    ["result"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
COMMIT_LAG_SECONDS = Histogram(
    "auditlog_commit_lag_seconds",
    "Per stored event: from received_at (the API accepted it) to its batch committed.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0),
)
EVENTS_COMMITTED = Counter("auditlog_events_committed", "Events stored by the writers.")
EVENTS_DUPLICATE = Counter(
    "auditlog_events_duplicate", "Entries skipped by the writers because their id was stored."
)

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def refusal_reason(error_kind: str | None, status: int) -> str:
    """A bounded label for why a request was refused: the domain error, snake_cased."""
    if error_kind:
        return _CAMEL.sub("_", error_kind).lower()
    return f"http_{status}"


def record_batch(
    result: WriteResult, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> None:
    """BatchWriter on_commit hook: batch size, stored and duplicate counts, lag per event."""
    BATCH_EVENTS.observe(len(result.stored) + result.duplicates)
    EVENTS_COMMITTED.inc(len(result.stored))
    EVENTS_DUPLICATE.inc(result.duplicates)
    committed = now()
    for event in result.stored:
        received = datetime.fromisoformat(event["received_at"])
        COMMIT_LAG_SECONDS.observe(max((committed - received).total_seconds(), 0.0))


class TimedEventWriter:
    """An EventWriter whose batch writes are timed (the write path itself is unchanged)."""

    def __init__(self, writer: EventWriter):
        self._writer = writer

    def close(self) -> None:
        self._writer.close()

    def write(self, batch: Sequence[dict[str, Any]]) -> WriteResult:
        started = time.perf_counter()
        result = "committed"
        try:
            return self._writer.write(batch)
        except StoreUnavailable:
            result = "unavailable"
            raise
        except StoreRejected:
            result = "rejected"
            raise
        finally:
            WRITE_SECONDS.labels(result).observe(time.perf_counter() - started)


# --- scraping -----------------------------------------------------------------------------
class Queue(Protocol):
    def depth(self) -> int: ...

    def dead_letter_count(self) -> int: ...


class QueueCollector(Collector):
    """The stream's depth and dead letters, as last `set` (an API instance reads them from
    Redis just before it renders a scrape).

    The values are global (every instance shows the same): take max(), not sum().
    """

    def __init__(self) -> None:
        self._values: tuple[int, int] | None = None

    def set(self, values: tuple[int, int] | None) -> None:
        self._values = values

    def collect(self) -> Iterator[Metric]:
        if self._values is None:  # Redis did not answer: no sample rather than a wrong one
            return
        depth, dead = self._values
        yield GaugeMetricFamily(
            "auditlog_queue_depth", "Events in the stream: waiting or being written.", depth
        )
        yield GaugeMetricFamily(
            "auditlog_dead_letters", "Entries the writers set aside as unwritable.", dead
        )


class LiveQueueCollector(QueueCollector):
    """A QueueCollector that reads the stream itself at each scrape (the worker's exporter,
    a thread of its own)."""

    def __init__(self, queue: Queue):
        super().__init__()
        self._queue = queue

    def collect(self) -> Iterator[Metric]:
        try:
            self.set((self._queue.depth(), self._queue.dead_letter_count()))
        except Exception as exc:  # a scrape must answer even when Redis does not
            log.warning("queue depth unavailable", error=str(exc))
            self.set(None)
        yield from super().collect()


class Exposition:
    """Everything one scrape shows: every process sharing metrics_dir, plus extra collectors."""

    def __init__(self, metrics_dir: Path | None, extra: Iterable[Collector] = ()):
        self.registry = CollectorRegistry()
        if metrics_dir is None:
            self.registry.register(REGISTRY)  # this process's own metrics
        else:
            MultiProcessCollector(self.registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
        for collector in extra:
            self.registry.register(collector)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The body and content type for an Accept header (text format unless OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def clear_metrics_dir(metrics_dir: Path) -> None:
    """Forget the values of a previous run (call before any process of this run writes)."""
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink(missing_ok=True)
