#!/usr/bin/env bash
# Checks the Stripe sandbox with Stripe's official Python library (pinned, in a cached venv):
# starts the sandbox binary on a free port, runs the checks, then checks
# scripts/create-stripe-prices.sh against it and SSM in moto, and stops it. Run it under
# scripts/with-moto.sh (make test does).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  echo "AWS_ENDPOINT_URL is not set: run this under scripts/with-moto.sh (the prices script writes to SSM)" >&2
  exit 1
fi
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
prices_venv=$("$root/scripts/python-venv.sh" stripe-prices 'stripe==16.1.0' 'boto3==1.44.8')
"$prices_venv/bin/python" "$root/local/stripe-sandbox/checks/create_stripe_prices.py" "http://127.0.0.1:$port"
