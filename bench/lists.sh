#!/usr/bin/env bash
# Reproduces the list figures in docs/benchmarks.md (issue 14, item 3): seeds REQUESTS
# requests into DATABASE once (a SQLite file by default, or the PostgreSQL database a
# postgres:// URL names), then measures RUNS times, each in a fresh process that reuses the
# seeded database, and prints the median and spread of each caller kind's first- and
# deep-page latency and of the resident memory per pending request.
#   bash bench/lists.sh [runs] [database] [requests]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
db=${2:-sqlite:///tmp/countersign-lists.db}
n=${3:-1000000}
cargo build --release -p countersign-bench >&2
bin=./target/release/countersign-bench
export RUST_LOG=warn,sqlx=error
out=$(mktemp)
# Seeds when the database holds no requests yet (its own figures are not counted).
$bin lists --database "$db" --requests "$n" --repeat 1 --callers 1 >&2
if [[ "$db" == postgres* ]]; then
  psql "$db" -qc 'ANALYZE' 2>/dev/null
fi
for i in $(seq "$runs"); do
  $bin lists --database "$db" --requests "$n" | tee -a "$out" >&2
done
python3 - "$out" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
rows = {}
for m in re.finditer(r"^(requester|reviewer|admin|app|nobody)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", text, re.M):
    rows.setdefault(m.group(1), []).append([float(x) for x in m.group(3, 4, 5, 6, 7)])
def cell(vals):
    return f"{statistics.median(vals):.2f} ({min(vals):.2f}–{max(vals):.2f})"
print("kind       depth  first p50            first p99            deep p50             deep p99   (ms: median (min–max) of the runs)")
for kind, runs in rows.items():
    cols = list(zip(*runs))
    print(f"{kind:<10} {statistics.median(cols[0]):>5.0f}  " + "  ".join(f"{cell(c):<19}" for c in cols[1:]))
rss = [float(x) for x in re.findall(r"([\d.]+) KiB per pending request", text)]
mib = [float(x) for x in re.findall(r"rss: (\d+) MiB", text)]
pend = re.search(r"with (\d+) pending requests", text)
if rss:
    print(f"rss: {statistics.median(mib):.0f} MiB ({min(mib):.0f}–{max(mib):.0f}) with {pend.group(1)} pending: "
          f"{statistics.median(rss):.2f} KiB per pending request ({min(rss):.2f}–{max(rss):.2f}), n={len(rss)}")
PY
