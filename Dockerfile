# One image for every auditlog program: the API (gunicorn), the worker and Flower (celery),
# and the one-shot migration; docker-compose.yml picks the command.

# The auditors' viewer, built from its pinned npm packages; only viewer/dist goes on.
FROM node:20-slim AS viewer
WORKDIR /viewer
COPY viewer/package.json viewer/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY viewer ./
RUN npm run build

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install '.[serve]'
# Settings finds migrations/ and deploy/ in the working directory of an installed package.
COPY alembic.ini ./
COPY migrations ./migrations
COPY deploy ./deploy
# The viewer's build (the API serves it at /viewer/; AUDITLOG_VIEWER_DIR defaults to it).
COPY --from=viewer /viewer/dist ./viewer/dist

# The worker's pool processes keep their Prometheus values here (PROMETHEUS_MULTIPROC_DIR).
# The key volumes are mounted on these directories; a new volume takes their owner.
RUN useradd --system --uid 10001 --home-dir /app auditlog \
    && mkdir -p /tmp/metrics /signing-key /public-key /redis-acl \
    && chown auditlog /tmp/metrics /signing-key /public-key /redis-acl
USER auditlog

EXPOSE 8000 5555 9101
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "-b", "0.0.0.0:8000", "auditlog.asgi:app"]
