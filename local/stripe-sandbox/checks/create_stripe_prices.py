"""Checks scripts/create-stripe-prices.sh against the Stripe sandbox and SSM in moto: the prices
it creates are what Stripe holds and what SSM names, a second run changes nothing, a changed
amount makes a new price that takes the lookup key over, and a live key is refused.

Usage (under scripts/with-moto.sh): python create_stripe_prices.py http://127.0.0.1:PORT
Prints one line per check and a closing "N passed, N failed" line; exits non-zero on failure.
"""

import os
import subprocess
import sys
import uuid

import boto3
import stripe

base = sys.argv[1].rstrip("/")
root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
script = os.path.join(root, "scripts", "create-stripe-prices.sh")
prefix = f"/check-{uuid.uuid4().hex[:8]}/prices"
client = stripe.StripeClient("sk_test_prices_check", base_addresses={"api": base}, max_network_retries=0)
ssm = boto3.client("ssm")
results = []
PLANS = {
    "pending": (0, "month"),
    "free": (0, "month"),
    "basic_monthly": (800, "month"),
    "basic_annual": (8000, "year"),
    "business_monthly": (1500, "month"),
    "business_annual": (15000, "year"),
}


def check(name):
    def run(fn):
        try:
            fn()
            results.append((name, None))
            print(f"ok   {name}")
        except Exception as error:  # noqa: BLE001 - report every failure and go on
            results.append((name, error))
            print(f"FAIL {name}: {error!r}")
        return fn

    return run


portal_parameter = prefix.replace("/prices", "/portal-configuration")


def run_script(*args, key="sk_test_prices_check"):
    env = dict(os.environ, STRIPE_SECRET_KEY=key)
    return subprocess.run(
        [script, "--prefix", prefix, "--portal-parameter", portal_parameter, "--stripe-api-base", base, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def stored():
    names = [f"{prefix}/{plan}" for plan in PLANS]
    found = {}
    for name in names:
        try:
            found[name.rsplit("/", 1)[1]] = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            pass
    return found


state = {}


@check("a first run creates every plan's price and stores its id in SSM")
def _():
    done = run_script()
    assert done.returncode == 0, done.stderr
    ids = stored()
    assert sorted(ids) == sorted(PLANS), ids
    for plan, (amount, interval) in PLANS.items():
        price = client.v1.prices.retrieve(ids[plan])
        assert (price.unit_amount, price.currency, price.recurring.interval) == (amount, "usd", interval), price
        assert price.lookup_key == f"billing_{plan}" and price.active, price
        assert price.product == "billing_" + plan.split("_")[0], price
    assert client.v1.products.retrieve("billing_basic").name == "Basic"
    state["ids"] = ids


@check("a second run keeps every price and stores the same ids")
def _():
    done = run_script()
    assert done.returncode == 0, done.stderr
    assert stored() == state["ids"]
    assert done.stdout.count("kept") == len(PLANS) + 4 + 1, done.stdout


@check("a changed amount makes a new price that takes the lookup key over")
def _():
    done = run_script("--price", "basic_monthly:900:month")
    assert done.returncode == 0, done.stderr
    ids = stored()
    old, new = state["ids"]["basic_monthly"], ids["basic_monthly"]
    assert new != old and ids["basic_annual"] == state["ids"]["basic_annual"], ids
    assert client.v1.prices.retrieve(new).unit_amount == 900
    assert client.v1.prices.retrieve(old).lookup_key is None
    listed = client.v1.prices.list(params={"lookup_keys": ["billing_basic_monthly"]}).data
    assert [p.id for p in listed] == [new], listed
    state["ids"] = ids


@check("a live key, a malformed price or no key is refused and changes nothing")
def _():
    for args, key in (((), "sk_live_not_this"), (("--price", "basic_monthly:nine:month"), "sk_test_x"), ((), "")):
        done = run_script(*args, key=key)
        assert done.returncode == 2 and "create-stripe-prices:" in done.stderr, (args, done.stderr)
    assert stored() == state["ids"]


@check("a price id is never stored when Stripe refuses the price")
def _():
    done = run_script("--price", "basic_monthly:700:month", "--currency", "US")
    assert done.returncode == 1 and "Stripe refused a request (400)" in done.stderr, done.stderr
    assert stored() == state["ids"]


@check("the portal configuration allows invoices, cards and cancelling at period end, no plan changes, and is kept")
def _():
    configuration_id = ssm.get_parameter(Name=portal_parameter)["Parameter"]["Value"]
    configuration = client.v1.billing_portal.configurations.retrieve(configuration_id)
    features = configuration.features
    assert features.subscription_update.enabled is False, features
    assert features.subscription_cancel.enabled is True and features.subscription_cancel.mode == "at_period_end"
    assert features.invoice_history.enabled is True and features.payment_method_update.enabled is True
    session = client.v1.billing_portal.sessions.create(
        params={"customer": client.v1.customers.create().id, "configuration": configuration_id}
    )
    assert session.configuration == configuration_id, session
    done = run_script()
    assert done.returncode == 0, done.stderr
    assert f"portal configuration: {configuration_id} (kept)" in done.stdout, done.stdout


passed = sum(1 for _, error in results if error is None)
failed = len(results) - passed
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
