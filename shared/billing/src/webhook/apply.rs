//! The use case behind Stripe's webhooks: apply one verified event to the subscription it
//! concerns, at most once, never rolling a subscription back to an older state, and mail the
//! subscriber when the event says so.
//!
//! - Each event id is recorded with a conditional write, in the same transaction as its effect
//!   on the subscription (and the last-applied-event mark that orders them), for
//!   [`REMEMBER_EVENTS_FOR`]: longer than Stripe's three days of retries.
//! - Ordering is per kind of state ([`EventOrder`]): subscription snapshots are fenced against
//!   snapshots; invoice events change only the status, never over a newer snapshot, and never
//!   hold back an older snapshot. An invoice without a subscription changes nothing.
//! - Every outcome is stored: applied, or recorded as ignored, stale, concerning an unknown
//!   subscription, mailed, or refused by the mail service (kept for review). An error means
//!   nothing was stored and the event must be delivered again.
//! - `customer.subscription.trial_will_end` mails the subscriber. The mail is sent before the
//!   event is recorded, so a failure to record can repeat it, but a failure to send never loses
//!   it; a duplicate delivery after the record finds it and sends nothing.

use chrono::{Duration, SubsecRound};

use super::{EventKind, StripeEvent, apply_event};
use crate::clock::Clock;
use crate::mail::{MailError, Mailer, texts};
use crate::store::{
    AuditEntry, EventOrder, EventWrite, Store, StoreError, SubscriptionWrite, WRITE_ATTEMPTS, retry_on_conflict,
};
use crate::subscription::{PlanCatalog, Subscription};

/// How long an event id is remembered: well past Stripe's three days of retries.
pub const REMEMBER_EVENTS_FOR: Duration = Duration::days(30);

/// Who the audit trail names for a change made by the Stripe event `event_id` (API.md:
/// `stripe:<event id>`), so the record leads to the kept event.
pub fn actor(event_id: &str) -> String {
    format!("stripe:{event_id}")
}

/// What the service needs to apply Stripe's events.
#[derive(Clone, Copy)]
pub struct EventContext<'a> {
    /// Where subscriptions and recorded events live.
    pub store: &'a dyn Store,
    /// Where the subscribers' mail goes.
    pub mailer: &'a dyn Mailer,
    /// The plans, to read a Stripe price back as a plan.
    pub catalog: &'a PlanCatalog,
    /// What time it is.
    pub clock: &'a dyn Clock,
}

/// How an event was handled; every variant means the outcome is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// The event changed (or confirmed) its subscription.
    Applied,
    /// The event was handled before.
    Duplicate,
    /// The event was recorded with this outcome and changed no subscription: `ignored`,
    /// `stale`, `unknown_subscription`, `mailed`, `mail_refused`.
    Recorded(&'static str),
}

/// Why an event could not be handled. Nothing was stored: Stripe should deliver it again.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The store failed.
    #[error("the event could not be stored")]
    Store(#[from] StoreError),
    /// The mail the event calls for could not be sent, for now.
    #[error("the event's mail could not be sent")]
    Mail(#[source] MailError),
    /// A self-hosted upgrade's checkout could not be carried on, for now.
    #[error("the upgrade the checkout completes could not go on")]
    Upgrade(#[source] crate::plans::purchase::PurchaseError),
    /// Other writers kept changing the subscription while the event was applied.
    #[error("the subscription kept changing while the event was applied ({WRITE_ATTEMPTS} attempts)")]
    KeptChanging,
}

/// Applies `event` (already verified) once; see the module's documentation for the promises.
pub async fn apply_stripe_event(context: EventContext<'_>, event: &StripeEvent) -> Result<Handled, EventError> {
    let key = format!("stripe-event:{}", event.id);
    match event.kind() {
        EventKind::Other => Ok(record(context, &key, "ignored").await?),
        EventKind::TrialWillEnd => mail_trial_end(context, event, &key).await,
        // A one-off invoice belongs to no subscription: the customer's subscription is not its.
        _ if event.is_invoice() && event.stripe_subscription().is_none() => Ok(record(context, &key, "ignored").await?),
        // A change's own invoice that needs authentication was answered 402 and voided by
        // the service: no mail asks the customer to pay it.
        EventKind::InvoicePaymentActionRequired if event.object["billing_reason"] != "subscription_update" => {
            mail_action_required(context, event, &key).await
        }
        _ => apply(context, event, &key).await,
    }
}

async fn record(context: EventContext<'_>, key: &str, outcome: &'static str) -> Result<Handled, StoreError> {
    let expires = context.clock.now() + REMEMBER_EVENTS_FOR;
    match context.store.record_event(key, expires, outcome, None).await? {
        EventWrite::Recorded => Ok(Handled::Recorded(outcome)),
        _ => Ok(Handled::Duplicate),
    }
}

/// The stored subscription an event concerns: by the `user_id` in its metadata (a read by key),
/// else by the Stripe subscription id, else by the Stripe customer id (indexes). A subscription
/// found by user whose Stripe subscription differs is not this event's.
pub async fn subscription_of(store: &dyn Store, event: &StripeEvent) -> Result<Option<Subscription>, StoreError> {
    if let Some(user) = event.user_id() {
        match store.get_subscription(user).await {
            Ok(found)
                if event
                    .stripe_subscription()
                    .is_none_or(|id| found.stripe_subscription.as_deref() == Some(id)) =>
            {
                return Ok(Some(found));
            }
            Ok(_) | Err(StoreError::NotFound) => {}
            Err(other) => return Err(other),
        }
    }
    let by_subscription = match event.stripe_subscription() {
        Some(id) => store.find_by_stripe_subscription(id).await,
        None => Err(StoreError::NotFound),
    };
    let found = match by_subscription {
        // By customer only when the customer's subscription is not another Stripe subscription:
        // a late event of a canceled Stripe subscription must not touch the one made after it.
        Err(StoreError::NotFound) => match event.stripe_customer() {
            Some(customer) => store.find_by_stripe_customer(customer).await.and_then(|found| {
                let theirs = event.stripe_subscription();
                match (found.stripe_subscription.as_deref(), theirs) {
                    (Some(ours), Some(theirs)) if ours != theirs => Err(StoreError::NotFound),
                    _ => Ok(found),
                }
            }),
            None => Err(StoreError::NotFound),
        },
        other => other,
    };
    match found {
        Ok(subscription) => Ok(Some(subscription)),
        Err(StoreError::NotFound) => Ok(None),
        Err(other) => Err(other),
    }
}

async fn apply(context: EventContext<'_>, event: &StripeEvent, key: &str) -> Result<Handled, EventError> {
    let outcome = retry_on_conflict(|_| async {
        let Some(current) = subscription_of(context.store, event).await? else {
            tracing::warn!(event = %event.id, stripe_subscription = ?event.stripe_subscription(), "event for an unknown subscription; recorded for review");
            return record(context, key, "unknown_subscription").await;
        };
        // Even an event that changes nothing advances the subscription's last-applied mark
        // (without a new version), so an older event arriving later cannot undo what this one
        // confirmed.
        let mut next = apply_event(&current, event, context.catalog);
        let now = context.clock.now();
        if next != current {
            next.version = current.version + 1;
            next.updated_at = now.trunc_subsecs(0).max(current.updated_at);
        }
        let audit = AuditEntry::between(Some(&current), &next, actor(&event.id), event.kind.as_str()).by_event(&event.id);
        let mark = event.mark();
        let write = SubscriptionWrite {
            next: &next,
            expected_version: current.version,
            audit: &audit,
            mark: &mark,
            order: match event.kind() {
                _ if event.is_invoice() => EventOrder::Invoice,
                EventKind::CustomerUpdated => EventOrder::Customer,
                _ => EventOrder::Snapshot,
            },
        };
        let written = context
            .store
            .record_event(key, now + REMEMBER_EVENTS_FOR, "applied", Some(write))
            .await?;
        match written {
            EventWrite::Recorded => Ok(Handled::Applied),
            EventWrite::Duplicate => Ok(Handled::Duplicate),
            EventWrite::Stale => record(context, key, "stale").await,
            EventWrite::VersionConflict => Err(StoreError::VersionConflict),
        }
    })
    .await;
    match outcome {
        Err(StoreError::VersionConflict) => Err(EventError::KeptChanging),
        other => Ok(other?),
    }
}

/// `invoice.payment_action_required`: the customer is mailed the invoice's page, where they can
/// authenticate the payment, and the status changes as for a failed payment. The mail goes
/// before the event is recorded (at least once; a duplicate delivery after the record sends
/// nothing), as for the trial-end mail.
async fn mail_action_required(
    context: EventContext<'_>,
    event: &StripeEvent,
    key: &str,
) -> Result<Handled, EventError> {
    if context.store.is_recorded(key).await? {
        return Ok(Handled::Duplicate);
    }
    if let (Some(subscription), Some(url)) = (
        subscription_of(context.store, event).await?,
        event.object["hosted_invoice_url"].as_str(),
    ) {
        match context
            .mailer
            .deliver(&texts::payment_action_required(&subscription.email, url))
            .await
        {
            Ok(id) => tracing::info!(mail = %id, subscription = %subscription.id, "payment action mail sent"),
            Err(MailError::Refused(detail)) => {
                tracing::error!(error = %detail, subscription = %subscription.id, "payment action mail refused");
            }
            Err(unavailable) => return Err(EventError::Mail(unavailable)),
        }
    }
    apply(context, event, key).await
}

async fn mail_trial_end(context: EventContext<'_>, event: &StripeEvent, key: &str) -> Result<Handled, EventError> {
    if context.store.is_recorded(key).await? {
        return Ok(Handled::Duplicate);
    }
    let Some(subscription) = subscription_of(context.store, event).await? else {
        return Ok(record(context, key, "unknown_subscription").await?);
    };
    let ends = subscription
        .trial_end
        .or_else(|| super::timestamp(&event.object["trial_end"]));
    match context
        .mailer
        .deliver(&texts::trial_ending(&subscription.email, ends))
        .await
    {
        Ok(id) => tracing::info!(mail = %id, subscription = %subscription.id, "trial end mail sent"),
        Err(MailError::Refused(detail)) => {
            tracing::error!(error = %detail, subscription = %subscription.id, "trial end mail refused; recorded for review");
            return Ok(record(context, key, "mail_refused").await?);
        }
        Err(unavailable) => return Err(EventError::Mail(unavailable)),
    }
    Ok(record(context, key, "mailed").await?)
}
