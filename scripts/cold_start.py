#!/usr/bin/env python3
"""Cold start, warm invocations and peak memory of each function's release `bootstrap`, through
a Lambda Runtime API emulator on 127.0.0.1.

For every run a fresh emulator and a fresh process: cold start is the time from starting the
process to the emulator receiving its first response (runtime start, configuration, clients,
the first request's work). Then `--warm` more invocations through the same process give the
warm latency as the runtime sees it, and /proc gives the peak RSS (VmHWM).

The environment is what Lambda gives a function: credentials in variables (no IMDS lookups),
region, the runtime's own variables, and the function's configuration. DynamoDB and SES are
moto (`AWS_ENDPOINT_URL`, plain HTTP on loopback), Stripe is the sandbox (`--sandbox`).

Secrets take the deployed path: a function gets the `*_SECRET_ID` variables template.yaml gives
it and reads them at start from a stand-in of the Parameters and Secrets extension on loopback
(answering at once, as the real one does from its cache; a cache miss adds one Secrets Manager
call, made by the extension, which no local measurement includes). One extra row runs the
webhook with its secrets as plain variables: the difference is the secrets path's own cost.
Every function also writes its metrics (`METRICS_NAMESPACE`); the table counts the documents.

usage: cold_start.py --bin-dir target/lambda --sandbox http://127.0.0.1:PORT/ [--runs 20] [--warm 50]
Prints a markdown table; `--json FILE` also writes the raw numbers.
"""

import argparse
import base64
import copy
import hashlib
import hmac
import http.server
import json
import os
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
WEBHOOK_SECRET = "whsec_cold_start_bench"
TOKEN_KEY = base64.b64encode(b"k" * 32).decode()


class Emulator:
    """The Runtime API: hands out queued events, collects responses with their arrival time."""

    def __init__(self):
        self.events = queue.Queue()
        self.responses = {}
        self.first_poll = None
        self.arrived = threading.Condition()
        emulator = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status, body=b"", headers=()):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 (the standard library's name)
                if self.path != "/2018-06-01/runtime/invocation/next":
                    return self._answer(404)
                if emulator.first_poll is None:
                    emulator.first_poll = time.perf_counter()
                request_id, body = emulator.events.get()
                deadline = int(time.time() * 1000) + 30_000
                self._answer(200, body, [
                    ("Content-Type", "application/json"),
                    ("Lambda-Runtime-Aws-Request-Id", request_id),
                    ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                    ("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:bench"),
                    ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0"),
                ])

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                now = time.perf_counter()
                parts = self.path.strip("/").split("/")
                # 2018-06-01/runtime/invocation/<id>/response|error, or 2018-06-01/runtime/init/error
                if len(parts) == 5 and parts[2] == "invocation":
                    outcome = parts[4]
                    request_id = parts[3]
                elif parts[2:] == ["init", "error"]:
                    outcome, request_id = "init_error", "init"
                else:
                    return self._answer(404)
                with emulator.arrived:
                    emulator.responses[request_id] = (now, outcome, body)
                    emulator.arrived.notify_all()
                self._answer(202, b"{}", [("Content-Type", "application/json")])

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a measured process is killed while it waits for its next event

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self):
        host, port = self.server.server_address
        return f"{host}:{port}"

    def invoke(self, event, timeout=20.0):
        request_id = str(uuid.uuid4())
        self.events.put((request_id, json.dumps(event).encode()))
        return request_id

    def wait(self, request_id, timeout=20.0):
        deadline = time.monotonic() + timeout
        with self.arrived:
            while request_id not in self.responses and "init" not in self.responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no response to {request_id}")
                self.arrived.wait(left)
            if "init" in self.responses:
                raise RuntimeError(f"init error: {self.responses['init'][2][:500]!r}")
            return self.responses[request_id]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class SecretsExtension:
    """The Parameters and Secrets extension's local endpoint: `GET /secretsmanager/get?secretId=`
    for holders of the session token, answered from memory."""

    def __init__(self, secrets, token):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 (the standard library's name)
                from urllib.parse import parse_qs, urlparse

                url = urlparse(self.path)
                secret_id = parse_qs(url.query).get("secretId", [""])[0]
                if self.headers.get("X-Aws-Parameters-Secrets-Token") != token:
                    status, body = 401, b""
                elif url.path != "/secretsmanager/get" or secret_id not in secrets:
                    status, body = 400, b"ResourceNotFoundException"
                else:
                    status, body = 200, json.dumps({"Name": secret_id, "SecretString": secrets[secret_id]}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self.server.server_address[1]


def template_functions():
    """template.yaml's functions by the binary they run: their environment variables."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: node.value if hasattr(node, "value") else None)
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    functions = {}
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function":
            binary = resource["Metadata"]["BuildProperties"]["Binary"]
            functions[binary] = (resource["Properties"].get("Environment") or {}).get("Variables") or {}
    return functions


# What the secrets' ids name: the values the plain variables held.
SECRET_VALUES = {}


def sample(name):
    return json.loads((EVENTS / name).read_text())


def api_event(name, body=None, path=None, parameters=None, route=None, caller=None, headers=None):
    event = sample(name)
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    if path is not None:
        event["rawPath"] = path
        event["requestContext"]["http"]["path"] = path
    if parameters is not None:
        event["pathParameters"] = parameters
    if route is not None:
        event["routeKey"] = route
        event["requestContext"]["routeKey"] = route
        event["requestContext"]["http"]["method"] = route.split(" ")[0]
    if caller is not None:
        user, scope = caller
        event["requestContext"]["authorizer"] = {"jwt": {"claims": {"sub": user, "scope": scope}, "scopes": None}}
    if headers:
        event["headers"].update(headers)
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    return event


class Workload:
    """The first request each function gets: real work on fresh data, the same kind every run."""

    def __init__(self):
        # Per run of create-subscription: the users it made subscriptions for, and their
        # Stripe subscriptions (for the webhook's events). Run r of get, patch and the webhook
        # works on what run r of create made, in the same table.
        self.subscriptions = {}
        self.stripe_subscriptions = {}
        self.webhook_events = 0

    def observe(self, function, run, body):
        """Remembers what a response says that later requests need."""
        if function == "create-subscription":
            answer = json.loads(body)
            text = answer["body"]
            if answer.get("isBase64Encoded"):
                text = base64.b64decode(text)
            created = json.loads(text)["subscriptions"][0]
            self.stripe_subscriptions.setdefault(run, []).append(created["stripe_subscription"])

    def stripe_event(self, run, n):
        """A newer event each time, for a subscription create-subscription made: the full path
        (lookup, once-only record, write, ordering mark, kept event), not the unknown-subscription
        one."""
        payload = json.loads((EVENTS / "stripe-customer-subscription-updated.json").read_text())
        self.webhook_events += 1
        payload["id"] = "evt_bench" + uuid.uuid4().hex[:16]
        payload["created"] = int(time.time()) + self.webhook_events
        stripe_subscription = self.stripe_subscriptions[run][n % len(self.stripe_subscriptions[run])]
        payload["data"]["object"]["id"] = stripe_subscription
        payload["data"]["object"]["status"] = ["active", "past_due"][self.webhook_events % 2]
        return payload

    def event(self, function, run, n):
        """The `n`th request (0: the cold one) of run `run`."""
        if function == "lambda-baseline":
            return api_event("apigw-get-subscription.json")
        if function == "dynamodb-floor":
            user = str(uuid.uuid4())
            return api_event("apigw-get-subscription.json", path=f"/subscriptions/{user}",
                             parameters={"id": user}, caller=(user, "subscriptions"))
        if function == "create-subscription":
            user = str(uuid.uuid4())
            self.subscriptions.setdefault(run, []).append(user)
            return api_event("apigw-create-subscription.json",
                             body={"user_id": user, "email": f"bench-{user[:8]}@example.com"},
                             caller=(str(uuid.uuid4()), "subscriptions subscriptions_admin"))
        if function == "get-subscription":
            user = self.subscriptions[run][n % len(self.subscriptions[run])]
            return api_event("apigw-get-subscription.json", path=f"/subscriptions/{user}",
                             parameters={"id": user}, caller=(user, "subscriptions"))
        if function == "patch-subscription":
            users = self.subscriptions[run]
            user = users[n % len(users)]
            # Each request changes its subscription: the first pass over the run's subscriptions
            # sets the flag, the next clears it.
            event = api_event("apigw-patch-subscription.json", path=f"/subscriptions/{user}",
                              parameters={"id": user}, caller=(user, "subscriptions"),
                              body={"cancel_at_period_end": n // len(users) % 2 == 0})
            event["headers"].pop("if-match", None)
            return event
        if function == "subscription-lifecycle":
            # A read of the subscriber's invoices: the subscription from the table, the list from
            # Stripe.
            user = self.subscriptions[run][n % len(self.subscriptions[run])]
            return api_event("apigw-subscription-invoices.json", path=f"/subscriptions/{user}/invoices",
                             parameters={"id": user}, caller=(user, "subscriptions"))
        if function == "signup-listener":
            # The sample's records made valid signups all (it also carries a poison message and
            # another event type, which the tests cover): a full batch of real work.
            event = sample("sqs-signup-batch.json")
            for record in event["Records"]:
                user = str(uuid.uuid4())
                record["body"] = json.dumps({
                    "type": "profile.created", "event_id": str(uuid.uuid4()), "user_id": user,
                    "email": f"signup-{user[:8]}@example.com",
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                })
                record["messageId"] = str(uuid.uuid4())
            return event
        if function == "stripe-webhook":
            body = json.dumps(self.stripe_event(run, n))
            stamp = str(int(time.time()))
            signature = hmac.new(WEBHOOK_SECRET.encode(), f"{stamp}.{body}".encode(), hashlib.sha256).hexdigest()
            return api_event("apigw-stripe-webhook.json", body=body,
                             headers={"stripe-signature": f"t={stamp},v1={signature}"})
        if function == "stripe-eventbridge":
            envelope = sample("eventbridge-stripe-event.json")
            envelope["detail"] = self.stripe_event(run, n)
            envelope["detail-type"] = envelope["detail"]["type"]
            envelope["id"] = str(uuid.uuid4())
            return envelope
        if function == "stripe-events":
            # The administrators' review of kept events: one page of one outcome.
            return api_event("apigw-stripe-events-list.json", caller=(str(uuid.uuid4()), "subscriptions subscriptions_admin"))
        if function == "invoice-plans":
            # The daily schedule's event: every plan due now (none in a fresh table: the read of
            # the due-date index and the report).
            return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event",
                    "source": "aws.events", "detail": {}}
        if function == "invoice-entity":
            # One message of the invoicing queue for a server with nothing due (a fresh table):
            # the read of its runs and plan, and the acknowledgement.
            event = sample("sqs-signup-batch.json")
            record = dict(event["Records"][0])
            record["messageId"] = str(uuid.uuid4())
            record["body"] = json.dumps({"entity": {"kind": "server", "uuid": str(uuid.uuid4())},
                                         "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            event["Records"] = [record]
            return event
        if function == "remote-billing-server":
            event = api_event("apigw-remote-server-register.json")
            body = json.loads(event["body"])
            body["server_uuid"] = str(uuid.uuid4())
            event["body"] = json.dumps(body)
            # Each registration from an address of its own: the function allows ten an hour per
            # address, and the measurement is of registering, not of refusing.
            number = uuid.uuid4().int
            event["requestContext"]["http"]["sourceIp"] = f"10.{number % 256}.{number // 256 % 256}.{number // 65536 % 256}"
            return event
        if function == "remote-billing-pages":
            realm = str(uuid.uuid4())
            return api_event("apigw-remote-billing-login.json", route="GET /realm/{realm_uuid}/{page}",
                             path=f"/realm/{realm}/billing/", parameters={"realm_uuid": realm, "page": "billing"})
        raise ValueError(function)


def environment(function, runtime_api, sandbox, table, secrets_port=None):
    """Lambda's variables and the function's. With `secrets_port`, the secrets the template
    names by id are read through the extension there, as deployed; without, they are plain
    variables."""
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": "bootstrap",
        "TZ": ":UTC",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "BILLING_TABLE": table,
        "CORS_ALLOWED_ORIGINS": "https://app.example.com",
        "STRIPE_SECRET_KEY": "sk_test_cold_start",
        "STRIPE_API_BASE": sandbox,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MAIL_FROM": "billing@example.com",
        "PUBLIC_BASE_URL": "https://billing.example.com",
        "BILLING_TOKEN_KEY": TOKEN_KEY,
        "RUST_LOG": "warn",
        "INVOICING_QUEUE_URL": invoicing_queue(),
    }
    for plan in ["pending", "free", "basic_monthly", "basic_annual", "business_monthly", "business_annual"]:
        env[f"STRIPE_PRICE_{plan.upper()}"] = f"price_{plan}"
    env["METRICS_NAMESPACE"] = "Billing/bench"
    if secrets_port is not None:
        env["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"] = str(secrets_port)
        for variable in TEMPLATE_FUNCTIONS.get(function, {}):
            if variable.endswith("_SECRET_ID"):
                name = variable.removesuffix("_SECRET_ID")
                secret_id = f"bench/{name.lower()}"
                SECRET_VALUES[secret_id] = env.pop(name)
                env[variable] = secret_id
    return env


def invoicing_queue():
    """The FIFO invoicing queue in moto the scheduler enqueues on (made once)."""
    if invoicing_queue.url is None:
        import boto3

        sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        invoicing_queue.url = sqs.create_queue(QueueName="bench-invoicing.fifo",
                                               Attributes={"FifoQueue": "true"})["QueueUrl"]
    return invoicing_queue.url


invoicing_queue.url = None


def peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values, p):
    ordered = sorted(values)
    return ordered[round((len(ordered) - 1) * p)]


def failed_items(function, body):
    """How many items of one response failed: the SQS records the function hands back for
    redelivery, or the whole request when it answered 5xx."""
    answer = json.loads(body)
    if function in ("signup-listener", "invoice-entity"):
        return len(answer.get("batchItemFailures") or [])
    if function == "stripe-eventbridge":
        return 1 if answer.get("outcome") in ("failed", "refused") else 0
    if function == "invoice-plans":
        return sum(1 for outcome in answer.get("outcomes", []) if "Failed" in json.dumps(outcome))
    return 1 if answer.get("statusCode", 200) >= 500 else 0


def measure(row, function, bootstrap, args, workload, tables, secrets_port):
    init, cold, warm, rss = [], [], [], []
    warnings = failures = documents = 0
    for run in range(args.runs):
        table = tables.before(function, run)
        emulator = Emulator()
        env = environment(function, emulator.address, args.sandbox, table, secrets_port)
        first = workload.event(function, run, 0)
        request_id = emulator.invoke(first)
        # The function's log (the runtime writes it to stdout, as Lambda expects) goes to a
        # file, not a pipe nobody reads while it runs: a full pipe would block the function and
        # show up as latency.
        log = tempfile.TemporaryFile()
        started = time.perf_counter()
        process = subprocess.Popen([str(bootstrap)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            arrived, outcome, body = emulator.wait(request_id)
            if outcome != "response":
                raise RuntimeError(f"{function}: first invocation failed: {body[:500]!r}")
            answer = json.loads(body)
            status = answer.get("statusCode", 200)
            if status >= 500 or (function not in ("remote-billing-pages",) and status >= 400):
                raise RuntimeError(f"{function}: first invocation answered {status}: {answer}")
            failures += failed_items(function, body)
            workload.observe(function, run, body)
            cold.append((arrived - started) * 1000)
            init.append((emulator.first_poll - started) * 1000)
            for i in range(args.warm):
                event = workload.event(function, run, i + 1)
                sent = time.perf_counter()
                arrived, outcome, body = emulator.wait(emulator.invoke(event))
                if outcome != "response":
                    raise RuntimeError(f"{function}: invocation failed: {body[:500]!r}")
                failures += failed_items(function, body)
                workload.observe(function, run, body)
                warm.append((arrived - sent) * 1000)
            rss.append(peak_rss_mb(process.pid))
        except Exception:
            process.kill()
            process.wait()
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-3000:])
            raise
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            emulator.close()
        log.seek(0)
        lines = log.read().decode(errors="replace").splitlines()
        log.close()
        logged = [line for line in lines if re.search(r"\b(WARN|ERROR)\b", line)]
        documents += sum(1 for line in lines if line.startswith('{"_aws":'))
        tables.after(row, function, run)
        if logged and not warnings:
            print(f"{function}: first warning logged: {logged[0][:400]}", file=sys.stderr)
        warnings += len(logged)
    return {
        "init_p50": statistics.median(init),
        "init_p90": percentile(init, 0.9),
        "cold_p50": statistics.median(cold),
        "cold_p90": percentile(cold, 0.9),
        "cold_max": max(cold),
        "warm_p50": statistics.median(warm) if warm else float("nan"),
        "warm_p99": percentile(warm, 0.99) if warm else float("nan"),
        "rss_max": max(rss),
        "warnings": warnings,
        "failures": failures,
        "metric_documents": documents,
    }


def ensure_table(table):
    """The billing table in moto, created by the local server's own code path would need a
    build; the table's shape is read from template.yaml instead (a test keeps the two equal)."""
    import boto3
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    properties = template["Resources"]["BillingTable"]["Properties"]
    client = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_table(
        TableName=table,
        AttributeDefinitions=properties["AttributeDefinitions"],
        KeySchema=properties["KeySchema"],
        GlobalSecondaryIndexes=properties["GlobalSecondaryIndexes"],
        BillingMode="PAY_PER_REQUEST",
    )
    if ensure_table.identity_made:
        return
    ensure_table.identity_made = True
    ses = boto3.client("sesv2", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ses.create_email_identity(EmailIdentity="billing@example.com")


# create-subscription makes the subscriptions that get, patch and the webhook then work on, in
# one table.
CREATE_GROUP = ("create-subscription", "get-subscription", "patch-subscription", "subscription-lifecycle",
                "stripe-events", "stripe-eventbridge", "stripe-webhook")


class Tables:
    """The billing table of each run: a fresh one for every run, except that run r of get, patch
    and the webhook works in create's table of run r, dropped after the webhook's run r.

    moto copies a whole table for every item of a transaction (to roll back) and keeps every
    table in its one process, so tables filled by earlier runs would make every later write
    slower, which DynamoDB does not; each is dropped once measured."""

    def __init__(self):
        self.run_id = uuid.uuid4().hex[:8]
        self.made = set()

    def table(self, function, run):
        if function in CREATE_GROUP:
            return f"bench-{self.run_id}-create-subscription-{run}"
        return f"bench-{self.run_id}-{function}-{run}"

    def before(self, function, run):
        table = self.table(function, run)
        if table not in self.made:
            ensure_table(table)
            self.made.add(table)
        return table

    def after(self, row, function, run):
        if function in CREATE_GROUP and row != CREATE_GROUP[-1]:
            return
        import boto3

        client = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.delete_table(TableName=self.table(function, run))


ensure_table.identity_made = False

# (row, binary, secrets as plain variables): in this order, since the create group's table of a
# run is dropped after the webhook's row.
PLAIN_SECRETS_ROW = "stripe-webhook, secrets as plain variables (no extension calls)"
FUNCTIONS = [
    ("lambda-baseline", "lambda-baseline", False),
    ("dynamodb-floor", "dynamodb-floor", False),
    ("create-subscription", "create-subscription", False),
    ("get-subscription", "get-subscription", False),
    ("patch-subscription", "patch-subscription", False),
    ("subscription-lifecycle", "subscription-lifecycle", False),
    ("stripe-events", "stripe-events", False),
    ("stripe-eventbridge", "stripe-eventbridge", False),
    (PLAIN_SECRETS_ROW, "stripe-webhook", True),
    ("stripe-webhook", "stripe-webhook", False),
    ("signup-listener", "signup-listener", False),
    ("remote-billing-server", "remote-billing-server", False),
    ("remote-billing-pages", "remote-billing-pages", False),
    ("invoice-plans", "invoice-plans", False),
    ("invoice-entity", "invoice-entity", False),
]
TEMPLATE_FUNCTIONS = {}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", required=True, type=Path)
    parser.add_argument("--sandbox", required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warm", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if "AWS_ENDPOINT_URL" not in os.environ:
        sys.exit("AWS_ENDPOINT_URL is not set: run through scripts/with-moto.sh (make bench does)")
    workload = Workload()
    tables = Tables()
    TEMPLATE_FUNCTIONS.update(template_functions())
    extension = SecretsExtension(SECRET_VALUES, "testing")
    results = {}
    for row, function, plain_secrets in FUNCTIONS:
        bootstrap = args.bin_dir / function / "bootstrap"
        if not bootstrap.exists():
            sys.exit(f"{bootstrap} is missing: build with cargo lambda build --release (make bench does)")
        results[row] = measure(row, function, bootstrap, args, workload, tables,
                               None if plain_secrets else extension.port)
        print(f"measured {row}: {results[row]}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    base = results["lambda-baseline"]
    floor = results["dynamodb-floor"]
    names = {"lambda-baseline": "baseline: empty lambda_http function",
             "dynamodb-floor": "baseline: DynamoDB floor (one GetItem)"}
    print("| function | init p50 (start to first poll) | init p90 | init p50 ratio to DynamoDB floor "
          "| cold start p50 (start to first response) | p90 | max | cold p50 ratio to baseline "
          "| cold p50 ratio to DynamoDB floor | warm p50 (via Runtime API) | warm p99 | peak RSS | warnings logged "
          "| failed items | metric documents |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for function, r in results.items():
        print(f"| {names.get(function, function)} | {r['init_p50']:.1f} ms | {r['init_p90']:.1f} ms | "
              f"{r['init_p50'] / floor['init_p50']:.2f} | {r['cold_p50']:.1f} ms | "
              f"{r['cold_p90']:.1f} ms | {r['cold_max']:.1f} ms | {r['cold_p50'] / base['cold_p50']:.2f} | "
              f"{r['cold_p50'] / floor['cold_p50']:.2f} | "
              f"{r['warm_p50']:.2f} ms | {r['warm_p99']:.2f} ms | {r['rss_max']:.1f} MB | {r['warnings']} | {r['failures']} | {r['metric_documents']} |")



if __name__ == "__main__":
    main()
