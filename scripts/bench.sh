#!/usr/bin/env bash
# Runs the benchmarks and writes their tables into BENCHMARKS.md between the markers, with the
# machine they ran on. Each table carries its own baseline, measured in the same run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# One package set for every cargo call: a different set unifies features differently and
# rebuilds the whole tree.
packages=(-p signup-listener -p stripe-webhook)
cargo bench --no-run "${packages[@]}" >&2
out=$(mktemp)
{
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))."
  echo
  echo "### Signup consumer: batches of 10 profile-created events (embedded store, Stripe sandbox)"
  echo
  cargo bench -q "${packages[@]}" --bench throughput 2>/dev/null
  echo
  echo "### Stripe webhook: acknowledgement latency (embedded store)"
  echo
  cargo bench -q "${packages[@]}" --bench ack_latency 2>/dev/null
} > "$out"
cat "$out"
python3 - "$out" <<'PY'
import sys, re
results = open(sys.argv[1]).read().strip()
path = "BENCHMARKS.md"
text = open(path).read()
start, end = "<!-- results:start -->", "<!-- results:end -->"
text = re.sub(re.escape(start) + ".*?" + re.escape(end), start + "\n" + results + "\n" + end, text, flags=re.S)
open(path, "w").write(text)
PY
