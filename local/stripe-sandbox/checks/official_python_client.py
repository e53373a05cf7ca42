"""Drives the Stripe sandbox with Stripe's official Python library: a client that is not
async-stripe, written by Stripe, checks that the sandbox speaks Stripe's API (form encoding,
errors, idempotency, object shapes it can read).

Usage: python official_python_client.py http://127.0.0.1:PORT
Prints one line per check and a closing "N passed, N failed" line; exits non-zero on failure.
"""

import sys
import time
import uuid

import stripe

base = sys.argv[1].rstrip("/")
client = stripe.StripeClient("sk_test_python_check", base_addresses={"api": base}, max_network_retries=0)
results = []


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


email = f"py-{uuid.uuid4().hex}@example.com"
state = {}


@check("create a customer with metadata")
def _():
    customer = client.v1.customers.create(params={"email": email, "metadata": {"user_id": "u-1"}})
    assert customer.id.startswith("cus_") and customer.email == email
    assert customer.metadata["user_id"] == "u-1"
    state["customer"] = customer


@check("list customers by email")
def _():
    listed = client.v1.customers.list(params={"email": email})
    assert [c.id for c in listed.data] == [state["customer"].id]


@check("create a trialing subscription")
def _():
    trial_end = int(time.time()) + 31 * 86400
    subscription = client.v1.subscriptions.create(
        params={"customer": state["customer"].id, "items": [{"price": "price_monthly"}], "trial_end": trial_end}
    )
    assert subscription.status == "trialing" and subscription.trial_end == trial_end
    assert subscription["items"].data[0].price.id == "price_monthly"
    state["subscription"] = subscription


@check("attach a test card and make it the default")
def _():
    method = client.v1.payment_methods.attach("pm_card_visa", params={"customer": state["customer"].id})
    assert method.id.startswith("pm_") and method.card.last4 == "4242"
    customer = client.v1.customers.update(
        state["customer"].id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    assert customer.invoice_settings.default_payment_method == method.id


@check("change the subscription item's price")
def _():
    item = state["subscription"]["items"].data[0]
    updated = client.v1.subscriptions.update(
        state["subscription"].id, params={"items": [{"id": item.id, "price": "price_annual"}], "proration_behavior": "none"}
    )
    assert updated["items"].data[0].price.id == "price_annual"


@check("a declined card is a CardError")
def _():
    try:
        client.v1.payment_methods.attach("pm_card_chargeDeclined", params={"customer": state["customer"].id})
    except stripe.CardError as error:
        assert error.code == "card_declined"
    else:
        raise AssertionError("no CardError")


@check("an unknown parameter is an InvalidRequestError naming it")
def _():
    try:
        client.v1.customers.create(params={"emali": email})
    except stripe.InvalidRequestError as error:
        assert error.param == "emali", error.param
    else:
        raise AssertionError("no InvalidRequestError")


@check("a missing object is a 404 resource_missing")
def _():
    try:
        client.v1.customers.retrieve("cus_missing")
    except stripe.InvalidRequestError as error:
        assert error.http_status == 404 and error.code == "resource_missing"
    else:
        raise AssertionError("no InvalidRequestError")


@check("the same idempotency key replays the first answer")
def _():
    key = f"py-{uuid.uuid4().hex}"
    first = client.v1.customers.create(params={"email": email}, options={"idempotency_key": key})
    again = client.v1.customers.create(params={"email": email}, options={"idempotency_key": key})
    assert first.id == again.id


@check("the same idempotency key with other parameters is an IdempotencyError")
def _():
    key = f"py-{uuid.uuid4().hex}"
    client.v1.customers.create(params={"email": email}, options={"idempotency_key": key})
    try:
        client.v1.customers.create(params={"email": "other@example.com"}, options={"idempotency_key": key})
    except stripe.IdempotencyError:
        pass
    else:
        raise AssertionError("no IdempotencyError")


@check("a live key is refused")
def _():
    live = stripe.StripeClient("sk_live_nope", base_addresses={"api": base}, max_network_retries=0)
    try:
        live.v1.customers.list()
    except stripe.AuthenticationError:
        pass
    else:
        raise AssertionError("no AuthenticationError")


@check("events record what happened")
def _():
    events = client.v1.events.list(params={"type": "customer.subscription.updated", "limit": 5})
    assert events.data and events.data[0].data.object.id == state["subscription"].id


@check("detaching the default card clears it, with its events")
def _():
    customer = client.v1.customers.create(params={"email": f"detach-{uuid.uuid4().hex}@example.com"})
    method = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": method.id}})
    detached = client.v1.payment_methods.detach(method.id)
    assert detached.customer is None
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method is None
    detach_event = client.v1.events.list(params={"type": "payment_method.detached", "limit": 1}).data[0]
    assert detach_event.data.previous_attributes["customer"] == customer.id
    update = client.v1.events.list(params={"type": "customer.updated", "limit": 1}).data[0]
    assert update.data.object.id == customer.id
    assert update.data.previous_attributes["invoice_settings"]["default_payment_method"] == method.id


passed = sum(1 for _, error in results if error is None)
failed = len(results) - passed
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
