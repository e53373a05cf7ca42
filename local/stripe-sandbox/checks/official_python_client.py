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


def sandbox_control(path, body):
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{base}/_sandbox/{path}", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def paying_customer(card="pm_card_visa"):
    customer = client.v1.customers.create(params={"email": f"pay-{uuid.uuid4().hex}@example.com"})
    method = client.v1.payment_methods.attach(card, params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": method.id}})
    return customer


@check("a subscription without a trial is invoiced and paid at creation")
def _():
    customer = paying_customer()
    subscription = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": "price_monthly", "quantity": 3}]}
    )
    assert subscription.status == "active" and subscription["items"].data[0].quantity == 3
    invoice = client.v1.invoices.retrieve(subscription.latest_invoice)
    assert invoice.status == "paid" and invoice.amount_paid == 3000, invoice
    assert invoice.billing_reason == "subscription_create" and invoice.number
    assert invoice.lines.data[0].amount == 3000 and invoice.lines.data[0].quantity == 3
    state["paying"] = (customer, subscription)


@check("an upgrade with always_invoice makes a paid invoice of proration lines")
def _():
    customer, subscription = state["paying"]
    item = subscription["items"].data[0]
    updated = client.v1.subscriptions.update(
        subscription.id,
        params={"items": [{"id": item.id, "quantity": 5}], "proration_behavior": "always_invoice"},
    )
    invoice = client.v1.invoices.retrieve(updated.latest_invoice)
    assert invoice.billing_reason == "subscription_update" and invoice.status == "paid"
    lines = invoice.lines.data
    prorations = [line.parent.subscription_item_details.proration for line in lines]
    assert prorations == [True, True], prorations
    assert lines[0].amount < 0 < lines[1].amount and invoice.amount_paid == lines[0].amount + lines[1].amount


@check("a coupon on the subscription discounts its next invoice, previewed")
def _():
    customer, subscription = state["paying"]
    coupon_id = f"py-{uuid.uuid4().hex[:8]}"
    coupon = client.v1.coupons.create(params={"id": coupon_id, "percent_off": 20, "duration": "forever"})
    assert coupon.id == coupon_id and coupon.percent_off == 20
    try:
        client.v1.coupons.create(params={"id": coupon_id, "percent_off": 20, "duration": "forever"})
    except stripe.InvalidRequestError as error:
        assert error.code == "resource_already_exists"
    else:
        raise AssertionError("a second coupon with the same id")
    updated = client.v1.subscriptions.update(subscription.id, params={"discounts": [{"coupon": coupon_id}]})
    assert len(updated.discounts) == 1 and updated.discounts[0].startswith("di_")
    preview = client.v1.invoices.create_preview(params={"customer": customer.id, "subscription": subscription.id})
    assert preview.total_discount_amounts[0].amount == 1000 and preview.amount_due == 4000, preview
    cleared = client.v1.subscriptions.update(subscription.id, params={"discounts": ""})
    assert cleared.discounts == []


@check("moving the clock renews the subscription: period moved, invoice paid, events")
def _():
    customer, subscription = state["paying"]
    before = client.v1.subscriptions.retrieve(subscription.id)
    end = before["items"].data[0].current_period_end
    advanced = sandbox_control("clock/advance", {"seconds": 31 * 86400})
    after = client.v1.subscriptions.retrieve(subscription.id)
    assert after["items"].data[0].current_period_start == end, after
    invoices = client.v1.invoices.list(params={"subscription": subscription.id})
    assert invoices.data[0].billing_reason == "subscription_cycle" and invoices.data[0].status == "paid"
    assert invoices.data[0].id == after.latest_invoice and len(invoices.data) == 3
    kinds = [client.v1.events.retrieve(e).type for e in advanced["events"]]
    assert "invoice.paid" in kinds and "customer.subscription.updated" in kinds, kinds


@check("a card that needs authentication leaves the invoice open with payment_action_required")
def _():
    customer = paying_customer("pm_card_authenticationRequired")
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": "price_monthly"}]})
    assert subscription.status == "incomplete"
    invoice = client.v1.invoices.retrieve(subscription.latest_invoice)
    assert invoice.status == "open" and invoice.hosted_invoice_url
    event = client.v1.events.list(params={"type": "invoice.payment_action_required", "limit": 1}).data[0]
    assert event.data.object.id == invoice.id
    voided = client.v1.invoices.void_invoice(invoice.id)
    assert voided.status == "void"


@check("a card that fails charges makes invoice.payment_failed")
def _():
    customer = paying_customer("pm_card_chargeCustomerFail")
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": "price_monthly"}]})
    assert subscription.status == "incomplete"
    event = client.v1.events.list(params={"type": "invoice.payment_failed", "limit": 1}).data[0]
    assert event.data.object.id == subscription.latest_invoice


@check("setup intents and portal sessions")
def _():
    customer = paying_customer()
    intent = client.v1.setup_intents.create(params={"customer": customer.id, "usage": "off_session"})
    assert intent.id.startswith("seti_") and intent.client_secret.startswith(intent.id + "_secret_")
    assert intent.status == "requires_payment_method"
    session = client.v1.billing_portal.sessions.create(
        params={"customer": customer.id, "return_url": "https://app.example.com/billing"}
    )
    assert session.url.startswith("https://") and session.return_url == "https://app.example.com/billing"


@check("customer email updates")
def _():
    customer = paying_customer()
    updated = client.v1.customers.update(customer.id, params={"email": "new@example.com"})
    assert updated.email == "new@example.com"


@check("invoice items become a one-off invoice, finalized and paid, or declined")
def _():
    customer = paying_customer()
    period = {"start": int(time.time()), "end": int(time.time()) + 30 * 86400}
    client.v1.invoice_items.create(params={"customer": customer.id, "currency": "usd", "quantity": 21,
                                           "unit_amount_decimal": "350", "description": "Basic - renewal", "period": period})
    client.v1.invoice_items.create(params={"customer": customer.id, "currency": "usd", "quantity": 17,
                                           "unit_amount_decimal": "305", "description": "Additional Basic license"})
    invoice = client.v1.invoices.create(params={"customer": customer.id, "collection_method": "charge_automatically",
                                                "pending_invoice_items_behavior": "include"})
    assert invoice.status == "draft" and invoice.amount_due == 21 * 350 + 17 * 305, invoice
    assert invoice.lines.data[0].parent.invoice_item_details.invoice_item.startswith("ii_")
    finalized = client.v1.invoices.finalize_invoice(invoice.id)
    assert finalized.status == "open" and finalized.number
    paid = client.v1.invoices.pay(invoice.id)
    assert paid.status == "paid" and paid.amount_paid == invoice.amount_due
    declining = paying_customer("pm_card_chargeCustomerFail")
    client.v1.invoice_items.create(params={"customer": declining.id, "currency": "usd", "amount": 800})
    other = client.v1.invoices.create(params={"customer": declining.id, "pending_invoice_items_behavior": "include"})
    client.v1.invoices.finalize_invoice(other.id)
    try:
        client.v1.invoices.pay(other.id)
    except stripe.CardError:
        pass
    else:
        raise AssertionError("no CardError")
    assert client.v1.invoices.void_invoice(other.id).status == "void"


@check("a setup Checkout Session's page saves a card and completes the session")
def _():
    import urllib.error
    import urllib.parse
    import urllib.request

    customer = client.v1.customers.create(params={"email": f"co-{uuid.uuid4().hex}@example.com"})
    session = client.v1.checkout.sessions.create(params={
        "mode": "setup", "customer": customer.id, "currency": "usd", "payment_method_types": ["card"],
        "success_url": "https://example.com/done?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://example.com/cancel", "metadata": {"pending_upgrade": "p-1"}})
    assert session.mode == "setup" and session.status == "open" and session.setup_intent.startswith("seti_"), session
    page = urllib.request.urlopen(session.url).read().decode()
    assert 'name="payment_method"' in page, page

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    form = urllib.parse.urlencode({"payment_method": "pm_card_visa"}).encode()
    try:
        urllib.request.build_opener(NoRedirect).open(session.url, data=form)
    except urllib.error.HTTPError as answer:
        assert answer.code == 303 and answer.headers["location"] == f"https://example.com/done?session={session.id}"
    else:
        raise AssertionError("no redirect to the success URL")
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done.status == "complete" and done.metadata["pending_upgrade"] == "p-1"
    intent = client.v1.setup_intents.retrieve(done.setup_intent)
    assert intent.status == "succeeded" and intent.payment_method.startswith("pm_")
    method = client.v1.payment_methods.retrieve(intent.payment_method)
    assert method.customer == customer.id and method.card.last4 == "4242"


@check("an auto-advancing one-off invoice is charged an hour after it is finalized")
def _():
    customer = paying_customer()
    client.v1.invoice_items.create(params={"customer": customer.id, "currency": "usd", "amount": 1234})
    invoice = client.v1.invoices.create(params={"customer": customer.id, "auto_advance": True,
                                                "pending_invoice_items_behavior": "include"})
    client.v1.invoices.finalize_invoice(invoice.id)
    assert client.v1.invoices.retrieve(invoice.id).status == "open"
    sandbox_control("clock/advance", {"seconds": 3601})
    paid = client.v1.invoices.retrieve(invoice.id)
    assert paid.status == "paid" and paid.amount_paid == 1234 and paid.attempt_count == 1, paid


@check("items added to a draft invoice with metadata are its only lines; the customer's others stay pending")
def _():
    customer = paying_customer()
    client.v1.invoice_items.create(params={"customer": customer.id, "currency": "usd", "amount": 500})
    invoice = client.v1.invoices.create(params={"customer": customer.id, "auto_advance": False,
                                                "pending_invoice_items_behavior": "exclude",
                                                "metadata": {"billing_reference": "invoicing:p:1"}})
    assert invoice.status == "draft" and invoice.amount_due == 0 and invoice.metadata["billing_reference"] == "invoicing:p:1"
    client.v1.invoice_items.create(params={"customer": customer.id, "invoice": invoice.id, "currency": "usd",
                                           "quantity": 3, "unit_amount_decimal": "350",
                                           "metadata": {"billing_line": "ledger_entry:p-2"}})
    on_it = client.v1.invoice_items.list(params={"invoice": invoice.id})
    assert [item.metadata["billing_line"] for item in on_it.data] == ["ledger_entry:p-2"], on_it
    pending = client.v1.invoice_items.list(params={"customer": customer.id, "pending": True})
    assert [item.amount for item in pending.data] == [500], pending
    held = client.v1.invoices.retrieve(invoice.id)
    assert held.amount_due == 1050 and len(held.lines.data) == 1, held
    client.v1.invoices.finalize_invoice(invoice.id)
    paid = client.v1.invoices.pay(invoice.id, params={"off_session": True})
    assert paid.status == "paid" and paid.amount_paid == 1050
    found = client.v1.invoices.list(params={"customer": customer.id})
    assert [i.id for i in found.data if i.metadata.to_dict().get("billing_reference") == "invoicing:p:1"] == [invoice.id]
    try:
        client.v1.invoice_items.create(params={"customer": customer.id, "invoice": invoice.id,
                                               "currency": "usd", "amount": 1})
    except stripe.InvalidRequestError as refused:
        assert refused.param == "invoice", refused
    else:
        raise AssertionError("an item was added to a paid invoice")


@check("an idempotency key is forgotten 24 hours after its first use, by the sandbox's clock")
def _():
    key = f"forget-{uuid.uuid4().hex}"
    first = client.v1.customers.create(params={"email": "k@example.com"}, options={"idempotency_key": key})
    again = client.v1.customers.create(params={"email": "k@example.com"}, options={"idempotency_key": key})
    assert first.id == again.id
    sandbox_control("clock/advance", {"seconds": 24 * 3600})
    later = client.v1.customers.create(params={"email": "k@example.com"}, options={"idempotency_key": key})
    assert later.id != first.id, "a day later the same key is a new request"


@check("a call whose answer is lost is done: its retry under the same key gets the same object")
def _():
    key = f"lost-{uuid.uuid4().hex}"
    sandbox_control("failures", {"count": 1, "status": 500, "path": "POST /v1/customers", "after": True})
    try:
        client.v1.customers.create(params={"email": "lost@example.com"}, options={"idempotency_key": key})
    except stripe.APIError:
        pass
    else:
        raise AssertionError("the answer was not lost")
    retried = client.v1.customers.create(params={"email": "lost@example.com"}, options={"idempotency_key": key})
    listed = client.v1.customers.list(params={"email": "lost@example.com"})
    assert [c.id for c in listed.data] == [retried.id], listed


@check("an update pending if incomplete keeps the subscription as it was until its invoice is paid; voiding discards it")
def _():
    customer = paying_customer()
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": "price_monthly"}]})
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": failing.id}})
    item = subscription["items"].data[0]
    held = client.v1.subscriptions.update(
        subscription.id,
        params={
            "items": [{"id": item.id, "quantity": 4}],
            "proration_behavior": "always_invoice",
            "payment_behavior": "pending_if_incomplete",
        },
    )
    assert held["items"].data[0].quantity == 1 and held.status == "active", held
    assert held.pending_update is not None and held.pending_update.subscription_items[0].quantity == 4
    invoice = client.v1.invoices.retrieve(held.latest_invoice)
    assert invoice.status == "open" and invoice.billing_reason == "subscription_update"
    client.v1.invoices.void_invoice(invoice.id)
    after = client.v1.subscriptions.retrieve(subscription.id)
    assert after.pending_update is None and after["items"].data[0].quantity == 1, after


@check("an update pending if incomplete applies once its invoice is paid")
def _():
    customer = paying_customer()
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": "price_monthly"}]})
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": failing.id}})
    item = subscription["items"].data[0]
    held = client.v1.subscriptions.update(
        subscription.id,
        params={"items": [{"id": item.id, "quantity": 2}], "proration_behavior": "always_invoice",
                "payment_behavior": "pending_if_incomplete"},
    )
    good = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": good.id}})
    paid = client.v1.invoices.pay(held.latest_invoice)
    assert paid.status == "paid"
    after = client.v1.subscriptions.retrieve(subscription.id)
    assert after.pending_update is None and after["items"].data[0].quantity == 2, after


@check("a change of interval starts a new period now and invoices it at once")
def _():
    customer = paying_customer()
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": "price_monthly"}]})
    item = subscription["items"].data[0]
    updated = client.v1.subscriptions.update(
        subscription.id,
        params={"items": [{"id": item.id, "price": "price_annual"}], "proration_behavior": "create_prorations"},
    )
    moved = updated["items"].data[0]
    assert moved.current_period_end - moved.current_period_start == 365 * 86400, moved
    invoice = client.v1.invoices.retrieve(updated.latest_invoice)
    assert invoice.status == "paid" and invoice.billing_reason == "subscription_update"
    assert any(line.amount == 10000 for line in invoice.lines.data), invoice.lines.data


@check("a subscription's discounts expand with their coupons; other expansions are refused")
def _():
    customer = paying_customer()
    coupon = client.v1.coupons.create(params={"percent_off": 25, "duration": "forever"})
    subscription = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": "price_monthly"}], "discounts": [{"coupon": coupon.id}]}
    )
    assert isinstance(subscription.discounts[0], str)
    expanded = client.v1.subscriptions.retrieve(subscription.id, params={"expand": ["discounts.source.coupon"]})
    assert expanded.discounts[0].source.coupon.percent_off == 25, expanded.discounts
    try:
        client.v1.subscriptions.retrieve(subscription.id, params={"expand": ["customer.nothing"]})
        raise AssertionError("an expansion the sandbox cannot make was accepted")
    except stripe.StripeError:
        pass


passed = sum(1 for _, error in results if error is None)
failed = len(results) - passed
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
