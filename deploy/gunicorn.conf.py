"""gunicorn settings for one API instance (`gunicorn -c deploy/gunicorn.conf.py auditlog.wsgi:app`).

The bind address comes from the command line (-b); GUNICORN_WORKERS and GUNICORN_THREADS
override the counts. Each instance keeps its Prometheus values in its own directory
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

# Measured (docs/DESIGN.md, "Serving"): gthread workers, so that nginx's upstream keepalive
# reuses connections (sync workers close each one). Threads also keep long answers safe: a
# sync worker only tells the arbiter it is alive between requests, so a follow or an export
# longer than `timeout` would be killed mid-stream, while a gthread worker's main loop keeps
# beating. Each long-lived answer holds one thread, bounded per process by
# AUDITLOG_FOLLOW_MAX_PER_PROCESS (2) and AUDITLOG_EXPORT_MAX_PER_PROCESS (1): six threads
# leave at least three for short requests.
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "6"))
# A worker stuck longer than this is killed and replaced.
timeout = 30
# SIGTERM: stop accepting, finish the requests in hand (honcho kills after 5 s, docker
# after its stop_grace_period; a request here takes milliseconds).
graceful_timeout = 20
# Longer than nginx's upstream keepalive_timeout (60 s): nginx closes idle connections first,
# so it never sends a request on a connection gunicorn is closing.
keepalive = 75
# The app writes one structured line per request, with the request id; gunicorn's own
# access log would repeat it without.
accesslog = None
errorlog = "-"
loglevel = "warning"
# Recycle workers now and then so that a slow leak cannot grow without bound.
max_requests = 100_000
max_requests_jitter = 10_000
limit_request_line = 8190
# Header lines as long as nginx lets through (large_client_header_buffers 4 8k).
limit_request_field_size = 8190
# As many header lines as fit in nginx's 32 KiB (gunicorn's own default, 100, would be
# refused here in HTML after nginx let them through); gunicorn's maximum.
limit_request_fields = 32768
# TODO(ops): slow clients are nginx's to bound. `timeout` above only restarts a worker whose
# main loop stops beating, which a gthread worker's does not while one thread waits on a
# body; gunicorn waits 5 s for a request to start but has no bound on a body that stalls.
# nginx reads whole bodies (client_body_timeout) before an instance sees them, so the
# instances are reachable through nginx only (compose does not publish them; make run binds
# them to 127.0.0.1). Exposing one directly needs a body read deadline in front of the app.


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
