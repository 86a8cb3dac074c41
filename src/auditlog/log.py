"""Structured logs: JSON in production, readable in a terminal; configured once per process.

The service's own lines (one per request, one per batch) go straight from structlog to
stderr as bytes rendered by orjson: a few microseconds a line, on the hot path of every
request. Other libraries' lines (Celery, gunicorn, Alembic) go through the standard
library's logging and come out in the same format.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import orjson
import structlog

from auditlog.settings import Settings


def configure_logging(
    settings: Settings, *, observers: Sequence[structlog.types.Processor] = ()
) -> None:
    """Set up structlog and the standard library's loggers for this process.

    `observers` see every structlog event, complete, just before it is rendered (tests use
    one to read what the service logs).
    """
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if settings.log_format == "json":
        structlog.configure(
            processors=[
                *shared,
                structlog.processors.format_exc_info,
                *observers,
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            logger_factory=structlog.BytesLoggerFactory(file=sys.stderr.buffer),
            wrapper_class=structlog.make_filtering_bound_logger(level),
            cache_logger_on_first_use=True,
        )
        foreign: structlog.types.Processor = structlog.processors.JSONRenderer()
    else:
        structlog.configure(
            processors=[*shared, *observers, structlog.dev.ConsoleRenderer()],
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            wrapper_class=structlog.make_filtering_bound_logger(level),
            cache_logger_on_first_use=True,
        )
        foreign = structlog.dev.ConsoleRenderer()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                foreign,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
