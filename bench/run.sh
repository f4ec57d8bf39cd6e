#!/usr/bin/env bash
# Reproduces the figure in docs/benchmarks.md: N runs of `countersign-bench workflow` (the
# workflow create → one_of approval → two all_of approvals → grant active, over HTTP, on
# durable SQLite), then the median and the spread of workflows/s and latency.
#   bash bench/run.sh [runs] [concurrency] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}; conc=${2:-256}; secs=${3:-20}
cargo build --release -p countersign-bench >&2
out=$(mktemp)
for i in $(seq "$runs"); do
  ./target/release/countersign-bench workflow --concurrency "$conc" --seconds "$secs" --warmup 3 | tee -a "$out" >&2
done
python3 - "$out" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
rate = [float(x) for x in re.findall(r"workflows/s: (\d+)", text)]
p50 = [float(x) for x in re.findall(r"p50: ([\d.]+) ms", text)]
p99 = [float(x) for x in re.findall(r"p99: ([\d.]+) ms", text)]
errs = sum(int(x) for x in re.findall(r"errors: (\d+)", text))
med = statistics.median
print(f"runs: {len(rate)}  errors: {errs}")
print(f"workflows/s  median {med(rate):.0f}  min {min(rate):.0f}  max {max(rate):.0f}")
print(f"p50 latency  median {med(p50):.1f} ms  min {min(p50):.1f}  max {max(p50):.1f}")
print(f"p99 latency  median {med(p99):.1f} ms  min {min(p99):.1f}  max {max(p99):.1f}")
PY
