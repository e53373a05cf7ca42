#!/usr/bin/env bash
# Creates (once) and prints the path of a cached Python virtualenv holding pinned packages.
# Usage: python-venv.sh NAME PACKAGE==VERSION...
# The venv lives under ${BILLING_CACHE_DIR:-$HOME/.cache/billing}/NAME-<hash of the pins>, so a
# change of pins builds a new one and an unchanged set is reused across runs.
set -euo pipefail
name=$1; shift
cache=${BILLING_CACHE_DIR:-$HOME/.cache/billing}
hash=$(printf '%s\n' "$@" | sha256sum | cut -c1-12)
venv="$cache/$name-$hash"
if [ ! -x "$venv/.ready" ]; then
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" >&2
  printf '#!/bin/sh\n' > "$venv/.ready" && chmod +x "$venv/.ready"
fi
printf '%s\n' "$venv"
