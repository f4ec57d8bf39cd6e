#!/usr/bin/env bash
# Provides `promtool`, Prometheus's own checker of the text format, for the /metrics test. It
# comes from Debian's `prometheus` package, unpacked rather than installed, so that no
# Prometheus server is set up or started. Prints promtool's path on its last line, for
# COUNTERSIGN_TEST_PROMTOOL.
# Usage: .ci/promtool.sh [dir]
set -euo pipefail
DIR="${1:-/tmp/countersign-ci-promtool}"

if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi
if [ ! -x "$DIR/usr/bin/promtool" ]; then
  echo "unpacking promtool from Debian's prometheus package" >&2
  mkdir -p "$DIR"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2
  fi
  (cd "$DIR" && rm -f prometheus_*.deb && apt-get download prometheus >&2)
  dpkg-deb -x "$DIR"/prometheus_*.deb "$DIR"
fi
"$DIR/usr/bin/promtool" --version >&2
echo "$DIR/usr/bin/promtool"
