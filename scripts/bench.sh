#!/usr/bin/env bash
# `make bench`: builds every function the way it is deployed and measures it, then writes the
# tables into BENCHMARKS.md between the markers, with the machine they ran on. Every table
# carries a baseline measured in the same run.
#
# 1. cargo-lambda (pinned, from PyPI, with a pinned zig) builds the release bootstraps for arm64
#    as deployed (zipped: their sizes are what Lambda loads), and for this machine's x86_64 to
#    run them here.
# 2. Under moto: the in-process benches (bench profile), and cold start, warm invocations and
#    peak RSS of each x86_64 bootstrap through a Runtime API emulator (scripts/cold_start.py),
#    with the Stripe sandbox as a process of its own and the secrets read, as deployed, through
#    a stand-in of the Parameters and Secrets extension.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  exec scripts/with-moto.sh "$0" "$@"
fi

venv=$(scripts/python-venv.sh lambda-build 'cargo-lambda==1.9.2' 'ziglang==0.13.0')
export PATH="$venv/bin:$PATH"
functions=(lambda-baseline dynamodb-floor create-subscription get-subscription patch-subscription subscription-lifecycle
  stripe-events stripe-eventbridge signup-listener stripe-webhook
  remote-billing-server remote-billing-pages invoice-plans invoice-entity)
lambda_packages=()
for f in "${functions[@]}"; do lambda_packages+=(-p "$f"); done
cargo lambda build --release --arm64 --output-format zip "${lambda_packages[@]}" --lambda-dir target/lambda-arm64 >&2
cargo lambda build --release --x86-64 "${lambda_packages[@]}" --lambda-dir target/lambda-x86_64 >&2

# One package set for every in-process cargo call: a different set unifies features
# differently and rebuilds the whole tree.
bench_packages=(-p create-subscription -p get-subscription -p patch-subscription -p signup-listener -p stripe-webhook
  -p remote-billing-server -p remote-billing-pages -p invoice-plans -p invoice-entity -p stripe-sandbox)
cargo bench --no-run "${bench_packages[@]}" >&2
cargo build --profile bench --bins "${bench_packages[@]}" >&2

prices=()
for plan in pending free basic_monthly basic_annual business_monthly business_annual; do
  prices+=(--price "price_$plan:800:month")
done
sandbox_log=$(mktemp)
target/release/stripe-sandbox --port 0 "${prices[@]}" >"$sandbox_log" 2>/dev/null &
sandbox_pid=$!
trap 'kill $sandbox_pid 2>/dev/null || true; rm -f "$sandbox_log"' EXIT
for _ in $(seq 1 100); do
  sandbox=$(grep -o 'http://127.0.0.1:[0-9]*/' "$sandbox_log" || true)
  [ -n "$sandbox" ] && break
  sleep 0.1
done
[ -n "$sandbox" ] || { echo "the Stripe sandbox did not start" >&2; exit 1; }

moto_python=$(scripts/python-venv.sh moto 'moto[dynamodb]==5.2.5' 'flask==3.1.3' 'flask-cors==6.0.5')/bin/python
out=$(mktemp)
{
  echo "Measured $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' with local changes') on $(nproc) cores ($(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), Rust $(rustc --version | cut -d' ' -f2), cargo-lambda 1.9.2, zig 0.13.0."
  echo
  echo "### Cold start, warm invocations and memory of each bootstrap (x86_64 release build, Runtime API emulator, DynamoDB and SES in moto, Stripe sandbox, secrets through the extension's stand-in)"
  echo
  # A moto of its own: hundreds of tables made and dropped leave moto slower for the in-process
  # benches that follow (their DynamoDB calls then time out), which DynamoDB would not be.
  scripts/with-moto.sh "$moto_python" scripts/cold_start.py --bin-dir target/lambda-x86_64 --sandbox "$sandbox" --runs 20 --warm 20
  echo
  echo "### Size of each bootstrap"
  echo
  echo "| function | arm64 bootstrap.zip (deployed) | zip in bytes | arm64 bootstrap | x86_64 bootstrap | zip ratio to baseline | zip ratio to DynamoDB floor |"
  echo "|---|---|---|---|---|---|---|"
  base_zip=$(stat -c %s target/lambda-arm64/lambda-baseline/bootstrap.zip)
  floor_zip=$(stat -c %s target/lambda-arm64/dynamodb-floor/bootstrap.zip)
  for f in "${functions[@]}"; do
    zip=$(stat -c %s "target/lambda-arm64/$f/bootstrap.zip")
    arm=$(unzip -l "target/lambda-arm64/$f/bootstrap.zip" | awk '$4 == "bootstrap" {print $1}')
    x86=$(stat -c %s "target/lambda-x86_64/$f/bootstrap")
    name=$f; [ "$f" = lambda-baseline ] && name="baseline: empty lambda_http function"
    [ "$f" = dynamodb-floor ] && name="baseline: DynamoDB floor (one GetItem)"
    awk -v n="$name" -v z="$zip" -v a="$arm" -v x="$x86" -v b="$base_zip" -v f="$floor_zip" \
      'BEGIN { printf "| %s | %.2f MiB | %d | %.2f MiB | %.2f MiB | %.2f | %.2f |\n", n, z/1048576, z, a/1048576, x/1048576, z/b, z/f }'
  done
  echo
  bench() { # <section title> <bench name>
    echo "### $1"
    echo
    cargo bench -q "${bench_packages[@]}" --bench "$2"
    echo
  }
  bench "Warm latency in-process: POST /subscriptions (administrator, new user)" create_latency
  bench "Warm latency in-process: GET /subscriptions/{id}" get_latency
  bench "Warm latency in-process: PATCH /subscriptions/{id} (one Stripe update each)" patch_latency
  bench "Signup consumer: batches of 10 profile-created events" throughput
  bench "Stripe webhook: acknowledgement latency" ack_latency
  bench "Remote billing: POST /api/v1/remotes/server/billing (a returning realm)" billing_link_latency
  bench "Remote billing: GET /remote-billing-login/{token}" login_page_latency
  bench "Self-hosted invoicing run: time per due plan at 1,000 and 10,000 due plans (embedded store in memory, Stripe in memory)" invoicing_scale
  bench "Self-hosted invoicing through the queue: 10,000 due entities, 20 consumers at once, the Stripe sandbox answering in 300 ms (embedded store in memory)" invoicing_queue
} > "$out"
cat "$out"
python3 - "$out" <<'PY'
import sys, re
results = open(sys.argv[1]).read().strip()
path = "BENCHMARKS.md"
text = open(path).read()
start, end = "<!-- results:start -->", "<!-- results:end -->"
text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: start + "\n" + results + "\n" + end, text, flags=re.S)
open(path, "w").write(text)
PY
