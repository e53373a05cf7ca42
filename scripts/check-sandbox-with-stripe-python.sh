#!/usr/bin/env bash
# Checks the Stripe sandbox with Stripe's official Python library (pinned, in a cached venv):
# starts the sandbox binary on a free port, runs the checks, stops it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$("$root/scripts/python-venv.sh" stripe-python 'stripe==16.1.0')
cargo build -q -p stripe-sandbox --bin stripe-sandbox
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$root/target/debug/stripe-sandbox" --port "$port" --price price_monthly:1000:month --price price_annual:10000:year >/dev/null 2>&1 &
sandbox=$!
trap 'kill $sandbox 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS -u sk_test_x: "http://127.0.0.1:$port/v1/prices" >/dev/null 2>&1 && break
  sleep 0.1
done
"$venv/bin/python" "$root/local/stripe-sandbox/checks/official_python_client.py" "http://127.0.0.1:$port"
