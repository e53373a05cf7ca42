#!/usr/bin/env bash
# Installs what the browser test needs when it is missing: Debian's Chromium, and
# playwright-core (driver only, no browser download) into tests/browser/node_modules from its
# package-lock.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
browser_dir="$here/../tests/browser"

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "installing Debian's chromium for the browser test" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends chromium >&2 \
    || { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends chromium >&2; }
fi

stamp="$browser_dir/node_modules/.package-lock.json"
if [ ! -d "$browser_dir/node_modules/playwright-core" ] || [ "$browser_dir/package-lock.json" -nt "$stamp" ]; then
  echo "installing playwright-core for the browser test" >&2
  (cd "$browser_dir" && npm ci --no-audit --no-fund >&2)
fi
