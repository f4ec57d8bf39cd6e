#!/usr/bin/env bash
# Prepares the portal's end-to-end test: Debian's Chromium and ChromeDriver (installed when
# missing), and the OpenID Connect provider it signs in with (`npm ci` in tests/oidc, from the
# lock file). Node.js comes with the machine. Prints nothing on stdout; the browser test is
# #[ignore]d and runs under `cargo test -- --include-ignored`. Usage: .ci/browser.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "installing chromium and chromium-driver" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq chromium chromium-driver >&2
fi
command -v node >/dev/null || {
  echo "node is missing: the OIDC provider of the portal tests needs Node.js" >&2
  exit 1
}
npm ci --prefix tests/oidc --no-audit --no-fund >&2
