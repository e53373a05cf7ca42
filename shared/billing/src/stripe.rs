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
    /// The last invoice the subscription made (`in_...`), when it has made one.
    pub latest_invoice: Option<String>,
    /// Its discount in whole percent when Stripe's answer says it (its coupons expanded):
    /// `Some(None)` for none; `None` when the answer names discounts only by id.
    pub discount_percent: Option<Option<u32>>,
}

/// What a new Stripe subscription is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionTerms<'a> {
    /// The customer's id.
    pub customer: &'a str,
    /// The price of its one item.
    pub price: &'a str,
    /// Trialing until then, when given.
    pub trial_end: Option<DateTime<Utc>>,
    /// The item's quantity (licenses), when given; else one.
    pub quantity: Option<u32>,
    /// A discount from the first invoice on, when given and not zero.
    pub discount_percent: Option<u32>,
    /// The subscriber, kept in the subscription's metadata.
    pub user_id: Uuid,
}

/// A SetupIntent: how a browser collects a card with Stripe.js (3-D Secure included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupIntent {
    /// `seti_...`.
    pub id: String,
    /// What Stripe.js confirms the intent with; for the customer's browser only.
    pub client_secret: String,
}

/// A Stripe Checkout Session in `mode=setup`: Stripe's page where a customer saves a card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutSession {
    /// `cs_...`.
    pub id: String,
    /// Stripe's page; the browser is sent there.
    pub url: String,
}

/// What a setup Checkout Session is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupCheckout<'a> {
    /// The customer the card is saved for.
    pub customer: &'a str,
    /// Where Stripe sends the browser once the card is saved.
    pub success_url: &'a str,
    /// Where Stripe sends the browser when the customer gives up.
    pub cancel_url: &'a str,
    /// What the session completes (`pending_upgrade` in its metadata), read back from
    /// `checkout.session.completed`.
    pub pending_upgrade: &'a str,
}

/// A card made a customer's default for invoices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedCard {
    /// `pm_...`.
    pub payment_method: String,
    /// Its last four digits, for pages.
    pub last4: Option<String>,
}

/// One of a customer's invoices, as the invoices endpoint lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InvoiceSummary {
    /// `in_...`.
    pub id: String,
    /// The number printed on it, once finalized.
    pub number: Option<String>,
    /// `draft`, `open`, `paid`, `uncollectible`, `void`.
    pub status: Option<String>,
    /// In the currency's smallest unit.
    pub amount_due: i64,
    /// In the currency's smallest unit.
    pub amount_paid: i64,
    /// ISO code, lowercase.
    pub currency: String,
    /// When it was made.
    pub created: Option<DateTime<Utc>>,
    /// The period it bills.
    pub period_start: Option<DateTime<Utc>>,
    /// The period it bills.
    pub period_end: Option<DateTime<Utc>>,
    /// Stripe's page where the customer can see and pay it.
    pub hosted_invoice_url: Option<String>,
    /// The PDF.
    pub invoice_pdf: Option<String>,
}

/// A page of invoices, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoicePage {
    /// The invoices.
    pub invoices: Vec<InvoiceSummary>,
    /// Whether older invoices follow.
    pub has_more: bool,
}

/// Where an invoice is in Stripe's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Being made: lines can be added.
    Draft,
    /// Finalized, not paid.
    Open,
    /// Paid.
    Paid,
    /// Nothing is owed on it.
    Void,
    /// Given up on.
    Uncollectible,
}

/// One of our invoices as Stripe holds it: enough to resume making it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldInvoice {
    /// `in_...`.
    pub id: String,
    /// Where it is.
    pub status: InvoiceStatus,
    /// What it charges, in cents.
    pub amount_due: i64,
    /// The `billing_line` metadata of the items on it: the keys of the lines already added.
    pub lines: Vec<String>,
}

/// One line of an invoice preview.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PreviewLine {
    /// What it is for ("Remaining time on 3 × Business after ...").
    pub description: Option<String>,
    /// In the currency's smallest unit; negative for a credit.
    pub amount: i64,
    /// Whether it prorates a change.
    pub proration: bool,
}

/// What a change would invoice (Stripe's invoice preview).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InvoicePreview {
    /// What the invoice would charge.
    pub amount_due: i64,
    /// ISO code, lowercase.
    pub currency: String,
    /// Its lines.
    pub lines: Vec<PreviewLine>,
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

/// What a recurring price costs for a quantity: the amount per period, in the currency's
/// smallest unit, and the period's length in days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriceTerms {
    /// Unit amount times quantity.
    pub amount: i64,
    /// A day 1, a week 7, a month 30, a year 365, times the interval count.
    pub period_days: i64,
}

/// How a change of price or quantity is billed (API.md's PATCH table).
///
/// A change that invoices at once is sent with `payment_behavior=pending_if_incomplete`: a
/// declined card leaves the subscription as it was (Stripe keeps the change pending on the open
/// invoice, which the adapter voids), answered [`BillingError::CardDeclined`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proration {
    /// A move to another billing interval (monthly to annual, or back): Stripe starts a new
    /// period now (the billing cycle anchor resets) and invoices it at once, the old period's
    /// unused time credited.
    NewPeriodNow,
    /// A move to a higher price: prorated and invoiced at once (`always_invoice`).
    InvoiceNow,
    /// A move to a lower (or equal) price: prorated as a credit on the next invoice
    /// (`create_prorations`).
    NextInvoice,
    /// During a trial: nothing is charged and the trial continues (`none`).
    Nothing,
}

impl Proration {
    /// How moving from `current` to `next` is billed.
    pub fn for_change(current: PriceTerms, next: PriceTerms, trialing: bool) -> Self {
        if trialing {
            return Proration::Nothing;
        }
        if current.period_days != next.period_days {
            return Proration::NewPeriodNow;
        }
        let next_per_day = i128::from(next.amount) * i128::from(current.period_days.max(1));
        let current_per_day = i128::from(current.amount) * i128::from(next.period_days.max(1));
        if next_per_day > current_per_day {
            Proration::InvoiceNow
        } else {
            Proration::NextInvoice
        }
    }
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
    /// The subscription as Stripe holds it now (a read: safe to repeat).
    async fn retrieve_subscription(&self, subscription: &str) -> Result<StripeSubscription, BillingError>;

    /// A customer for the user, with `user_id` in its metadata.
    async fn create_customer(&self, user_id: Uuid, email: &str, key: &str) -> Result<Customer, BillingError>;

    /// A subscription on `terms`, its discount applied from its first invoice on.
    async fn create_subscription(
        &self,
        terms: SubscriptionTerms<'_>,
        key: &str,
    ) -> Result<StripeSubscription, BillingError>;

    /// Moves the subscription's (single) item to `price`, prorated as [`Proration::for_change`]
    /// says.
    async fn change_price(
        &self,
        subscription: &str,
        price: &str,
        key: &str,
    ) -> Result<StripeSubscription, BillingError>;

    /// Moves the item to `price` and/or `quantity` in one change (one invoice when it charges):
    /// a plan and a license count sent together are charged, or declined, together.
    async fn change_price_and_quantity(
        &self,
        subscription: &str,
        price: Option<&str>,
        quantity: Option<u32>,
        key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let mut answered = None;
        if let Some(price) = price {
            answered = Some(self.change_price(subscription, price, &format!("{key}:price")).await?);
        }
        if let Some(quantity) = quantity {
            answered = Some(
                self.set_quantity(subscription, quantity, &format!("{key}:quantity"))
                    .await?,
            );
        }
        match answered {
            Some(answered) => Ok(answered),
            None => self.retrieve_subscription(subscription).await,
        }
    }

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

    /// The subscription item's quantity: the licenses billed, prorated like a price change.
    async fn set_quantity(
        &self,
        subscription: &str,
        quantity: u32,
        key: &str,
    ) -> Result<StripeSubscription, BillingError>;

    /// The address Stripe sends the customer's invoices and receipts to.
    async fn set_email(&self, customer: &str, email: &str, key: &str) -> Result<(), BillingError>;

    /// A discount of `percent` on every future invoice of the subscription (a coupon with
    /// `percent_off`, `duration=forever`); 0 removes the discount.
    async fn set_discount(
        &self,
        subscription: &str,
        percent: u32,
        key: &str,
    ) -> Result<StripeSubscription, BillingError>;

    /// A SetupIntent for the customer's browser to collect a card for later, off-session use.
    async fn create_setup_intent(&self, customer: &str, key: &str) -> Result<SetupIntent, BillingError>;

    /// A customer-portal session; the portal links back to `return_url`. Returns its URL.
    async fn create_portal_session(&self, customer: &str, return_url: &str, key: &str) -> Result<String, BillingError>;

    /// The customer's invoices, newest first, `limit` at a time, after invoice
    /// `starting_after` when given.
    async fn list_invoices(
        &self,
        customer: &str,
        limit: u8,
        starting_after: Option<&str>,
    ) -> Result<InvoicePage, BillingError>;

    /// The customer's invoice whose metadata names `reference` (`billing_reference`), found by
    /// listing the customer's invoices: what a re-run uses instead of idempotency keys, which
    /// Stripe may forget after 24 hours. `None` when there is none.
    async fn find_invoice(&self, customer: &str, reference: &str) -> Result<Option<HeldInvoice>, BillingError>;

    /// A draft invoice for the customer naming `reference` in its metadata, with none of the
    /// customer's pending items on it (`pending_invoice_items_behavior=exclude`): its lines are
    /// only the ones [`Billing::add_invoice_line`] attaches. It does not auto-advance, so Stripe
    /// never finalizes it on its own before every line is on it.
    async fn create_invoice(
        &self,
        customer: &str,
        reference: &str,
        description: &str,
        key: &str,
    ) -> Result<HeldInvoice, BillingError>;

    /// The invoice as Stripe holds it now, with the references of the items on it (a read).
    async fn retrieve_invoice(&self, invoice: &str) -> Result<HeldInvoice, BillingError>;

    /// Adds `item` to the draft `invoice` (never to the customer's pending items), its
    /// idempotency key in the item's metadata (`billing_line`) so a re-run can see it is there.
    async fn add_invoice_line(
        &self,
        customer: &str,
        invoice: &str,
        item: &crate::plans::InvoiceItem,
        key: &str,
    ) -> Result<(), BillingError>;

    /// Finalizes a draft invoice: it gets its number and can be paid. `auto_advance` lets
    /// Stripe collect it on its own from then on (renewals: its retries apply); a purchase pays
    /// it itself and leaves it off.
    async fn finalize_invoice(&self, invoice: &str, auto_advance: bool, key: &str)
    -> Result<HeldInvoice, BillingError>;

    /// Pays an open invoice with the customer's default card now, off session. A declined
    /// card answers [`BillingError::CardDeclined`] and leaves the invoice open.
    async fn pay_invoice(&self, invoice: &str, key: &str) -> Result<HeldInvoice, BillingError>;

    /// Voids an open invoice: nothing is owed on it any more.
    async fn void_invoice(&self, invoice: &str, key: &str) -> Result<HeldInvoice, BillingError>;

    /// A customer for a self-hosted billing entity (its kind and UUID in the metadata), billed
    /// at `email`.
    async fn create_entity_customer(
        &self,
        entity: crate::plans::Entity,
        email: &str,
        key: &str,
    ) -> Result<Customer, BillingError>;

    /// A Checkout Session in `mode=setup` collecting a card for the customer.
    async fn create_setup_checkout(
        &self,
        checkout: SetupCheckout<'_>,
        key: &str,
    ) -> Result<CheckoutSession, BillingError>;

    /// Makes the card a completed setup Checkout Session saved (its SetupIntent's payment
    /// method) the customer's default for invoices.
    async fn save_checkout_card(
        &self,
        customer: &str,
        setup_intent: &str,
        key: &str,
    ) -> Result<SavedCard, BillingError>;

    /// What moving the subscription to `price` and/or `quantity` would invoice, prorated as
    /// the change itself would be ([`Proration::for_change`]). Changes nothing.
    async fn preview_change(
        &self,
        subscription: &str,
        price: Option<&str>,
        quantity: Option<u32>,
    ) -> Result<InvoicePreview, BillingError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONTHLY_BASIC: PriceTerms = PriceTerms {
        amount: 800,
        period_days: 30,
    };
    const MONTHLY_BUSINESS: PriceTerms = PriceTerms {
        amount: 2_000,
        period_days: 30,
    };
    const ANNUAL_BASIC: PriceTerms = PriceTerms {
        amount: 8_000,
        period_days: 365,
    };

    #[test]
    fn a_higher_price_is_invoiced_now_a_lower_one_credited_a_new_interval_starts_now_and_a_trial_charged_nothing() {
        assert_eq!(
            Proration::for_change(MONTHLY_BASIC, MONTHLY_BUSINESS, false),
            Proration::InvoiceNow
        );
        assert_eq!(
            Proration::for_change(MONTHLY_BUSINESS, MONTHLY_BASIC, false),
            Proration::NextInvoice
        );
        assert_eq!(
            Proration::for_change(MONTHLY_BASIC, MONTHLY_BUSINESS, true),
            Proration::Nothing
        );
        // another interval starts a new period now, whichever costs more per day
        assert_eq!(
            Proration::for_change(MONTHLY_BASIC, ANNUAL_BASIC, false),
            Proration::NewPeriodNow
        );
        assert_eq!(
            Proration::for_change(ANNUAL_BASIC, MONTHLY_BUSINESS, false),
            Proration::NewPeriodNow
        );
        assert_eq!(
            Proration::for_change(ANNUAL_BASIC, MONTHLY_BASIC, true),
            Proration::Nothing
        );
        // three licenses cost more than one
        let three = PriceTerms {
            amount: 3 * 800,
            period_days: 30,
        };
        assert_eq!(
            Proration::for_change(MONTHLY_BASIC, three, false),
            Proration::InvoiceNow
        );
    }
}
