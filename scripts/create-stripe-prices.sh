#!/usr/bin/env bash
# Creates the Stripe products and prices the plans are billed at and stores each price's id in
# SSM Parameter Store, where template.yaml reads it (plain String parameters: prices are not
# secret). Runs Stripe's official Python library and boto3 from a cached venv.
#
#   STRIPE_SECRET_KEY=sk_test_... scripts/create-stripe-prices.sh [--prefix /billing/stripe/prices]
#       [--price PLAN:AMOUNT:INTERVAL ...] [--currency usd] [--live] [--stripe-api-base URL]
#
# Safe to run again: products have fixed ids (billing_<product>), prices are found by their
# lookup key (billing_<plan>) and kept when unchanged; a changed amount makes a new price that
# takes the lookup key over. AWS credentials and region come from the usual AWS variables or
# profile. A live key (sk_live_) is refused unless --live is given.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$("$root/scripts/python-venv.sh" stripe-prices 'stripe==16.1.0' 'boto3==1.44.8')
exec "$venv/bin/python" "$root/scripts/stripe_prices.py" "$@"
