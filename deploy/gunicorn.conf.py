"""gunicorn settings for one API instance (`gunicorn -c deploy/gunicorn.conf.py auditlog.asgi:app`).

The bind address comes from the command line (-b); GUNICORN_WORKERS overrides the number of
worker processes. Each instance keeps its Prometheus values in its own directory
(PROMETHEUS_MULTIPROC_DIR; a fresh temporary one when unset), which /metrics adds up.
"""

import os
import shutil
import tempfile
from pathlib import Path

# Set before prometheus_client is imported anywhere in this process or its workers: the
# library picks its multiprocess mode at import time.
_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="auditlog-metrics-")
_metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])

from prometheus_client import multiprocess  # noqa: E402 - needs the variable above
from uvicorn_worker import UvicornWorker  # noqa: E402


class Worker(UvicornWorker):
    """uvicorn's worker on uvloop and httptools (docs/DESIGN.md, "Operations": one event
    loop per process). The app decides which proxy it trusts for the client's address
    (AUDITLOG_TRUSTED_PROXIES, X-Real-IP), so uvicorn's own X-Forwarded-For handling is off;
    nginx keeps its connections open (keep-alive); uvicorn's own access log is off (nginx's
    has every request, with the same request id)."""

    CONFIG_KWARGS = {  # noqa: RUF012 - uvicorn_worker's own class attribute
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "proxy_headers": False,
        "access_log": False,
        "server_header": False,
        "date_header": True,
    }


# One event loop per process serves every request of that process: long answers (follow,
# export) are coroutines, bounded per process and per key by AUDITLOG_FOLLOW_MAX_PER_* and
# AUDITLOG_EXPORT_MAX_PER_*, not threads.
worker_class = Worker
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# A worker stuck longer than this is killed and replaced.
timeout = 30
# SIGTERM: stop accepting, finish the requests in hand (honcho kills after 5 s, docker
# after its stop_grace_period; a request here takes milliseconds).
graceful_timeout = 20
# Longer than nginx's upstream keepalive_timeout (60 s): nginx closes idle connections first,
# so it never sends a request on a connection gunicorn is closing.
keepalive = 75
# nginx's access log has every request, with its request id; the app logs what needs a look
# (4xx, 5xx, slow requests).
accesslog = None
errorlog = "-"
loglevel = "warning"
# Recycle workers now and then so that a slow leak cannot grow without bound.
max_requests = 100_000
max_requests_jitter = 10_000
# gunicorn's limit_request_* do not reach uvicorn's worker: uvicorn's httptools parser has
# no limit of its own below nginx's (large_client_header_buffers), which refuses first.
# TODO(ops): slow clients are nginx's to bound: uvicorn has no deadline for a body that
# stalls (a waiting coroutine costs little, but it holds its connection). nginx reads whole
# bodies (client_body_timeout) before an instance sees them, so the instances are reachable
# through nginx only (compose does not publish them; make run binds them to 127.0.0.1).
# Exposing one directly needs a body read deadline in front of the app.


def on_starting(server):
    """Forget the values of an earlier run that used the same directory."""
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in _metrics_dir.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server, worker):
    """A worker is gone (recycled, killed): drop its live gauges; its counters stay summed."""
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
