//! `POST /stripe/webhook`: Stripe's events, each verified over its exact raw body, then applied
//! by `billing::webhook::apply_stripe_event` (at most once, in order, mail when due).
//!
//! - The signature is checked first; anything unsigned, forged or older than five minutes is a
//!   400 and nothing is stored.
//! - A 2xx answer means the effect is stored, or the event is recorded as ignored, as stale, or
//!   as concerning an unknown subscription (not retried by Stripe; replayable). A transient
//!   failure answers 500 so Stripe delivers again, with nothing half-applied.
//! - Every verified event is kept 400 days with its outcome (`billing::webhook::receive`), for
//!   operators to review and replay (`stripe-events`).
//! - `checkout.session.completed` for a self-hosted upgrade (`metadata.pending_upgrade`) saves
//!   the card as the customer's default and carries the upgrade through
//!   (`billing::plans::purchase`); every step of it is keyed, so a redelivery finishes what a
//!   failed delivery started and charges nothing twice.

use std::sync::Arc;

use billing::access::{Operation, declared_mailer, declared_store};
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment, billing_table, plan_catalog, required};
use billing::errors::{FieldError, Slug};
use billing::mail::Mailer;
use billing::plans::purchase::Purchases;
use billing::store::Store;
use billing::subscription::PlanCatalog;
use billing::webhook::{self, EventContext, Handled, Receiver, StripeEvent};
use billing_adapters::{DynamoStore, SesMailer, StripeBilling, SystemClock};
use billing_http::{ApiError, ApiResponse, Cors, serve_with_limit};
use lambda_http::{Body, Request, Response};
use serde_json::json;

pub use billing::webhook::{REMEMBER_EVENTS_FOR, actor};

/// Stripe's events can be far larger than the API's requests.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "stripe-webhook";

/// What this function does with the store and the mail service; its IAM policy grants exactly
/// these.
pub const OPERATIONS: &[Operation] = billing::webhook::RECEIVE_OPERATIONS;

/// The webhook endpoint and what it needs.
pub struct StripeWebhook {
    /// Subscriptions and recorded events.
    pub store: Arc<dyn Store>,
    /// Subscribers' mail.
    pub mailer: Arc<dyn Mailer>,
    /// The plans and their Stripe prices.
    pub catalog: PlanCatalog,
    /// The endpoint's signing secret (`whsec_...`).
    pub secret: String,
    /// What time it is: signatures' tolerance and records' expiry.
    pub clock: SharedClock,
    /// Self-hosted upgrades completed by Checkout.
    pub purchases: Purchases,
}

impl StripeWebhook {
    /// Reads `STRIPE_WEBHOOK_SECRET`, `BILLING_TABLE`, `MAIL_FROM` and the plan prices.
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let secret = required(env, "STRIPE_WEBHOOK_SECRET")?;
        let table = billing_table(env)?;
        let aws = billing_adapters::aws::load_sdk_config().await;
        let dynamo = Arc::new(DynamoStore::with_config(&aws, table));
        let purchases = Purchases::from_env(env, dynamo.clone(), Arc::new(StripeBilling::from_env(env)?))?;
        Ok(StripeWebhook {
            purchases,
            store: dynamo,
            mailer: Arc::new(SesMailer::from_env_with_config(env, &aws)?),
            catalog: plan_catalog(env)?,
            secret,
            clock: Arc::new(SystemClock),
        }
        .declared())
    }

    /// The same function, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        StripeWebhook {
            store: declared_store(self.store, FUNCTION, OPERATIONS),
            mailer: declared_mailer(self.mailer, FUNCTION, OPERATIONS),
            purchases: self.purchases.declared(FUNCTION, OPERATIONS),
            ..self
        }
    }

    /// Answers one delivery of one event.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        serve_with_limit(request, &Cors::default(), MAX_EVENT_BYTES, |request| async move {
            let signature = request.headers().get("stripe-signature").and_then(|v| v.to_str().ok());
            let now = self.clock.now().timestamp();
            if let Err(error) = webhook::verify(request.body(), signature, &self.secret, now) {
                tracing::warn!(%error, "webhook refused");
                billing::metrics::webhook_signature_failure();
                return Err(ApiError::one(FieldError::param(
                    Slug::InvalidValue,
                    "Stripe-Signature",
                    format!("the Stripe signature is not valid: {error}"),
                )));
            }
            let event = StripeEvent::parse(request.body()).map_err(|e| {
                ApiError::one(FieldError::general(
                    Slug::InvalidFormat,
                    format!("not a Stripe event: {e}"),
                ))
            })?;
            let receiver = Receiver {
                events: EventContext {
                    store: self.store.as_ref(),
                    mailer: self.mailer.as_ref(),
                    catalog: &self.catalog,
                    clock: self.clock.as_ref(),
                },
                purchases: &self.purchases,
            };
            let handled = webhook::receive(receiver, &event, request.body()).await.map_err(|error| {
                tracing::error!(error = %billing::errors::chain(&error), event = %event.id, "event not stored; Stripe will deliver it again");
                ApiError::one(FieldError::general(
                    Slug::ActOfGod,
                    "the event could not be stored; deliver it again",
                ))
            })?;
            tracing::info!(event = %event.id, kind = %event.kind, outcome = ?handled, "event handled");
            let body = match handled {
                Handled::Duplicate => json!({"received": true, "duplicate": true}),
                _ => json!({"received": true}),
            };
            Ok(ApiResponse::json(body))
        })
        .await
    }
}
