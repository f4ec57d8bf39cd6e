#!/usr/bin/env bash
# Reproduces the expiry figures in docs/benchmarks.md (issue 4): N burst runs (100,000
# approval-only grants expiring at the same instant), N steady runs (30,000 expiring evenly
# over 30 s) and one hold run (1,000,000 active grants, resident memory), each on durable
# SQLite, then the median and the spread.
#   bash bench/expiry.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release -p countersign-bench >&2
bin=./target/release/countersign-bench
export RUST_LOG=warn,sqlx=error
out=$(mktemp)
for i in $(seq "$runs"); do
  $bin expiry --mode burst --grants 100000 | tee -a "$out" >&2
done
for i in $(seq "$runs"); do
  $bin expiry --mode steady --grants 30000 --seconds 30 | tee -a "$out" >&2
done
$bin expiry --mode hold --grants 1000000 | tee -a "$out" >&2
python3 - "$out" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
def series(mode, pattern):
    vals = []
    for block in text.split("seeded:")[1:]:
        if f"mode: {mode}" in block:
            m = re.search(pattern, block)
            if m:
                vals.append(float(m.group(1)))
    return vals
def show(name, vals, unit):
    if vals:
        print(f"{name:<34} median {statistics.median(vals):.0f} {unit}  min {min(vals):.0f}  max {max(vals):.0f}  (n={len(vals)})")
show("burst: all recorded after expiry", series("Burst", r"all recorded (-?\d+) ms"), "ms")
show("steady: lag p50", series("Steady", r"p50 (-?\d+) ms"), "ms")
show("steady: lag p99", series("Steady", r"p99 (-?\d+) ms"), "ms")
show("steady: lag max", series("Steady", r"max (-?\d+) ms"), "ms")
m = re.search(r"active grants: (\d+)  rss: (\d+) MiB  database: (\d+) MiB", text)
if m:
    print(f"hold: {m.group(1)} active grants, rss {m.group(2)} MiB, database {m.group(3)} MiB")
PY
