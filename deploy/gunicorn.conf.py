"""gunicorn settings for the API (`gunicorn -c deploy/gunicorn.conf.py auditlog.wsgi:app`).

Values can be overridden per instance with GUNICORN_* variables read below; the bind
address usually comes from the command line (-b).
"""

import os

workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
# Threads, not sync workers: a sync worker only tells the arbiter it is alive between
# requests, so a follow or an export running longer than `timeout` would be killed
# mid-stream. A gthread worker's main loop keeps beating while its threads serve; each
# long-lived answer holds one thread, bounded per process by AUDITLOG_FOLLOW_MAX_PER_PROCESS
# and AUDITLOG_EXPORT_MAX_PER_PROCESS, so the other threads always serve the short requests.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "6"))
# A worker whose main loop is stuck longer than this is killed and replaced.
timeout = 30
graceful_timeout = 20
keepalive = 5
# The app writes one structured line per request; gunicorn's own access log would repeat it.
accesslog = None
errorlog = "-"
loglevel = "warning"
# Recycle workers now and then so that a slow leak cannot grow without bound.
max_requests = 100_000
max_requests_jitter = 10_000
# Bodies up to AUDITLOG_MAX_BODY_BYTES arrive through nginx, fully buffered.
limit_request_line = 8190
