#!/usr/bin/env bash
# Everything `make run` and `make test` need, from a fresh machine, idempotently:
# system packages and TimescaleDB, running PostgreSQL and Redis, .venv, the database.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*"; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

$SUDO bash scripts/install-timescaledb.sh
# The machine's PostgreSQL and Redis: `make run`'s database lives in the former; the tests use
# the latter (with key prefixes of their own), `make run` has a Redis of its own (below).
$SUDO bash scripts/services.sh

# nginx (Debian's package) balances over the API instances in `make run` and in the tests.
# Only the binary is used: our own configuration runs it in the foreground; the package's
# service is left as Debian sets it up.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  log "installing nginx"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi

# Go and golang.org/x/mod (Debian's packages): tests/interop/tlogcheck checks the log's
# checkpoints and tiles with the Go project's sumdb/note and sumdb/tlog, built by the tests.
GO_PACKAGES="golang-go golang-golang-x-mod-dev"
# shellcheck disable=SC2086 # two package names
if [ "$(dpkg-query -W -f='${Status}\n' $GO_PACKAGES 2>/dev/null | grep -c '^install ok installed$')" != 2 ]; then
  log "installing Go and golang.org/x/mod"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $GO_PACKAGES >/dev/null
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

# Secrets, generated once into .env (git-ignored, mode 600): honcho reads it for `make run`,
# `docker compose` for its services. Flower's basic auth; the key that authenticates list
# cursors (the same on every API instance); the database roles' passwords; the Redis ACL
# users'; the compose PostgreSQL's superuser. Never printed.
touch .env
chmod 600 .env
secret() { .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))'; }
for name in AUDITLOG_FLOWER_PASSWORD AUDITLOG_CURSOR_KEY \
  AUDITLOG_OWNER_PASSWORD AUDITLOG_WRITER_PASSWORD AUDITLOG_READER_PASSWORD \
  AUDITLOG_REDIS_API_PASSWORD AUDITLOG_REDIS_WRITER_PASSWORD \
  AUDITLOG_REDIS_BROKER_PASSWORD AUDITLOG_REDIS_FLOWER_PASSWORD POSTGRES_PASSWORD; do
  if ! grep -q "^$name=" .env; then
    log "generating $name into .env"
    echo "$name=$(secret)" >>.env
  fi
done
# `make run`'s own Redis (scripts/run-redis.sh): not the machine's shared one on 6379.
grep -q '^AUDITLOG_REDIS_URL=' .env || echo "AUDITLOG_REDIS_URL=redis://127.0.0.1:6380/0" >>.env

if [ "${SKIP_DB_SETUP:-0}" != 1 ]; then
  bash scripts/run-redis.sh
  log "database: setup-db and migrations (the roles get their passwords from .env)"
  # The roles' passwords go to PostgreSQL as SCRAM verifiers, never in clear.
  .venv/bin/honcho run .venv/bin/auditlog migrate --setup
  # The key that signs tree heads; kept across runs (the log's identity), never committed.
  .venv/bin/auditlog keygen --if-missing >/dev/null
  # Said once, the first time the roles get their passwords here (whatever ran first).
  if [ ! -f var/pg_hba-advice-given ]; then
    hba=$(psql -h 127.0.0.1 -U postgres -Atc 'SHOW hba_file' 2>/dev/null || echo "pg_hba.conf")
    cat <<MESSAGE
setup: the roles auditlog_owner, auditlog_writer and auditlog_reader now have passwords (in
  .env), but this machine's PostgreSQL may still let them in without one (trust). To require
  them, as root, add these two lines above the first other line of $hba:
    local  all  auditlog_owner,auditlog_writer,auditlog_reader                scram-sha-256
    host   all  auditlog_owner,auditlog_writer,auditlog_reader  127.0.0.1/32  scram-sha-256
  then reload: pg_ctlcluster 15 main reload (or SELECT pg_reload_conf() as postgres).
  The auditlog command needs them too: .venv/bin/honcho run .venv/bin/auditlog ...
  (The tests are unaffected: they bring a PostgreSQL of their own that requires passwords.)
MESSAGE
    mkdir -p var && touch var/pg_hba-advice-given
  fi
fi
