//! `PATCH /subscriptions/{id}`: the owner or an administrator changes a subscription.
//!
//! The change is validated as a whole first (every error at once). Then, against the stored
//! version: what Stripe must know (plan → the item's price, payment method → attached and made
//! the customer's default, cancel at period end) is applied to Stripe, and only then is the new
//! state written, conditionally on the version that was read. With `If-Match`, a version
//! mismatch is 412; without it, a concurrent write makes this request read again and re-apply
//! its change, so neither writer loses the other's fields.

use std::sync::Arc;

use billing::auth::Principal;
use billing::config::{ConfigError, Environment, billing_table, plan_catalog};
use billing::errors::{FieldError, Slug};
use billing::http::{ApiError, ApiResponse, Cors, serve};
use billing::store::{AuditEntry, DynamoStore, Store, StoreError};
use billing::stripe::{Billing, StripeBilling, idempotency_key};
use billing::subscription::{Authority, PlanCatalog, Subscription, SubscriptionChange};
use chrono::Utc;
use lambda_http::{Body, Request, Response};

/// How many times a write that lost a race is re-applied before giving up with 409.
const WRITE_ATTEMPTS: u32 = 5;

pub struct PatchSubscription {
    pub store: Arc<dyn Store>,
    pub billing: Arc<dyn Billing>,
    pub catalog: PlanCatalog,
    pub cors: Cors,
}

impl PatchSubscription {
    /// Reads `BILLING_TABLE`, `STRIPE_SECRET_KEY` (and `STRIPE_API_BASE`), the plan prices and
    /// `CORS_ALLOWED_ORIGINS`; builds the clients once.
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let table = billing_table(env)?;
        let billing = StripeBilling::from_env(env)?;
        let catalog = plan_catalog(env)?;
        Ok(PatchSubscription {
            store: Arc::new(DynamoStore::connect(table).await),
            billing: Arc::new(billing),
            catalog,
            cors: Cors::from_env(env),
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        serve(request, &self.cors, |request| async move {
            let principal = request.principal()?;
            let id = request.path_uuid("id")?;
            let authority = principal.authority_over(id)?;
            if request.body().is_empty() {
                return Err(ApiError::one(FieldError::general(
                    Slug::Missing,
                    "a JSON body is required",
                )));
            }
            let change = SubscriptionChange::from_json(request.body())?;
            change.validate_patch(authority, &self.catalog, Utc::now())?;
            let expected = request.if_match()?;
            let subscription = self
                .apply(&principal, authority, &change, expected, &request.request_id, id)
                .await?;
            Ok(ApiResponse::ok(subscription))
        })
        .await
    }

    async fn apply(
        &self,
        principal: &Principal,
        authority: Authority,
        change: &SubscriptionChange,
        expected: Option<u64>,
        request_id: &str,
        id: uuid::Uuid,
    ) -> Result<Subscription, ApiError> {
        let actor = match authority {
            Authority::Admin => format!("admin:{}", principal.user_id),
            Authority::Owner => format!("user:{}", principal.user_id),
        };
        for attempt in 1..=WRITE_ATTEMPTS {
            let current = self.store.get_subscription(id).await?;
            if let Some(version) = expected
                && version != current.version
            {
                return Err(StoreError::VersionConflict.into());
            }
            // The attempt is part of the key: a re-applied change after a lost race must reach
            // Stripe again, since the race may have changed Stripe in between.
            let origin = format!("{request_id}:{attempt}");
            self.apply_to_stripe(&current, change, request_id, &origin).await?;
            let Some(next) = change.apply(&current, Utc::now()) else {
                return Ok(current);
            };
            let audit = AuditEntry::of(&next, actor.as_str(), "patch", change.audit_summary());
            match self.store.update_subscription(&next, current.version, &audit).await {
                Ok(()) => {
                    tracing::info!(subscription = %id, version = next.version, "subscription changed");
                    return Ok(next);
                }
                Err(StoreError::VersionConflict) if expected.is_none() => {
                    tracing::info!(subscription = %id, attempt, "lost a race with another write; applying again");
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::one(FieldError::general(
            Slug::Conflict,
            "the subscription is changing too often to apply this change; try again",
        )))
    }

    /// Tells Stripe what it must know before the change is stored. Attaching a payment method
    /// is the same act however often it is repeated, so its key is the request's; price and flag
    /// changes carry the write attempt too (`origin`).
    async fn apply_to_stripe(
        &self,
        current: &Subscription,
        change: &SubscriptionChange,
        request_id: &str,
        origin: &str,
    ) -> Result<(), ApiError> {
        let plan_changes = change.plan.as_ref().filter(|plan| **plan != current.plan);
        let flag_changes = change
            .cancel_at_period_end
            .filter(|flag| *flag != current.cancel_at_period_end);
        if plan_changes.is_none() && flag_changes.is_none() && change.stripe_source.is_none() {
            return Ok(());
        }
        let (Some(customer), Some(stripe_subscription)) = (&current.stripe_customer, &current.stripe_subscription)
        else {
            return Err(ApiError::one(FieldError::general(
                Slug::Conflict,
                "this subscription has no Stripe subscription yet; it cannot change plan or payment method",
            )));
        };
        let target = current.id.to_string();
        if let Some(method) = &change.stripe_source {
            self.billing
                .attach_default_payment_method(
                    customer,
                    method,
                    &idempotency_key("attach_payment_method", &target, request_id),
                )
                .await?;
        }
        if let Some(plan) = plan_changes {
            let price = &self
                .catalog
                .get(plan)
                .ok_or_else(|| ApiError::act_of_god(&"validated plan missing"))?
                .stripe_price;
            self.billing
                .change_price(
                    stripe_subscription,
                    price,
                    &idempotency_key("change_price", &target, origin),
                )
                .await?;
        }
        if let Some(flag) = flag_changes {
            self.billing
                .set_cancel_at_period_end(
                    stripe_subscription,
                    flag,
                    &idempotency_key("cancel_at_period_end", &target, origin),
                )
                .await?;
        }
        Ok(())
    }
}
