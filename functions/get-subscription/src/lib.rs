//! The reads of subscriptions:
//!
//! - `GET /subscriptions/{id}`: a subscription, to its owner (scope `subscriptions`) or to an
//!   administrator (`subscriptions_admin`);
//! - `GET /subscriptions/{id}/audit?limit&cursor`: who changed it, when, and each field before
//!   and after, oldest first (`billing::audit`), to the same callers;
//! - `GET /subscriptions?email&status&plan&limit&cursor`: the administrators' list
//!   (`billing::listing`), read from the table's `listings` index.
//!
//! Whether the caller may see a subscription is decided before it is looked up, so a refusal
//! says nothing about whether it exists.

use std::sync::Arc;

use billing::access::{Operation, declared_store};
use billing::audit::{AuditQuery, audit_page};
use billing::config::{ConfigError, Environment, billing_table};
use billing::listing::{ListParams, ListQuery, list};
use billing::store::Store;
use billing_adapters::DynamoStore;
use billing_http::{ApiError, ApiResponse, Cors, serve};
use lambda_http::{Body, Request, Response};

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "get-subscription";

/// What this function does with the store; its IAM policy grants exactly these.
pub const OPERATIONS: &[Operation] = &[
    Operation::GetSubscription,
    Operation::AuditTrail,
    Operation::ListSubscriptions,
];

/// The routes this function answers.
pub mod routes {
    /// One subscription.
    pub const GET: &str = "GET /subscriptions/{id}";
    /// Its audit trail.
    pub const AUDIT: &str = "GET /subscriptions/{id}/audit";
    /// The administrators' list.
    pub const LIST: &str = "GET /subscriptions";
}

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
            if request.route_key() == Some(routes::LIST) {
                principal.require_admin()?;
                let query = ListQuery::read(ListParams {
                    email: request.query("email").as_deref(),
                    status: request.query("status").as_deref(),
                    plan: request.query("plan").as_deref(),
                    limit: request.query("limit").as_deref(),
                    cursor: request.query("cursor").as_deref(),
                })?;
                return Ok(ApiResponse::json(list(self.store.as_ref(), &query).await?));
            }
            let id = request.path_uuid("id")?;
            principal.authority_over(id)?;
            match request.route_key() {
                Some(routes::AUDIT) => {
                    let query =
                        AuditQuery::read(request.query("limit").as_deref(), request.query("cursor").as_deref())?;
                    Ok(ApiResponse::json(audit_page(self.store.as_ref(), id, query).await?))
                }
                Some(routes::GET) | None => Ok(ApiResponse::ok(self.store.get_subscription(id).await?)),
                Some(other) => Err(ApiError::act_of_god(&format!("{FUNCTION} has no route {other}"))),
            }
        })
        .await
    }
}
