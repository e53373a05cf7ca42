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

/// One line of an invoice made by a subscription: a period of an item's price, or a proration
/// of a change (`proration: true`, negative for unused time credited back).
pub struct NewLine<'a> {
    pub subscription: &'a Value,
    pub item: &'a Value,
    pub amount: i64,
    pub quantity: i64,
    pub description: String,
    pub period: (i64, i64),
    pub proration: bool,
}

pub fn invoice_line(id: &str, new: NewLine<'_>) -> Value {
    json!({
        "id": id,
        "object": "line_item",
        "amount": new.amount,
        "currency": new.subscription["currency"],
        "description": new.description,
        "discount_amounts": [],
        "discountable": true,
        "discounts": [],
        "invoice": null,
        "livemode": false,
        "metadata": {},
        "parent": {
            "type": "subscription_item_details",
            "invoice_item_details": null,
            "subscription_item_details": {
                "invoice_item": null,
                "proration": new.proration,
                "proration_details": {"credited_items": null},
                "subscription": new.subscription["id"],
                "subscription_item": new.item["id"],
            },
        },
        "period": {"start": new.period.0, "end": new.period.1},
        "pretax_credit_amounts": [],
        "pricing": {
            "type": "price_details",
            "price_details": {"price": new.item["price"]["id"], "product": new.item["price"]["product"]},
            "unit_amount_decimal": new.item["price"]["unit_amount_decimal"],
        },
        "quantity": new.quantity,
        "quantity_decimal": new.quantity.to_string(),
        "subscription": new.subscription["id"],
        "subtotal": new.amount,
        "taxes": [],
    })
}

/// An invoice a subscription makes, before it is finalized and charged.
pub struct NewInvoice<'a> {
    pub id: &'a str,
    pub subscription: &'a Value,
    /// `subscription_create`, `subscription_cycle`, `subscription_update`.
    pub billing_reason: &'a str,
    pub lines: Vec<Value>,
    /// The subscription's discount, and what it takes off.
    pub discount: Option<(&'a str, i64)>,
    pub period: (i64, i64),
    pub created: i64,
}

/// A draft invoice of `new.lines`, its totals computed. `parent.subscription_details` names
/// the subscription (current API versions); `subscription` does too, as older versions did.
pub fn invoice(new: NewInvoice<'_>) -> Value {
    let mut invoice = INVOICE.clone();
    let id = new.id;
    let subtotal: i64 = new.lines.iter().filter_map(|l| l["amount"].as_i64()).sum();
    let discounted = new.discount.map_or(0, |(_, amount)| amount);
    let total = subtotal - discounted;
    let mut lines = new.lines;
    for line in &mut lines {
        line["invoice"] = Value::from(id);
    }
    let count = lines.len();
    set(
        &mut invoice,
        json!({
            "id": id,
            "object": "invoice",
            "amount_due": total.max(0),
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_remaining": total.max(0),
            "attempt_count": 0,
            "attempted": false,
            "auto_advance": true,
            "billing_reason": new.billing_reason,
            "collection_method": "charge_automatically",
            "created": new.created,
            "currency": new.subscription["currency"],
            "customer": new.subscription["customer"],
            "customer_account": null,
            "discounts": new.discount.map_or(json!([]), |(discount, _)| json!([discount])),
            "due_date": null,
            "effective_at": null,
            "ending_balance": 0,
            "from_invoice": null,
            "hosted_invoice_url": format!("https://invoice.stripe.com/i/acct_sandbox/{id}"),
            "invoice_pdf": format!("https://pay.stripe.com/invoice/acct_sandbox/{id}/pdf"),
            "last_finalization_error": null,
            "latest_revision": null,
            "lines": {"object": "list", "data": lines, "has_more": false, "total_count": count,
                      "url": format!("/v1/invoices/{id}/lines")},
            "livemode": false,
            "metadata": {},
            "next_payment_attempt": null,
            "number": null,
            "parent": {
                "type": "subscription_details",
                "quote_details": null,
                "subscription_details": {"metadata": new.subscription["metadata"], "subscription": new.subscription["id"]},
            },
            "period_start": new.period.0,
            "period_end": new.period.1,
            "starting_balance": 0,
            "status": "draft",
            "status_transitions": {"finalized_at": null, "marked_uncollectible_at": null,
                                   "paid_at": null, "voided_at": null},
            "subscription": new.subscription["id"],
            "subtotal": subtotal,
            "subtotal_excluding_tax": subtotal,
            "test_clock": null,
            "total": total,
            "total_discount_amounts": new.discount.map_or(json!([]), |(discount, amount)| json!([{"amount": amount, "discount": discount}])),
            "total_excluding_tax": total,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": null,
        }),
    );
    invoice
}

/// A coupon: `percent_off` off every invoice, for the given duration.
pub fn coupon(id: &str, percent_off: f64, duration: &str, name: Option<&str>, created: i64) -> Value {
    json!({
        "id": id,
        "object": "coupon",
        "amount_off": null,
        "created": created,
        "currency": null,
        "duration": duration,
        "duration_in_months": null,
        "livemode": false,
        "max_redemptions": null,
        "metadata": {},
        "name": name,
        "percent_off": percent_off,
        "redeem_by": null,
        "times_redeemed": 0,
        "valid": true,
    })
}

/// A coupon applied to a subscription.
pub fn discount(id: &str, coupon: &Value, subscription: &Value, start: i64) -> Value {
    json!({
        "id": id,
        "object": "discount",
        "checkout_session": null,
        "customer": subscription["customer"],
        "customer_account": null,
        "end": null,
        "invoice": null,
        "invoice_item": null,
        "promotion_code": null,
        "source": {"coupon": coupon["id"], "type": "coupon"},
        "start": start,
        "subscription": subscription["id"],
        "subscription_item": null,
    })
}

pub fn setup_intent(id: &str, customer: &str, usage: &str, created: i64) -> Value {
    let secret = uuid::Uuid::new_v4().simple().to_string();
    json!({
        "id": id,
        "object": "setup_intent",
        "application": null,
        "automatic_payment_methods": null,
        "cancellation_reason": null,
        "client_secret": format!("{id}_secret_{secret}"),
        "created": created,
        "customer": customer,
        "customer_account": null,
        "description": null,
        "excluded_payment_method_types": null,
        "flow_directions": null,
        "last_setup_error": null,
        "latest_attempt": null,
        "livemode": false,
        "mandate": null,
        "metadata": {},
        "next_action": null,
        "on_behalf_of": null,
        "payment_method": null,
        "payment_method_configuration_details": null,
        "payment_method_options": {"card": {"mandate_options": null, "network": null, "request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "single_use_mandate": null,
        "status": "requires_payment_method",
        "usage": usage,
    })
}

pub fn portal_session(id: &str, customer: &str, return_url: Option<&str>, created: i64) -> Value {
    json!({
        "id": id,
        "object": "billing_portal.session",
        "configuration": "bpc_sandbox_default",
        "created": created,
        "customer": customer,
        "customer_account": null,
        "flow": null,
        "livemode": false,
        "locale": null,
        "on_behalf_of": null,
        "return_url": return_url,
        "url": format!("https://billing.stripe.com/p/session/test_{}", id.trim_start_matches("bps_")),
    })
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
    /// Attaches, but every charge made without the customer (a subscription's invoices)
    /// needs 3-D Secure authentication first.
    pub charges_need_authentication: bool,
}

pub const TEST_CARDS: [TestCard; 11] = [
    TestCard {
        token: "pm_card_visa",
        brand: "visa",
        last4: "4242",
        funding: "credit",
        declines_on_attach: None,
        charges_fail: false,
        charges_need_authentication: false,
    },
    TestCard {
        token: "pm_card_visa_debit",
        brand: "visa",
        last4: "5556",
        funding: "debit",
        declines_on_attach: None,
        charges_fail: false,
        charges_need_authentication: false,
    },
    TestCard {
        token: "pm_card_mastercard",
        brand: "mastercard",
        last4: "4444",
        funding: "credit",
        declines_on_attach: None,
        charges_fail: false,
        charges_need_authentication: false,
    },
    TestCard {
        token: "pm_card_amex",
        brand: "amex",
        last4: "8431",
        funding: "credit",
        declines_on_attach: None,
        charges_fail: false,
        charges_need_authentication: false,
    },
    TestCard {
        token: "pm_card_discover",
        brand: "discover",
        last4: "1117",
        funding: "credit",
        declines_on_attach: None,
        charges_fail: false,
        charges_need_authentication: false,
    },
    TestCard {
        token: "pm_card_chargeDeclined",
        brand: "visa",
        last4: "0002",
        funding: "credit",
        declines_on_attach: Some("generic_decline"),
        charges_fail: true,
        charges_need_authentication: false,
    },
    TestCard {
        token: "pm_card_chargeDeclinedInsufficientFunds",
        brand: "visa",
        last4: "9995",
        funding: "credit",
        declines_on_attach: Some("insufficient_funds"),
        charges_fail: true,
        charges_need_authentication: false,
    },
    TestCard {
        token: "pm_card_chargeDeclinedExpiredCard",
        brand: "visa",
        last4: "0069",
        funding: "credit",
        declines_on_attach: Some("expired_card"),
        charges_fail: true,
        charges_need_authentication: false,
    },
    TestCard {
        token: "pm_card_chargeDeclinedIncorrectCvc",
        brand: "visa",
        last4: "0127",
        funding: "credit",
        declines_on_attach: Some("incorrect_cvc"),
        charges_fail: true,
        charges_need_authentication: false,
    },
    TestCard {
        token: "pm_card_chargeCustomerFail",
        brand: "visa",
        last4: "0341",
        funding: "credit",
        declines_on_attach: None,
        charges_fail: true,
        charges_need_authentication: false,
    },
    TestCard {
        token: "pm_card_authenticationRequired",
        brand: "visa",
        last4: "3184",
        funding: "credit",
        declines_on_attach: None,
        charges_fail: false,
        charges_need_authentication: true,
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

static CHECKOUT_SESSION: LazyLock<Value> = LazyLock::new(|| fixture(include_str!("../fixtures/checkout_session.json")));

/// What a new Checkout Session is made of.
pub struct NewCheckoutSession<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub customer_email: Option<&'a str>,
    pub setup_intent: &'a str,
    pub success_url: &'a str,
    pub cancel_url: Option<&'a str>,
    pub metadata: Value,
    pub url: String,
    pub created: i64,
}

/// A Checkout Session in `mode=setup`, open, with its SetupIntent made.
pub fn checkout_session(new: NewCheckoutSession<'_>) -> Value {
    let mut session = CHECKOUT_SESSION.clone();
    let fields = json!({
        "id": new.id,
        "mode": "setup",
        "status": "open",
        "payment_status": "no_payment_required",
        "payment_intent": null,
        "setup_intent": new.setup_intent,
        "customer": new.customer,
        "customer_email": null,
        "customer_details": {"address": null, "email": new.customer_email, "name": null, "phone": null, "tax_exempt": "none", "tax_ids": null, "business_name": null, "individual_name": null},
        "success_url": new.success_url,
        "cancel_url": new.cancel_url,
        "metadata": new.metadata,
        "url": new.url,
        "created": new.created,
        "expires_at": new.created + 24 * 3600,
        "currency": "usd",
        "amount_subtotal": null,
        "amount_total": null,
        "invoice": null,
        "invoice_creation": null,
        "subscription": null,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "shipping_options": [],
        "total_details": null,
        "livemode": false,
    });
    if let (Some(target), Some(fields)) = (session.as_object_mut(), fields.as_object()) {
        for (name, value) in fields {
            target.insert(name.clone(), value.clone());
        }
    }
    session
}
