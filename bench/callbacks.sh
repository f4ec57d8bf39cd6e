#!/usr/bin/env bash
# Reproduces the callback figures in docs/benchmarks.md (issue 5): N runs delivering 10,000
# outcomes to a healthy loopback receiver, then N runs with as many outcomes going to a second
# receiver that fails half the time and hangs on a tenth of its calls; then the median and
# the spread of the healthy receiver's throughput and latency.
#   bash bench/callbacks.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release -p countersign-bench >&2
bin=./target/release/countersign-bench
export RUST_LOG=error
out=$(mktemp)
for i in $(seq "$runs"); do
  $bin callbacks --outcomes 10000 | tee -a "$out" >&2
done
for i in $(seq "$runs"); do
  $bin callbacks --outcomes 10000 --with-failing | tee -a "$out" >&2
done
python3 - "$out" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
def series(failing, pattern):
    vals = []
    for block in text.split("outcomes:")[1:]:
        if f"failing receiver: {failing}" in block:
            m = re.search(pattern, block)
            if m:
                vals.append(float(m.group(1)))
    return vals
for failing in ("no", "yes"):
    for name, pat, unit in (("deliveries/s", r"= (\d+)/s", "/s"), ("p50", r"p50 (\d+) ms", "ms"), ("p99", r"p99 (\d+) ms", "ms")):
        v = series(failing, pat)
        if v:
            print(f"failing={failing:<3} {name:<13} median {statistics.median(v):.0f} {unit}  min {min(v):.0f}  max {max(v):.0f}  (n={len(v)})")
base = series("no", r"p99 (\d+) ms"); mixed = series("yes", r"p99 (\d+) ms")
if base and mixed:
    print(f"healthy p99 with the failing receiver / without: {statistics.median(mixed) / statistics.median(base):.2f}x (target: at most 2x)")
PY
