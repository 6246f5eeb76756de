#!/usr/bin/env bash
# Debian's headless-capable Chromium, for the dashboard's browser test: scripts/chromium.sh path
# Prints the path of the chromium binary, installing the package once with apt-get (about a
# minute, ~300 MB) when it is missing. Idempotent. Exit 3 ("unavailable") when it cannot be
# installed here (no apt-get, not root), for tests to skip on.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "${here}/lib.sh"
[ "${1:-}" = path ] && [ $# -eq 1 ] || { echo "usage: $0 path" >&2; exit 2; }

if ! command -v chromium >/dev/null; then
  command -v apt-get >/dev/null || unavailable "no apt-get to install chromium with"
  [ "$(id -u)" = 0 ] || unavailable "installing chromium needs root (apt-get install chromium)"
  mkdir -p "$RUN_DIR"
  lock_service chromium-install
  require chromium chromium
fi
command -v chromium
