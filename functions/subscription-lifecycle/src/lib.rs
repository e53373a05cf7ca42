//! A subscription's lifecycle endpoints (API.md, "Subscription lifecycle endpoints"), for the
//! owner or an administrator:
//!
//! - `POST /subscriptions/{id}/setup-intent` → 201 `{"setup_intents": [{"id", "client_secret"}]}`
//! - `POST /subscriptions/{id}/portal-session` `{"return_url"}` → 201 `{"portal_sessions": [{"url"}]}`
//! - `GET /subscriptions/{id}/invoices?limit&starting_after` → `{"invoices": [...], "has_more"}`
//! - `POST /subscriptions/{id}/preview` `{"plan"?, "licenses"?}` → `{"previews": [...]}`
//!
//! They read the subscription and ask Stripe about its customer; none writes a subscription
//! (`billing::lifecycle` holds the use cases). The only writes are the answers kept for
//! clients' `Idempotency-Key`s.

use std::sync::Arc;

use billing::access::{Operation, declared_documents, declared_store};
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment, billing_table, optional, plan_catalog};
use billing::lifecycle::{self, InvoicesQuery, LifecycleContext, PortalRequest};
use billing::store::Store;
use billing::stripe::Billing;
use billing_adapters::{DynamoStore, StripeBilling, SystemClock};
use billing_http::idempotent::{Idempotency, serve_idempotent};
use billing_http::{ApiError, ApiResponse, Cors};
use lambda_http::{Body, Request, Response};
use serde_json::json;

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "subscription-lifecycle";

/// What this function does with the store; its IAM policy grants exactly these.
pub const OPERATIONS: &[Operation] = &[
    Operation::GetSubscription,
    Operation::GetDocument,
    Operation::PutDocument,
    Operation::ReadSecrets,
];

/// The routes this function answers.
pub mod routes {
    /// A SetupIntent for the browser.
    pub const SETUP_INTENT: &str = "POST /subscriptions/{id}/setup-intent";
    /// A customer-portal session.
    pub const PORTAL_SESSION: &str = "POST /subscriptions/{id}/portal-session";
    /// The customer's invoices.
    pub const INVOICES: &str = "GET /subscriptions/{id}/invoices";
    /// The preview of a change.
    pub const PREVIEW: &str = "POST /subscriptions/{id}/preview";
}

/// The lifecycle endpoints and what they need.
pub struct SubscriptionLifecycle {
    /// Where subscriptions live.
    pub store: Arc<dyn Store>,
    /// Stripe.
    pub billing: Arc<dyn Billing>,
    /// The plans and their prices.
    pub catalog: billing::subscription::PlanCatalog,
    /// Which browser origins may call.
    pub cors: Cors,
    /// The origins a portal session may return to (`lifecycle::return_origins`).
    pub return_origins: Vec<String>,
    /// What time it is.
    pub clock: SharedClock,
    /// Answers kept for clients' `Idempotency-Key`s.
    pub idempotency: Idempotency,
}

impl SubscriptionLifecycle {
    /// Reads `BILLING_TABLE`, `STRIPE_SECRET_KEY` (and `STRIPE_API_BASE`), the plan prices,
    /// `CORS_ALLOWED_ORIGINS` and `PUBLIC_BASE_URL`; builds the clients once.
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let table = billing_table(env)?;
        let billing = StripeBilling::from_env(env)?;
        let catalog = plan_catalog(env)?;
        let dynamo = Arc::new(DynamoStore::connect(table).await);
        let clock: SharedClock = Arc::new(SystemClock);
        Ok(SubscriptionLifecycle {
            store: dynamo.clone(),
            idempotency: Idempotency {
                documents: dynamo,
                clock: clock.clone(),
            },
            billing: Arc::new(billing),
            catalog,
            cors: Cors::from_env(env),
            return_origins: lifecycle::return_origins(
                &optional(env, "CORS_ALLOWED_ORIGINS").unwrap_or_default(),
                optional(env, "PUBLIC_BASE_URL").as_deref(),
            ),
            clock,
        }
        .declared())
    }

    /// The same function, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        SubscriptionLifecycle {
            store: declared_store(self.store, FUNCTION, OPERATIONS),
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
            let id = request.path_uuid("id")?;
            let authority = principal.authority_over(id)?;
            let context = LifecycleContext {
                store: self.store.as_ref(),
                billing: self.billing.as_ref(),
                catalog: &self.catalog,
            };
            // Each of these spends the Stripe account's shared rate limit: limited per caller.
            let limited = match request.route_key() {
                Some(routes::SETUP_INTENT) => Some("setup_intent"),
                Some(routes::PORTAL_SESSION) => Some("portal_session"),
                Some(routes::PREVIEW) => Some("preview"),
                _ => None,
            };
            if let Some(operation) = limited {
                billing::limits::take(
                    self.idempotency.documents.as_ref(),
                    operation,
                    &principal.user_id.to_string(),
                    billing::limits::STRIPE_CALLS_PER_CALLER,
                    self.clock.now(),
                )
                .await?;
            }
            match request.route_key() {
                Some(routes::SETUP_INTENT) => {
                    let intent = lifecycle::setup_intent(context, id, &request.request_id).await?;
                    Ok(ApiResponse::created_at(
                        format!("/subscriptions/{id}/setup-intent"),
                        json!({"setup_intents": [{"id": intent.id, "client_secret": intent.client_secret}]}),
                    ))
                }
                Some(routes::PORTAL_SESSION) => {
                    let body = request.json_body_with(|body| PortalRequest::read(body, &self.return_origins))?;
                    let url = lifecycle::portal_session(context, id, &body.return_url, &request.request_id).await?;
                    Ok(ApiResponse::created_at(
                        format!("/subscriptions/{id}/portal-session"),
                        json!({"portal_sessions": [{"url": url}]}),
                    ))
                }
                Some(routes::INVOICES) => {
                    let query = InvoicesQuery::read(
                        request.query("limit").as_deref(),
                        request.query("starting_after").as_deref(),
                    )?;
                    let page = lifecycle::invoices(context, id, query).await?;
                    Ok(ApiResponse::json(
                        json!({"invoices": page.invoices, "has_more": page.has_more}),
                    ))
                }
                Some(routes::PREVIEW) => {
                    let now = self.clock.now();
                    let change =
                        request.json_body_with(|body| lifecycle::read_preview(body, authority, &self.catalog, now))?;
                    let preview = lifecycle::preview(context, id, &change).await?;
                    Ok(ApiResponse::json(json!({"previews": [preview]})))
                }
                other => Err(ApiError::act_of_god(&format!(
                    "{FUNCTION} has no route {}",
                    other.unwrap_or("(none)")
                ))),
            }
        })
        .await
    }
}
