//! The operators' review and repair of Stripe's events, for administrators
//! (`subscriptions_admin`) only (API.md, "Operators"):
//!
//! - `GET /stripe/events?outcome&limit&cursor` → `{"events": [{"id", "type", "created",
//!   "outcome", "subscription_id"}], "next_cursor"}`, newest first: "which events did we not
//!   apply" is `?outcome=unknown_subscription` or `?outcome=failed`;
//! - `POST /stripe/events/{event_id}/replay` applies a kept event again through the exactly-once
//!   path the webhook uses (`billing::webhook::receive`): an applied event changes nothing, one
//!   recorded for an unknown subscription applies once that subscription exists;
//! - `POST /subscriptions/{id}/reconcile` stores what Stripe holds for the subscription now, the
//!   repair when events were lost for longer than anything kept them.
//!
//! Replay and reconcile take no body (or `{}`).

use std::sync::Arc;

use billing::access::{Operation, declared_documents, declared_mailer, declared_store};
use billing::change::{ChangeContext, reconcile_subscription};
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment, billing_table, plan_catalog};
use billing::errors::{FieldError, Slug};
use billing::mail::Mailer;
use billing::paging::{self, PageQuery};
use billing::plans::purchase::Purchases;
use billing::store::{EVENT_OUTCOMES, KeptEvent, Store};
use billing::stripe::Billing;
use billing::subscription::PlanCatalog;
use billing::webhook::{EventContext, Receiver, StripeEvent, receive};
use billing_adapters::{DynamoStore, SesMailer, StripeBilling, SystemClock};
use billing_http::idempotent::{Idempotency, serve_idempotent};
use billing_http::{ApiError, ApiRequest, ApiResponse, Cors};
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "stripe-events";

/// What this function does with the store and the mail service; its IAM policy grants exactly
/// these. Replaying does what the webhook does; reconciling reads and writes a subscription.
pub const OPERATIONS: &[Operation] = &[
    Operation::GetSubscription,
    Operation::UpdateSubscription,
    Operation::FindByStripeSubscription,
    Operation::FindByStripeCustomer,
    Operation::RecordEvent,
    Operation::RecordEventWithWrite,
    Operation::IsRecorded,
    Operation::KeepEvent,
    Operation::GetKeptEvent,
    Operation::ListKeptEvents,
    Operation::SendMail,
    Operation::GetDocument,
    Operation::PutDocument,
    Operation::PutDocuments,
    Operation::ListDocuments,
    Operation::ReadSecrets,
];

/// How many events a page holds when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;

/// The routes this function answers.
pub mod routes {
    /// The kept events.
    pub const LIST: &str = "GET /stripe/events";
    /// One kept event, applied again.
    pub const REPLAY: &str = "POST /stripe/events/{event_id}/replay";
    /// A subscription set to what Stripe holds.
    pub const RECONCILE: &str = "POST /subscriptions/{id}/reconcile";
}

/// The endpoints and what they need.
pub struct StripeEvents {
    /// Subscriptions, recorded and kept events.
    pub store: Arc<dyn Store>,
    /// Subscribers' mail (a replayed event may call for one).
    pub mailer: Arc<dyn Mailer>,
    /// Stripe, read by reconcile.
    pub billing: Arc<dyn Billing>,
    /// The plans and their Stripe prices.
    pub catalog: PlanCatalog,
    /// Which browser origins may call.
    pub cors: Cors,
    /// What time it is.
    pub clock: SharedClock,
    /// Self-hosted upgrades, for a replayed `checkout.session.completed`.
    pub purchases: Purchases,
    /// Answers kept for clients' `Idempotency-Key`s.
    pub idempotency: Idempotency,
}

impl StripeEvents {
    /// Reads `BILLING_TABLE`, `STRIPE_SECRET_KEY` (and `STRIPE_API_BASE`), `MAIL_FROM`, the plan
    /// prices and `CORS_ALLOWED_ORIGINS`; builds the clients once.
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let table = billing_table(env)?;
        let aws = billing_adapters::aws::load_sdk_config().await;
        let dynamo = Arc::new(DynamoStore::with_config(&aws, table));
        let billing: Arc<dyn Billing> = Arc::new(StripeBilling::from_env(env)?);
        let clock: SharedClock = Arc::new(SystemClock);
        Ok(StripeEvents {
            idempotency: Idempotency {
                documents: dynamo.clone(),
                clock: clock.clone(),
            },
            purchases: Purchases::from_env(env, dynamo.clone(), billing.clone())?,
            store: dynamo,
            mailer: Arc::new(SesMailer::from_env_with_config(env, &aws)?),
            billing,
            catalog: plan_catalog(env)?,
            cors: Cors::from_env(env),
            clock,
        }
        .declared())
    }

    /// The same function, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        StripeEvents {
            store: declared_store(self.store, FUNCTION, OPERATIONS),
            mailer: declared_mailer(self.mailer, FUNCTION, OPERATIONS),
            purchases: self.purchases.declared(FUNCTION, OPERATIONS),
            idempotency: Idempotency {
                documents: declared_documents(self.idempotency.documents.clone(), FUNCTION, OPERATIONS),
                ..self.idempotency
            },
            ..self
        }
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        serve_idempotent(request, &self.cors, &self.idempotency, |request| async move {
            let principal = request.principal()?;
            principal.require_admin()?;
            match request.route_key() {
                Some(routes::LIST) => self.list(&request).await,
                Some(routes::REPLAY) => {
                    refuse_a_body(&request)?;
                    self.replay(&request.path_stripe_id("event_id", "evt_")?).await
                }
                Some(routes::RECONCILE) => {
                    refuse_a_body(&request)?;
                    let id = request.path_uuid("id")?;
                    let context = ChangeContext {
                        store: self.store.as_ref(),
                        billing: self.billing.as_ref(),
                        catalog: &self.catalog,
                        clock: self.clock.as_ref(),
                    };
                    let actor = format!("admin:{}", principal.user_id);
                    Ok(ApiResponse::ok(reconcile_subscription(context, id, &actor).await?))
                }
                other => Err(ApiError::act_of_god(&format!(
                    "{FUNCTION} has no route {}",
                    other.unwrap_or("(none)")
                ))),
            }
        })
        .await
    }

    async fn list(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let outcome = request.query("outcome");
        let mut errors = Vec::new();
        if let Some(outcome) = outcome.as_deref()
            && !EVENT_OUTCOMES.contains(&outcome)
        {
            errors.push(FieldError::param(
                Slug::InvalidValue,
                "outcome",
                format!(
                    "unknown outcome {outcome:?}; outcomes are {}",
                    EVENT_OUTCOMES.join(", ")
                ),
            ));
        }
        let page = match PageQuery::read(
            request.query("limit").as_deref(),
            request.query("cursor").as_deref(),
            DEFAULT_LIMIT,
        ) {
            Ok(page) => Some(page),
            Err(found) => {
                errors.extend(found.0);
                None
            }
        };
        let (Some(page), true) = (page, errors.is_empty()) else {
            return Err(ApiError::from_errors(errors));
        };
        // A cursor carries the outcome it lists, so it cannot wander into another list.
        let position = match &page.cursor {
            None => None,
            Some(cursor) if cursor["outcome"] == json!(outcome) => Some(cursor["at"].clone()),
            Some(_) => return Err(ApiError::one(paging::unreadable_cursor())),
        };
        let found = self
            .store
            .list_kept_events(outcome.as_deref(), page.limit, position.as_ref())
            .await?;
        let next_cursor = found
            .next
            .map(|at| paging::encode(&json!({"outcome": outcome, "at": at})));
        Ok(ApiResponse::json(json!({
            "events": found.events.iter().map(event_view).collect::<Vec<_>>(),
            "next_cursor": next_cursor,
        })))
    }

    async fn replay(&self, id: &str) -> Result<ApiResponse, ApiError> {
        let kept = self.store.kept_event(id).await?;
        let event = StripeEvent::parse(&kept.body)
            .map_err(|e| ApiError::act_of_god(&format!("kept event {id} cannot be read: {e}")))?;
        let receiver = Receiver {
            events: EventContext {
                store: self.store.as_ref(),
                mailer: self.mailer.as_ref(),
                catalog: &self.catalog,
                clock: self.clock.as_ref(),
            },
            purchases: &self.purchases,
        };
        let handled = receive(receiver, &event, &kept.body).await?;
        let now = self.store.kept_event(id).await?;
        tracing::info!(event = %id, outcome = %now.outcome, ?handled, "kept event replayed");
        Ok(ApiResponse::json(
            json!({"events": [{"id": now.id, "outcome": now.outcome}]}),
        ))
    }
}

/// A kept event as the list shows it (its body is not part of the list).
fn event_view(event: &KeptEvent) -> Value {
    json!({
        "id": event.id,
        "type": event.kind,
        "created": event.created,
        "outcome": event.outcome,
        "subscription_id": event.subscription_id,
    })
}

/// Replay and reconcile act on what is stored: a body would be a misunderstanding.
fn refuse_a_body(request: &ApiRequest) -> Result<(), ApiError> {
    let body = request.body();
    let empty = body.iter().all(u8::is_ascii_whitespace)
        || serde_json::from_slice::<Value>(body).is_ok_and(|value| value == json!({}));
    if empty {
        Ok(())
    } else {
        Err(ApiError::one(FieldError::general(
            Slug::InvalidValue,
            "this action takes no body (or {})",
        )))
    }
}
