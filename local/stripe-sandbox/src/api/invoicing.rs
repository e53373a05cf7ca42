//! What subscriptions bill: invoices made at creation, at each renewal and by prorated changes,
//! charged to the default card (or failing per test card); coupons and the discounts they
//! make; invoice previews; setup intents and customer-portal sessions; and the passing of time
//! (`advance_clock`) that makes renewals, trial ends and their events happen.
//!
//! The sandbox sends the events a consumer acts on (`invoice.paid`,
//! `invoice.payment_failed`, `invoice.payment_action_required`, `invoice.voided`), not the
//! bookkeeping ones (`invoice.created`, `invoice.finalized`).

use serde_json::{Value, json};

use super::{Failure, Outcome, Params, State, invalid, no_such, not_implemented, ordered_id, short_id};
use crate::objects::{self, NewInvoice, NewLine};

/// What happened when an invoice was charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    Paid,
    /// The card was declined (`pm_card_chargeCustomerFail`).
    Failed,
    /// The card needs 3-D Secure, which an off-session charge cannot do
    /// (`pm_card_authenticationRequired`).
    NeedsAuthentication,
    /// No card to charge.
    NoPaymentMethod,
    /// Not tried (`payment_behavior=default_incomplete`): the invoice waits, open.
    NotAttempted,
}

/// How long after finalizing Stripe attempts an automatically collected invoice.
pub const AUTO_ADVANCE_DELAY: i64 = 3600;

/// Stripe's notice comes this long before a trial ends.
const TRIAL_NOTICE: i64 = 3 * 86_400;
/// An `incomplete` subscription whose first invoice is not paid expires after this.
const INCOMPLETE_EXPIRY: i64 = 23 * 3_600;

pub(super) fn interval_seconds(interval: &str) -> i64 {
    match interval {
        "day" => 86_400,
        "week" => 7 * 86_400,
        "year" => 365 * 86_400,
        _ => 30 * 86_400,
    }
}

pub(super) fn period_of(subscription: &Value) -> (i64, i64) {
    let item = &subscription["items"]["data"][0];
    (
        item["current_period_start"].as_i64().unwrap_or(0),
        item["current_period_end"].as_i64().unwrap_or(0),
    )
}

fn interval_of(subscription: &Value) -> i64 {
    interval_seconds(
        subscription["items"]["data"][0]["price"]["recurring"]["interval"]
            .as_str()
            .unwrap_or("month"),
    )
}

/// Whether moving from `before`'s items to `after`'s changes how often the subscription bills:
/// Stripe then resets the billing cycle anchor to now.
pub(super) fn interval_changes(before: &Value, after: &Value) -> bool {
    let interval = |s: &Value| {
        let recurring = &s["items"]["data"][0]["price"]["recurring"];
        (
            recurring["interval"].as_str().unwrap_or("month").to_owned(),
            recurring["interval_count"].as_i64().unwrap_or(1),
        )
    };
    interval(before) != interval(after)
}

/// How long a pending update waits for its invoice to be paid: 23 hours, or less when the
/// trial or period ends sooner.
const PENDING_UPDATE_LIFETIME: i64 = 23 * 3_600;

fn item_amount(item: &Value) -> i64 {
    item["price"]["unit_amount"].as_i64().unwrap_or(0) * item["quantity"].as_i64().unwrap_or(1)
}

fn item_name(item: &Value) -> String {
    let name = item["price"]["nickname"]
        .as_str()
        .or_else(|| item["price"]["id"].as_str())
        .unwrap_or("plan");
    format!("{} × {name}", item["quantity"].as_i64().unwrap_or(1))
}

/// The status a subscription takes after an invoice of its own was charged.
pub(super) fn status_after(charge: Charge, status: &str) -> &str {
    match (charge, status) {
        (Charge::NotAttempted, other) => other,
        (Charge::Paid, "past_due" | "unpaid" | "incomplete" | "trialing" | "active_pending_charge") => "active",
        (Charge::Paid, other) => other,
        (_, "active" | "trialing" | "active_pending_charge") => "past_due",
        (_, other) => other,
    }
}

impl State {
    /// What charging `subscription`'s customer would do now.
    pub(super) fn charge_for(&self, subscription: &Value) -> Charge {
        let customer = subscription["customer"].as_str().unwrap_or_default();
        self.charge_with(
            self.paying_method(&subscription["default_payment_method"], customer)
                .as_deref(),
        )
    }

    /// The subscription's discount and the coupon's percentage.
    fn discount_of(&self, subscription: &Value) -> Option<(String, f64)> {
        let id = subscription["discounts"][0].as_str()?;
        let discount = self.discounts.get(id)?;
        let coupon = self.coupons.get(discount["source"]["coupon"].as_str()?)?;
        Some((id.to_owned(), coupon["percent_off"].as_f64()?))
    }

    /// One line per item for the period `period`.
    pub(super) fn period_lines(subscription: &Value, period: (i64, i64)) -> Vec<Value> {
        subscription["items"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| {
                objects::invoice_line(
                    &ordered_id("il"),
                    NewLine {
                        subscription,
                        item,
                        amount: item_amount(item),
                        quantity: item["quantity"].as_i64().unwrap_or(1),
                        description: item_name(item),
                        period,
                        proration: false,
                    },
                )
            })
            .collect()
    }

    /// The proration lines of moving from `before`'s items to `after`'s at `now`: unused time
    /// on what changed credited, remaining time on what replaced it charged.
    pub(super) fn proration_lines(before: &Value, after: &Value, now: i64) -> Vec<Value> {
        let (start, end) = period_of(before);
        if end <= now || end <= start {
            return Vec::new();
        }
        let prorate = |amount: i64| (amount as f64 * (end - now) as f64 / (end - start) as f64).round() as i64;
        let same = |a: &Value, b: &Value| {
            a["id"] == b["id"] && a["price"]["id"] == b["price"]["id"] && a["quantity"] == b["quantity"]
        };
        let items = |s: &Value| s["items"]["data"].as_array().cloned().unwrap_or_default();
        let (old, new) = (items(before), items(after));
        let mut lines = Vec::new();
        for item in old.iter().filter(|o| !new.iter().any(|n| same(o, n))) {
            lines.push(objects::invoice_line(
                &ordered_id("il"),
                NewLine {
                    subscription: after,
                    item,
                    amount: -prorate(item_amount(item)),
                    quantity: item["quantity"].as_i64().unwrap_or(1),
                    description: format!("Unused time on {}", item_name(item)),
                    period: (now, end),
                    proration: true,
                },
            ));
        }
        for item in new.iter().filter(|n| !old.iter().any(|o| same(o, n))) {
            lines.push(objects::invoice_line(
                &ordered_id("il"),
                NewLine {
                    subscription: after,
                    item,
                    amount: prorate(item_amount(item)),
                    quantity: item["quantity"].as_i64().unwrap_or(1),
                    description: format!("Remaining time on {}", item_name(item)),
                    period: (now, end),
                    proration: true,
                },
            ));
        }
        lines
    }

    /// Moves `subscription`'s items onto a period starting now (a reset billing cycle anchor).
    pub(super) fn start_new_period(subscription: &mut Value, now: i64) {
        let period = (now, now + interval_of(subscription));
        for item in subscription["items"]["data"].as_array_mut().into_iter().flatten() {
            item["current_period_start"] = json!(period.0);
            item["current_period_end"] = json!(period.1);
        }
        subscription["billing_cycle_anchor"] = json!(now);
        if subscription["cancel_at_period_end"] == true {
            subscription["cancel_at"] = json!(period.1);
        }
    }

    /// What a reset billing cycle anchor invoices at once: the unused time of the old items
    /// credited (unless `proration` is `none`) and the new period in full.
    pub(super) fn anchor_reset_lines(before: &Value, after: &Value, proration: &str, now: i64) -> Vec<Value> {
        let credits = if proration == "none" {
            Vec::new()
        } else {
            Self::proration_lines(before, after, now)
                .into_iter()
                .filter(|line| line["amount"].as_i64().unwrap_or(0) < 0)
                .collect()
        };
        credits
            .into_iter()
            .chain(Self::period_lines(after, period_of(after)))
            .collect()
    }

    /// Under `payment_behavior=pending_if_incomplete`, an update whose invoice was not paid
    /// leaves the subscription as it was (`before`), its `pending_update` describing `updated`
    /// and its latest invoice the open one; paying that invoice applies the update, voiding it
    /// or letting it expire discards it.
    pub(super) fn hold_as_pending_update(
        &mut self,
        before: &Value,
        updated: Value,
        invoice: &Value,
        now: i64,
    ) -> Value {
        let id = before["id"].as_str().unwrap_or_default().to_owned();
        let (_, period_end) = period_of(before);
        let ends = [
            Some(period_end),
            before["trial_end"].as_i64(),
            Some(now + PENDING_UPDATE_LIFETIME),
        ];
        let expires_at = ends.into_iter().flatten().filter(|t| *t > now).min().unwrap_or(now);
        let mut kept = before.clone();
        kept["latest_invoice"] = invoice["id"].clone();
        kept["pending_update"] = json!({
            "billing_cycle_anchor": if interval_changes(before, &updated) { json!(now) } else { Value::Null },
            "expires_at": expires_at,
            "subscription_items": updated["items"]["data"].clone(),
            "trial_end": Value::Null,
            "trial_from_plan": Value::Null,
        });
        let mut applied = updated;
        applied["latest_invoice"] = invoice["id"].clone();
        applied["pending_update"] = Value::Null;
        self.pending_updates.insert(id, applied);
        kept
    }

    /// After invoice `invoice` was paid or voided: the pending update waiting for it, if any, is
    /// applied (paid) or discarded (voided), with the subscription's events.
    fn settle_pending_update(&mut self, invoice: &Value, paid: bool, now: i64) {
        let Some(subscription_id) = invoice["parent"]["subscription_details"]["subscription"]
            .as_str()
            .or_else(|| invoice["subscription"].as_str())
            .map(str::to_owned)
        else {
            return;
        };
        let Some(before) = self.subscriptions.get(&subscription_id).cloned() else {
            return;
        };
        if before["pending_update"].is_null() || before["latest_invoice"] != invoice["id"] {
            return;
        }
        let Some(applied) = self.pending_updates.remove(&subscription_id) else {
            return;
        };
        let (next, kind) = if paid {
            let mut next = applied;
            next["status"] = json!(status_after(
                Charge::Paid,
                before["status"].as_str().unwrap_or_default()
            ));
            (next, "customer.subscription.pending_update_applied")
        } else {
            let mut next = before.clone();
            next["pending_update"] = Value::Null;
            (next, "customer.subscription.pending_update_expired")
        };
        self.subscriptions.insert(subscription_id, next.clone());
        let previous = objects::previous_attributes(&before, &next);
        self.emit(kind, &next, Some(previous.clone()), now);
        self.emit("customer.subscription.updated", &next, Some(previous), now);
    }

    /// A draft invoice of `lines` for `subscription`, with its discount applied.
    pub(super) fn draft_invoice(
        &self,
        subscription: &Value,
        reason: &str,
        lines: Vec<Value>,
        period: (i64, i64),
        now: i64,
    ) -> Value {
        let subtotal: i64 = lines.iter().filter_map(|l| l["amount"].as_i64()).sum();
        let discount = self
            .discount_of(subscription)
            .map(|(id, percent)| (id, (subtotal as f64 * percent / 100.0).round() as i64));
        objects::invoice(NewInvoice {
            id: &ordered_id("in"),
            subscription,
            billing_reason: reason,
            lines,
            discount: discount.as_ref().map(|(id, amount)| (id.as_str(), *amount)),
            period,
            created: now,
        })
    }

    /// Finalizes `invoice` (it gets its number) and charges it as `charge` says (nothing to
    /// charge is paid), keeping it. The caller emits [`State::emit_invoice_outcome`] after the
    /// subscription's own event, as Stripe orders them.
    pub(super) fn finalize_and_charge(&mut self, mut invoice: Value, charge: Charge, now: i64) -> (Value, Charge) {
        let customer = invoice["customer"].as_str().unwrap_or_default().to_owned();
        if let Some(customer) = self.customers.get_mut(&customer) {
            let sequence = customer["next_invoice_sequence"].as_i64().unwrap_or(1);
            invoice["number"] = json!(format!(
                "{}-{sequence:04}",
                customer["invoice_prefix"].as_str().unwrap_or("SANDBOX")
            ));
            customer["next_invoice_sequence"] = json!(sequence + 1);
        }
        invoice["status_transitions"]["finalized_at"] = json!(now);
        invoice["effective_at"] = json!(now);
        let amount = invoice["amount_due"].as_i64().unwrap_or(0);
        let charge = if amount == 0 { Charge::Paid } else { charge };
        if amount > 0 && charge != Charge::NotAttempted {
            invoice["attempted"] = json!(true);
            invoice["attempt_count"] = json!(1);
        }
        match charge {
            Charge::Paid => {
                invoice["status"] = json!("paid");
                invoice["amount_paid"] = json!(amount);
                invoice["amount_remaining"] = json!(0);
                invoice["auto_advance"] = json!(false);
                invoice["status_transitions"]["paid_at"] = json!(now);
            }
            Charge::Failed | Charge::NoPaymentMethod => {
                invoice["status"] = json!("open");
                invoice["next_payment_attempt"] = json!(now + 3 * 86_400);
            }
            Charge::NeedsAuthentication | Charge::NotAttempted => invoice["status"] = json!("open"),
        }
        let id = invoice["id"].as_str().unwrap_or_default().to_owned();
        self.invoices.insert(id.clone(), invoice.clone());
        self.remember(&id);
        (invoice, charge)
    }

    pub(super) fn emit_invoice_outcome(&mut self, invoice: &Value, charge: Charge, now: i64) {
        let kind = match charge {
            Charge::NotAttempted => return,
            Charge::Paid => "invoice.paid",
            Charge::Failed | Charge::NoPaymentMethod => "invoice.payment_failed",
            Charge::NeedsAuthentication => "invoice.payment_action_required",
        };
        self.emit(kind, invoice, None, now);
    }

    /// The lines waiting for the subscription's next invoice (prorations of past changes).
    pub(super) fn take_pending(&mut self, subscription: &str) -> Vec<Value> {
        self.pending_lines.remove(subscription).unwrap_or_default()
    }

    pub(super) fn add_pending(&mut self, subscription: &str, lines: Vec<Value>) {
        if !lines.is_empty() {
            self.pending_lines
                .entry(subscription.to_owned())
                .or_default()
                .extend(lines);
        }
    }

    /// `discounts` of a subscription create or update: `[{coupon}]` replaces the discount,
    /// an empty string clears it.
    pub(super) fn apply_discounts(&mut self, subscription: &mut Value, given: &Value, now: i64) -> Result<(), Failure> {
        match given {
            Value::String(s) if s.is_empty() => {
                subscription["discounts"] = json!([]);
                Ok(())
            }
            Value::Array(entries) if entries.len() == 1 => {
                let p = Params::new(&entries[0], &["coupon"])
                    .map_err(|_| not_implemented("discounts other than one coupon"))?;
                let coupon_id = p.required("coupon").map_err(|_| {
                    invalid(
                        Some("discounts[0][coupon]"),
                        "Missing required param: discounts[0][coupon].",
                    )
                })?;
                let coupon = self
                    .coupons
                    .get(coupon_id)
                    .cloned()
                    .ok_or_else(|| no_such("coupon", coupon_id, Some("discounts[0][coupon]")))?;
                let current = self.discount_of(subscription);
                let unchanged = current
                    .as_ref()
                    .and_then(|(id, _)| self.discounts.get(id))
                    .is_some_and(|d| d["source"]["coupon"] == coupon_id);
                if !unchanged {
                    let id = short_id("di");
                    self.discounts
                        .insert(id.clone(), objects::discount(&id, &coupon, subscription, now));
                    subscription["discounts"] = json!([id]);
                    if let Some(coupon) = self.coupons.get_mut(coupon_id) {
                        coupon["times_redeemed"] = json!(coupon["times_redeemed"].as_i64().unwrap_or(0) + 1);
                    }
                }
                Ok(())
            }
            Value::Array(entries) if entries.is_empty() => Ok(()),
            _ => Err(not_implemented("discounts other than one coupon")),
        }
    }

    // Coupons

    pub fn create_coupon(&mut self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(params, &["id", "percent_off", "duration", "name", "metadata", "expand"])?;
        if params.get("amount_off").is_some() {
            return Err(not_implemented("amount_off coupons"));
        }
        let percent: f64 = p
            .required("percent_off")?
            .parse()
            .map_err(|_| invalid(Some("percent_off"), "Invalid decimal: percent_off"))?;
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(invalid(
                Some("percent_off"),
                "Invalid percent_off: must be greater than 0 and at most 100",
            ));
        }
        let duration = p
            .one_of("duration", &["forever", "once", "repeating"])?
            .unwrap_or("once");
        if duration != "forever" {
            return Err(not_implemented("coupons other than duration=forever"));
        }
        let id = p
            .string("id")?
            .map_or_else(|| short_id("cpn")[4..12].to_owned(), str::to_owned);
        if self.coupons.contains_key(&id) {
            return Err(super::error(
                400,
                "invalid_request_error",
                Some("resource_already_exists"),
                Some("id"),
                "Coupon already exists.".to_owned(),
                false,
            ));
        }
        let coupon = objects::coupon(&id, percent, duration, p.string("name")?, now);
        self.coupons.insert(id.clone(), coupon.clone());
        self.remember(&id);
        Ok(coupon)
    }

    pub fn retrieve_coupon(&self, id: &str, params: &Value) -> Outcome {
        Params::new(params, &["expand"])?;
        self.coupons.get(id).cloned().ok_or_else(|| no_such("coupon", id, None))
    }

    pub fn retrieve_discount(&self, id: &str) -> Option<&Value> {
        self.discounts.get(id)
    }

    // Invoices

    pub fn retrieve_invoice(&self, id: &str, params: &Value) -> Outcome {
        Params::new(params, &["expand"])?;
        self.invoices
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("invoice", id, None))
    }

    pub fn list_invoices(&self, params: &Value) -> Outcome {
        let p = Params::new(
            params,
            &[
                "customer",
                "subscription",
                "status",
                "limit",
                "starting_after",
                "expand",
            ],
        )?;
        let customer = p.string("customer")?;
        let subscription = p.string("subscription")?;
        let status = p.one_of("status", &["draft", "open", "paid", "uncollectible", "void"])?;
        self.list("/v1/invoices", &p, |id| {
            self.invoices.get(id).filter(|i| {
                customer.is_none_or(|c| i["customer"] == c)
                    && subscription.is_none_or(|s| i["subscription"] == s)
                    && status.is_none_or(|s| i["status"] == s)
            })
        })
    }

    pub fn void_invoice(&mut self, id: &str, params: &Value, now: i64) -> Outcome {
        Params::new(params, &["expand"])?;
        let mut invoice = self
            .invoices
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("invoice", id, None))?;
        if invoice["status"] != "open" {
            return Err(invalid(
                None,
                format!(
                    "You can only void open invoices; this invoice is {}.",
                    invoice["status"].as_str().unwrap_or("")
                ),
            ));
        }
        invoice["status"] = json!("void");
        invoice["amount_remaining"] = json!(0);
        invoice["next_payment_attempt"] = Value::Null;
        invoice["status_transitions"]["voided_at"] = json!(now);
        self.invoices.insert(id.to_owned(), invoice.clone());
        self.emit("invoice.voided", &invoice, None, now);
        self.settle_pending_update(&invoice, false, now);
        Ok(invoice)
    }

    /// `POST /v1/invoices/create_preview` for a subscription, with the changes of
    /// `subscription_details` (items, proration behavior): the invoice the change would make
    /// now under `always_invoice`, else the subscription's next invoice with the change's
    /// prorations in it. Keeps nothing.
    pub fn create_preview(&self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(params, &["customer", "subscription", "subscription_details", "expand"])?;
        let id = p
            .string("subscription")?
            .ok_or_else(|| not_implemented("invoice previews without a subscription"))?;
        let current = self
            .subscriptions
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("subscription", id, Some("subscription")))?;
        if let Some(customer) = p.string("customer")?
            && current["customer"] != customer
        {
            return Err(invalid(
                Some("subscription"),
                "The subscription does not belong to this customer.",
            ));
        }
        if current["status"] == "canceled" {
            return Err(invalid(
                Some("subscription"),
                "The subscription is canceled and will not invoice again.",
            ));
        }
        let details = params.get("subscription_details").cloned().unwrap_or_else(|| json!({}));
        let d = Params::new(
            &details,
            &["items", "proration_behavior", "proration_date", "billing_cycle_anchor"],
        )
        .map_err(|f| {
            invalid(
                Some("subscription_details"),
                f.body["error"]["message"].as_str().unwrap_or("").to_owned(),
            )
        })?;
        let behavior = d
            .one_of("proration_behavior", &["always_invoice", "create_prorations", "none"])?
            .unwrap_or("create_prorations");
        let at = d.integer("proration_date")?.unwrap_or(now);
        let mut changed = current.clone();
        if let Some(items) = details.get("items") {
            self.update_items(&mut changed, items, at)?;
        }
        let trialing = current["status"] == "trialing";
        let anchor = d.one_of("billing_cycle_anchor", &["now", "unchanged"])?;
        if !trialing && (anchor == Some("now") || interval_changes(&current, &changed)) {
            Self::start_new_period(&mut changed, at);
            let lines = Self::anchor_reset_lines(&current, &changed, behavior, at);
            let period = period_of(&changed);
            let mut preview = self.draft_invoice(&changed, "subscription_update", lines, period, now);
            preview["id"] = json!(format!("upcoming_{}", preview["id"].as_str().unwrap_or_default()));
            preview["hosted_invoice_url"] = Value::Null;
            preview["invoice_pdf"] = Value::Null;
            return Ok(preview);
        }
        let prorations = if trialing || behavior == "none" {
            Vec::new()
        } else {
            Self::proration_lines(&current, &changed, at)
        };
        let pending = self.pending_lines.get(id).cloned().unwrap_or_default();
        let mut preview = if behavior == "always_invoice" && !trialing {
            let lines = pending.into_iter().chain(prorations).collect();
            self.draft_invoice(&changed, "subscription_update", lines, (at, at), now)
        } else {
            let (_, end) = period_of(&changed);
            let next = (end, end + interval_of(&changed));
            let lines = pending
                .into_iter()
                .chain(prorations)
                .chain(Self::period_lines(&changed, next))
                .collect();
            self.draft_invoice(&changed, "upcoming", lines, next, now)
        };
        preview["id"] = json!(format!("upcoming_{}", preview["id"].as_str().unwrap_or_default()));
        preview["hosted_invoice_url"] = Value::Null;
        preview["invoice_pdf"] = Value::Null;
        Ok(preview)
    }

    // Invoice items and one-off invoices (what the self-hosted plans are billed with)

    pub fn create_invoice_item(&mut self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(
            params,
            &[
                "customer",
                "currency",
                "description",
                "quantity",
                "unit_amount_decimal",
                "amount",
                "period",
                "discountable",
                "metadata",
                "invoice",
                "expand",
            ],
        )?;
        let customer = p.required("customer")?;
        self.live_customer(customer, Some("customer"))?;
        let invoice = p.string("invoice")?;
        if let Some(invoice) = invoice {
            let held = self
                .invoices
                .get(invoice)
                .ok_or_else(|| no_such("invoice", invoice, Some("invoice")))?;
            if held["customer"] != customer {
                return Err(invalid(
                    Some("invoice"),
                    "The invoice and the invoice item must belong to the same customer.",
                ));
            }
            if held["status"] != "draft" {
                return Err(invalid(
                    Some("invoice"),
                    format!("Invoice {invoice} is not a draft: invoice items can only be added to draft invoices."),
                ));
            }
        }
        let quantity = p.integer("quantity")?.unwrap_or(1);
        if quantity < 0 {
            return Err(invalid(Some("quantity"), "Invalid quantity: must be at least 0"));
        }
        let unit = match (p.string("unit_amount_decimal")?, p.integer("amount")?) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    Some("amount"),
                    "You may only specify one of these parameters: amount, unit_amount_decimal.",
                ));
            }
            (Some(text), None) => text
                .parse::<f64>()
                .ok()
                .filter(|u| u.is_finite() && *u >= 0.0)
                .map(|u| u.round() as i64)
                .ok_or_else(|| invalid(Some("unit_amount_decimal"), format!("Invalid decimal: {text}")))?,
            (None, Some(amount)) if quantity <= 1 => amount,
            (None, Some(_)) => {
                return Err(invalid(
                    Some("amount"),
                    "When passing quantity, use unit_amount_decimal rather than amount.",
                ));
            }
            (None, None) => {
                return Err(invalid(Some("amount"), "Missing required param: amount."));
            }
        };
        let period = match params.get("period") {
            None => (now, now),
            Some(given) => {
                let period = Params::new(given, &["start", "end"])?;
                let start = period
                    .integer("start")?
                    .ok_or_else(|| invalid(Some("period[start]"), "Missing required param: period[start]."))?;
                let end = period
                    .integer("end")?
                    .ok_or_else(|| invalid(Some("period[end]"), "Missing required param: period[end]."))?;
                if end < start {
                    return Err(invalid(
                        Some("period[end]"),
                        "The end of the period must be greater than or equal to its start.",
                    ));
                }
                (start, end)
            }
        };
        let id = ordered_id("ii");
        let item = json!({
            "id": id,
            "object": "invoiceitem",
            "amount": unit * quantity,
            "currency": p.string("currency")?.unwrap_or("usd"),
            "customer": customer,
            "customer_account": null,
            "date": now,
            "description": p.string("description")?,
            "discountable": p.boolean("discountable")?.unwrap_or(true),
            "discounts": [],
            "invoice": null,
            "livemode": false,
            "metadata": p.metadata(&json!({}))?.unwrap_or_else(|| json!({})),
            "net_amount": unit * quantity,
            "parent": null,
            "period": {"start": period.0, "end": period.1},
            "pricing": {"type": "price_details", "price_details": null, "unit_amount_decimal": unit.to_string()},
            "proration": false,
            "quantity": quantity,
            "quantity_decimal": quantity.to_string(),
            "tax_rates": [],
            "test_clock": null,
        });
        let mut item = item;
        if let Some(invoice) = invoice {
            item["invoice"] = json!(invoice);
            let line = item_line(&item, invoice);
            if let Some(held) = self.invoices.get_mut(invoice) {
                add_line(held, line);
            }
        }
        self.invoice_items.insert(id.clone(), item.clone());
        self.remember(&id);
        Ok(item)
    }

    /// `GET /v1/invoiceitems`: a customer's items, an invoice's, or the pending ones (on no
    /// invoice yet), newest first.
    pub fn list_invoice_items(&self, params: &Value) -> Outcome {
        let p = Params::new(
            params,
            &["customer", "invoice", "pending", "limit", "starting_after", "expand"],
        )?;
        let customer = p.string("customer")?;
        let invoice = p.string("invoice")?;
        let pending = p.boolean("pending")?;
        self.list("/v1/invoiceitems", &p, |id| {
            self.invoice_items.get(id).filter(|item| {
                customer.is_none_or(|c| item["customer"] == c)
                    && invoice.is_none_or(|i| item["invoice"] == i)
                    && pending.is_none_or(|wanted| item["invoice"].is_null() == wanted)
            })
        })
    }

    /// A one-off invoice of the customer's pending invoice items (`pending_invoice_items_behavior
    /// =include`; Stripe's default since 2022 is `exclude`, which leaves them pending), a draft.
    pub fn create_invoice(&mut self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(
            params,
            &[
                "customer",
                "collection_method",
                "auto_advance",
                "pending_invoice_items_behavior",
                "description",
                "metadata",
                "statement_descriptor",
                "expand",
            ],
        )?;
        let customer = p.required("customer")?.to_owned();
        self.live_customer(&customer, Some("customer"))?;
        if p.one_of("collection_method", &["charge_automatically", "send_invoice"])? == Some("send_invoice") {
            return Err(not_implemented("collection_method=send_invoice"));
        }
        let include = p.one_of("pending_invoice_items_behavior", &["exclude", "include"])? == Some("include");
        let pending: Vec<String> = if include {
            self.invoice_items
                .iter()
                .filter(|(_, item)| item["customer"] == customer.as_str() && item["invoice"].is_null())
                .map(|(id, _)| id.clone())
                .collect()
        } else {
            Vec::new()
        };
        let owner = json!({"id": null, "customer": customer, "currency": "usd", "metadata": {}});
        let id = ordered_id("in");
        let lines: Vec<Value> = pending
            .iter()
            .filter_map(|item_id| self.invoice_items.get(item_id))
            .map(|item| item_line(item, &id))
            .collect();
        let mut invoice = objects::invoice(NewInvoice {
            id: &id,
            subscription: &owner,
            billing_reason: "manual",
            lines,
            discount: None,
            period: (now, now),
            created: now,
        });
        invoice["parent"] = Value::Null;
        invoice["subscription"] = Value::Null;
        invoice["auto_advance"] = json!(p.boolean("auto_advance")?.unwrap_or(false));
        if let Some(description) = p.string("description")? {
            invoice["description"] = json!(description);
        }
        if let Some(metadata) = p.metadata(&json!({}))? {
            invoice["metadata"] = metadata;
        }
        for item_id in &pending {
            if let Some(item) = self.invoice_items.get_mut(item_id) {
                item["invoice"] = json!(id);
            }
        }
        self.invoices.insert(id.clone(), invoice.clone());
        self.remember(&id);
        Ok(invoice)
    }

    pub fn finalize_invoice(&mut self, id: &str, params: &Value, now: i64) -> Outcome {
        let p = Params::new(params, &["auto_advance", "expand"])?;
        let auto_advance = p.boolean("auto_advance")?;
        let mut invoice = self
            .invoices
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("invoice", id, None))?;
        if invoice["status"] != "draft" {
            return Err(invalid(None, format!("This invoice is already finalized: {id}")));
        }
        let customer = invoice["customer"].as_str().unwrap_or_default().to_owned();
        if let Some(customer) = self.customers.get_mut(&customer) {
            let sequence = customer["next_invoice_sequence"].as_i64().unwrap_or(1);
            invoice["number"] = json!(format!(
                "{}-{sequence:04}",
                customer["invoice_prefix"].as_str().unwrap_or("SANDBOX")
            ));
            customer["next_invoice_sequence"] = json!(sequence + 1);
        }
        invoice["status"] = json!("open");
        if let Some(auto_advance) = auto_advance {
            invoice["auto_advance"] = json!(auto_advance);
        }
        invoice["effective_at"] = json!(now);
        invoice["status_transitions"]["finalized_at"] = json!(now);
        if invoice["amount_due"] == 0 {
            invoice["status"] = json!("paid");
            invoice["status_transitions"]["paid_at"] = json!(now);
        }
        self.invoices.insert(id.to_owned(), invoice.clone());
        if invoice["status"] == "paid" {
            self.emit("invoice.paid", &invoice, None, now);
        }
        Ok(invoice)
    }

    /// Charges an open invoice with the customer's default card now: paid, or a card error
    /// (the invoice stays open; `invoice.payment_failed` or `invoice.payment_action_required`).
    pub fn pay_invoice(&mut self, id: &str, params: &Value, now: i64) -> Outcome {
        Params::new(params, &["off_session", "expand"])?;
        let invoice = self
            .invoices
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("invoice", id, None))?;
        match invoice["status"].as_str() {
            Some("paid") => return Err(invalid(None, "Invoice is already paid")),
            Some("open") => {}
            _ => {
                return Err(invalid(
                    None,
                    format!(
                        "You can only pay open invoices; this invoice is {}.",
                        invoice["status"].as_str().unwrap_or("")
                    ),
                ));
            }
        }
        let (invoice, charge) = self.collect(id, invoice, now);
        match charge {
            Charge::Paid => Ok(invoice),
            Charge::NoPaymentMethod => Err(invalid(
                None,
                "This customer has no attached payment source or default payment method. Please consider adding a default payment method.",
            )),
            Charge::NeedsAuthentication => Err(super::card_declined("authentication_required")),
            _ => Err(super::card_declined("generic_decline")),
        }
    }

    /// Charges an open invoice with the customer's default card at `now`, records the attempt,
    /// and emits its outcome.
    fn collect(&mut self, id: &str, mut invoice: Value, now: i64) -> (Value, Charge) {
        let customer = invoice["customer"].as_str().unwrap_or_default().to_owned();
        let charge = self.charge_with(self.paying_method(&Value::Null, &customer).as_deref());
        let amount = invoice["amount_due"].as_i64().unwrap_or(0);
        invoice["attempted"] = json!(true);
        invoice["attempt_count"] = json!(invoice["attempt_count"].as_i64().unwrap_or(0) + 1);
        if charge == Charge::Paid {
            invoice["status"] = json!("paid");
            invoice["amount_paid"] = json!(amount);
            invoice["amount_remaining"] = json!(0);
            invoice["status_transitions"]["paid_at"] = json!(now);
        }
        self.invoices.insert(id.to_owned(), invoice.clone());
        self.emit_invoice_outcome(&invoice, charge, now);
        if charge == Charge::Paid {
            self.settle_pending_update(&invoice, true, now);
        }
        (invoice, charge)
    }

    /// Stripe attempts an automatically collected one-off invoice (`auto_advance`) about an
    /// hour after it is finalized: each such invoice not yet attempted whose hour ends by `to`
    /// is charged then, in the order they were finalized.
    fn collect_auto_advancing(&mut self, to: i64) {
        let mut due: Vec<(i64, String)> = self
            .invoices
            .iter()
            .filter(|(_, invoice)| {
                invoice["status"] == "open"
                    && invoice["auto_advance"] == true
                    && invoice["subscription"].is_null()
                    && invoice["attempt_count"].as_i64().unwrap_or(0) == 0
            })
            .filter_map(|(id, invoice)| {
                let at = invoice["status_transitions"]["finalized_at"].as_i64()? + AUTO_ADVANCE_DELAY;
                (at <= to).then(|| (at, id.clone()))
            })
            .collect();
        due.sort();
        for (at, id) in due {
            if let Some(invoice) = self.invoices.get(&id).cloned() {
                self.collect(&id, invoice, at);
            }
        }
    }

    // Setup intents and portal sessions

    pub fn create_setup_intent(&mut self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(
            params,
            &[
                "customer",
                "usage",
                "payment_method_types",
                "metadata",
                "description",
                "expand",
            ],
        )?;
        let customer = p.required("customer")?;
        self.live_customer(customer, Some("customer"))?;
        let usage = p
            .one_of("usage", &["off_session", "on_session"])?
            .unwrap_or("off_session");
        if let Some(types) = params.get("payment_method_types")
            && types.as_array().is_none_or(|t| t.iter().any(|t| t != "card"))
        {
            return Err(not_implemented("payment methods other than card"));
        }
        let id = ordered_id("seti");
        let mut intent = objects::setup_intent(&id, customer, usage, now);
        if let Some(metadata) = p.metadata(&json!({}))? {
            intent["metadata"] = metadata;
        }
        if let Some(description) = p.string("description")? {
            intent["description"] = json!(description);
        }
        self.setup_intents.insert(id.clone(), intent.clone());
        self.remember(&id);
        self.emit("setup_intent.created", &intent, None, now);
        Ok(intent)
    }

    /// `GET /v1/setup_intents`: a customer's SetupIntents (or all), newest first.
    pub fn list_setup_intents(&self, params: &Value) -> Outcome {
        let p = Params::new(params, &["customer", "limit", "starting_after", "expand"])?;
        let customer = p.string("customer")?;
        self.list("/v1/setup_intents", &p, |id| {
            self.setup_intents
                .get(id)
                .filter(|intent| customer.is_none_or(|c| intent["customer"] == c))
        })
    }

    pub fn retrieve_setup_intent(&self, id: &str, params: &Value) -> Outcome {
        Params::new(params, &["expand", "client_secret"])?;
        self.setup_intents
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("setup_intent", id, None))
    }

    /// `POST /v1/billing_portal/configurations`: what the customer portal lets a customer do.
    /// The features are kept as sent (booleans read from the form); `subscription_update` and
    /// `subscription_cancel` are checked as Stripe checks them.
    pub fn create_portal_configuration(&mut self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(
            params,
            &[
                "business_profile",
                "features",
                "default_return_url",
                "login_page",
                "metadata",
                "name",
                "expand",
            ],
        )?;
        let features = params
            .get("features")
            .cloned()
            .ok_or_else(|| invalid(Some("features"), "Missing required param: features."))?;
        let features = booleans(features);
        for (feature, allowed) in [
            ("customer_update", &["enabled", "allowed_updates"][..]),
            ("invoice_history", &["enabled"][..]),
            ("payment_method_update", &["enabled"][..]),
            (
                "subscription_cancel",
                &["enabled", "mode", "proration_behavior", "cancellation_reason"][..],
            ),
            (
                "subscription_update",
                &["enabled", "default_allowed_updates", "products", "proration_behavior"][..],
            ),
        ] {
            if let Some(given) = features.get(feature) {
                Params::new(given, allowed).map_err(|f| {
                    invalid(
                        Some(&format!("features[{feature}]")),
                        f.body["error"]["message"].as_str().unwrap_or("").to_owned(),
                    )
                })?;
                if given.get("enabled").is_none() {
                    return Err(invalid(
                        Some(&format!("features[{feature}][enabled]")),
                        format!("Missing required param: features[{feature}][enabled]."),
                    ));
                }
            }
        }
        if let Some(unknown) = features.as_object().and_then(|f| {
            f.keys().find(|k| {
                ![
                    "customer_update",
                    "invoice_history",
                    "payment_method_update",
                    "subscription_cancel",
                    "subscription_update",
                ]
                .contains(&k.as_str())
            })
        }) {
            return Err(invalid(
                Some(&format!("features[{unknown}]")),
                format!("Received unknown parameter: features[{unknown}]"),
            ));
        }
        let id = short_id("bpc");
        let configuration = json!({
            "id": id,
            "object": "billing_portal.configuration",
            "active": true,
            "application": null,
            "business_profile": params.get("business_profile").cloned().unwrap_or_else(|| json!({})),
            "created": now,
            "default_return_url": p.string("default_return_url")?,
            "features": features,
            "is_default": false,
            "livemode": false,
            "metadata": p.metadata(&json!({}))?.unwrap_or_else(|| json!({})),
            "name": p.string("name")?,
            "updated": now,
        });
        self.portal_configurations.insert(id.clone(), configuration.clone());
        self.remember(&id);
        Ok(configuration)
    }

    /// `GET /v1/billing_portal/configurations`, newest first.
    pub fn list_portal_configurations(&self, params: &Value) -> Outcome {
        let p = Params::new(params, &["active", "is_default", "limit", "starting_after", "expand"])?;
        let active = p.boolean("active")?;
        self.list("/v1/billing_portal/configurations", &p, |id| {
            self.portal_configurations
                .get(id)
                .filter(|c| active.is_none_or(|a| c["active"] == a))
        })
    }

    pub fn retrieve_portal_configuration(&self, id: &str, params: &Value) -> Outcome {
        Params::new(params, &["expand"])?;
        self.portal_configurations
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("billing_portal.configuration", id, None))
    }

    pub fn create_portal_session(&mut self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(params, &["customer", "return_url", "locale", "configuration", "expand"])?;
        let customer = p.required("customer")?;
        self.live_customer(customer, Some("customer"))?;
        let configuration = match p.string("configuration")? {
            Some(id) => {
                let found = self
                    .portal_configurations
                    .get(id)
                    .ok_or_else(|| no_such("billing_portal.configuration", id, Some("configuration")))?;
                if found["active"] != true {
                    return Err(invalid(
                        Some("configuration"),
                        format!("The configuration {id} is not active."),
                    ));
                }
                id.to_owned()
            }
            None => "bpc_sandbox_default".to_owned(),
        };
        let return_url = p.string("return_url")?;
        if let Some(url) = return_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(invalid(Some("return_url"), "Not a valid URL"));
        }
        let id = ordered_id("bps");
        let mut session = objects::portal_session(&id, customer, return_url, now);
        session["configuration"] = json!(configuration);
        self.remember(&id);
        Ok(session)
    }

    // Time

    /// Moves the sandbox's time from `from` to `to`, making what falls due in between happen
    /// in order, each at its own moment: trial-end notices, trial ends (charged), renewals
    /// (charged, with the prorations waiting for them), cancellations at period end, and the
    /// expiry of `incomplete` subscriptions. Returns the events made.
    pub fn advance_clock(&mut self, from: i64, to: i64) -> Vec<Value> {
        self.request = (
            format!("req_{}", &uuid::Uuid::new_v4().simple().to_string()[..14]),
            None,
        );
        let first = self.emitted.len();
        let ids: Vec<String> = self
            .order
            .iter()
            .filter(|id| self.subscriptions.contains_key(*id))
            .cloned()
            .collect();
        for id in ids {
            // Each step moves this subscription's own time forward; a long jump renews it once
            // per period it covers.
            for _ in 0..10_000 {
                if !self.step(&id, from, to) {
                    break;
                }
            }
        }
        self.collect_auto_advancing(to);
        self.emitted.drain(first..).collect()
    }

    /// Makes the earliest thing due for subscription `id` in `(from, to]` happen. False when
    /// nothing is.
    fn step(&mut self, id: &str, from: i64, to: i64) -> bool {
        let Some(subscription) = self.subscriptions.get(id).cloned() else {
            return false;
        };
        let (_, period_end) = period_of(&subscription);
        if let Some(expires_at) = subscription["pending_update"]["expires_at"].as_i64()
            && expires_at <= to
        {
            // Stripe voids the invoice of an update left unpaid, and discards the update.
            if let Some(latest) = subscription["latest_invoice"].as_str().map(str::to_owned)
                && self.invoices.get(&latest).is_some_and(|i| i["status"] == "open")
            {
                let _ = self.void_invoice(&latest, &json!({}), expires_at.max(from));
            }
            if let Some(mut still) = self
                .subscriptions
                .get(id)
                .cloned()
                .filter(|s| !s["pending_update"].is_null())
            {
                still["pending_update"] = Value::Null;
                self.pending_updates.remove(id);
                self.subscriptions.insert(id.to_owned(), still);
            }
            return true;
        }
        match subscription["status"].as_str().unwrap_or_default() {
            "trialing" => {
                let end = subscription["trial_end"].as_i64().unwrap_or(i64::MAX);
                let notice = end - TRIAL_NOTICE;
                if notice > from && notice <= to && self.noticed.insert((id.to_owned(), end)) {
                    self.emit("customer.subscription.trial_will_end", &subscription, None, notice);
                    return true;
                }
                if end <= to {
                    self.cycle(id, end, None);
                    return true;
                }
                false
            }
            "incomplete" => {
                let expiry = subscription["created"].as_i64().unwrap_or(0) + INCOMPLETE_EXPIRY;
                if expiry > to {
                    return false;
                }
                let mut expired = subscription.clone();
                expired["status"] = json!("incomplete_expired");
                expired["ended_at"] = json!(expiry);
                self.subscriptions.insert(id.to_owned(), expired.clone());
                let previous = objects::previous_attributes(&subscription, &expired);
                self.emit("customer.subscription.updated", &expired, Some(previous), expiry);
                true
            }
            "active" | "past_due" | "unpaid" if period_end <= to => {
                if subscription["cancel_at_period_end"] == true {
                    let mut canceled = subscription.clone();
                    canceled["status"] = json!("canceled");
                    canceled["ended_at"] = json!(period_end);
                    canceled["canceled_at"] = json!(period_end);
                    canceled["cancellation_details"]["reason"] = json!("cancellation_requested");
                    self.subscriptions.insert(id.to_owned(), canceled.clone());
                    self.emit("customer.subscription.deleted", &canceled, None, period_end);
                } else {
                    self.cycle(id, period_end, None);
                }
                true
            }
            _ => false,
        }
    }

    /// Renews subscription `id` at `at` (see [`State::start_period`]).
    pub(super) fn cycle(&mut self, id: &str, at: i64, forced: Option<Charge>) -> Option<Value> {
        let before = self.subscriptions.get(id)?.clone();
        Some(self.start_period(&before, before.clone(), at, forced))
    }

    /// Starts `subscription`'s next period at `at`: its items move to the new period, the
    /// period (with the prorations waiting for it) is invoiced and charged, as `forced` says or
    /// else as its card does, and the status follows the payment. Keeps it and emits
    /// `customer.subscription.updated` (against `before`), then the invoice's outcome.
    pub(super) fn start_period(
        &mut self,
        before: &Value,
        mut subscription: Value,
        at: i64,
        forced: Option<Charge>,
    ) -> Value {
        let id = subscription["id"].as_str().unwrap_or_default().to_owned();
        let period = (at, at + interval_of(&subscription));
        for item in subscription["items"]["data"].as_array_mut().into_iter().flatten() {
            item["current_period_start"] = json!(period.0);
            item["current_period_end"] = json!(period.1);
        }
        if subscription["cancel_at_period_end"] == true {
            subscription["cancel_at"] = json!(period.1);
        }
        let lines: Vec<Value> = self
            .take_pending(&id)
            .into_iter()
            .chain(Self::period_lines(&subscription, period))
            .collect();
        let draft = self.draft_invoice(&subscription, "subscription_cycle", lines, period, at);
        let charge = forced.unwrap_or_else(|| self.charge_for(&subscription));
        let (invoice, charge) = self.finalize_and_charge(draft, charge, at);
        let status = status_after(charge, subscription["status"].as_str().unwrap_or_default()).to_owned();
        subscription["status"] = json!(status);
        subscription["latest_invoice"] = invoice["id"].clone();
        self.subscriptions.insert(id, subscription.clone());
        let previous = objects::previous_attributes(before, &subscription);
        self.emit("customer.subscription.updated", &subscription, Some(previous), at);
        self.emit_invoice_outcome(&invoice, charge, at);
        subscription
    }
}

/// The line an invoice item makes on `invoice`.
fn item_line(item: &Value, invoice: &str) -> Value {
    json!({
        "id": ordered_id("il"),
        "object": "line_item",
        "amount": item["amount"],
        "currency": item["currency"],
        "description": item["description"],
        "discount_amounts": [],
        "discountable": item["discountable"],
        "discounts": [],
        "invoice": invoice,
        "livemode": false,
        "metadata": item["metadata"],
        "parent": {
            "type": "invoice_item_details",
            "invoice_item_details": {"invoice_item": item["id"], "proration": false,
                                     "proration_details": {"credited_items": null}, "subscription": null},
            "subscription_item_details": null,
        },
        "period": item["period"],
        "pretax_credit_amounts": [],
        "pricing": item["pricing"],
        "quantity": item["quantity"],
        "quantity_decimal": item["quantity_decimal"],
        "subscription": null,
        "subtotal": item["amount"],
        "taxes": [],
    })
}

/// Adds `line` to a draft one-off invoice and recomputes its totals (no discount applies).
fn add_line(invoice: &mut Value, line: Value) {
    let amount = line["amount"].as_i64().unwrap_or(0);
    if let Some(lines) = invoice["lines"]["data"].as_array_mut() {
        lines.push(line);
    }
    let count = invoice["lines"]["data"].as_array().map_or(0, Vec::len);
    invoice["lines"]["total_count"] = json!(count);
    for field in [
        "subtotal",
        "subtotal_excluding_tax",
        "total",
        "total_excluding_tax",
        "amount_due",
        "amount_remaining",
    ] {
        invoice[field] = json!(invoice[field].as_i64().unwrap_or(0) + amount);
    }
}

/// The form's `"true"`/`"false"` strings as booleans, everywhere in `value`.
fn booleans(value: Value) -> Value {
    match value {
        Value::String(text) if text == "true" => Value::Bool(true),
        Value::String(text) if text == "false" => Value::Bool(false),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, booleans(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(booleans).collect()),
        other => other,
    }
}
