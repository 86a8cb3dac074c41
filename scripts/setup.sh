#!/usr/bin/env bash
# Everything `make run` and `make test` need, from a fresh machine, idempotently:
# system packages and TimescaleDB, running PostgreSQL and Redis, .venv, the database.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*"; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

$SUDO bash scripts/install-timescaledb.sh
# The tests bring their own persistent Redis where they need one; `make run` wants the AOF
# (REDIS_APPENDONLY=no make run keeps Redis as it is).
if [ "${SKIP_DB_SETUP:-0}" != 1 ]; then
  $SUDO env REDIS_APPENDONLY="${REDIS_APPENDONLY:-yes}" bash scripts/services.sh
else
  $SUDO bash scripts/services.sh
fi

# nginx (Debian's package) balances over the API instances in `make run` and in the tests.
# Only the binary is used: our own configuration runs it in the foreground; the package's
# service is left as Debian sets it up.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  log "installing nginx"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi

# Debian's Chromium: the browser the viewer's tests drive (Playwright cannot download one
# here). Only the binary is used, headless.
if ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium (the viewer's browser tests)"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
    chromium >/dev/null
fi

# The viewer (viewer/): its npm packages as package-lock.json pins them, built by vite into
# viewer/dist, which the API serves at /viewer/. Each step is skipped when its inputs are
# unchanged (stamps: node_modules/.lock-sha256, dist/.built-from).
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ] || ! command -v npm >/dev/null 2>&1; then
  echo "setup: the viewer's build needs Node.js >= 20.19 and npm (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
lock_sum=$(sha256sum viewer/package-lock.json | cut -d' ' -f1)
if [ "$(cat viewer/node_modules/.lock-sha256 2>/dev/null)" != "$lock_sum" ]; then
  log "installing the viewer's npm packages (npm ci)"
  (cd viewer && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" >viewer/node_modules/.lock-sha256
fi
sources_sum=$(cd viewer && find index.html vite.config.js package-lock.json src public -type f -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat viewer/dist/.built-from 2>/dev/null)" != "$sources_sum" ]; then
  log "building the viewer (vite build into viewer/dist)"
  (cd viewer && npm run --silent build -- --logLevel warn)
  echo "$sources_sum" >viewer/dist/.built-from
fi

PYTHON="${PYTHON:-python3}"
stamp=.venv/.installed
want=$(cat pyproject.toml client/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PYTHON" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing the package, the client (client/) and their dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  # Two distributions sharing the `auditlog` namespace package: the server and the client
  # (published on its own as auditlog-client; its tests run in this suite).
  .venv/bin/pip install -q -e '.[serve,dev]' -e ./client
  echo "$want" >"$stamp"
fi

# Secrets `make run` (honcho) reads from .env, generated once: Flower's basic-auth password and
# the key that authenticates list cursors (the same on every API instance).
secret() {
  if [ ! -f .env ] || ! grep -q "^$1=" .env; then
    log "generating $1 into .env"
    echo "$1=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))')" >>.env
    chmod 600 .env
  fi
}
secret AUDITLOG_FLOWER_PASSWORD
secret AUDITLOG_CURSOR_KEY

if [ "${SKIP_DB_SETUP:-0}" != 1 ]; then
  log "database: setup-db and migrations"
  .venv/bin/auditlog migrate --setup
  # The key that signs tree heads; kept across runs (the log's identity), never committed.
  .venv/bin/auditlog keygen --if-missing >/dev/null
fi
