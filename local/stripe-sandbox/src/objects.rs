//! The objects the sandbox returns, each started from Stripe's own example of it
//! (`fixtures/`, from Stripe's openapi repository) with ids, timestamps and state filled in,
//! and the example's odd sample values (a discount on every customer, a pending update on every
//! subscription) reset to what a fresh object of that kind has.

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

/// The API version the sandbox speaks (the one async-stripe 1.0.0-rc.10 is generated for).
pub const API_VERSION: &str = "2026-09-30.endive";

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("fixtures are valid JSON")
}

static CUSTOMER: LazyLock<Value> = LazyLock::new(|| fixture(include_str!("../fixtures/customer.json")));
static SUBSCRIPTION: LazyLock<Value> = LazyLock::new(|| fixture(include_str!("../fixtures/subscription.json")));
static SUBSCRIPTION_ITEM: LazyLock<Value> =
    LazyLock::new(|| fixture(include_str!("../fixtures/subscription_item.json")));
static PRICE: LazyLock<Value> = LazyLock::new(|| fixture(include_str!("../fixtures/price.json")));
static PAYMENT_METHOD: LazyLock<Value> = LazyLock::new(|| fixture(include_str!("../fixtures/payment_method.json")));
static EVENT: LazyLock<Value> = LazyLock::new(|| fixture(include_str!("../fixtures/event.json")));
static INVOICE: LazyLock<Value> = LazyLock::new(|| fixture(include_str!("../fixtures/invoice.json")));

fn set(object: &mut Value, fields: Value) {
    let (Value::Object(target), Value::Object(fields)) = (object, fields) else {
        unreachable!("objects and field sets are JSON objects")
    };
    for (name, value) in fields {
        target.insert(name, value);
    }
}

/// A price the sandbox offers: what it costs and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceSpec {
    pub id: String,
    pub product: String,
    pub nickname: Option<String>,
    pub currency: String,
    /// In the currency's smallest unit (cents).
    pub unit_amount: i64,
    /// `month`, `year`; `None` for a one-time price.
    pub interval: Option<String>,
}

impl PriceSpec {
    pub fn recurring(id: &str, unit_amount: i64, interval: &str) -> Self {
        PriceSpec {
            id: id.to_owned(),
            product: format!("prod_{}", id.trim_start_matches("price_")),
            nickname: Some(id.trim_start_matches("price_").to_owned()),
            currency: "usd".to_owned(),
            unit_amount,
            interval: Some(interval.to_owned()),
        }
    }

    /// `id:amount:interval`, e.g. `price_basic_monthly:500:month`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<_> = text.split(':').collect();
        match parts.as_slice() {
            [id, amount, interval]
                if id.starts_with("price_") && matches!(*interval, "day" | "week" | "month" | "year") =>
            {
                let amount = amount.parse().map_err(|e| format!("{text}: amount: {e}"))?;
                Ok(PriceSpec::recurring(id, amount, interval))
            }
            _ => Err(format!(
                "{text}: expected price_<id>:<amount in cents>:<day|week|month|year>"
            )),
        }
    }
}

pub fn price(spec: &PriceSpec, created: i64) -> Value {
    let mut price = PRICE.clone();
    let recurring = spec.interval.as_ref().map(|interval| {
        json!({"interval": interval, "interval_count": 1, "meter": null, "trial_period_days": null, "usage_type": "licensed"})
    });
    set(
        &mut price,
        json!({
            "id": spec.id,
            "created": created,
            "currency": spec.currency,
            "custom_unit_amount": null,
            "lookup_key": null,
            "metadata": {},
            "nickname": spec.nickname,
            "product": spec.product,
            "recurring": recurring,
            "transform_quantity": null,
            "type": if spec.interval.is_some() { "recurring" } else { "one_time" },
            "unit_amount": spec.unit_amount,
            "unit_amount_decimal": spec.unit_amount.to_string(),
        }),
    );
    price
}

/// The legacy `plan` view of a recurring price that subscription items still carry.
pub fn plan_of(price: &Value) -> Value {
    let mut plan = SUBSCRIPTION_ITEM["plan"].clone();
    let recurring = &price["recurring"];
    set(
        &mut plan,
        json!({
            "id": price["id"],
            "active": price["active"],
            "amount": price["unit_amount"],
            "amount_decimal": price["unit_amount_decimal"],
            "billing_scheme": "per_unit",
            "created": price["created"],
            "currency": price["currency"],
            "interval": recurring["interval"],
            "interval_count": recurring["interval_count"],
            "livemode": false,
            "metadata": {},
            "nickname": price["nickname"],
            "product": price["product"],
            "transform_usage": null,
            "trial_period_days": null,
        }),
    );
    plan
}

pub fn customer(id: &str, created: i64, invoice_prefix: &str) -> Value {
    let mut customer = CUSTOMER.clone();
    set(
        &mut customer,
        json!({
            "id": id,
            "created": created,
            "address": null,
            "balance": 0,
            "currency": null,
            "default_source": null,
            "delinquent": false,
            "description": null,
            "discount": null,
            "email": null,
            "invoice_prefix": invoice_prefix,
            "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null},
            "livemode": false,
            "metadata": {},
            "name": null,
            "next_invoice_sequence": 1,
            "phone": null,
            "preferred_locales": [],
            "shipping": null,
            "tax_exempt": "none",
            "test_clock": null,
            "customer_account": null,
        }),
    );
    customer
}

pub fn subscription_item(id: &str, subscription: &str, price: &Value, created: i64, period: (i64, i64)) -> Value {
    let mut item = SUBSCRIPTION_ITEM.clone();
    set(
        &mut item,
        json!({
            "id": id,
            "billing_thresholds": null,
            "created": created,
            "current_period_start": period.0,
            "current_period_end": period.1,
            "discounts": [],
            "metadata": {},
            "plan": plan_of(price),
            "price": price,
            "quantity": 1,
            "subscription": subscription,
            "tax_rates": [],
        }),
    );
    item
}

pub struct NewSubscription<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub created: i64,
    pub items: Vec<Value>,
    pub currency: &'a str,
    pub status: &'a str,
    pub trial: Option<(i64, i64)>,
    pub metadata: Value,
    pub default_payment_method: Value,
    pub cancel_at_period_end: bool,
    pub description: Value,
}

/// The invoice of one renewal of `subscription`, charged automatically: `paid`, or `open` after
/// a failed attempt. `parent.subscription_details` names the subscription (current API
/// versions); `subscription` does too, as older versions did.
pub fn renewal_invoice(id: &str, subscription: &Value, amount: i64, paid: bool, now: i64) -> Value {
    let mut invoice = INVOICE.clone();
    let period_end = subscription["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap_or(now);
    set(
        &mut invoice,
        json!({
            "id": id,
            "object": "invoice",
            "amount_due": amount,
            "amount_paid": if paid { amount } else { 0 },
            "amount_remaining": if paid { 0 } else { amount },
            "attempt_count": 1,
            "attempted": true,
            "auto_advance": !paid,
            "billing_reason": "subscription_cycle",
            "created": now,
            "currency": subscription["currency"],
            "customer": subscription["customer"],
            "customer_account": null,
            "discounts": [],
            "due_date": null,
            "effective_at": now,
            "from_invoice": null,
            "hosted_invoice_url": format!("https://invoice.stripe.com/i/acct_sandbox/{id}"),
            "last_finalization_error": null,
            "lines": {"object": "list", "data": [], "has_more": false, "total_count": 0,
                      "url": format!("/v1/invoices/{id}/lines")},
            "livemode": false,
            "metadata": {},
            "next_payment_attempt": if paid { Value::Null } else { json!(now + 3 * 86_400) },
            "parent": {
                "type": "subscription_details",
                "quote_details": null,
                "subscription_details": {"metadata": subscription["metadata"], "subscription": subscription["id"]},
            },
            "period_start": now,
            "period_end": period_end,
            "status": if paid { "paid" } else { "open" },
            "status_transitions": {"finalized_at": now, "marked_uncollectible_at": null,
                                   "paid_at": if paid { json!(now) } else { Value::Null }, "voided_at": null},
            "subscription": subscription["id"],
            "subtotal": amount,
            "subtotal_excluding_tax": amount,
            "test_clock": null,
            "total": amount,
            "total_discount_amounts": [],
            "total_excluding_tax": amount,
            "total_taxes": [],
            "webhooks_delivered_at": null,
        }),
    );
    invoice
}

pub fn subscription(new: NewSubscription<'_>) -> Value {
    let mut subscription = SUBSCRIPTION.clone();
    let anchor = new.trial.map_or(new.created, |(_, end)| end);
    set(
        &mut subscription,
        json!({
            "id": new.id,
            "application": null,
            "application_fee_percent": null,
            "automatic_tax": {"enabled": false, "liability": null, "disabled_reason": null},
            "billing_cycle_anchor": anchor,
            "billing_cycle_anchor_config": null,
            "billing_mode": {"type": "classic", "flexible": null, "updated_at": null},
            "billing_schedules": [],
            "billing_thresholds": null,
            "cancel_at": null,
            "cancel_at_period_end": new.cancel_at_period_end,
            "canceled_at": null,
            "cancellation_details": {"comment": null, "feedback": null, "reason": null},
            "collection_method": "charge_automatically",
            "created": new.created,
            "currency": new.currency,
            "customer": new.customer,
            "customer_account": null,
            "days_until_due": null,
            "default_payment_method": new.default_payment_method,
            "default_source": null,
            "default_tax_rates": [],
            "description": new.description,
            "discounts": [],
            "ended_at": null,
            "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
            "items": {
                "object": "list",
                "data": new.items,
                "has_more": false,
                "total_count": 1,
                "url": format!("/v1/subscription_items?subscription={}", new.id),
            },
            "latest_invoice": null,
            "livemode": false,
            "managed_payments": null,
            "metadata": new.metadata,
            "next_pending_invoice_item_invoice": null,
            "on_behalf_of": null,
            "pause_collection": null,
            "payment_settings": {"payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off"},
            "pending_invoice_item_interval": null,
            "pending_setup_intent": null,
            "pending_update": null,
            "schedule": null,
            "start_date": new.created,
            "status": new.status,
            "test_clock": null,
            "transfer_data": null,
            "trial_end": new.trial.map(|(_, end)| end),
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": new.trial.map(|(start, _)| start),
        }),
    );
    subscription
}

/// A card Stripe's test mode knows by a PaymentMethod id such as `pm_card_visa`.
#[derive(Clone, Copy, Debug)]
pub struct TestCard {
    pub token: &'static str,
    pub brand: &'static str,
    pub last4: &'static str,
    pub funding: &'static str,
    /// Attaching fails with this decline code (Stripe checks the card when it is attached).
    pub declines_on_attach: Option<&'static str>,
    /// Attaches, but charges fail.
    pub charges_fail: bool,
}

pub const TEST_CARDS: [TestCard; 10] = [
    TestCard {
        token: "pm_card_visa",
        brand: "visa",
        last4: "4242",
        funding: "credit",
        declines_on_attach: None,
        charges_fail: false,
    },
    TestCard {
        token: "pm_card_visa_debit",
        brand: "visa",
        last4: "5556",
        funding: "debit",
        declines_on_attach: None,
        charges_fail: false,
    },
    TestCard {
        token: "pm_card_mastercard",
        brand: "mastercard",
        last4: "4444",
        funding: "credit",
        declines_on_attach: None,
        charges_fail: false,
    },
    TestCard {
        token: "pm_card_amex",
        brand: "amex",
        last4: "8431",
        funding: "credit",
        declines_on_attach: None,
        charges_fail: false,
    },
    TestCard {
        token: "pm_card_discover",
        brand: "discover",
        last4: "1117",
        funding: "credit",
        declines_on_attach: None,
        charges_fail: false,
    },
    TestCard {
        token: "pm_card_chargeDeclined",
        brand: "visa",
        last4: "0002",
        funding: "credit",
        declines_on_attach: Some("generic_decline"),
        charges_fail: true,
    },
    TestCard {
        token: "pm_card_chargeDeclinedInsufficientFunds",
        brand: "visa",
        last4: "9995",
        funding: "credit",
        declines_on_attach: Some("insufficient_funds"),
        charges_fail: true,
    },
    TestCard {
        token: "pm_card_chargeDeclinedExpiredCard",
        brand: "visa",
        last4: "0069",
        funding: "credit",
        declines_on_attach: Some("expired_card"),
        charges_fail: true,
    },
    TestCard {
        token: "pm_card_chargeDeclinedIncorrectCvc",
        brand: "visa",
        last4: "0127",
        funding: "credit",
        declines_on_attach: Some("incorrect_cvc"),
        charges_fail: true,
    },
    TestCard {
        token: "pm_card_chargeCustomerFail",
        brand: "visa",
        last4: "0341",
        funding: "credit",
        declines_on_attach: None,
        charges_fail: true,
    },
];

pub fn test_card(token: &str) -> Option<TestCard> {
    TEST_CARDS.iter().copied().find(|c| c.token == token)
}

pub fn payment_method(id: &str, card: TestCard, created: i64) -> Value {
    let mut method = PAYMENT_METHOD.clone();
    let mut details = method["card"].clone();
    set(
        &mut details,
        json!({
            "brand": card.brand,
            "display_brand": card.brand,
            "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass"},
            "exp_month": 12,
            "exp_year": 2034,
            "fingerprint": format!("fp{}{}", card.brand, card.last4),
            "funding": card.funding,
            "generated_from": null,
            "last4": card.last4,
            "networks": {"available": [card.brand], "preferred": null},
            "wallet": null,
            "regulated_status": "unregulated",
        }),
    );
    set(
        &mut method,
        json!({
            "id": id,
            "allow_redisplay": "unspecified",
            "billing_details": {
                "address": {"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null},
                "email": null, "name": null, "phone": null, "tax_id": null
            },
            "card": details,
            "created": created,
            "customer": null,
            "customer_account": null,
            "livemode": false,
            "metadata": {},
            "type": "card",
        }),
    );
    method
}

pub fn event(
    id: &str,
    kind: &str,
    created: i64,
    object: &Value,
    previous: Option<Map<String, Value>>,
    request: (&str, Option<&str>),
) -> Value {
    let mut event = EVENT.clone();
    let mut data = json!({ "object": object });
    if let Some(previous) = previous {
        data["previous_attributes"] = Value::Object(previous);
    }
    set(
        &mut event,
        json!({
            "id": id,
            "api_version": API_VERSION,
            "created": created,
            "data": data,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": request.0, "idempotency_key": request.1},
            "type": kind,
        }),
    );
    event
}

/// The top-level fields whose values differ between two versions of an object, with their
/// old values: Stripe's `previous_attributes`.
pub fn previous_attributes(before: &Value, after: &Value) -> Map<String, Value> {
    let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else {
        return Map::new();
    };
    before
        .iter()
        .filter(|(name, value)| after.get(*name) != Some(*value))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}
