//! `PATCH /subscriptions/{id}`: the owner or an administrator changes a subscription. The
//! request is read and validated here; `billing::change::change_subscription` does the rest
//! (Stripe first, then a conditional write, re-applied after a lost race unless `If-Match`).
//! `DELETE /subscriptions/{id}` cancels it now (`billing::change::cancel_subscription`); the
//! subscription stays, and a later PATCH with a `plan` subscribes again.

use std::sync::Arc;

use billing::access::{Operation, declared_documents, declared_store};
use billing::change::{ChangeContext, ChangeRequest, cancel_subscription, change_subscription};
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment, billing_table, plan_catalog};
use billing::store::Store;
use billing::stripe::Billing;
use billing::subscription::{Authority, PlanCatalog, ReadChange};
use billing_adapters::{DynamoStore, StripeBilling, SystemClock};
use billing_http::idempotent::{Idempotency, serve_idempotent};
use billing_http::{ApiResponse, Cors};
use lambda_http::{Body, Request, Response};

/// The route that cancels a subscription now.
pub const CANCEL_ROUTE: &str = "DELETE /subscriptions/{id}";

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "patch-subscription";

/// What this function does with the store; its IAM policy grants exactly these.
pub const OPERATIONS: &[Operation] = &[
    Operation::GetSubscription,
    Operation::UpdateSubscription,
    Operation::GetDocument,
    Operation::PutDocument,
    Operation::ReadSecrets,
];

/// The PATCH endpoint and what it needs.
pub struct PatchSubscription {
    /// Where subscriptions live.
    pub store: Arc<dyn Store>,
    /// Stripe.
    pub billing: Arc<dyn Billing>,
    /// The plans and their prices.
    pub catalog: PlanCatalog,
    /// Which browser origins may call.
    pub cors: Cors,
    /// What time it is.
    pub clock: SharedClock,
    /// Answers kept for clients' `Idempotency-Key`s.
    pub idempotency: Idempotency,
}

impl PatchSubscription {
    /// Reads `BILLING_TABLE`, `STRIPE_SECRET_KEY` (and `STRIPE_API_BASE`), the plan prices and
    /// `CORS_ALLOWED_ORIGINS`; builds the clients once.
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let table = billing_table(env)?;
        let billing = StripeBilling::from_env(env)?;
        let catalog = plan_catalog(env)?;
        let dynamo = Arc::new(DynamoStore::connect(table).await);
        let clock: SharedClock = Arc::new(SystemClock);
        Ok(PatchSubscription {
            store: dynamo.clone(),
            idempotency: Idempotency {
                documents: dynamo,
                clock: clock.clone(),
            },
            billing: Arc::new(billing),
            catalog,
            cors: Cors::from_env(env),
            clock,
        }
        .declared())
    }

    /// The same function, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        PatchSubscription {
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
            let actor = match authority {
                Authority::Admin => format!("admin:{}", principal.user_id),
                Authority::Owner => format!("user:{}", principal.user_id),
            };
            let context = ChangeContext {
                store: self.store.as_ref(),
                billing: self.billing.as_ref(),
                catalog: &self.catalog,
                clock: self.clock.as_ref(),
            };
            if request.route_key() == Some(CANCEL_ROUTE) {
                let canceled = cancel_subscription(context, id, &actor, &request.request_id).await?;
                return Ok(ApiResponse::ok(canceled));
            }
            let change =
                request
                    .json_body::<ReadChange>()?
                    .validate_patch(authority, &self.catalog, self.clock.now())?;
            let subscription = change_subscription(
                context,
                ChangeRequest {
                    id,
                    change: &change,
                    expected_version: request.if_match()?,
                    actor: &actor,
                    origin: &request.request_id,
                },
            )
            .await?;
            Ok(ApiResponse::ok(subscription))
        })
        .await
    }
}
