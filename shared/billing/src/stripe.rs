//! The `Billing` port: what the service asks of Stripe. The async-stripe adapter lives in
//! `billing-adapters`.
//!
//! Every call carries a deterministic idempotency key (operation + target + the request or
//! event it comes from), so a retry, ours or the client's, never makes a second customer or a
//! second subscription. Calls have a per-attempt timeout and are retried with backoff on
//! network errors, timeouts, 5xx, 429 and a concurrent request holding the same key.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::subscription::Status;

/// A Stripe customer as far as the service cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    /// Stripe's id.
    pub id: String,
    /// When Stripe created it.
    pub created: DateTime<Utc>,
}

/// A Stripe subscription as far as the service cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripeSubscription {
    /// Stripe's id (`sub_...`).
    pub id: String,
    /// The customer's id.
    pub customer: String,
    /// The status, in the service's terms.
    pub status: Status,
    /// The subscription item that carries the plan's price, and that price.
    pub item: String,
    /// The item's price.
    pub price: String,
    /// When the trial started, if there is one.
    pub trial_start: Option<DateTime<Utc>>,
    /// When the trial ends, if there is one.
    pub trial_end: Option<DateTime<Utc>>,
    /// When the current period ends.
    pub current_period_end: Option<DateTime<Utc>>,
    /// Whether it ends at the period's end.
    pub cancel_at_period_end: bool,
    /// The item's quantity (licenses), when Stripe says.
    pub quantity: Option<u64>,
}

/// Why Stripe did not do what was asked. Nothing changed in Stripe in any of these cases,
/// except where a retry with the same key would return the same answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    /// Stripe could not be reached or failed, after retries. Safe to retry later.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// The card was declined when it was attached.
    #[error("the card was declined: {0}")]
    CardDeclined(String),
    /// The payment method id names nothing Stripe knows (or one attached elsewhere).
    #[error("the payment method was refused: {0}")]
    PaymentMethodRefused(String),
    /// The same idempotency key was used with other parameters: another request for the same
    /// target is (or was) doing something different.
    #[error("a conflicting request for the same object was made: {0}")]
    Conflict(String),
    /// Stripe refused the request as malformed: a defect on our side.
    #[error("Stripe refused the request: {0}")]
    Rejected(String),
}

/// The idempotency key of one Stripe call: `billing:<operation>:<target>:<origin>`.
pub fn idempotency_key(operation: &str, target: &str, origin: &str) -> String {
    let key = format!("billing:{operation}:{target}:{origin}");
    // Stripe allows 255 characters; the parts are ids, so this only trims pathological input.
    key.chars().take(255).collect()
}

/// What the service asks of Stripe.
#[async_trait]
pub trait Billing: Send + Sync {
    /// A customer for the user, with `user_id` in its metadata.
    async fn create_customer(&self, user_id: Uuid, email: &str, key: &str) -> Result<Customer, BillingError>;

    /// A subscription to `price` for `customer`, trialing until `trial_end` when given, of
    /// `quantity` licenses when given (else one).
    async fn create_subscription(
        &self,
        customer: &str,
        price: &str,
        trial_end: Option<DateTime<Utc>>,
        quantity: Option<u32>,
        user_id: Uuid,
        key: &str,
    ) -> Result<StripeSubscription, BillingError>;

    /// Moves the subscription's (single) item to `price`. No proration: a plan change bills
    /// from the next period.
    async fn change_price(
        &self,
        subscription: &str,
        price: &str,
        key: &str,
    ) -> Result<StripeSubscription, BillingError>;

    /// Attaches the payment method to the customer and makes it the customer's default for
    /// invoices. Returns the id of the attached payment method (Stripe's test ids such as
    /// `pm_card_visa` become a new `pm_...`).
    async fn attach_default_payment_method(
        &self,
        customer: &str,
        payment_method: &str,
        key: &str,
    ) -> Result<String, BillingError>;

    /// Whether the subscription ends at the end of its period.
    async fn set_cancel_at_period_end(
        &self,
        subscription: &str,
        cancel: bool,
        key: &str,
    ) -> Result<StripeSubscription, BillingError>;

    /// Cancels the subscription now.
    async fn cancel(&self, subscription: &str, key: &str) -> Result<StripeSubscription, BillingError>;

    /// Moves the subscription's trial end (Stripe then bills from it, and its events carry it).
    async fn set_trial_end(
        &self,
        subscription: &str,
        trial_end: DateTime<Utc>,
        key: &str,
    ) -> Result<StripeSubscription, BillingError>;

    /// The subscription item's quantity: the licenses billed.
    async fn set_quantity(
        &self,
        subscription: &str,
        quantity: u32,
        key: &str,
    ) -> Result<StripeSubscription, BillingError>;

    /// The address Stripe sends the customer's invoices and receipts to.
    async fn set_email(&self, customer: &str, email: &str, key: &str) -> Result<(), BillingError>;
}
