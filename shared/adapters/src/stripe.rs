//! `StripeBilling`: the [`Billing`] port on async-stripe, with the retry policy every Stripe
//! call follows: a per-attempt timeout, and backoff on network errors, timeouts, 5xx, 429 and
//! a concurrent request holding the same idempotency key.

use std::time::Duration;

use ::stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use async_trait::async_trait;
use billing::config::{ConfigError, Environment, optional, required};
use billing::deadline;
use billing::stripe::{
    Billing, BillingError, CheckoutSession, Customer, HeldInvoice, InvoicePage, InvoicePreview, InvoiceStatus,
    InvoiceSummary, PreviewLine, PriceTerms, Proration, SavedCard, SetupCheckout, SetupIntent, StripeSubscription,
    SubscriptionTerms,
};
use billing::subscription::Status;
use chrono::{DateTime, TimeZone, Utc};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::{
    CreateInvoice, CreateInvoicePendingInvoiceItemsBehavior, CreatePreviewInvoice,
    CreatePreviewInvoiceSubscriptionDetails, CreatePreviewInvoiceSubscriptionDetailsItems,
    CreatePreviewInvoiceSubscriptionDetailsProrationBehavior, FinalizeInvoiceInvoice, ListInvoice, PayInvoice,
    RetrieveInvoice, VoidInvoiceInvoice,
};
use stripe_billing::invoice_item::{CreateInvoiceItem, ListInvoiceItem, Period as InvoiceItemPeriod};
use stripe_billing::subscription::{
    CancelSubscription, CreateSubscription, CreateSubscriptionItems, CreateSubscriptionTrialEnd, DiscountsDataParam,
    RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems, UpdateSubscriptionPaymentBehavior,
    UpdateSubscriptionProrationBehavior, UpdateSubscriptionTrialEnd,
};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_core::customer::{CreateCustomer, UpdateCustomer, UpdateCustomerInvoiceSettings};
use stripe_core::setup_intent::{CreateSetupIntent, CreateSetupIntentUsage, ListSetupIntent, RetrieveSetupIntent};
use stripe_payment::payment_method::{AttachPaymentMethod, RetrievePaymentMethod};
use stripe_shared::{
    Coupon, Invoice, Price, RecurringInterval, SetupIntentStatus, Subscription as StripeSubscriptionObject,
    SubscriptionStatus,
};
use uuid::Uuid;

/// The shortest attempt worth starting before a deadline.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// How hard to try each Stripe call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call.
    pub attempts: u32,
    /// How long one attempt may take.
    pub attempt_timeout: Duration,
    /// The wait before the second attempt; each later wait is four times longer.
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts of at most 4 s, 100 ms then 400 ms apart: under API Gateway's 30 s.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            attempt_timeout: Duration::from_secs(4),
            first_backoff: Duration::from_millis(100),
        }
    }
}

/// The `Billing` port on async-stripe.
#[derive(Clone)]
pub struct StripeBilling {
    client: ::stripe::Client,
    retry: RetryPolicy,
    /// The customer-portal configuration portal sessions open with (`bpc_...`), made by the
    /// Stripe set-up script; the account's default when none.
    portal_configuration: Option<String>,
}

/// The metadata key naming what made a Stripe object, and the name of the SetupIntents made
/// for the subscriptions' card forms.
const MADE_BY: &str = "made_by";
/// The expansion that makes a subscription's discounts say their percentage.
const DISCOUNT_COUPONS: &str = "discounts.source.coupon";
const SETUP_INTENT_MAKER: &str = "billing_setup_intent";

impl std::fmt::Debug for StripeBilling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the secret key: never print it.
        f.debug_struct("StripeBilling")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl StripeBilling {
    /// A client for `secret_key`, talking to `api_base` (a local sandbox) when given.
    pub fn new(secret_key: &str, api_base: Option<&str>, retry: RetryPolicy) -> Result<Self, BillingError> {
        let mut builder = ::stripe::ClientBuilder::new(secret_key).timeout(retry.attempt_timeout);
        if let Some(base) = api_base {
            let base = if base.ends_with('/') {
                base.to_owned()
            } else {
                format!("{base}/")
            };
            builder = builder.url(base);
        }
        let client = builder
            .build()
            .map_err(|e| BillingError::Rejected(format!("Stripe client: {e}")))?;
        Ok(StripeBilling {
            client,
            retry,
            portal_configuration: None,
        })
    }

    /// Portal sessions open with this configuration (`bpc_...`) rather than the account's
    /// default, which may let customers change plans and quantities.
    #[must_use]
    pub fn with_portal_configuration(mut self, configuration: Option<String>) -> Self {
        self.portal_configuration = configuration.filter(|c| !c.is_empty());
        self
    }

    /// From `STRIPE_SECRET_KEY` and, optionally, `STRIPE_API_BASE` and
    /// `STRIPE_PORTAL_CONFIGURATION`.
    pub fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let key = required(env, "STRIPE_SECRET_KEY")?;
        let base = optional(env, "STRIPE_API_BASE");
        let billing =
            StripeBilling::new(&key, base.as_deref(), RetryPolicy::default()).map_err(|e| ConfigError::Invalid {
                name: "STRIPE_SECRET_KEY".into(),
                reason: e.to_string(),
            })?;
        let portal = optional(env, "STRIPE_PORTAL_CONFIGURATION");
        if let Some(id) = portal.as_deref().filter(|id| !id.starts_with("bpc_")) {
            return Err(ConfigError::Invalid {
                name: "STRIPE_PORTAL_CONFIGURATION".into(),
                reason: format!("{id:?} is not a portal configuration id (bpc_...)"),
            });
        }
        Ok(billing.with_portal_configuration(portal))
    }

    /// Runs `call` with the idempotency key until it succeeds, fails for good, or the
    /// attempts run out.
    async fn with_retries<T, F, Fut>(&self, operation: &str, key: &str, call: F) -> Result<T, BillingError>
    where
        F: Fn(RequestStrategy) -> Fut,
        Fut: std::future::Future<Output = Result<T, StripeError>>,
    {
        let key = IdempotencyKey::new(key).map_err(|e| BillingError::Rejected(e.to_string()))?;
        let mut backoff = self.retry.first_backoff;
        let mut last = String::new();
        for attempt in 1..=self.retry.attempts {
            // Within an invocation, an attempt gets what is left before its deadline, and none
            // is started that could not finish: the caller answers 502 while it still can.
            let budget = deadline::remaining();
            if budget.is_some_and(|left| left < MIN_ATTEMPT) {
                tracing::warn!(
                    operation,
                    attempt,
                    "no time left before the deadline for another Stripe attempt"
                );
                billing::metrics::stripe_failure("unavailable");
                return Err(BillingError::Unavailable(format!(
                    "{operation}: out of time before the invocation's deadline{}",
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(" (last failure: {last})")
                    }
                )));
            }
            let attempt_time = budget.map_or(self.retry.attempt_timeout, |left| left.min(self.retry.attempt_timeout));
            let outcome = match tokio::time::timeout(attempt_time, call(RequestStrategy::Idempotent(key.clone()))).await
            {
                Ok(outcome) => outcome,
                Err(_) => {
                    last = format!("no answer within {} ms", attempt_time.as_millis());
                    tracing::warn!(operation, attempt, error = %last, "Stripe call timed out; retrying");
                    if attempt < self.retry.attempts {
                        billing::metrics::stripe_retry();
                        tokio::time::sleep(backoff.min(deadline::remaining().unwrap_or(backoff))).await;
                        backoff *= 4;
                    }
                    continue;
                }
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(error) => match classify(&error) {
                    Retry::Yes => {
                        last = describe(&error);
                        tracing::warn!(operation, attempt, error = %last, "Stripe call failed; retrying");
                    }
                    Retry::No(error) => {
                        tracing::warn!(operation, attempt, error = %error, "Stripe refused the call");
                        billing::metrics::stripe_failure("refused");
                        return Err(error);
                    }
                },
            }
            if attempt < self.retry.attempts {
                billing::metrics::stripe_retry();
                tokio::time::sleep(backoff.min(deadline::remaining().unwrap_or(backoff))).await;
                backoff *= 4;
            }
        }
        billing::metrics::stripe_failure("unavailable");
        Err(BillingError::Unavailable(format!("{operation}: {last}")))
    }
}

impl StripeBilling {
    /// The subscription as Stripe holds it now. Its item id is Stripe's business: read it
    /// rather than keep a copy that can go stale.
    async fn retrieve_object(&self, subscription: &str, key: &str) -> Result<StripeSubscriptionObject, BillingError> {
        let retrieve = RetrieveSubscription::new(subscription);
        self.with_retries("retrieve_subscription", key, |_| {
            let request = retrieve.clone();
            async move {
                request
                    .customize()
                    .request_strategy(RequestStrategy::Once)
                    .send(&self.client)
                    .await
            }
        })
        .await
    }

    /// A price, for what it costs.
    async fn retrieve_price(&self, price: &str, key: &str) -> Result<Price, BillingError> {
        self.with_retries("retrieve_price", key, |_| async move {
            RequestBuilder::new(StripeMethod::Get, format!("/prices/{price}"))
                .customize::<Price>()
                .request_strategy(RequestStrategy::Once)
                .send(&self.client)
                .await
        })
        .await
    }

    /// The coupon of `percent` off forever, made once per percentage under a fixed id
    /// (`billing-percent-20`), so every subscription with that discount shares it and a retry
    /// finds the one already made.
    async fn ensure_coupon(&self, percent: u32, key: &str) -> Result<String, BillingError> {
        #[derive(serde::Serialize)]
        struct NewCoupon {
            id: String,
            percent_off: u32,
            duration: &'static str,
            name: String,
        }
        let coupon = NewCoupon {
            id: format!("billing-percent-{percent}"),
            percent_off: percent,
            duration: "forever",
            name: format!("{percent}% off"),
        };
        let made = self
            .with_retries("create_coupon", &format!("{key}:coupon"), |strategy| {
                let coupon = &coupon;
                async move {
                    RequestBuilder::new(StripeMethod::Post, "/coupons")
                        .form(coupon)
                        .customize::<Coupon>()
                        .request_strategy(strategy)
                        .send(&self.client)
                        .await
                }
            })
            .await;
        match made {
            Ok(coupon) => Ok(coupon.id.as_str().to_owned()),
            // Made before, by this or another subscription's discount: the same coupon.
            Err(BillingError::Rejected(detail)) if detail.contains(COUPON_EXISTS) => Ok(coupon.id),
            Err(other) => Err(other),
        }
    }

    /// Sends `request` with the idempotency key and the retry policy.
    async fn send<R>(&self, operation: &str, key: &str, request: &R) -> Result<R::Output, BillingError>
    where
        R: StripeRequest,
        R::Output: miniserde::Deserialize,
    {
        self.with_retries(operation, key, |strategy| async move {
            request.customize().request_strategy(strategy).send(&self.client).await
        })
        .await
    }
}

/// The invoice metadata naming what an invoice is for (`invoicing:<plan>:<due>`,
/// `upgrade:<id>`): how a re-run finds it without idempotency keys.
const REFERENCE: &str = "billing_reference";

/// The invoice-item metadata carrying the line's key: how a re-run sees which lines are on.
const LINE: &str = "billing_line";

/// How many pages of a customer's invoices [`Billing::find_invoice`] reads at most.
const FIND_INVOICE_PAGES: usize = 10;

fn metadata_value<'a>(metadata: Option<&'a std::collections::HashMap<String, String>>, name: &str) -> Option<&'a str> {
    metadata.and_then(|values| values.get(name)).map(String::as_str)
}

fn invoice_status(invoice: &Invoice) -> InvoiceStatus {
    use stripe_shared::InvoiceStatus as Stripe;
    match invoice.status {
        Some(Stripe::Open) => InvoiceStatus::Open,
        Some(Stripe::Paid) => InvoiceStatus::Paid,
        Some(Stripe::Void) => InvoiceStatus::Void,
        Some(Stripe::Uncollectible) => InvoiceStatus::Uncollectible,
        _ => InvoiceStatus::Draft,
    }
}

impl StripeBilling {
    /// A read (GET): not keyed by Stripe, retried like every call; `name` only labels the
    /// retries in the logs.
    async fn read<R>(&self, operation: &str, name: &str, request: &R) -> Result<R::Output, BillingError>
    where
        R: StripeRequest,
        R::Output: miniserde::Deserialize,
    {
        let label = format!("billing:{operation}:{name}");
        let label: String = label.chars().take(255).collect();
        self.with_retries(operation, &label, |_| async move {
            request
                .customize()
                .request_strategy(RequestStrategy::Once)
                .send(&self.client)
                .await
        })
        .await
    }

    /// The invoice as the port describes it, with the keys of the lines on it.
    async fn held(&self, invoice: &Invoice) -> Result<HeldInvoice, BillingError> {
        let id = invoice
            .id
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .ok_or_else(|| BillingError::Rejected("Stripe's invoice has no id".into()))?;
        let mut lines = Vec::new();
        let mut starting_after: Option<String> = None;
        loop {
            let mut request = ListInvoiceItem::new().invoice(id.as_str()).limit(100);
            if let Some(after) = &starting_after {
                request = request.starting_after(after.as_str());
            }
            let items = self.read("list_invoice_items", &id, &request).await?;
            lines.extend(
                items
                    .data
                    .iter()
                    .filter_map(|item| metadata_value(item.metadata.as_ref(), LINE).map(str::to_owned)),
            );
            match items.data.last() {
                Some(last) if items.has_more => starting_after = Some(last.id.as_str().to_owned()),
                _ => break,
            }
        }
        Ok(HeldInvoice {
            id,
            status: invoice_status(invoice),
            amount_due: invoice.amount_due,
            lines,
        })
    }
}

/// How [`classify`] words Stripe's refusal of a coupon id already taken, so that
/// `ensure_coupon` can tell it from other refusals.
const COUPON_EXISTS: &str = "code resource_already_exists";

enum Retry {
    Yes,
    No(BillingError),
}

fn describe(error: &StripeError) -> String {
    match error {
        StripeError::Stripe(api, status) => format!(
            "{status} {}: {}",
            api.type_.as_str(),
            api.message.as_deref().unwrap_or("")
        ),
        other => other.to_string(),
    }
}

/// Whether a failed call is worth another attempt, and what it means when it is not. Decided by
/// the HTTP status and Stripe's error `type` and `code`, never by the message, which Stripe
/// words for people and may change.
fn classify(error: &StripeError) -> Retry {
    match error {
        StripeError::ClientError(_) | StripeError::Timeout => Retry::Yes,
        StripeError::Stripe(api, status) => {
            let message = api.message.clone().unwrap_or_default();
            let code = api.code.as_ref().map(|code| code.as_str());
            match (*status, api.type_.as_str(), code) {
                (500..=599 | 429, _, _) => Retry::Yes,
                // Another request with the same key is still running: wait for its answer.
                (_, _, Some("idempotency_key_in_use")) | (409, "idempotency_error", _) => Retry::Yes,
                (_, "idempotency_error", _) => Retry::No(BillingError::Conflict(message)),
                (_, "card_error", _)
                | (402, _, _)
                | (_, _, Some("card_declined" | "expired_card" | "incorrect_cvc")) => {
                    Retry::No(BillingError::CardDeclined(message))
                }
                (_, _, Some("resource_missing"))
                    if api.param.as_deref().is_some_and(|p| p.contains("payment_method")) =>
                {
                    Retry::No(BillingError::PaymentMethodRefused(message))
                }
                (_, _, Some("payment_method_unexpected_state" | "payment_method_unactivated")) => {
                    Retry::No(BillingError::PaymentMethodRefused(message))
                }
                (_, _, Some("resource_already_exists")) => Retry::No(BillingError::Rejected(format!(
                    "{status} {} ({COUPON_EXISTS}): {message}",
                    api.type_.as_str()
                ))),
                _ => Retry::No(BillingError::Rejected(format!(
                    "{status} {}: {message}",
                    api.type_.as_str()
                ))),
            }
        }
        StripeError::JSONDeserialize(detail) => {
            Retry::No(BillingError::Rejected(format!("unreadable Stripe response: {detail}")))
        }
        StripeError::ConfigError(detail) => Retry::No(BillingError::Rejected(detail.clone())),
    }
}

/// What `price` costs for `quantity`, per its period.
fn terms_of(price: &Price, quantity: u64) -> PriceTerms {
    let (days, count) = price.recurring.as_ref().map_or((30, 1), |recurring| {
        let days = match recurring.interval {
            RecurringInterval::Day => 1,
            RecurringInterval::Week => 7,
            RecurringInterval::Year => 365,
            _ => 30,
        };
        (days, recurring.interval_count.max(1))
    });
    PriceTerms {
        amount: price
            .unit_amount
            .unwrap_or(0)
            .saturating_mul(i64::try_from(quantity).unwrap_or(i64::MAX)),
        period_days: days * i64::try_from(count).unwrap_or(1),
    }
}

impl StripeBilling {
    /// Moves the subscription's (single) item to `price` and/or `quantity` in one update,
    /// prorated as [`Proration::for_change`] says: one invoice, one charge, all or nothing.
    /// A change still pending from an earlier try (its void failed, or the request died) is
    /// discarded first, so a retry under a new key never stacks a second one on it.
    async fn change_item(
        &self,
        subscription: &str,
        price: Option<&str>,
        quantity: Option<u32>,
        key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let mut object = self.retrieve_object(subscription, key).await?;
        if object.pending_update.is_some() {
            self.discard_pending_update(subscription, &object, key).await?;
            object = self.retrieve_object(subscription, key).await?;
        }
        let current = summarize(&object)?;
        let price = price.filter(|p| *p != current.price);
        let quantity = quantity.filter(|q| current.quantity != Some(u64::from(*q)));
        if price.is_none() && quantity.is_none() {
            return Ok(current);
        }
        let current_quantity = current.quantity.unwrap_or(1);
        let current_price = &object.items.data[0].price;
        let next_price = match price {
            Some(price) => Some(self.retrieve_price(price, key).await?),
            None => None,
        };
        let proration = Proration::for_change(
            terms_of(current_price, current_quantity),
            terms_of(
                next_price.as_ref().unwrap_or(current_price),
                quantity.map_or(current_quantity, u64::from),
            ),
            current.status == Status::Trialing,
        );
        let mut item = UpdateSubscriptionItems::new();
        item.id = Some(current.item.clone());
        item.price = price.map(str::to_owned);
        item.quantity = quantity.map(u64::from);
        self.update_items("change_item", subscription, item, proration, key)
            .await
    }

    /// Voids the open invoice of the subscription's pending update, which discards it.
    async fn discard_pending_update(
        &self,
        subscription: &str,
        object: &StripeSubscriptionObject,
        key: &str,
    ) -> Result<(), BillingError> {
        let Some(invoice) = latest_invoice_of(object) else {
            return Ok(());
        };
        let now = self
            .read("retrieve_invoice", &invoice, &RetrieveInvoice::new(invoice.as_str()))
            .await?;
        if now.status == Some(stripe_shared::InvoiceStatus::Open) {
            tracing::info!(
                subscription,
                invoice,
                "a change left pending is discarded before the next"
            );
            self.send(
                "void_pending_update",
                &format!("{key}:discard:{invoice}"),
                &VoidInvoiceInvoice::new(invoice.as_str()),
            )
            .await?;
        }
        Ok(())
    }

    /// Changes the subscription's item as `proration` bills it. A change that invoices at once
    /// goes as a pending update (`payment_behavior=pending_if_incomplete`): when its invoice
    /// is not paid, Stripe leaves the subscription as it was with the change pending on that
    /// open invoice. The invoice is then voided, which discards the change, so nothing is owed
    /// and nothing changes later on its own; the caller hears [`BillingError::CardDeclined`].
    /// A re-run with the same key replays the pending answer and voids again (already void is
    /// done); an invoice paid meanwhile applied the change, and the subscription is answered.
    async fn update_items(
        &self,
        operation: &str,
        subscription: &str,
        item: UpdateSubscriptionItems,
        proration: Proration,
        key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let mut request = UpdateSubscription::new(subscription)
            .items(vec![item])
            .proration_behavior(behavior_of(proration));
        if matches!(proration, Proration::InvoiceNow | Proration::NewPeriodNow) {
            request = request.payment_behavior(UpdateSubscriptionPaymentBehavior::PendingIfIncomplete);
        }
        let updated = self.send(operation, key, &request).await?;
        if updated.pending_update.is_none() {
            return summarize(&updated);
        }
        let Some(invoice) = latest_invoice_of(&updated) else {
            return Err(BillingError::Rejected(format!(
                "subscription {subscription} has a pending update but no latest invoice"
            )));
        };
        match self
            .send(
                "void_pending_update",
                &format!("{key}:void"),
                &VoidInvoiceInvoice::new(invoice.as_str()),
            )
            .await
        {
            Ok(_) => {}
            Err(BillingError::Rejected(refused)) => {
                let now = self
                    .read("retrieve_invoice", &invoice, &RetrieveInvoice::new(invoice.as_str()))
                    .await?;
                match now.status {
                    Some(stripe_shared::InvoiceStatus::Void) => {}
                    Some(stripe_shared::InvoiceStatus::Paid) => return self.retrieve_subscription(subscription).await,
                    _ => return Err(BillingError::Rejected(refused)),
                }
            }
            Err(other) => return Err(other),
        }
        tracing::info!(
            subscription,
            invoice,
            "the change's invoice was not paid; it was voided and the change discarded"
        );
        Err(BillingError::CardDeclined(
            "the card was declined; the subscription was not changed".to_owned(),
        ))
    }
}

/// The subscription's discount in whole percent when its first discount and that discount's
/// coupon are expanded; `Some(None)` when it has none; `None` when only ids are given.
fn discount_of(subscription: &StripeSubscriptionObject) -> Option<Option<u32>> {
    let Some(first) = subscription.discounts.first() else {
        return Some(None);
    };
    let coupon = first.as_object()?.source.coupon.as_ref()?.as_object()?;
    Some(coupon.percent_off.map(|percent| percent.round() as u32))
}

fn behavior_of(proration: Proration) -> UpdateSubscriptionProrationBehavior {
    match proration {
        Proration::InvoiceNow | Proration::NewPeriodNow => UpdateSubscriptionProrationBehavior::AlwaysInvoice,
        Proration::NextInvoice => UpdateSubscriptionProrationBehavior::CreateProrations,
        Proration::Nothing => UpdateSubscriptionProrationBehavior::None,
    }
}

fn timestamp(seconds: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(seconds, 0).single()
}

fn status_of(status: &SubscriptionStatus) -> Status {
    match status {
        SubscriptionStatus::Active => Status::Active,
        SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired => Status::Canceled,
        SubscriptionStatus::Incomplete => Status::Incomplete,
        SubscriptionStatus::PastDue => Status::PastDue,
        SubscriptionStatus::Paused => Status::Paused,
        SubscriptionStatus::Trialing => Status::Trialing,
        SubscriptionStatus::Unpaid => Status::Unpaid,
        // A status newer than this code: treat it as needing attention, never as paid.
        _ => Status::Incomplete,
    }
}

fn invoice_summary(invoice: &Invoice) -> InvoiceSummary {
    InvoiceSummary {
        id: invoice.id.as_ref().map(|id| id.as_str().to_owned()).unwrap_or_default(),
        number: invoice.number.clone(),
        status: invoice.status.as_ref().map(|status| status.as_str().to_owned()),
        amount_due: invoice.amount_due,
        amount_paid: invoice.amount_paid,
        currency: invoice.currency.to_string(),
        created: timestamp(invoice.created),
        period_start: timestamp(invoice.period_start),
        period_end: timestamp(invoice.period_end),
        hosted_invoice_url: invoice.hosted_invoice_url.clone(),
        invoice_pdf: invoice.invoice_pdf.clone(),
    }
}

fn summarize(subscription: &StripeSubscriptionObject) -> Result<StripeSubscription, BillingError> {
    let item = subscription
        .items
        .data
        .first()
        .ok_or_else(|| BillingError::Rejected(format!("subscription {} has no items", subscription.id.as_str())))?;
    Ok(StripeSubscription {
        id: subscription.id.as_str().to_owned(),
        customer: subscription.customer.id().as_str().to_owned(),
        status: status_of(&subscription.status),
        item: item.id.as_str().to_owned(),
        price: item.price.id.as_str().to_owned(),
        trial_start: subscription.trial_start.and_then(timestamp),
        trial_end: subscription.trial_end.and_then(timestamp),
        current_period_end: timestamp(item.current_period_end),
        cancel_at_period_end: subscription.cancel_at_period_end,
        quantity: item.quantity,
        discount_percent: discount_of(subscription),
        latest_invoice: latest_invoice_of(subscription),
    })
}

/// The id of the subscription's latest invoice, expanded or not.
fn latest_invoice_of(subscription: &StripeSubscriptionObject) -> Option<String> {
    subscription
        .latest_invoice
        .as_ref()
        .and_then(|invoice| invoice.id().as_ref().map(|id| id.as_str().to_owned()))
}

#[async_trait]
impl Billing for StripeBilling {
    async fn create_customer(&self, user_id: Uuid, email: &str, key: &str) -> Result<Customer, BillingError> {
        let request = CreateCustomer::new().email(email).metadata(
            [("user_id".to_owned(), user_id.to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
        let customer = self.send("create_customer", key, &request).await?;
        Ok(Customer {
            id: customer.id.as_str().to_owned(),
            created: timestamp(customer.created).unwrap_or_else(Utc::now),
        })
    }

    async fn create_subscription(
        &self,
        terms: SubscriptionTerms<'_>,
        key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let mut item = CreateSubscriptionItems::new();
        item.price = Some(terms.price.to_owned());
        item.quantity = terms.quantity.map(u64::from);
        let mut request = CreateSubscription::new()
            .customer(terms.customer)
            .items(vec![item])
            .metadata(
                [("user_id".to_owned(), terms.user_id.to_string())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        if let Some(end) = terms.trial_end {
            request = request.trial_end(CreateSubscriptionTrialEnd::Timestamp(end.timestamp()));
        }
        if let Some(percent) = terms.discount_percent.filter(|p| *p > 0) {
            let mut discount = DiscountsDataParam::new();
            discount.coupon = Some(self.ensure_coupon(percent, key).await?);
            request = request.discounts(vec![discount]);
        }
        let subscription = self.send("create_subscription", key, &request).await?;
        summarize(&subscription)
    }

    async fn change_price(
        &self,
        subscription: &str,
        price: &str,
        key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        self.change_item(subscription, Some(price), None, key).await
    }

    async fn change_price_and_quantity(
        &self,
        subscription: &str,
        price: Option<&str>,
        quantity: Option<u32>,
        key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        self.change_item(subscription, price, quantity, key).await
    }

    async fn attach_default_payment_method(
        &self,
        customer: &str,
        payment_method: &str,
        key: &str,
    ) -> Result<String, BillingError> {
        let attach = AttachPaymentMethod::new(payment_method).customer(customer);
        // The payment method is the one thing the caller chose in this call: Stripe refusing the
        // request as invalid (attached to another customer, unusable) is a refusal of it.
        let attached = self
            .send("attach_payment_method", &format!("{key}:attach"), &attach)
            .await
            .map_err(|error| match error {
                BillingError::Rejected(detail) => BillingError::PaymentMethodRefused(detail),
                other => other,
            })?;
        let attached_id = attached.id.as_str().to_owned();
        let mut settings = UpdateCustomerInvoiceSettings::new();
        settings.default_payment_method = Some(attached_id.clone());
        let make_default = UpdateCustomer::new(customer).invoice_settings(settings);
        self.send("set_default_payment_method", &format!("{key}:default"), &make_default)
            .await?;
        Ok(attached_id)
    }

    async fn set_cancel_at_period_end(
        &self,
        subscription: &str,
        cancel: bool,
        key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let request = UpdateSubscription::new(subscription).cancel_at_period_end(cancel);
        let updated = self.send("set_cancel_at_period_end", key, &request).await?;
        summarize(&updated)
    }

    async fn retrieve_subscription(&self, subscription: &str) -> Result<StripeSubscription, BillingError> {
        // The discount's coupon expanded, so the answer says what it takes off.
        let request = RetrieveSubscription::new(subscription).expand(vec![DISCOUNT_COUPONS.to_owned()]);
        let object = self.read("retrieve_subscription", subscription, &request).await?;
        summarize(&object)
    }

    async fn cancel(&self, subscription: &str, key: &str) -> Result<StripeSubscription, BillingError> {
        let request = CancelSubscription::new(subscription);
        let canceled = self.send("cancel_subscription", key, &request).await?;
        summarize(&canceled)
    }

    async fn set_trial_end(
        &self,
        subscription: &str,
        trial_end: DateTime<Utc>,
        key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let request = UpdateSubscription::new(subscription)
            .trial_end(UpdateSubscriptionTrialEnd::Timestamp(trial_end.timestamp()))
            .proration_behavior(UpdateSubscriptionProrationBehavior::None);
        let updated = self.send("set_trial_end", key, &request).await?;
        summarize(&updated)
    }

    async fn set_quantity(
        &self,
        subscription: &str,
        quantity: u32,
        key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        self.change_item(subscription, None, Some(quantity), key).await
    }

    async fn set_email(&self, customer: &str, email: &str, key: &str) -> Result<(), BillingError> {
        let request = UpdateCustomer::new(customer).email(email);
        self.send("set_email", key, &request).await?;
        Ok(())
    }

    async fn set_discount(
        &self,
        subscription: &str,
        percent: u32,
        key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        if percent == 0 {
            // `discounts=` (empty) clears them; the typed request cannot say "empty".
            #[derive(serde::Serialize)]
            struct ClearDiscounts {
                discounts: &'static str,
            }
            let updated = self
                .with_retries("remove_discount", key, |strategy| async move {
                    RequestBuilder::new(StripeMethod::Post, format!("/subscriptions/{subscription}"))
                        .form(&ClearDiscounts { discounts: "" })
                        .customize::<StripeSubscriptionObject>()
                        .request_strategy(strategy)
                        .send(&self.client)
                        .await
                })
                .await?;
            return summarize(&updated);
        }
        let mut discount = DiscountsDataParam::new();
        discount.coupon = Some(self.ensure_coupon(percent, key).await?);
        let request = UpdateSubscription::new(subscription)
            .discounts(vec![discount])
            .proration_behavior(UpdateSubscriptionProrationBehavior::None);
        let updated = self.send("set_discount", key, &request).await?;
        summarize(&updated)
    }

    async fn create_setup_intent(&self, customer: &str, key: &str) -> Result<SetupIntent, BillingError> {
        // A SetupIntent this service made that still waits for a card is handed out again:
        // a page reloaded in a loop makes one, not one per load.
        let listed = self
            .read(
                "list_setup_intents",
                customer,
                &ListSetupIntent::new().customer(customer).limit(10),
            )
            .await?;
        let waiting = listed.data.into_iter().find(|intent| {
            intent.status == SetupIntentStatus::RequiresPaymentMethod
                && intent.usage == "off_session"
                && intent
                    .metadata
                    .as_ref()
                    .and_then(|m| m.get(MADE_BY))
                    .is_some_and(|by| by == SETUP_INTENT_MAKER)
        });
        let intent = match waiting {
            Some(intent) => intent,
            None => {
                let request = CreateSetupIntent::new()
                    .customer(customer)
                    .usage(CreateSetupIntentUsage::OffSession)
                    .metadata(
                        [(MADE_BY.to_owned(), SETUP_INTENT_MAKER.to_owned())]
                            .into_iter()
                            .collect::<std::collections::HashMap<_, _>>(),
                    );
                self.send("create_setup_intent", key, &request).await?
            }
        };
        Ok(SetupIntent {
            id: intent.id.as_str().to_owned(),
            client_secret: intent
                .client_secret
                .ok_or_else(|| BillingError::Rejected("Stripe's setup intent has no client secret".into()))?,
        })
    }

    async fn create_portal_session(&self, customer: &str, return_url: &str, key: &str) -> Result<String, BillingError> {
        let mut request = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url);
        if let Some(configuration) = &self.portal_configuration {
            request = request.configuration(configuration.as_str());
        }
        Ok(self.send("create_portal_session", key, &request).await?.url)
    }

    async fn list_invoices(
        &self,
        customer: &str,
        limit: u8,
        starting_after: Option<&str>,
    ) -> Result<InvoicePage, BillingError> {
        let mut request = ListInvoice::new().customer(customer).limit(i64::from(limit));
        if let Some(after) = starting_after {
            request = request.starting_after(after);
        }
        let key = format!("billing:list_invoices:{customer}:{}", Uuid::new_v4());
        let list = self
            .with_retries("list_invoices", &key, |_| {
                let request = request.clone();
                async move {
                    request
                        .customize()
                        .request_strategy(RequestStrategy::Once)
                        .send(&self.client)
                        .await
                }
            })
            .await?;
        Ok(InvoicePage {
            invoices: list.data.iter().map(invoice_summary).collect(),
            has_more: list.has_more,
        })
    }

    async fn find_invoice(&self, customer: &str, reference: &str) -> Result<Option<HeldInvoice>, BillingError> {
        // Listing is consistent where Stripe's search is not: an invoice made a moment ago is
        // in the list. Ours are among the customer's newest, so the pages stop early.
        let mut starting_after: Option<String> = None;
        for _ in 0..FIND_INVOICE_PAGES {
            let mut request = ListInvoice::new().customer(customer).limit(100);
            if let Some(after) = &starting_after {
                request = request.starting_after(after.as_str());
            }
            let list = self
                .read("list_invoices", &format!("{customer}:{reference}"), &request)
                .await?;
            if let Some(found) = list
                .data
                .iter()
                .find(|invoice| metadata_value(invoice.metadata.as_ref(), REFERENCE) == Some(reference))
            {
                return self.held(found).await.map(Some);
            }
            match list.data.last().and_then(|invoice| invoice.id.as_ref()) {
                Some(last) if list.has_more => starting_after = Some(last.as_str().to_owned()),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    async fn create_invoice(
        &self,
        customer: &str,
        reference: &str,
        description: &str,
        key: &str,
    ) -> Result<HeldInvoice, BillingError> {
        let create = CreateInvoice::new()
            .customer(customer)
            .collection_method(stripe_shared::InvoiceCollectionMethod::ChargeAutomatically)
            .auto_advance(false)
            .pending_invoice_items_behavior(CreateInvoicePendingInvoiceItemsBehavior::Exclude)
            .description(description)
            .metadata(
                [(REFERENCE.to_owned(), reference.to_owned())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        let draft = self.send("create_invoice", key, &create).await?;
        self.held(&draft).await
    }

    async fn retrieve_invoice(&self, invoice: &str) -> Result<HeldInvoice, BillingError> {
        let found = self
            .read("retrieve_invoice", invoice, &RetrieveInvoice::new(invoice))
            .await?;
        self.held(&found).await
    }

    async fn add_invoice_line(
        &self,
        customer: &str,
        invoice: &str,
        item: &billing::plans::InvoiceItem,
        key: &str,
    ) -> Result<(), BillingError> {
        let request = CreateInvoiceItem::new()
            .customer(customer)
            .invoice(invoice)
            .currency(stripe_types::Currency::USD)
            .description(item.description.as_str())
            .quantity(u64::from(item.quantity))
            .unit_amount_decimal(item.unit_amount.to_string())
            .discountable(false)
            .metadata(
                [(LINE.to_owned(), item.idempotency_key.clone())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .period(InvoiceItemPeriod {
                start: item.period.0.timestamp(),
                end: item.period.1.timestamp(),
            });
        self.send("add_invoice_line", key, &request).await?;
        Ok(())
    }

    async fn finalize_invoice(
        &self,
        invoice: &str,
        auto_advance: bool,
        key: &str,
    ) -> Result<HeldInvoice, BillingError> {
        let finalize = FinalizeInvoiceInvoice::new(invoice).auto_advance(auto_advance);
        let finalized = self.send("finalize_invoice", key, &finalize).await?;
        self.held(&finalized).await
    }

    async fn pay_invoice(&self, invoice: &str, key: &str) -> Result<HeldInvoice, BillingError> {
        let pay = PayInvoice::new(invoice).off_session(true);
        let paid = self.send("pay_invoice", key, &pay).await?;
        self.held(&paid).await
    }

    async fn void_invoice(&self, invoice: &str, key: &str) -> Result<HeldInvoice, BillingError> {
        let voided = self
            .send("void_invoice", key, &VoidInvoiceInvoice::new(invoice))
            .await?;
        self.held(&voided).await
    }

    async fn create_entity_customer(
        &self,
        entity: billing::plans::Entity,
        email: &str,
        key: &str,
    ) -> Result<Customer, BillingError> {
        let (kind, uuid) = match entity {
            billing::plans::Entity::Realm(uuid) => ("remote_realm", uuid),
            billing::plans::Entity::Server(uuid) => ("remote_server", uuid),
        };
        let request = CreateCustomer::new().email(email).metadata(
            [(kind.to_owned(), uuid.to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
        let customer = self.send("create_entity_customer", key, &request).await?;
        Ok(Customer {
            id: customer.id.as_str().to_owned(),
            created: timestamp(customer.created).unwrap_or_else(Utc::now),
        })
    }

    async fn create_setup_checkout(
        &self,
        checkout: SetupCheckout<'_>,
        key: &str,
    ) -> Result<CheckoutSession, BillingError> {
        // Checkout Sessions live in async-stripe's checkout crate, whose generated create
        // request is one of the largest of the API: two typed fields of its answer are all
        // this needs, so the request goes through the client's generic builder instead.
        #[derive(serde::Serialize)]
        struct NewSession<'a> {
            mode: &'static str,
            customer: &'a str,
            currency: &'static str,
            success_url: &'a str,
            cancel_url: &'a str,
            payment_method_types: [&'static str; 1],
            metadata: std::collections::BTreeMap<&'static str, &'a str>,
        }
        #[derive(miniserde::Deserialize)]
        struct Session {
            id: String,
            url: Option<String>,
        }
        let form = NewSession {
            mode: "setup",
            customer: checkout.customer,
            currency: "usd",
            success_url: checkout.success_url,
            cancel_url: checkout.cancel_url,
            payment_method_types: ["card"],
            metadata: [("pending_upgrade", checkout.pending_upgrade)].into_iter().collect(),
        };
        let session = self
            .with_retries("create_checkout_session", key, |strategy| {
                let form = &form;
                async move {
                    RequestBuilder::new(StripeMethod::Post, "/checkout/sessions")
                        .form(form)
                        .customize::<Session>()
                        .request_strategy(strategy)
                        .send(&self.client)
                        .await
                }
            })
            .await?;
        let url = session
            .url
            .ok_or_else(|| BillingError::Rejected("Stripe's Checkout Session has no url".into()))?;
        Ok(CheckoutSession { id: session.id, url })
    }

    async fn save_checkout_card(
        &self,
        customer: &str,
        setup_intent: &str,
        key: &str,
    ) -> Result<SavedCard, BillingError> {
        let intent = self
            .send(
                "retrieve_setup_intent",
                &format!("{key}:intent"),
                &RetrieveSetupIntent::new(setup_intent),
            )
            .await?;
        let payment_method = intent
            .payment_method
            .as_ref()
            .map(|method| method.id().as_str().to_owned())
            .ok_or_else(|| BillingError::PaymentMethodRefused("the SetupIntent saved no payment method".into()))?;
        let method = self
            .send(
                "retrieve_payment_method",
                &format!("{key}:method"),
                &RetrievePaymentMethod::new(payment_method.as_str()),
            )
            .await?;
        let mut settings = UpdateCustomerInvoiceSettings::new();
        settings.default_payment_method = Some(payment_method.clone());
        let make_default = UpdateCustomer::new(customer).invoice_settings(settings);
        self.send("set_default_payment_method", &format!("{key}:default"), &make_default)
            .await?;
        Ok(SavedCard {
            payment_method,
            last4: method.card.map(|card| card.last4),
        })
    }

    async fn preview_change(
        &self,
        subscription: &str,
        price: Option<&str>,
        quantity: Option<u32>,
    ) -> Result<InvoicePreview, BillingError> {
        let key = format!("billing:preview:{subscription}:{}", Uuid::new_v4());
        let object = self.retrieve_object(subscription, &key).await?;
        let current = summarize(&object)?;
        let current_quantity = current.quantity.unwrap_or(1);
        let next_quantity = quantity.map_or(current_quantity, u64::from);
        let current_price = &object.items.data[0].price;
        let next_price = match price.filter(|p| *p != current.price) {
            Some(price) => Some(self.retrieve_price(price, &key).await?),
            None => None,
        };
        let proration = Proration::for_change(
            terms_of(current_price, current_quantity),
            terms_of(next_price.as_ref().unwrap_or(current_price), next_quantity),
            current.status == Status::Trialing,
        );
        let mut item = CreatePreviewInvoiceSubscriptionDetailsItems::new();
        item.id = Some(current.item.clone());
        item.price = price.map(str::to_owned);
        item.quantity = quantity.map(u64::from);
        let mut details = CreatePreviewInvoiceSubscriptionDetails::new();
        details.items = Some(vec![item]);
        details.proration_behavior = Some(match proration {
            Proration::InvoiceNow | Proration::NewPeriodNow => {
                CreatePreviewInvoiceSubscriptionDetailsProrationBehavior::AlwaysInvoice
            }
            Proration::NextInvoice => CreatePreviewInvoiceSubscriptionDetailsProrationBehavior::CreateProrations,
            Proration::Nothing => CreatePreviewInvoiceSubscriptionDetailsProrationBehavior::None,
        });
        let request = CreatePreviewInvoice::new()
            .customer(current.customer.as_str())
            .subscription(subscription)
            .subscription_details(details);
        // A preview changes nothing: a fresh key per call is as safe as Stripe's own retries.
        let preview: Invoice = self.send("preview_invoice", &key, &request).await?;
        Ok(InvoicePreview {
            amount_due: preview.amount_due,
            currency: preview.currency.to_string(),
            lines: preview
                .lines
                .data
                .iter()
                .map(|line| PreviewLine {
                    description: line.description.clone(),
                    amount: line.amount,
                    proration: line
                        .parent
                        .as_ref()
                        .and_then(|parent| parent.subscription_item_details.as_ref())
                        .is_some_and(|details| details.proration),
                })
                .collect(),
        })
    }
}
