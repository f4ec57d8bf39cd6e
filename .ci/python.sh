#!/usr/bin/env bash
# Creates a virtual environment with the Python clients and validators the interface tests run
# (tests/python/requirements.txt), installing Debian's python3-venv first when it is missing.
# Prints the environment's python on its last line, for COUNTERSIGN_TEST_PYTHON.
# Usage: .ci/python.sh [venv-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-/tmp/countersign-ci-venv}"

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "installing python3-venv" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq python3-venv >&2
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" >&2
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r tests/python/requirements.txt >&2
echo "$VENV/bin/python"
