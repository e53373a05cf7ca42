//! Stripe webhooks: verifying the signature, reading an event, and what an event does to a
//! subscription.
//!
//! Events are read as JSON rather than as async-stripe's generated types: Stripe sends them in
//! the account's API version, which need not be the one the client library was generated for,
//! and a strict parser would refuse (and Stripe would retry for three days) an event that carries
//! everything this service needs. Only the fields used here are required.
//!
//! Order: Stripe delivers in no guaranteed order, so each subscription remembers the last event
//! applied to it ([`crate::store::EventMark`]: `created`, then id) and an older one changes
//! nothing; the store enforces it atomically with the write ([`apply_stripe_event`]).

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use crate::store::EventMark;

mod apply;
mod receive;

use crate::subscription::{PlanCatalog, Status, Subscription};
pub use apply::{EventContext, EventError, Handled, REMEMBER_EVENTS_FOR, actor, apply_stripe_event, subscription_of};
pub use receive::{FAILED, HANDLED_BEFORE, RECEIVE_OPERATIONS, Receiver, receive};

/// Signatures older (or newer) than this are refused, as Stripe's libraries do.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Why a webhook's signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    #[error("no Stripe-Signature header")]
    Missing,
    /// The header is not `t=...,v1=...`.
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    /// Signed more than five minutes from now.
    #[error("the signature is outside the {TOLERANCE_SECONDS} s tolerance")]
    Expired,
    /// No signature matches the secret.
    #[error("no signature matches")]
    Mismatch,
}

/// Checks `Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...]` over the exact raw payload:
/// any `v1` may match (Stripe sends several while a secret is rolled), compared in constant time.
pub fn verify(payload: &[u8], header: Option<&str>, secret: &str, now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Expired);
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(payload);
    if signatures
        .iter()
        .any(|signature| aws_lc_rs::hmac::verify(&key, &signed, signature).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `Stripe-Signature` header for `payload` at `timestamp`: for tests and the local sandbox.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(payload);
    format!(
        "t={timestamp},v1={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, &signed).as_ref())
    )
}

/// The parts of a Stripe event this service reads.
#[derive(Clone, Debug, PartialEq)]
pub struct StripeEvent {
    /// The event's id (`evt_...`).
    pub id: String,
    /// Its `type`.
    pub kind: String,
    /// Stripe's `created`, in seconds.
    pub created: i64,
    /// `data.object`.
    pub object: Value,
}

/// What an event is about, as far as this service is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `customer.subscription.created|updated|deleted|paused|resumed`: the subscription's state.
    SubscriptionState,
    /// `customer.subscription.trial_will_end`: tell the subscriber.
    TrialWillEnd,
    /// `invoice.paid`: a past-due subscription is active again.
    InvoicePaid,
    /// `invoice.payment_failed`: an active subscription is past due.
    InvoicePaymentFailed,
    /// `invoice.payment_action_required`: the card needs the customer (3-D Secure); an active
    /// subscription is past due, and the customer is mailed the invoice's page.
    InvoicePaymentActionRequired,
    /// `customer.updated`: whether the customer has a default payment method.
    CustomerUpdated,
    /// Any other type: recorded and ignored.
    Other,
}

impl StripeEvent {
    /// Reads an event; the error says what is missing.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
        let text = |name: &str| {
            value[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no `{name}`"))
        };
        Ok(StripeEvent {
            id: text("id")?,
            kind: text("type")?,
            created: value["created"].as_i64().ok_or("no `created`")?,
            object: value["data"]["object"].clone(),
        })
    }

    /// What the event is about.
    pub fn kind(&self) -> EventKind {
        match self.kind.as_str() {
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
            | "customer.subscription.paused"
            | "customer.subscription.resumed" => EventKind::SubscriptionState,
            "customer.subscription.trial_will_end" => EventKind::TrialWillEnd,
            "invoice.paid" => EventKind::InvoicePaid,
            "invoice.payment_failed" => EventKind::InvoicePaymentFailed,
            "invoice.payment_action_required" => EventKind::InvoicePaymentActionRequired,
            "customer.updated" => EventKind::CustomerUpdated,
            _ => EventKind::Other,
        }
    }

    /// Where the event stands in its subscription's order.
    pub fn mark(&self) -> EventMark {
        EventMark {
            created: self.created,
            id: self.id.clone(),
        }
    }

    /// The Stripe subscription the event concerns: the object itself for subscription events;
    /// for invoices, `parent.subscription_details.subscription` (current API versions) or
    /// `subscription` (older ones).
    pub fn stripe_subscription(&self) -> Option<&str> {
        match self.kind() {
            EventKind::SubscriptionState | EventKind::TrialWillEnd => self.object["id"].as_str(),
            EventKind::InvoicePaid | EventKind::InvoicePaymentFailed | EventKind::InvoicePaymentActionRequired => self
                .object["parent"]["subscription_details"]["subscription"]
                .as_str()
                .or_else(|| self.object["subscription"].as_str()),
            EventKind::CustomerUpdated | EventKind::Other => None,
        }
    }

    /// The Stripe customer the event concerns.
    pub fn stripe_customer(&self) -> Option<&str> {
        match self.kind() {
            EventKind::CustomerUpdated => self.object["id"].as_str(),
            _ => self.object["customer"].as_str(),
        }
    }

    /// Whether this is an invoice event (ordered as [`crate::store::EventOrder::Invoice`]).
    pub fn is_invoice(&self) -> bool {
        matches!(
            self.kind(),
            EventKind::InvoicePaid | EventKind::InvoicePaymentFailed | EventKind::InvoicePaymentActionRequired
        )
    }

    /// The user the subscription belongs to, from the `user_id` metadata this service puts on
    /// every Stripe subscription (invoices carry it in their parent's details). It leads to the
    /// subscription by its key, a strongly consistent read, where the Stripe-id indexes are only
    /// eventually consistent.
    pub fn user_id(&self) -> Option<uuid::Uuid> {
        let metadata = match self.kind() {
            EventKind::SubscriptionState | EventKind::TrialWillEnd | EventKind::CustomerUpdated => {
                &self.object["metadata"]
            }
            EventKind::InvoicePaid | EventKind::InvoicePaymentFailed | EventKind::InvoicePaymentActionRequired => {
                &self.object["parent"]["subscription_details"]["metadata"]
            }
            EventKind::Other => return None,
        };
        metadata["user_id"].as_str().and_then(crate::ids::parse_canonical_uuid)
    }
}

fn timestamp(value: &Value) -> Option<DateTime<Utc>> {
    value.as_i64().and_then(|s| Utc.timestamp_opt(s, 0).single())
}

/// The subscription's discount in whole percent, when the object says it: a coupon's
/// `percent_off` (the `discount` object of older API versions, or an expanded `discounts`
/// entry). `None` otherwise, and the stored value stands: events name discounts only by id,
/// and an empty list in an event older than the service's own change (a license change made
/// just before a discount) would otherwise clear a discount Stripe holds.
fn discount_of(object: &Value) -> Option<Option<u32>> {
    // A coupon of 0 % takes nothing off: no discount.
    let percent = |discount: &Value| {
        discount["coupon"]["percent_off"]
            .as_f64()
            .or_else(|| discount["source"]["coupon"]["percent_off"].as_f64())
            .map(|p| Some(p.round() as u32).filter(|p| *p > 0))
    };
    if object["discount"].is_object() {
        return percent(&object["discount"]);
    }
    object["discounts"]
        .as_array()
        .and_then(|entries| entries.first())
        .filter(|discount| discount.is_object())
        .and_then(percent)
}

/// Whether the invoice `object` is the subscription's latest, as far as the stored
/// subscription knows (one stored before the latest invoice was recorded: yes).
fn is_latest_invoice(current: &Subscription, object: &Value) -> bool {
    match (&current.latest_invoice, object["id"].as_str()) {
        (Some(latest), Some(invoice)) => latest == invoice,
        _ => true,
    }
}

fn status_from_stripe(status: &str) -> Option<Status> {
    match status {
        "incomplete_expired" => Some(Status::Canceled),
        other => Status::parse(other),
    }
}

/// What `current` becomes with this event applied, ignoring order (the store fences order:
/// see [`apply_stripe_event`]). Fields the
/// event does not carry, or carries in a form not understood, are left as they are.
pub fn apply_event(current: &Subscription, event: &StripeEvent, catalog: &PlanCatalog) -> Subscription {
    let mut next = current.clone();
    let object = &event.object;
    match event.kind() {
        EventKind::SubscriptionState => {
            if let Some(status) = object["status"].as_str().and_then(status_from_stripe) {
                next.status = status;
            }
            let item = &object["items"]["data"][0];
            if let Some(plan) = item["price"]["id"]
                .as_str()
                .and_then(|price| catalog.by_stripe_price(price))
            {
                next.plan.clone_from(&plan.id);
            }
            if let Some(flag) = object["cancel_at_period_end"].as_bool() {
                next.cancel_at_period_end = flag;
            }
            next.trial_end = timestamp(&object["trial_end"]);
            if next.trial_end.is_none() {
                next.trial_start = None;
            }
            // API versions before 2025-03-31 carry the period on the subscription; later ones
            // only on its items.
            if let Some(end) =
                timestamp(&object["current_period_end"]).or_else(|| timestamp(&item["current_period_end"]))
            {
                next.current_period_end = Some(end);
            }
            // A change made in the portal or the Dashboard reaches the stored licenses and
            // discount here. A quantity of 1 on a subscription that never counted licenses is
            // Stripe's default, not a count.
            if let Some(quantity) = item["quantity"].as_u64().and_then(|q| u32::try_from(q).ok())
                && (current.licenses.is_some() || quantity != 1)
            {
                next.licenses = Some(quantity);
            }
            if let Some(discount) = discount_of(object) {
                next.discount_percent = discount;
            }
            if let Some(invoice) = object["latest_invoice"]
                .as_str()
                .or_else(|| object["latest_invoice"]["id"].as_str())
            {
                next.latest_invoice = Some(invoice.to_owned());
            }
        }
        // An older invoice paid late (a customer settling last month's after this month's
        // failed) says nothing about the subscription: only its latest invoice does.
        EventKind::InvoicePaid => {
            if matches!(current.status, Status::Incomplete | Status::PastDue | Status::Unpaid)
                && is_latest_invoice(current, object)
            {
                next.status = Status::Active;
            }
        }
        // A change's own invoice (`subscription_update`) is sent as a pending update: when it
        // fails, Stripe keeps the subscription as it was, active, and this service voids it.
        EventKind::InvoicePaymentFailed | EventKind::InvoicePaymentActionRequired => {
            if current.status == Status::Active
                && object["billing_reason"] != "subscription_update"
                && is_latest_invoice(current, object)
            {
                next.status = Status::PastDue;
            }
        }
        EventKind::CustomerUpdated => {
            let default_method = &object["invoice_settings"]["default_payment_method"];
            next.has_payment_source = !default_method.is_null() || !object["default_source"].is_null();
        }
        EventKind::TrialWillEnd | EventKind::Other => {}
    }
    next
}

#[cfg(test)]
mod tests;
