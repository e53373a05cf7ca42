//! Creating a subscription end to end: the Stripe customer, the Stripe subscription on the
//! plan's price, and the stored subscription. One path for administrators' creates and for
//! signup events, so both keep the same promises:
//!
//! - one user, one Stripe customer, one Stripe subscription, however often (and however
//!   concurrently) the creation is retried: the idempotency keys name the user, not the request,
//!   and every parameter sent to Stripe is a function of the user and of what Stripe already
//!   answered (the trial is timed from the signup, or else from the customer's creation time);
//! - nothing is stored until Stripe has both objects, and a store that already holds the
//!   subscription answers "already exists" without touching Stripe again.
//!
//! Stripe keeps idempotency keys for 24 hours; a creation retried later than that after a
//! failure between Stripe and the store would make a second customer. Stripe failures within a
//! request are retried at once, and SQS redelivers signups within minutes, far inside that window.

use chrono::{DateTime, Utc};

use crate::store::{AuditEntry, Store, StoreError};
use crate::stripe::{Billing, BillingError, SubscriptionTerms, idempotency_key};
use crate::subscription::{Plan, Subscription, SubscriptionChange};

/// Why a subscription was not created. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The user already has a subscription.
    #[error("the subscription already exists")]
    AlreadyExists,
    /// Stripe refused or failed.
    #[error(transparent)]
    Billing(#[from] BillingError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ProvisionError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::AlreadyExists => ProvisionError::AlreadyExists,
            other => ProvisionError::Store(other),
        }
    }
}

/// A validated creation: the change (with `user_id` and `email`), its plan, and when the trial
/// starts when the caller knows (the profile's signup time).
pub struct Provision<'a> {
    /// The validated creation (with `user_id` and `email`).
    pub change: &'a SubscriptionChange,
    /// The plan the subscription starts on.
    pub plan: &'a Plan,
    /// When the trial starts, when the caller knows (the profile's signup).
    pub trial_start: Option<DateTime<Utc>>,
    /// Who asks, for the audit trail: `admin:<uuid>`, `system:signup`.
    pub actor: &'a str,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// Creates the subscription in Stripe and stores it.
pub async fn provision(
    store: &dyn Store,
    billing: &dyn Billing,
    request: Provision<'_>,
) -> Result<Subscription, ProvisionError> {
    let change = request.change;
    let (Some(user_id), Some(email)) = (change.user_id, change.email.as_deref()) else {
        unreachable!("validate_create requires user_id and email")
    };
    match store.get_subscription(user_id).await {
        Ok(_) => return Err(ProvisionError::AlreadyExists),
        Err(StoreError::NotFound) => {}
        Err(other) => return Err(other.into()),
    }
    let target = user_id.to_string();
    let customer = billing
        .create_customer(
            user_id,
            email,
            &idempotency_key("create_customer", &target, "provision"),
        )
        .await?;
    // The card first, as the customer's default: the subscription's first invoice is then paid
    // with it, and a paid plan starts active instead of `incomplete`.
    if let Some(method) = &change.stripe_source {
        billing
            .attach_default_payment_method(
                &customer.id,
                method,
                &idempotency_key("attach_payment_method", &target, "provision"),
            )
            .await?;
    }
    let trial_start = request.trial_start.unwrap_or(customer.created);
    // A trial that would already be over (a signup processed very late) is no trial at all.
    let trial_end = change
        .trial_end
        .or_else(|| request.plan.trial_end_from(trial_start))
        .filter(|end| *end > request.now);
    let stripe_subscription = billing
        .create_subscription(
            SubscriptionTerms {
                customer: &customer.id,
                price: &request.plan.stripe_price,
                trial_end,
                quantity: change.licenses,
                discount_percent: change.discount_percent,
                user_id,
            },
            &idempotency_key("create_subscription", &target, &customer.id),
        )
        .await?;
    let mut subscription = change
        .new_subscription(request.plan, trial_start, request.now)
        .expect("validate_create requires user_id and email");
    subscription.stripe_customer = Some(customer.id.clone());
    subscription.stripe_subscription = Some(stripe_subscription.id.clone());
    subscription.status = change.status.unwrap_or(stripe_subscription.status);
    // The trial is counted from signup; Stripe's own trial_start is when its subscription was made.
    subscription.trial_start = stripe_subscription.trial_end.map(|_| trial_start);
    subscription.trial_end = stripe_subscription.trial_end;
    subscription.current_period_end = stripe_subscription.current_period_end;
    subscription
        .latest_invoice
        .clone_from(&stripe_subscription.latest_invoice);
    let audit = AuditEntry::between(None, &subscription, request.actor, "create");
    store.create_subscription(&subscription, &audit).await?;
    tracing::info!(subscription = %subscription.id, stripe_customer = %customer.id, stripe_subscription = %stripe_subscription.id, plan = %subscription.plan, "subscription created");
    Ok(subscription)
}
