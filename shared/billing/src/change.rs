//! The use case behind `PATCH /subscriptions/{id}`: change a subscription, Stripe first.
//!
//! The change has been validated as a whole by the caller (every error at once). Then, against
//! the stored version: what Stripe must know (payment method → attached and made the
//! customer's default; plan → the item's price; cancel at period end) is applied to Stripe, and
//! only then is the new state written, conditionally on the version that was read. With an
//! expected version (`If-Match`), a mismatch is refused; without one, a concurrent write makes
//! the change read again and re-apply ([`retry_on_conflict`]), so neither writer loses the
//! other's fields.

use chrono::SubsecRound;
use uuid::Uuid;

use crate::clock::Clock;
use crate::store::{AuditEntry, Store, StoreError, retry_on_conflict};
use crate::stripe::{Billing, BillingError, StripeSubscription, SubscriptionTerms, idempotency_key};
use crate::subscription::{Plan, PlanCatalog, Status, Subscription, SubscriptionChange};

/// Why a change was not made. Nothing was stored in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No subscription has this id.
    #[error("no such subscription")]
    NotFound,
    /// The caller expected another version (`If-Match`).
    #[error("the subscription is at version {current}, not the expected {expected}")]
    VersionMismatch {
        /// The version the caller sent.
        expected: u64,
        /// The version stored.
        current: u64,
    },
    /// Other writers changed the subscription on every attempt.
    #[error("the subscription kept changing while the change was applied")]
    KeptChanging,
    /// The change needs Stripe, and the subscription has no Stripe subscription yet.
    #[error("the subscription has no Stripe subscription yet")]
    NotInStripe,
    /// The subscription is canceled (in Stripe, perhaps before its event arrived): only a new
    /// plan (subscribing again), the email or the payment method can change.
    #[error("the subscription is canceled")]
    Canceled,
    /// The change charges at once and the card was declined: Stripe discarded the change, the
    /// invoice it made was voided, nothing was stored.
    #[error("the charge for the change was declined on {field}")]
    ChargeDeclined {
        /// The field the decline is reported on: the card sent with the change, else what
        /// made the charge (`/plan`, `/licenses`).
        field: &'static str,
        /// Stripe's words.
        detail: String,
    },
    /// Stripe refused or failed.
    #[error("Stripe did not make the change")]
    Billing(#[from] BillingError),
    /// The store failed.
    #[error("the store failed")]
    Store(#[source] StoreError),
}

impl From<StoreError> for ChangeError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ChangeError::NotFound,
            StoreError::VersionConflict => ChangeError::KeptChanging,
            other => ChangeError::Store(other),
        }
    }
}

/// One request to change a subscription.
pub struct ChangeRequest<'a> {
    /// The subscription.
    pub id: Uuid,
    /// What to change, validated for the caller's authority.
    pub change: &'a SubscriptionChange,
    /// The version the caller read (`If-Match`), if it sent one.
    pub expected_version: Option<u64>,
    /// Who asks, for the audit trail: `user:<uuid>`, `admin:<uuid>`.
    pub actor: &'a str,
    /// Where the request comes from (the API request id), for Stripe's idempotency keys.
    pub origin: &'a str,
}

/// What a change needs.
#[derive(Clone, Copy)]
pub struct ChangeContext<'a> {
    /// Where subscriptions live.
    pub store: &'a dyn Store,
    /// Stripe.
    pub billing: &'a dyn Billing,
    /// The plans and their prices.
    pub catalog: &'a PlanCatalog,
    /// What time it is.
    pub clock: &'a dyn Clock,
}

/// Applies the change to Stripe and then to the store; returns the subscription as stored.
pub async fn change_subscription(
    context: ChangeContext<'_>,
    request: ChangeRequest<'_>,
) -> Result<Subscription, ChangeError> {
    retry_on_conflict(|attempt| async move {
        let current = context.store.get_subscription(request.id).await?;
        if let Some(expected) = request.expected_version
            && expected != current.version
        {
            return Err(ChangeError::VersionMismatch {
                expected,
                current: current.version,
            });
        }
        // The attempt is part of the key: a re-applied change after a lost race must reach
        // Stripe again, since the race may have changed Stripe in between.
        let attempt_origin = format!("{}:{attempt}", request.origin);
        let answered = match apply_to_stripe(context, &current, request.change, request.origin, &attempt_origin).await {
            Ok(answered) => answered,
            // Stripe canceled the subscription and its event has not arrived yet (a trial
            // ended unpaid, a dashboard cancel): store what Stripe holds, then apply the
            // change to that, as if the event had come first.
            Err(ChangeError::Billing(refused @ BillingError::Rejected(_))) => {
                store_if_canceled_in_stripe(context, &current, refused).await?;
                return Err(ChangeError::KeptChanging);
            }
            Err(other) => return Err(other),
        };
        let now = context.clock.now();
        let mut next = request.change.apply(&current, now).unwrap_or_else(|| {
            let mut same = current.clone();
            same.version = current.version + 1;
            same.updated_at = now.trunc_subsecs(0).max(current.updated_at);
            same
        });
        // What Stripe answered last is the truth of what it bills: its status, trial end and
        // period end are stored, not what the change alone implies (an administrator's explicit
        // `status` still wins, as on create), and its ids (a new subscription after a cancel).
        if let Some(stripe) = answered {
            if request.change.status.is_none() {
                next.status = stripe.status;
            }
            next.stripe_subscription = Some(stripe.id);
            next.stripe_customer = Some(stripe.customer);
            next.trial_end = stripe.trial_end;
            next.current_period_end = stripe.current_period_end;
            if stripe.latest_invoice.is_some() {
                next.latest_invoice = stripe.latest_invoice;
            }
        }
        let unchanged = Subscription {
            version: current.version,
            updated_at: current.updated_at,
            ..next.clone()
        } == current;
        if unchanged {
            return Ok(current);
        }
        let audit = AuditEntry::between(Some(&current), &next, request.actor, "patch");
        match context.store.update_subscription(&next, current.version, &audit).await {
            Ok(()) => {
                tracing::info!(subscription = %request.id, version = next.version, "subscription changed");
                Ok(next)
            }
            // With If-Match, the caller asked for exactly that version: no retry.
            Err(StoreError::VersionConflict) if request.expected_version.is_some() => {
                Err(ChangeError::VersionMismatch {
                    expected: current.version,
                    current: current.version + 1,
                })
            }
            Err(other) => Err(ChangeError::from(other)),
        }
    })
    .await
}

/// After Stripe refused a change: when Stripe holds the subscription canceled and the store does
/// not, stores the canceled state (recorded as `reconcile` by `system:stripe`) and returns;
/// otherwise the refusal stands.
async fn store_if_canceled_in_stripe(
    context: ChangeContext<'_>,
    current: &Subscription,
    refused: BillingError,
) -> Result<(), ChangeError> {
    let (Some(stripe_subscription), false) = (&current.stripe_subscription, current.status == Status::Canceled) else {
        return Err(refused.into());
    };
    let stripe = context.billing.retrieve_subscription(stripe_subscription).await?;
    if stripe.status != Status::Canceled {
        return Err(refused.into());
    }
    let mut next = current.clone();
    next.status = Status::Canceled;
    next.cancel_at_period_end = false;
    next.current_period_end = stripe.current_period_end;
    next.version = current.version + 1;
    next.updated_at = context.clock.now().trunc_subsecs(0).max(current.updated_at);
    let audit = AuditEntry::between(Some(current), &next, "system:stripe", "reconcile");
    match context.store.update_subscription(&next, current.version, &audit).await {
        // Another writer (the deleted event, most likely) got there first: read it again.
        Ok(()) | Err(StoreError::VersionConflict) => {
            tracing::info!(subscription = %current.id, "Stripe had canceled the subscription; stored");
            Ok(())
        }
        Err(other) => Err(other.into()),
    }
}

impl crate::store::AsConflict for ChangeError {
    fn is_conflict(&self) -> bool {
        matches!(self, ChangeError::KeptChanging)
    }
}

/// Tells Stripe every change it bills from, before the change is stored (API.md's PATCH table),
/// and returns what Stripe last answered about the subscription, for the stored state to follow
/// it. Attaching a payment method is the same act however often it is repeated, so its key is
/// the request's; the other calls carry the write attempt too.
async fn apply_to_stripe(
    context: ChangeContext<'_>,
    current: &Subscription,
    change: &SubscriptionChange,
    request_origin: &str,
    attempt_origin: &str,
) -> Result<Option<StripeSubscription>, ChangeError> {
    // A canceled (or never made) Stripe subscription gets a new one when a plan is sent, even
    // the plan it had: that is how a customer subscribes again.
    let resubscribes =
        change.plan.is_some() && (current.status == Status::Canceled || current.stripe_subscription.is_none());
    let plan_changes = change
        .plan
        .as_ref()
        .filter(|plan| **plan != current.plan || resubscribes);
    let flag_changes = change
        .cancel_at_period_end
        .filter(|flag| *flag != current.cancel_at_period_end);
    let trial_changes = change.trial_end.filter(|end| Some(*end) != current.trial_end);
    let email_changes = change.email.as_ref().filter(|email| **email != current.email);
    let licenses_change = change.licenses.filter(|count| Some(*count) != current.licenses);
    // 0 removes the discount: stored as none, so 0 sent to a subscription without one is no change.
    let discount_change = change
        .discount_percent
        .filter(|percent| (*percent > 0).then_some(*percent) != current.discount_percent);
    let nothing_for_stripe = plan_changes.is_none()
        && discount_change.is_none()
        && flag_changes.is_none()
        && trial_changes.is_none()
        && email_changes.is_none()
        && licenses_change.is_none()
        && change.stripe_source.is_none();
    if nothing_for_stripe {
        return Ok(None);
    }
    let target = current.id.to_string();
    if resubscribes && let Some(plan) = plan_changes.and_then(|plan| context.catalog.get(plan)) {
        return resubscribe(context, current, change, plan, request_origin)
            .await
            .map(Some);
    }
    let (Some(customer), Some(stripe_subscription)) = (&current.stripe_customer, &current.stripe_subscription) else {
        return Err(ChangeError::NotInStripe);
    };
    // A canceled subscription's customer may still change its email and card; nothing of the
    // subscription itself can (Stripe refuses it).
    let changes_the_subscription = plan_changes.is_some()
        || discount_change.is_some()
        || licenses_change.is_some()
        || trial_changes.is_some()
        || flag_changes.is_some();
    if current.status == Status::Canceled && changes_the_subscription {
        return Err(ChangeError::Canceled);
    }
    let mut answered = None;
    if let Some(email) = email_changes {
        context
            .billing
            .set_email(customer, email, &idempotency_key("set_email", &target, attempt_origin))
            .await?;
    }
    if let Some(method) = &change.stripe_source {
        context
            .billing
            .attach_default_payment_method(
                customer,
                method,
                &idempotency_key("attach_payment_method", &target, request_origin),
            )
            .await?;
    }
    // The discount before the plan and licenses: an invoice they make is discounted.
    if let Some(percent) = discount_change {
        answered = Some(
            context
                .billing
                .set_discount(
                    stripe_subscription,
                    percent,
                    &idempotency_key("set_discount", &target, attempt_origin),
                )
                .await?,
        );
    }
    // The plan and the licenses in one change: one invoice when it charges, so a decline of
    // either leaves both as they were, never the plan charged and the answer "declined".
    if plan_changes.is_some() || licenses_change.is_some() {
        let price = match plan_changes {
            // The change was validated against this catalog: its plan is in it.
            Some(plan) => Some(
                context
                    .catalog
                    .get(plan)
                    .ok_or_else(|| {
                        ChangeError::Billing(BillingError::Rejected(format!("plan {plan} is not in the catalog")))
                    })?
                    .stripe_price
                    .as_str(),
            ),
            None => None,
        };
        answered = Some(
            context
                .billing
                .change_price_and_quantity(
                    stripe_subscription,
                    price,
                    licenses_change,
                    &idempotency_key("change_item", &target, attempt_origin),
                )
                .await
                .map_err(|error| declined_on(error, change, if price.is_some() { "/plan" } else { "/licenses" }))?,
        );
    }
    if let Some(trial_end) = trial_changes {
        answered = Some(
            context
                .billing
                .set_trial_end(
                    stripe_subscription,
                    trial_end,
                    &idempotency_key("set_trial_end", &target, attempt_origin),
                )
                .await?,
        );
    }
    if let Some(flag) = flag_changes {
        answered = Some(
            context
                .billing
                .set_cancel_at_period_end(
                    stripe_subscription,
                    flag,
                    &idempotency_key("cancel_at_period_end", &target, attempt_origin),
                )
                .await?,
        );
    }
    Ok(answered)
}

/// A decline of the charge a change makes at once, reported on the card the change sent if it
/// sent one (that card was just made the default and charged), else on `field`.
fn declined_on(error: BillingError, change: &SubscriptionChange, field: &'static str) -> ChangeError {
    match error {
        BillingError::CardDeclined(detail) => ChangeError::ChargeDeclined {
            field: if change.stripe_source.is_some() {
                "/stripe_source"
            } else {
                field
            },
            detail,
        },
        other => ChangeError::Billing(other),
    }
}

/// A new Stripe subscription on `plan` for a subscription whose Stripe subscription was
/// canceled (or never made): the customer's card first (a paid plan is then charged with it),
/// no trial (the trial was the first subscription's), the licenses it has. The customer is made
/// when missing, with the key provisioning uses, so it is the customer provisioning would have
/// made.
async fn resubscribe(
    context: ChangeContext<'_>,
    current: &Subscription,
    change: &SubscriptionChange,
    plan: &Plan,
    request_origin: &str,
) -> Result<StripeSubscription, ChangeError> {
    let target = current.id.to_string();
    let email = change.email.as_deref().unwrap_or(&current.email);
    let customer = match &current.stripe_customer {
        Some(customer) => customer.clone(),
        None => {
            context
                .billing
                .create_customer(
                    current.id,
                    email,
                    &idempotency_key("create_customer", &target, "provision"),
                )
                .await?
                .id
        }
    };
    if let Some(method) = &change.stripe_source {
        context
            .billing
            .attach_default_payment_method(
                &customer,
                method,
                &idempotency_key("attach_payment_method", &target, request_origin),
            )
            .await?;
    }
    let mut answered = context
        .billing
        .create_subscription(
            SubscriptionTerms {
                customer: &customer,
                price: &plan.stripe_price,
                trial_end: None,
                quantity: change.licenses.or(current.licenses),
                discount_percent: change.discount_percent.or(current.discount_percent),
                user_id: current.user_id,
            },
            // The request's key, not the attempt's: an attempt that lost the race to store
            // the new subscription (a late event of the canceled one, say) must meet the same
            // Stripe subscription again, never make and charge a second one.
            &idempotency_key("resubscribe", &target, request_origin),
        )
        .await?;
    answered.customer = customer;
    Ok(answered)
}

/// Cancels a subscription's Stripe subscription now (`DELETE /subscriptions/{id}`) and stores
/// the canceled state; the subscription stays, readable, and a later `plan` subscribes again.
/// Cancelling a canceled subscription answers it as it is.
pub async fn cancel_subscription(
    context: ChangeContext<'_>,
    id: Uuid,
    actor: &str,
    origin: &str,
) -> Result<Subscription, ChangeError> {
    retry_on_conflict(|_| async move {
        let current = context.store.get_subscription(id).await?;
        if current.status == Status::Canceled {
            return Ok(current);
        }
        let Some(stripe_subscription) = &current.stripe_subscription else {
            return Err(ChangeError::NotInStripe);
        };
        let target = current.id.to_string();
        let canceled = match context
            .billing
            .cancel(stripe_subscription, &idempotency_key("cancel", &target, origin))
            .await
        {
            Ok(canceled) => canceled,
            // A cancel is a DELETE, which Stripe does not replay by key: an attempt after a lost
            // race (or a redelivered request) finds the subscription canceled already. What
            // Stripe holds now is the answer.
            Err(refused @ BillingError::Rejected(_)) => {
                let now = context.billing.retrieve_subscription(stripe_subscription).await?;
                if now.status != Status::Canceled {
                    return Err(refused.into());
                }
                now
            }
            Err(other) => return Err(other.into()),
        };
        let mut next = current.clone();
        next.status = canceled.status;
        next.cancel_at_period_end = false;
        next.version = current.version + 1;
        next.updated_at = context.clock.now().trunc_subsecs(0).max(current.updated_at);
        let audit = AuditEntry::between(Some(&current), &next, actor, "cancel");
        context
            .store
            .update_subscription(&next, current.version, &audit)
            .await?;
        tracing::info!(subscription = %id, "subscription canceled");
        Ok(next)
    })
    .await
}

/// Stores what Stripe holds now for a subscription (`POST /subscriptions/{id}/reconcile`): its
/// status, plan, trial, period, cancellation flag, licenses and ids: the repair when Stripe's
/// events were lost for longer than anything kept them. Always writes a version, recorded as
/// `reconcile` with what differed (possibly nothing), so the trail shows when it was done.
pub async fn reconcile_subscription(
    context: ChangeContext<'_>,
    id: Uuid,
    actor: &str,
) -> Result<Subscription, ChangeError> {
    retry_on_conflict(|_| async move {
        let current = context.store.get_subscription(id).await?;
        let Some(stripe_subscription) = &current.stripe_subscription else {
            return Err(ChangeError::NotInStripe);
        };
        let stripe = context.billing.retrieve_subscription(stripe_subscription).await?;
        let mut next = current.clone();
        next.status = stripe.status;
        if let Some(plan) = context.catalog.by_stripe_price(&stripe.price) {
            next.plan.clone_from(&plan.id);
        }
        next.trial_end = stripe.trial_end;
        if stripe.trial_end.is_none() {
            next.trial_start = None;
        }
        next.current_period_end = stripe.current_period_end;
        next.cancel_at_period_end = stripe.cancel_at_period_end;
        // Licenses are the item's quantity once the subscription counts them (or buys more
        // than one); a plain subscription's quantity of 1 stays "not counted".
        if let Some(quantity) = stripe.quantity.and_then(|q| u32::try_from(q).ok())
            && (current.licenses.is_some() || quantity > 1)
        {
            next.licenses = Some(quantity);
        }
        if stripe.latest_invoice.is_some() {
            next.latest_invoice = stripe.latest_invoice;
        }
        next.stripe_customer = Some(stripe.customer);
        next.version = current.version + 1;
        next.updated_at = context.clock.now().trunc_subsecs(0).max(current.updated_at);
        let audit = AuditEntry::between(Some(&current), &next, actor, "reconcile");
        context
            .store
            .update_subscription(&next, current.version, &audit)
            .await?;
        tracing::info!(subscription = %id, version = next.version, "subscription reconciled with Stripe");
        Ok(next)
    })
    .await
}
