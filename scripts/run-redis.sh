#!/usr/bin/env bash
# `make run`'s own Redis: a redis-server on AUDITLOG_REDIS_URL's port (6380 by default, from
# .env), its data in var/redis/ (append-only file: a 202 survives a restart), whose only users
# are the service's ACL users (`auditlog redis-acl`, passwords from .env) and a default user
# no client can log in as (`redis-cli ping` answers NOAUTH: up, and closed to strangers).
#
# Why not the machine's Redis (6379): it is shared, and `make test` (CI runs it on the same
# machine, perhaps after `make run`) and other checkouts use it as its default user with
# every right. A default user with every right would make the ACL users decoration, and
# taking its rights away would lock the tests out. So the machine's Redis is left as it is,
# and `make run` gets a Redis where least privilege holds.
#
# Started once, kept across `make run`s (like the machine's services), restarted only when
# the users changed (SIGTERM: it writes its append-only file and exits).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'run-redis: %s\n' "$*"; }

set -a
# shellcheck disable=SC1091
. ./.env
set +a
dir="$PWD/var/redis"
pidfile="$dir/redis.pid"
port=$(.venv/bin/python -c 'import os; from urllib.parse import urlsplit; print(urlsplit(os.environ["AUDITLOG_REDIS_URL"]).port or 6379)')
version=$(redis-server --version | grep -o 'v=[0-9.]*')
mkdir -p "$dir"
.venv/bin/auditlog redis-acl --redis-version "$version" --out "$dir/users.acl.new" 2>/dev/null

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

if running && ! cmp -s "$dir/users.acl.new" "$dir/users.acl"; then
  log "the users changed: restarting Redis on port $port"
  pid=$(cat "$pidfile")
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
mv "$dir/users.acl.new" "$dir/users.acl"
chmod 600 "$dir/users.acl"

if ! running; then
  if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
    log "another Redis answers on port $port; give make run another one in .env (AUDITLOG_REDIS_URL)" >&2
    exit 1
  fi
  log "starting Redis on 127.0.0.1:$port (data and log in var/redis/)"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$dir" \
    --aclfile "$dir/users.acl" --appendonly "${REDIS_APPENDONLY:-yes}" --appendfsync everysec \
    --save "" --pidfile "$pidfile" --logfile "$dir/redis.log"
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null || { log "Redis does not answer on port $port" >&2; exit 1; }
