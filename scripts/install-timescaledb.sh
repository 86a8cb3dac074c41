#!/usr/bin/env bash
# Install the Apache-2 build of TimescaleDB into the local PostgreSQL and preload it.
#
# Debian 12 has no timescaledb package; Debian 13's source package builds against Debian 12's
# postgresql-server-dev. Every step is skipped when its result is already there, so running
# this again is cheap. Needs root (apt, make install, pg_ctlcluster).
set -euo pipefail

TSDB_VERSION="${TSDB_VERSION:-2.19.3}"
PG_MAJOR="${PG_MAJOR:-$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')}"
BUILD_DIR="${TSDB_BUILD_DIR:-/var/tmp/auditlog-timescaledb}"
PSQL=(psql -X -q -t -A -h 127.0.0.1 -U postgres -d postgres)

log() { printf 'install-timescaledb: %s\n' "$*"; }

installed_version() {
  local control="/usr/share/postgresql/${PG_MAJOR}/extension/timescaledb.control"
  [ -f "$control" ] && sed -nE "s/^default_version *= *'([^']+)'.*/\1/p" "$control"
}

build_and_install() {
  export DEBIAN_FRONTEND=noninteractive
  local src_list=/etc/apt/sources.list.d/auditlog-trixie-src.sources
  if [ ! -f "$src_list" ]; then
    log "adding a deb-src entry for trixie (source packages only)"
    cat >"$src_list" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    "postgresql-server-dev-${PG_MAJOR}" cmake gcc make dpkg-dev libssl-dev >/dev/null
  rm -rf "$BUILD_DIR" && mkdir -p "$BUILD_DIR"
  cd "$BUILD_DIR"
  log "fetching the timescaledb ${TSDB_VERSION} source package"
  apt-get source -qq --download-only "timescaledb=${TSDB_VERSION}+dfsg-*" >/dev/null 2>&1 \
    || apt-get source -qq --download-only timescaledb >/dev/null
  dpkg-source -x --skip-debianization ./timescaledb_*.dsc src >/dev/null 2>&1
  cd src
  log "building (Apache-2 only)"
  GIT_DIR=/nonexistent ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
    -DPG_CONFIG="$(command -v pg_config)" >/dev/null
  make -C build -j"$(nproc)" >/dev/null
  make -C build install >/dev/null
  log "installed $(installed_version)"
}

preload() {
  local current
  current=$("${PSQL[@]}" -c 'SHOW shared_preload_libraries')
  if [[ ",${current// /}," == *",timescaledb,"* ]]; then
    return
  fi
  log "adding timescaledb to shared_preload_libraries and restarting PostgreSQL"
  local libs="timescaledb"
  [ -n "$current" ] && libs="${current},timescaledb"
  "${PSQL[@]}" -c "ALTER SYSTEM SET shared_preload_libraries = '${libs}'"
  pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main restart
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 && return
    sleep 1
  done
  log "PostgreSQL did not come back after the restart" >&2
  exit 1
}

if [ "$(installed_version)" = "$TSDB_VERSION" ]; then
  log "timescaledb ${TSDB_VERSION} already installed"
else
  build_and_install
fi
preload
