#!/usr/bin/env bash
# Fuzzes the JSON API with schemathesis against the local server, as an administrator and as a
# user: every answer must be a non-5xx that docs/openapi.yaml describes (status, content type,
# headers, body). Bounded in time: a few examples per operation and phase.
# Usage: scripts/fuzz-api.sh [EXAMPLES_PER_OPERATION]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
examples=${1:-${FUZZ_EXAMPLES:-50}}
venv=$("$here/python-venv.sh" schemathesis 'schemathesis==4.32.5')
cargo build -q -p devserver
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data=$(mktemp -d -t fuzz-api.XXXXXX)
banner="$data/banner.txt"
DEV_JWT_SECRET="fuzz-$(date +%s%N)" "$root/target/debug/devserver" --port "$port" --stripe-port 0 \
  --data-dir "$data/store" >"$banner" 2>"$data/server.log" &
server=$!
stop() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap stop EXIT INT TERM
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$port/_local/health" >/dev/null 2>&1; then ready=1; break; fi
  if ! kill -0 "$server" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "${ready:-}" ]; then
  echo "the local server did not start:" >&2; cat "$data/server.log" >&2; exit 1
fi
token() { sed -n "s/^ *export $1=//p" "$banner" | head -1; }
admin=$(token ADMIN_TOKEN); user=$(token USER_TOKEN)
if [ -z "$admin" ] || [ -z "$user" ]; then
  echo "the local server printed no tokens:" >&2; cat "$banner" >&2; exit 1
fi
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection
status=0
for who in admin user; do
  case $who in admin) bearer=$admin ;; user) bearer=$user ;; esac
  echo "schemathesis as the $who, $examples examples per operation" >&2
  # (from the scratch directory: schemathesis keeps a cache in its working directory)
  (cd "$data" && "$venv/bin/st" run "$root/docs/openapi.yaml" --url "http://127.0.0.1:$port" \
    --header "Authorization: Bearer $bearer" --checks "$checks" --max-examples "$examples" \
    --phases examples,fuzzing --workers 2 --generation-database none \
    --request-timeout 20 --no-color --max-failures 20 --warnings off) || status=$?
done
# What the server answered, by status: the fuzzing reached the handlers, not only the gateway.
echo "answers by status:" >&2
# (the server logs to standard output, after its banner; colours stripped)
sed 's/\x1b\[[0-9;]*m//g' "$banner" > "$data/answers.log"
grep -o 'status=[0-9]*' "$data/answers.log" | sort | uniq -c >&2 || true
if grep -q 'status=5' "$data/answers.log"; then
  echo "the server answered a 5xx:" >&2; grep 'status=5' "$data/answers.log" | head -20 >&2; status=1
fi
if [ "$status" -ne 0 ]; then
  echo "schemathesis found failures; the server's log:" >&2; tail -50 "$data/answers.log" >&2
fi
exit "$status"
