"""The worker's Prometheus exporter: one HTTP endpoint in the main process for the whole pool."""

from __future__ import annotations

from typing import Any

import structlog
from celery import bootsteps
from prometheus_client import start_http_server

from auditlog.metrics import Exposition, LiveQueueCollector, clear_metrics_dir
from auditlog.runtime import event_stream, redis_client
from auditlog.settings import SettingsError
from auditlog.tasks.celery import AuditlogCelery

log = structlog.get_logger("auditlog.tasks")


def register(app: AuditlogCelery) -> None:
    settings = app.settings

    class MetricsExporter(bootsteps.StartStopStep):
        """Serve /metrics on AUDITLOG_WORKER_METRICS_PORT: the pool processes' values too."""

        def __init__(self, worker: Any, **kwargs: Any):
            super().__init__(worker, **kwargs)
            self._server: Any = None
            if settings.worker_metrics_port and settings.metrics_dir is None:
                raise SettingsError(
                    "AUDITLOG_WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR: the pool "
                    "processes write their metrics there for the exporter to add up"
                )
            if settings.metrics_dir is not None:
                # Before the pool forks: what a previous run counted must not be added in.
                clear_metrics_dir(settings.metrics_dir)

        def start(self, worker: Any) -> None:
            if not settings.worker_metrics_port:
                return
            exposition = Exposition(
                settings.metrics_dir,
                [LiveQueueCollector(event_stream(settings, redis_client(settings)))],
            )
            self._server, _ = start_http_server(
                settings.worker_metrics_port,
                addr=settings.worker_metrics_address,
                registry=exposition.registry,
            )
            log.info(
                "metrics exporter listening",
                address=settings.worker_metrics_address,
                port=settings.worker_metrics_port,
            )

        def stop(self, worker: Any) -> None:
            if self._server is not None:
                self._server.shutdown()
                self._server = None

    app.steps["worker"].add(MetricsExporter)
