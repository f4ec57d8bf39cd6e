#!/usr/bin/env bash
# Reproduces the policy figures in docs/benchmarks.md (issue 3): the per-decision cost of the
# fast-track hook (examples/policies) and of OPA's RBAC example, 5 runs of 20,000 evaluations.
#   bash bench/policy.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p countersign-bench >&2
./target/release/countersign-bench policy --runs "${1:-5}" --iterations 20000
