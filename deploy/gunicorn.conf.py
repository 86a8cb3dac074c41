"""gunicorn settings for the API (`gunicorn -c deploy/gunicorn.conf.py auditlog.wsgi:app`).

Values can be overridden per instance with GUNICORN_* variables read below; the bind
address usually comes from the command line (-b).
"""

import os

# Sync workers: a request is parse + validate + one Redis round trip (or one indexed
# query), all CPU-bound or sub-millisecond waits, so threads or async buy nothing.
worker_class = "sync"
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
# A worker stuck longer than this is killed and replaced; nginx retries elsewhere.
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
