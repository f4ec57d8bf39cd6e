#!/usr/bin/env bash
# The GraphQL fragment fan-out of the hardening issue: 25 fragments, each spreading the next
# one twice (2^25 fields from about 1 KB), sent to a server started on a fresh SQLite database,
# first with __typename as the leaf and then with createApprovalRequest. Prints, for each
# document, the status, the median time to answer over RUNS calls (min–max), how many requests
# exist afterwards, and the server's peak resident memory (VmHWM).
# Usage: bench/graphql-fanout.sh [path/to/countersign] [runs]   (defaults: target/release, 10)
set -euo pipefail
BIN=$(realpath "${1:-target/release/countersign}")
RUNS=${2:-10}
PORT=28491
DIR=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$DIR"' EXIT
cd "$DIR"
cat > cs.hcl <<HCL
server {
  listen     = "127.0.0.1:$PORT"
  public_url = "http://127.0.0.1:$PORT"
  database   = "sqlite://cs.db"
}
user "bob@example.com" {}
app "ci" { roles = ["request_approval"] }
resource "deploy" {
  description  = "A deploy"
  max_duration = "1h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
HCL
python3 - <<'PY'
import json
for name, op, on, leaf in [
    ("typename", "query", "Query", "__typename"),
    ("create", "mutation", "Mutation",
     'createApprovalRequest(request: {requestType: "deploy", purpose: "x"}) { id }'),
]:
    q = op + " { ...F0 }\n"
    for i in range(25):
        q += f"fragment F{i} on {on} {{ ...F{i + 1} ...F{i + 1} }}\n"
    q += f"fragment F25 on {on} {{ {leaf} }}\n"
    open(f"{name}.json", "w").write(json.dumps({"query": q}))
PY
"$BIN" serve --config cs.hcl > server.log 2>&1 & PID=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
TOKEN=$("$BIN" token create --config cs.hcl --app ci)
for doc in typename create; do
  times=()
  for _ in $(seq "$RUNS"); do
    out=$(curl -s -o answer.json -w '%{http_code} %{time_total}' --max-time 120 \
      -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      --data-binary @"$doc.json" "http://127.0.0.1:$PORT/graphql")
    times+=("${out#* }")
  done
  count=$(python3 -c 'import sqlite3; print(sqlite3.connect("file:cs.db?mode=ro", uri=True).execute("select count(*) from requests").fetchone()[0])')
  python3 - "$doc" "${out% *}" "$count" "$(wc -c < "$doc.json")" "${times[@]}" <<'PY'
import statistics, sys
doc, status, count, size, *t = sys.argv[1:]
ms = sorted(float(x) * 1000 for x in t)
print(f"{doc}: {size} bytes, HTTP {status}, median {statistics.median(ms):.1f} ms "
      f"({ms[0]:.1f}-{ms[-1]:.1f}) over {len(ms)} calls, requests created: {count}")
PY
done
echo "server peak memory: $(awk '/VmHWM/{print $2, $3}' "/proc/$PID/status")"
head -c 300 answer.json; echo
