//! `GET /subscriptions/{id}`: a subscription, to its owner (scope `subscriptions`) or to an
//! administrator (`subscriptions_admin`). Whether the caller may see it is decided before it is
//! looked up, so a refusal says nothing about whether it exists.

use std::sync::Arc;

use billing::access::{Operation, declared_store};
use billing::config::{ConfigError, Environment, billing_table};
use billing::store::Store;
use billing_adapters::DynamoStore;
use billing_http::{ApiResponse, Cors, serve};
use lambda_http::{Body, Request, Response};

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "get-subscription";

/// What this function does with the store; its IAM policy grants exactly these.
pub const OPERATIONS: &[Operation] = &[Operation::GetSubscription];

pub struct GetSubscription {
    pub store: Arc<dyn Store>,
    pub cors: Cors,
}

impl GetSubscription {
    /// Reads `BILLING_TABLE` and `CORS_ALLOWED_ORIGINS`; builds the DynamoDB client once.
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let table = billing_table(env)?;
        Ok(GetSubscription {
            store: Arc::new(DynamoStore::connect(table).await),
            cors: Cors::from_env(env),
        }
        .declared())
    }

    /// The same function, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        GetSubscription {
            store: declared_store(self.store, FUNCTION, OPERATIONS),
            ..self
        }
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        serve(request, &self.cors, |request| async move {
            let principal = request.principal()?;
            let id = request.path_uuid("id")?;
            principal.authority_over(id)?;
            let subscription = self.store.get_subscription(id).await?;
            Ok(ApiResponse::ok(subscription))
        })
        .await
    }
}
