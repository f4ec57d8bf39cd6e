#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on loopback for the tests that need one, installing
# Debian's package first when the machine has no server. Prints the URL to use as
# COUNTERSIGN_TEST_PG_URL on its last line. Usage: .ci/postgres.sh [data-dir] [port]
set -euo pipefail
DATA="${1:-/tmp/countersign-ci-pg}"
PORT="${2:-54329}"

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/initdb" ]; then
  echo "installing postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
BIN="$(bindir)"

# initdb refuses to run as root: the server runs as the postgres user (created by the package),
# or as the current user when that is not root.
RUN=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql postgres
  RUN=(runuser -u postgres --)
fi

if [ -f "$DATA/postmaster.pid" ]; then
  "${RUN[@]}" "$BIN/pg_ctl" -D "$DATA" -m immediate stop >&2 || true
fi
rm -rf "$DATA"
mkdir -p "$DATA"
[ "$(id -u)" = 0 ] && chown postgres "$DATA"
"${RUN[@]}" "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >/dev/null
"${RUN[@]}" "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA -c fsync=off -c max_connections=200" start >&2

"$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 <<SQL >&2
CREATE ROLE countersign_test LOGIN PASSWORD 'countersign' CREATEROLE CREATEDB;
CREATE DATABASE countersign_test OWNER countersign_test;
-- The postgres connector's terminate_sessions ends other users' sessions.
GRANT pg_signal_backend TO countersign_test;
SQL
echo "postgres://countersign_test:countersign@127.0.0.1:$PORT/countersign_test"
