//! Stripe's events delivered by Amazon EventBridge (a Stripe partner event source: no public
//! endpoint, no signature; EventBridge and IAM are the trust boundary), applied through the
//! same exactly-once path as the webhook (`billing::webhook::receive`).
//!
//! - The envelope's `detail` is the Stripe event. Its id keys both its effect and its keeping,
//!   so an event that arrives by the webhook and by EventBridge is applied once.
//! - An envelope that is not a Stripe event is refused and not retried (it never will be one);
//!   a transient failure is an error, so EventBridge's retry policy delivers it again and, when
//!   the retries run out, its dead-letter queue keeps it.

use std::sync::Arc;

use billing::access::{Operation, declared_mailer, declared_store};
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment, billing_table, plan_catalog};
use billing::mail::Mailer;
use billing::plans::purchase::Purchases;
use billing::store::Store;
use billing::subscription::PlanCatalog;
use billing::webhook::{EventContext, EventError, Handled, Receiver, StripeEvent, receive};
use billing_adapters::{DynamoStore, SesMailer, StripeBilling, SystemClock};
use serde_json::{Value, json};

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "stripe-eventbridge";

/// What this function does with the store and the mail service: what the webhook does.
pub const OPERATIONS: &[Operation] = billing::webhook::RECEIVE_OPERATIONS;

/// The source prefix of Stripe's partner event sources.
pub const STRIPE_SOURCE_PREFIX: &str = "aws.partner/stripe.com";

/// Why an envelope was not handled.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The envelope does not come from Stripe's partner source, or its `detail` is not a
    /// Stripe event: delivering it again cannot help.
    #[error("not a Stripe event envelope: {0}")]
    NotAStripeEvent(String),
    /// Nothing was stored; EventBridge should deliver it again.
    #[error("the event could not be handled; deliver it again")]
    Unhandled(#[from] EventError),
}

/// The function and what it needs.
pub struct StripeEventBridge {
    /// Subscriptions, recorded and kept events.
    pub store: Arc<dyn Store>,
    /// Subscribers' mail.
    pub mailer: Arc<dyn Mailer>,
    /// The plans and their Stripe prices.
    pub catalog: PlanCatalog,
    /// What time it is.
    pub clock: SharedClock,
    /// Self-hosted upgrades completed by Checkout.
    pub purchases: Purchases,
}

impl StripeEventBridge {
    /// Reads `BILLING_TABLE`, `STRIPE_SECRET_KEY` (and `STRIPE_API_BASE`), `MAIL_FROM` and the
    /// plan prices; builds the clients once.
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let table = billing_table(env)?;
        let aws = billing_adapters::aws::load_sdk_config().await;
        let dynamo = Arc::new(DynamoStore::with_config(&aws, table));
        Ok(StripeEventBridge {
            purchases: Purchases::from_env(env, dynamo.clone(), Arc::new(StripeBilling::from_env(env)?))?,
            store: dynamo,
            mailer: Arc::new(SesMailer::from_env_with_config(env, &aws)?),
            catalog: plan_catalog(env)?,
            clock: Arc::new(SystemClock),
        }
        .declared())
    }

    /// The same function, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        StripeEventBridge {
            store: declared_store(self.store, FUNCTION, OPERATIONS),
            mailer: declared_mailer(self.mailer, FUNCTION, OPERATIONS),
            purchases: self.purchases.declared(FUNCTION, OPERATIONS),
            ..self
        }
    }

    /// Handles one envelope: `{"id": ..., "outcome": ...}` once it is handled or refused for
    /// good (logged, not retried); an error when EventBridge should deliver it again.
    pub async fn handle(&self, envelope: &Value) -> Result<Value, EnvelopeError> {
        let (event, body) = match stripe_event_of(envelope) {
            Ok(found) => found,
            Err(error) => {
                tracing::error!(%error, envelope_id = ?envelope["id"].as_str(), "envelope refused");
                return Ok(json!({"id": envelope["detail"]["id"], "outcome": "refused"}));
            }
        };
        let receiver = Receiver {
            events: EventContext {
                store: self.store.as_ref(),
                mailer: self.mailer.as_ref(),
                catalog: &self.catalog,
                clock: self.clock.as_ref(),
            },
            purchases: &self.purchases,
        };
        let handled = receive(receiver, &event, &body).await.inspect_err(|error| {
            tracing::error!(error = %billing::errors::chain(error), event = %event.id, "event not stored; EventBridge will deliver it again");
        })?;
        tracing::info!(event = %event.id, kind = %event.kind, outcome = ?handled, "event handled");
        let outcome = match handled {
            Handled::Applied => "applied",
            Handled::Duplicate => "duplicate",
            Handled::Recorded(outcome) => outcome,
        };
        Ok(json!({"id": event.id, "outcome": outcome}))
    }
}

/// The Stripe event in an envelope, and its bytes as kept.
pub fn stripe_event_of(envelope: &Value) -> Result<(StripeEvent, Vec<u8>), EnvelopeError> {
    let source = envelope["source"].as_str().unwrap_or_default();
    if !source.starts_with(STRIPE_SOURCE_PREFIX) {
        return Err(EnvelopeError::NotAStripeEvent(format!(
            "source {source:?} is not Stripe's partner source"
        )));
    }
    let detail = &envelope["detail"];
    let body = serde_json::to_vec(detail).map_err(|e| EnvelopeError::NotAStripeEvent(e.to_string()))?;
    let event = StripeEvent::parse(&body).map_err(EnvelopeError::NotAStripeEvent)?;
    if envelope["detail-type"].as_str().is_some_and(|kind| kind != event.kind) {
        return Err(EnvelopeError::NotAStripeEvent(format!(
            "detail-type {:?} is not the event's type {:?}",
            envelope["detail-type"], event.kind
        )));
    }
    Ok((event, body))
}
