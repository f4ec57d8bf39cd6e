#!/usr/bin/env bash
# Reproduces the PostgreSQL figures of docs/benchmarks.md (issue 14): in one window, N rounds
# of the workflow bench on SQLite, on PostgreSQL with one replica and with two, and
# `pgbench -N` on the same PostgreSQL; then the median and spread of each.
#   bash bench/replicas.sh RUNS SECONDS PG_ADMIN_URL [BENCH_BINARY]
# PG_ADMIN_URL names a PostgreSQL server (fsync on) and a role that may CREATE DATABASE, e.g.
# postgres://postgres@127.0.0.1:54360/postgres. Each workflow run gets a fresh database.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}; secs=${2:-20}; admin=${3:?PG_ADMIN_URL}; bin=${4:-}
if [ -z "$bin" ]; then
  cargo build --release -p countersign-bench >&2
  bin=./target/release/countersign-bench
fi
psql_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
psql() { "$psql_bin/psql" "$admin" -qAt -v ON_ERROR_STOP=1 -c "$1"; }
base=${admin%/*}
fresh() { psql "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null; psql "CREATE DATABASE $1" >/dev/null; echo "$base/$1"; }
"$psql_bin/psql" "$admin" -qAt -c "DROP DATABASE IF EXISTS cs_pgbench WITH (FORCE)" >/dev/null
psql "CREATE DATABASE cs_pgbench" >/dev/null
"$psql_bin/pgbench" -i -q -s 10 "$base/cs_pgbench" >/dev/null 2>&1
out=$(mktemp)
for i in $(seq "$runs"); do
  echo "== round $i: sqlite" | tee -a "$out" >&2
  "$bin" workflow --concurrency 256 --seconds "$secs" --warmup 3 | tee -a "$out" >&2
  echo "== round $i: postgres x1" | tee -a "$out" >&2
  "$bin" workflow --concurrency 256 --seconds "$secs" --warmup 3 --database "$(fresh cs_bench_wf)" | tee -a "$out" >&2
  echo "== round $i: postgres x2" | tee -a "$out" >&2
  "$bin" workflow --concurrency 256 --seconds "$secs" --warmup 3 --replicas 2 --database "$(fresh cs_bench_wf)" | tee -a "$out" >&2
  echo "== round $i: pgbench" | tee -a "$out" >&2
  "$psql_bin/pgbench" -N -c 32 -j 2 -T "$secs" "$base/cs_pgbench" 2>/dev/null | grep -E "^tps" | tee -a "$out" >&2
done
python3 - "$out" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
rounds = re.split(r"== round \d+: ", text)[1:]
series = {}
for r in rounds:
    name, body = r.split("\n", 1)
    m = re.search(r"workflows/s: (\d+)", body) or re.search(r"tps = ([\d.]+)", body)
    e = re.search(r"errors: (\d+)", body)
    p99 = re.search(r"p99: ([\d.]+) ms", body)
    series.setdefault(name.strip(), []).append((float(m.group(1)), int(e.group(1)) if e else 0, float(p99.group(1)) if p99 else None))
med = statistics.median
for name, vals in series.items():
    v = [x[0] for x in vals]
    unit = "tps" if name == "pgbench" else "workflows/s"
    extra = ""
    if name != "pgbench":
        extra = f"  p99 median {med([x[2] for x in vals]):.1f} ms  errors {sum(x[1] for x in vals)}"
    print(f"{name:<12} {unit} median {med(v):.0f}  min {min(v):.0f}  max {max(v):.0f}{extra}")
pg = med([x[0] for x in series.get("pgbench", [(0,0,0)])])
for name in ("postgres x1", "postgres x2"):
    if name in series and pg:
        wf = med([x[0] for x in series[name]])
        print(f"{name}: 4 x {wf:.0f} = {4*wf:.0f} write transactions/s = {100*4*wf/pg:.0f} % of pgbench -N")
PY
