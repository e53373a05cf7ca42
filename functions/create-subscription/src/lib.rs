//! `POST /subscriptions`: an administrator creates a user's subscription: a Stripe customer,
//! a Stripe subscription on the plan's price with the plan's trial, then the stored record.
//! Retried or concurrent creates for one user make one of each (see `billing::provisioning`).

use std::sync::Arc;

use billing::access::{Operation, declared_documents, declared_store};
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment, billing_table, plan_catalog};
use billing::provisioning::{Provision, provision};
use billing::store::Store;
use billing::stripe::Billing;
use billing::subscription::{PlanCatalog, ReadChange};
use billing_adapters::DynamoStore;
use billing_adapters::StripeBilling;
use billing_http::idempotent::{Idempotency, serve_idempotent};
use billing_http::{ApiError, ApiResponse, Cors};
use lambda_http::{Body, Request, Response};

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "create-subscription";

/// What this function does with the store; its IAM policy grants exactly these.
pub const OPERATIONS: &[Operation] = &[
    Operation::GetSubscription,
    Operation::CreateSubscription,
    Operation::GetDocument,
    Operation::PutDocument,
    Operation::ReadSecrets,
];

pub struct CreateSubscription {
    pub store: Arc<dyn Store>,
    pub billing: Arc<dyn Billing>,
    pub catalog: PlanCatalog,
    pub cors: Cors,
    /// What time it is.
    pub clock: SharedClock,
    /// Answers kept for clients' `Idempotency-Key`s.
    pub idempotency: Idempotency,
}

impl CreateSubscription {
    /// Reads `BILLING_TABLE`, `STRIPE_SECRET_KEY` (and `STRIPE_API_BASE`), the plan prices and
    /// `CORS_ALLOWED_ORIGINS`; builds the clients once.
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let table = billing_table(env)?;
        let billing = StripeBilling::from_env(env)?;
        let catalog = plan_catalog(env)?;
        let dynamo = Arc::new(DynamoStore::connect(table).await);
        let clock: SharedClock = Arc::new(billing_adapters::SystemClock);
        Ok(CreateSubscription {
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
        CreateSubscription {
            store: declared_store(self.store, FUNCTION, OPERATIONS),
            idempotency: Idempotency {
                documents: declared_documents(self.idempotency.documents.clone(), FUNCTION, OPERATIONS),
                ..self.idempotency
            },
            ..self
        }
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        serve_idempotent(request, &self.cors, &self.idempotency, |request| async move {
            let principal = request.principal()?;
            principal.require_admin()?;
            let now = self.clock.now();
            let change = request.json_body::<ReadChange>()?.validate_create(&self.catalog, now)?;
            let plan_id = change.plan.as_deref().unwrap_or(PlanCatalog::PENDING);
            let plan = self
                .catalog
                .get(plan_id)
                .ok_or_else(|| ApiError::act_of_god(&"validated plan missing"))?;
            let actor = format!("admin:{}", principal.user_id);
            let subscription = provision(
                self.store.as_ref(),
                self.billing.as_ref(),
                Provision {
                    change: &change,
                    plan,
                    trial_start: None,
                    actor: &actor,
                    now,
                },
            )
            .await?;
            Ok(ApiResponse::created(subscription))
        })
        .await
    }
}
