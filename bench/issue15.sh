#!/usr/bin/env bash
# Reproduces issue 15's notification figures in docs/benchmarks.md: three bursts of 10,000
# requests whose reviewers are emailed (countersign-bench notify), then five interleaved pairs
# of the SQLite workflow bench with notifications off and on (--email). The mail server is
# tests/python/smtp_sink.py in its counting mode, a real SMTP server (aiosmtpd).
#   bash bench/issue15.sh [PYTHON]
# PYTHON is an interpreter with aiosmtpd (requirements.txt); by default the one
# COUNTERSIGN_TEST_PYTHON names, as `bash .ci/python.sh` prints it.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${COUNTERSIGN_TEST_PYTHON:?give a python with aiosmtpd, or set COUNTERSIGN_TEST_PYTHON}}
cargo build --release -p countersign-bench >/dev/null 2>&1 || { echo "build failed" >&2; exit 1; }
B=target/release/countersign-bench
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
sink() { # PORT FILE: a counting SMTP server on loopback, once it says it is ready
  "$PY" tests/python/smtp_sink.py "$1" "$2" --count > "$dir/sink-$1.log" 2>&1 &
  for _ in $(seq 50); do grep -q ready "$dir/sink-$1.log" 2>/dev/null && return; sleep 0.2; done
  echo "the SMTP server on $1 did not start" >&2; exit 1
}
sink 2631 "$dir/burst.count"
for i in 1 2 3; do
  echo "== notify burst $i"
  "$B" notify --smtp 127.0.0.1:2631 --count-file "$dir/burst.count" --requests 10000
done
sink 2632 "$dir/workflow.count"
for i in 1 2 3 4 5; do
  echo "== off $i"; "$B" workflow --concurrency 256 --seconds 20 --warmup 3 | grep -E "workflows/s|errors"
  echo "== on  $i"; "$B" workflow --concurrency 256 --seconds 20 --warmup 3 --email 127.0.0.1:2632 | grep -E "workflows/s|errors"
done
