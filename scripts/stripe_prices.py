"""Creates the plans' Stripe products and prices and the customer portal's configuration, and
stores their ids in SSM.

Run through scripts/create-stripe-prices.sh (which holds the usage). One product per plan family
(`basic_monthly` and `basic_annual` are both `billing_basic`), one recurring price per plan with
the lookup key `billing_<plan>`, and one SSM parameter per plan, `<prefix>/<plan>`, the names
template.yaml's `StripePrice*` parameters default to.

The portal configuration lets customers see invoices, change their card and address, and
cancel at the period's end, and nothing else: plan and quantity changes go through the API,
which charges them exactly once and keeps the stored subscription in step. Its id goes to
`--portal-parameter` (template.yaml's `StripePortalConfiguration`); the portal sessions the
service opens name it, whatever the account's default portal allows.
"""

import argparse
import os
import sys

import boto3
import stripe

# The plans of API.md and what each costs (cents per interval); `pending` and `free` cost nothing.
DEFAULT_PRICES = [
    "pending:0:month",
    "free:0:month",
    "basic_monthly:800:month",
    "basic_annual:8000:year",
    "business_monthly:1500:month",
    "business_annual:15000:year",
]
INTERVALS = ("day", "week", "month", "year")
PORTAL_MARK = "billing_portal"
# What the portal may do: everything else (plan, quantity) is the API's.
PORTAL_FEATURES = {
    "invoice_history": {"enabled": True},
    "payment_method_update": {"enabled": True},
    "customer_update": {"enabled": True, "allowed_updates": ["email", "address"]},
    "subscription_cancel": {"enabled": True, "mode": "at_period_end"},
    "subscription_update": {"enabled": False},
}


def fail(message, status=2):
    print(f"create-stripe-prices: {message}", file=sys.stderr)
    sys.exit(status)


def parse_price(text):
    parts = text.split(":")
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or parts[2] not in INTERVALS:
        fail(f"--price takes PLAN:AMOUNT:INTERVAL (amount in cents, interval one of {', '.join(INTERVALS)}), not {text!r}")
    return parts[0], int(parts[1]), parts[2]


def product_of(plan):
    return "billing_" + plan.split("_")[0]


def ensure_product(client, product_id):
    try:
        return client.v1.products.retrieve(product_id), "kept"
    except stripe.InvalidRequestError as error:
        if error.code != "resource_missing":
            raise
    name = product_id.removeprefix("billing_").replace("_", " ").capitalize()
    return client.v1.products.create(params={"id": product_id, "name": name}), "created"


def ensure_price(client, plan, amount, interval, currency):
    lookup_key = f"billing_{plan}"
    product = product_of(plan)
    found = client.v1.prices.list(params={"lookup_keys": [lookup_key], "active": True, "limit": 1}).data
    if found:
        price = found[0]
        recurring = price.recurring.interval if price.recurring else None
        if (price.unit_amount, price.currency, recurring, price.product) == (amount, currency, interval, product):
            return price, "kept"
    price = client.v1.prices.create(
        params={
            "product": product,
            "currency": currency,
            "unit_amount": amount,
            "recurring": {"interval": interval},
            "lookup_key": lookup_key,
            "transfer_lookup_key": bool(found),
            "nickname": plan,
            "metadata": {"plan": plan},
        }
    )
    return price, ("replaced " + found[0].id) if found else "created"


def ensure_portal_configuration(client):
    """The portal configuration this script made before (found by its metadata) when it
    allows what PORTAL_FEATURES says, else a new one."""
    found = client.v1.billing_portal.configurations.list(params={"active": True, "limit": 100}).data
    for configuration in found:
        metadata = configuration.metadata.to_dict() if configuration.metadata else {}
        if metadata.get("made_by") != PORTAL_MARK:
            continue
        features = configuration.features
        if (
            features.subscription_update.enabled is False
            and features.subscription_cancel.enabled is True
            and features.subscription_cancel.mode == "at_period_end"
            and features.invoice_history.enabled is True
            and features.payment_method_update.enabled is True
        ):
            return configuration, "kept"
    created = client.v1.billing_portal.configurations.create(
        params={
            "features": PORTAL_FEATURES,
            "business_profile": {"headline": "Manage your billing"},
            "metadata": {"made_by": PORTAL_MARK},
        }
    )
    return created, "created"


def main():
    parser = argparse.ArgumentParser(description="Create the plans' Stripe prices and store their ids in SSM.")
    parser.add_argument("--prefix", default="/billing/stripe/prices", help="SSM parameter path prefix")
    parser.add_argument("--price", action="append", help="PLAN:AMOUNT:INTERVAL, repeatable (default: the six plans)")
    parser.add_argument("--currency", default="usd")
    parser.add_argument("--live", action="store_true", help="allow a live-mode key")
    parser.add_argument("--stripe-api-base", help="another Stripe API address (the local sandbox)")
    parser.add_argument(
        "--portal-parameter",
        default="/billing/stripe/portal-configuration",
        help="SSM parameter naming the customer portal configuration",
    )
    args = parser.parse_args()

    key = os.environ.get("STRIPE_SECRET_KEY", "").strip()
    if not key:
        fail("STRIPE_SECRET_KEY is not set")
    if "_live_" in key and not args.live:
        fail("STRIPE_SECRET_KEY is a live-mode key; run with a test key first, or pass --live")
    if not args.prefix.startswith("/") or args.prefix.endswith("/"):
        fail("--prefix is an SSM path such as /billing/stripe/prices")
    if not args.portal_parameter.startswith("/") or args.portal_parameter.endswith("/"):
        fail("--portal-parameter is an SSM name such as /billing/stripe/portal-configuration")
    prices = [parse_price(text) for text in (args.price or DEFAULT_PRICES)]

    options = {"max_network_retries": 2}
    if args.stripe_api_base:
        options["base_addresses"] = {"api": args.stripe_api_base.rstrip("/")}
    client = stripe.StripeClient(key, **options)
    ssm = boto3.client("ssm")

    try:
        for product in sorted({product_of(plan) for plan, _, _ in prices}):
            _, action = ensure_product(client, product)
            print(f"product {product}: {action}")
        for plan, amount, interval in prices:
            store_price(client, ssm, args, plan, amount, interval)
        configuration, action = ensure_portal_configuration(client)
        ssm.put_parameter(Name=args.portal_parameter, Value=configuration.id, Type="String", Overwrite=True)
        print(f"portal configuration: {configuration.id} ({action}) -> {args.portal_parameter}")
    except stripe.StripeError as error:
        fail(f"Stripe refused a request ({error.http_status}): {error.user_message or error}", status=1)


def store_price(client, ssm, args, plan, amount, interval):
    """Creates (or keeps) the plan's price, then names it in SSM: an id is stored only once
    Stripe holds its price."""
    price, action = ensure_price(client, plan, amount, interval, args.currency)
    name = f"{args.prefix}/{plan}"
    ssm.put_parameter(Name=name, Value=price.id, Type="String", Overwrite=True)
    print(f"{plan}: {price.id} ({amount} {args.currency}/{interval}, {action}) -> {name}")
    if action.startswith("replaced"):
        print("  note: subscriptions on the old price stay on it until they change plan", file=sys.stderr)


if __name__ == "__main__":
    main()
