#!/usr/bin/env bash
# Runs a command with a moto server (DynamoDB, SQS, SES) on a free 127.0.0.1 port.
# Exports AWS_ENDPOINT_URL, AWS_REGION and test credentials for the command, and stops the
# server when the command ends, whether it passed or failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=$("$here/python-venv.sh" moto 'moto[dynamodb]==5.2.5' 'flask==3.1.3' 'flask-cors==6.0.5')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp -t moto.XXXXXX.log)
"$venv/bin/python" "$here/moto_server.py" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
stop_moto() { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; rm -f "$log"; }
trap stop_moto EXIT INT TERM
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then ready=1; break; fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "${ready:-}" ]; then
  echo "moto did not start on 127.0.0.1:$port:" >&2; cat "$log" >&2; exit 1
fi
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
unset AWS_PROFILE AWS_SESSION_TOKEN
echo "moto listening on $AWS_ENDPOINT_URL" >&2
set +e
"$@"
status=$?
set -e
exit "$status"
