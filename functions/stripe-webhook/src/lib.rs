//! `POST /stripe/webhook`: Stripe's events, each verified over its exact raw body, applied at
//! most once, and never allowed to roll a subscription back to an older state.
//!
//! - The signature is checked first; anything unsigned, forged or older than five minutes is a
//!   400 and nothing is stored.
//! - Each event id is recorded with a conditional write, in the same transaction as its effect
//!   on the subscription (and the last-applied-event mark that orders them), for 30 days: longer
//!   than Stripe's three days of retries.
//! - A 2xx answer means the effect is stored, or the event is recorded as ignored, as stale, or
//!   as concerning an unknown subscription (kept for review, not retried). A transient failure
//!   answers 500 so Stripe delivers again, with nothing half-applied.
//! - `customer.subscription.trial_will_end` mails the subscriber. The mail is sent before the
//!   event is recorded, so a failure to record can repeat it, but a failure to send never loses
//!   it; a duplicate delivery after the record finds it and sends nothing.

use std::sync::Arc;

use billing::config::{ConfigError, Environment, billing_table, plan_catalog, required};
use billing::errors::{FieldError, Slug};
use billing::http::{ApiError, ApiResponse, Cors, serve_with_limit};
use billing::mail::{Mail, MailError, Mailer, SesMailer};
use billing::store::{AuditEntry, DynamoStore, EventWrite, Store, StoreError, SubscriptionWrite};
use billing::subscription::{PlanCatalog, Subscription};
use billing::webhook::{self, EventKind, StripeEvent};
use chrono::{Duration, SubsecRound, Utc};
use lambda_http::{Body, Request, Response};
use serde_json::json;

/// Stripe's events can be far larger than the API's requests.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// How long an event id is remembered: well past Stripe's three days of retries.
pub const REMEMBER_EVENTS_FOR: Duration = Duration::days(30);
const WRITE_ATTEMPTS: u32 = 5;
pub const ACTOR: &str = "system:stripe";

pub struct StripeWebhook {
    pub store: Arc<dyn Store>,
    pub mailer: Arc<dyn Mailer>,
    pub catalog: PlanCatalog,
    pub secret: String,
}

/// How an event was handled, for the answer and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handled {
    Applied,
    Duplicate,
    Recorded(&'static str),
}

impl StripeWebhook {
    /// Reads `STRIPE_WEBHOOK_SECRET`, `BILLING_TABLE`, `MAIL_FROM` and the plan prices.
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let secret = required(env, "STRIPE_WEBHOOK_SECRET")?;
        let table = billing_table(env)?;
        let aws = billing::aws::load_sdk_config().await;
        Ok(StripeWebhook {
            store: Arc::new(DynamoStore::with_config(&aws, table)),
            mailer: Arc::new(SesMailer::from_env_with_config(env, &aws)?),
            catalog: plan_catalog(env)?,
            secret,
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        serve_with_limit(request, &Cors::default(), MAX_EVENT_BYTES, |request| async move {
            let signature = request.headers().get("stripe-signature").and_then(|v| v.to_str().ok());
            if let Err(error) = webhook::verify(request.body(), signature, &self.secret, Utc::now().timestamp()) {
                tracing::warn!(%error, "webhook refused");
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
            let handled = self.process(&event).await.map_err(|error| {
                tracing::error!(%error, event = %event.id, "event not stored; Stripe will deliver it again");
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

    async fn process(&self, event: &StripeEvent) -> Result<Handled, StoreError> {
        let key = format!("stripe-event:{}", event.id);
        match event.kind() {
            EventKind::Other => self.record(&key, "ignored").await,
            EventKind::TrialWillEnd => self.mail_trial_end(event, &key).await,
            _ => self.apply(event, &key).await,
        }
    }

    async fn record(&self, key: &str, outcome: &'static str) -> Result<Handled, StoreError> {
        match self
            .store
            .record_event(key, Utc::now() + REMEMBER_EVENTS_FOR, outcome, None)
            .await?
        {
            EventWrite::Recorded => Ok(Handled::Recorded(outcome)),
            _ => Ok(Handled::Duplicate),
        }
    }

    /// The stored subscription an event concerns: by the `user_id` in its metadata (a read by
    /// key), else by the Stripe subscription id, else by the Stripe customer id (indexes). A
    /// subscription found by user whose Stripe subscription differs is not this event's.
    async fn subscription_of(&self, event: &StripeEvent) -> Result<Option<Subscription>, StoreError> {
        if let Some(user) = event.user_id() {
            match self.store.get_subscription(user).await {
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
            Some(id) => self.store.find_by_stripe_subscription(id).await,
            None => Err(StoreError::NotFound),
        };
        let found = match by_subscription {
            Err(StoreError::NotFound) => match event.stripe_customer() {
                Some(customer) => self.store.find_by_stripe_customer(customer).await,
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

    async fn apply(&self, event: &StripeEvent, key: &str) -> Result<Handled, StoreError> {
        for _ in 0..WRITE_ATTEMPTS {
            let Some(current) = self.subscription_of(event).await? else {
                tracing::warn!(event = %event.id, stripe_subscription = ?event.stripe_subscription(), "event for an unknown subscription; recorded for review");
                return self.record(key, "unknown_subscription").await;
            };
            // Even an event that changes nothing advances the subscription's last-applied mark
            // (without a new version), so an older event arriving later cannot undo what this
            // one confirmed.
            let mut next = webhook::apply_event(&current, event, &self.catalog);
            if next != current {
                next.version = current.version + 1;
                next.updated_at = Utc::now().trunc_subsecs(0).max(current.updated_at);
            }
            let audit = AuditEntry::of(&next, ACTOR, event.kind.as_str(), json!({"event": event.id}));
            let mark = event.mark();
            let write = SubscriptionWrite {
                next: &next,
                expected_version: current.version,
                audit: &audit,
                mark: &mark,
            };
            match self
                .store
                .record_event(key, Utc::now() + REMEMBER_EVENTS_FOR, "applied", Some(write))
                .await?
            {
                EventWrite::Recorded => return Ok(Handled::Applied),
                EventWrite::Duplicate => return Ok(Handled::Duplicate),
                EventWrite::Stale => return self.record(key, "stale").await,
                EventWrite::VersionConflict => continue,
            }
        }
        Err(StoreError::Unavailable(
            "the subscription kept changing while the event was applied".into(),
        ))
    }

    async fn mail_trial_end(&self, event: &StripeEvent, key: &str) -> Result<Handled, StoreError> {
        if self.store.is_recorded(key).await? {
            return Ok(Handled::Duplicate);
        }
        let Some(subscription) = self.subscription_of(event).await? else {
            return self.record(key, "unknown_subscription").await;
        };
        let ends = subscription
            .trial_end
            .or_else(|| {
                event.object["trial_end"]
                    .as_i64()
                    .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            })
            .map_or_else(|| "soon".to_owned(), |end| format!("on {}", end.format("%B %-d, %Y")));
        let mail = Mail {
            to: subscription.email.clone(),
            subject: "Your free trial ends soon".to_owned(),
            text: format!(
                "Hello,\n\nyour free trial ends {ends}. Choose a plan and add a payment method to keep your account running \
                 without interruption.\n"
            ),
            html: None,
        };
        match self.mailer.send(&mail).await {
            Ok(id) => tracing::info!(mail = %id, subscription = %subscription.id, "trial end mail sent"),
            Err(MailError::Refused(detail)) => {
                tracing::error!(%detail, subscription = %subscription.id, "trial end mail refused; recorded for review");
                return self.record(key, "mail_refused").await;
            }
            Err(MailError::Unavailable(detail)) => return Err(StoreError::Unavailable(format!("mail: {detail}"))),
        }
        self.record(key, "mailed").await
    }
}
