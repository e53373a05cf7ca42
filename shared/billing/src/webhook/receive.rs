//! One verified Stripe event, whichever way it came in (the webhook, an EventBridge envelope, an
//! operator's replay): handled through the one exactly-once path and kept with its outcome.
//!
//! The event's id is the key of both its effect and its keeping, so an event delivered by the
//! webhook and by EventBridge is applied once, and a replay of an applied event changes nothing.

use std::borrow::Cow;

use uuid::Uuid;

use super::apply::{EventContext, EventError, Handled, REMEMBER_EVENTS_FOR, apply_stripe_event, subscription_of};
use super::{EventKind, StripeEvent};
use crate::access::Operation;
use crate::plans::purchase::{PurchaseError, Purchases};
use crate::store::{EventWrite, KEEP_EVENTS_FOR, KeptEvent};
use crate::stripe::StripeSubscription;

/// The operations [`receive`] needs: what a function that takes Stripe's events declares (its
/// ports', and reading the Stripe key its purchases call Stripe with).
pub const RECEIVE_OPERATIONS: &[Operation] = &[
    Operation::GetSubscription,
    Operation::FindByStripeSubscription,
    Operation::FindByStripeCustomer,
    Operation::RecordEvent,
    Operation::RecordEventWithWrite,
    Operation::IsRecorded,
    Operation::KeepEvent,
    Operation::SendMail,
    Operation::GetDocument,
    Operation::PutDocument,
    Operation::PutDocuments,
    Operation::ListDocuments,
    Operation::ReadSecrets,
];

/// What handling any event needs.
#[derive(Clone, Copy)]
pub struct Receiver<'a> {
    /// Subscriptions, recorded events, mail, plans, time.
    pub events: EventContext<'a>,
    /// Self-hosted upgrades that Checkout completes.
    pub purchases: &'a Purchases,
}

/// The outcome kept for an event handled before but not kept (a crash between the two
/// writes, or an event handled before events were kept).
pub const HANDLED_BEFORE: &str = "received";

/// The outcome kept for an event whose handling failed: replayable.
pub const FAILED: &str = "failed";

/// Handles `event` (verified, `body` its exact bytes) and keeps it with its outcome. A
/// duplicate keeps the first outcome; a failure is kept as `failed` (when the store takes it)
/// and returned, so that the sender delivers again.
pub async fn receive(receiver: Receiver<'_>, event: &StripeEvent, body: &[u8]) -> Result<Handled, EventError> {
    let handled = if event.kind == "checkout.session.completed" {
        checkout_completed(receiver, event).await
    } else {
        let event = with_discount_from_stripe(receiver, event).await;
        apply_stripe_event(receiver.events, &event).await
    };
    let (outcome, replace) = match &handled {
        Ok(Handled::Applied) => ("applied", true),
        Ok(Handled::Recorded(outcome)) => (*outcome, true),
        Ok(Handled::Duplicate) => (HANDLED_BEFORE, false),
        Err(_) => (FAILED, true),
    };
    crate::metrics::stripe_event(outcome);
    let subscription_id = match handled {
        Ok(Handled::Applied | Handled::Recorded("stale" | "mailed" | "mail_refused")) => {
            subscription_of(receiver.events.store, event)
                .await
                .ok()
                .flatten()
                .map(|found| found.id)
        }
        _ => None,
    };
    let kept = keep(receiver, event, body, outcome, subscription_id, replace).await;
    match (handled, kept) {
        (Err(error), _) => Err(error),
        // The effect is stored, but not the event: the sender delivers again, which keeps it.
        (Ok(_), Err(error)) => Err(EventError::Store(error)),
        (Ok(handled), Ok(())) => Ok(handled),
    }
}

/// A subscription snapshot names its discounts only by id (events never expand them), which
/// says nothing of what they take off: a discount set in the Dashboard would never reach the
/// stored `discount_percent`. And a snapshot without discounts may be older than the service's
/// own discount, or say that one was removed. Such a snapshot (ids, or none while one is
/// stored) is completed from Stripe: the subscription read with its coupons expanded, which is
/// what holds now. A failed read leaves it as it is, and the stored discount stands until the
/// next snapshot.
async fn with_discount_from_stripe<'e>(receiver: Receiver<'_>, event: &'e StripeEvent) -> Cow<'e, StripeEvent> {
    let (EventKind::SubscriptionState, Some(discounts), Some(id)) = (
        event.kind(),
        event.object["discounts"].as_array(),
        event.object["id"].as_str(),
    ) else {
        return Cow::Borrowed(event);
    };
    let ask_stripe = if discounts.is_empty() {
        matches!(
            subscription_of(receiver.events.store, event).await,
            Ok(Some(stored)) if stored.discount_percent.is_some()
        )
    } else {
        discounts.iter().all(serde_json::Value::is_string)
    };
    if !ask_stripe {
        return Cow::Borrowed(event);
    }
    match receiver.purchases.stripe.retrieve_subscription(id).await {
        Ok(StripeSubscription {
            discount_percent: Some(percent),
            ..
        }) => {
            let mut completed = event.clone();
            // A coupon of 0 % is read as no discount.
            completed.object["discounts"] =
                serde_json::json!([{"source": {"coupon": {"percent_off": percent.unwrap_or(0)}}}]);
            Cow::Owned(completed)
        }
        Ok(_) => Cow::Borrowed(event),
        Err(error) => {
            tracing::warn!(event = %event.id, %error, "the subscription's discount could not be read from Stripe; the stored one stands");
            Cow::Borrowed(event)
        }
    }
}

async fn keep(
    receiver: Receiver<'_>,
    event: &StripeEvent,
    body: &[u8],
    outcome: &str,
    subscription_id: Option<Uuid>,
    replace: bool,
) -> Result<(), crate::store::StoreError> {
    let kept = KeptEvent {
        id: event.id.clone(),
        kind: event.kind.clone(),
        created: event.created,
        outcome: outcome.to_owned(),
        subscription_id,
        body: body.to_vec(),
        kept_until: receiver.events.clock.now() + KEEP_EVENTS_FOR,
    };
    receiver.events.store.keep_event(&kept, replace).await
}

/// `checkout.session.completed`: a self-hosted upgrade's card is saved and the upgrade goes on
/// (`plans::purchase`). Recorded once it is settled (started, declined, refused, or not ours);
/// a failure of the store or of Stripe is an error and the redelivery goes on from where it
/// stopped: every step is keyed, so nothing is charged twice.
async fn checkout_completed(receiver: Receiver<'_>, event: &StripeEvent) -> Result<Handled, EventError> {
    let store = receiver.events.store;
    let key = format!("stripe-event:{}", event.id);
    if store.is_recorded(&key).await? {
        return Ok(Handled::Duplicate);
    }
    let object = &event.object;
    let text = |name: &str| object[name].as_str().unwrap_or_default();
    let reference = object["metadata"]["pending_upgrade"].as_str();
    let now = receiver.events.clock.now();
    let outcome = match (reference, text("mode"), text("customer"), text("setup_intent")) {
        (Some(reference), "setup", customer, intent) if !customer.is_empty() && !intent.is_empty() => {
            match receiver
                .purchases
                .checkout_completed(reference, customer, intent, now)
                .await
            {
                Ok(_) => "applied",
                Err(PurchaseError::Declined(_)) => "declined",
                Err(PurchaseError::Plan(_) | PurchaseError::PurchaseInProgress) => "refused",
                Err(PurchaseError::UnknownUpgrade) => "unknown_upgrade",
                Err(error @ (PurchaseError::Store(_) | PurchaseError::Stripe(_) | PurchaseError::MissingData)) => {
                    return Err(EventError::Upgrade(error));
                }
            }
        }
        _ => "ignored",
    };
    match store
        .record_event(&key, now + REMEMBER_EVENTS_FOR, outcome, None)
        .await?
    {
        EventWrite::Recorded if outcome == "applied" => Ok(Handled::Applied),
        EventWrite::Recorded => Ok(Handled::Recorded(outcome)),
        _ => Ok(Handled::Duplicate),
    }
}
