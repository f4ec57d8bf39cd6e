#!/usr/bin/env bash
# Reproduces issue 14's workflow and expiry figures in docs/benchmarks.md in one window: five
# interleaved SQLite workflow runs of an old and a new build, bench/replicas.sh with the new
# build, then interleaved expiry bursts (SQLite old, SQLite new, PostgreSQL new).
#   bash bench/issue14.sh OLD_BENCH_BINARY NEW_BENCH_BINARY PG_ADMIN_URL
# Build each binary with `cargo build --release -p countersign-bench` at its commit and copy
# target/release/countersign-bench aside. PG_ADMIN_URL as for bench/replicas.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?OLD_BENCH_BINARY}; NEW=${2:?NEW_BENCH_BINARY}; ADMIN=${3:?PG_ADMIN_URL}
PSQL=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)/psql
base=${ADMIN%/*}
fresh() {
  "$PSQL" "$ADMIN" -qAt -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null
  "$PSQL" "$ADMIN" -qAt -c "CREATE DATABASE $1" >/dev/null
  echo "$base/$1"
}
echo "### sqlite workflow old/new interleaved"
for i in 1 2 3 4 5; do
  echo "== old $i"; "$OLD" workflow --concurrency 256 --seconds 15 --warmup 3 | grep -E "workflows/s|errors|p99"
  echo "== new $i"; "$NEW" workflow --concurrency 256 --seconds 15 --warmup 3 | grep -E "workflows/s|errors|p99"
done
echo "### replicas"
bash bench/replicas.sh 3 15 "$ADMIN" "$NEW"
echo "### expiry burst"
for i in 1 2 3; do
  echo "== sqlite old $i"; "$OLD" expiry --mode burst | tail -3
  echo "== sqlite new $i"; "$NEW" expiry --mode burst | tail -3
  echo "== postgres new $i"; "$NEW" expiry --mode burst --database "$(fresh cs_bench_exp)" | tail -3
done
