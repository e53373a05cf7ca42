//! `invoice-plans`: the hourly job (an EventBridge schedule) that resumes open invoicing runs,
//! invoices the self-hosted plans due from their license ledgers (`billing::plans::invoicing`),
//! and resumes purchases that stalled while charging (`billing::plans::purchase`). The time is the clock's,
//! unless the event names one (`{"at": "2026-12-01T00:00:00Z"}`), as the local server's
//! `POST /_local/invoice-plans` does. A failure of the store as a whole fails the invocation
//! (the schedule runs it again tomorrow, and a re-run is safe); a failure of one entity is in
//! the report and retried on the next run.

use std::sync::Arc;

use billing::access::{Operation, declared_documents};
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment, billing_table, self_hosted_free_trial_days};
use billing::plans::Prices;
use billing::plans::invoicing::{InvoicingReport, invoice_plans};
use billing::plans::purchase::Purchases;
use billing::store::{DocumentStore, StoreError};
use billing::stripe::Billing;
use billing_adapters::{DynamoStore, StripeBilling, SystemClock};
use chrono::{DateTime, Utc};

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "invoice-plans";

/// What this function does with the store; its IAM policy grants exactly these.
pub const OPERATIONS: &[Operation] = &[
    Operation::GetDocument,
    Operation::PutDocument,
    Operation::ListDocuments,
    Operation::PutDocuments,
    Operation::ReadSecrets,
];

/// The job and what it needs.
pub struct InvoicePlans {
    /// Where the plans live.
    pub documents: Arc<dyn DocumentStore>,
    /// Stripe.
    pub billing: Arc<dyn Billing>,
    /// What time it is.
    pub clock: SharedClock,
    /// `SELF_HOSTED_FREE_TRIAL_DAYS`: what a stalled purchase resumed by the job decides with.
    pub trial_days: u32,
}

impl InvoicePlans {
    /// Reads `BILLING_TABLE` and `STRIPE_SECRET_KEY` (and `STRIPE_API_BASE`).
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let table = billing_table(env)?;
        let billing = StripeBilling::from_env(env)?;
        Ok(InvoicePlans {
            documents: Arc::new(DynamoStore::connect(table).await),
            billing: Arc::new(billing),
            clock: Arc::new(SystemClock),
            trial_days: self_hosted_free_trial_days(env)?,
        }
        .declared())
    }

    /// The same job, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        InvoicePlans {
            documents: declared_documents(self.documents, FUNCTION, OPERATIONS),
            ..self
        }
    }

    /// The time the event names (`at`, RFC 3339), else now.
    pub fn time_of(&self, event: &serde_json::Value) -> DateTime<Utc> {
        event["at"]
            .as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map_or_else(|| self.clock.now(), |at| at.with_timezone(&Utc))
    }

    /// Runs once.
    pub async fn handle(&self, event: &serde_json::Value) -> Result<InvoicingReport, StoreError> {
        let at = self.time_of(event);
        let mut report = invoice_plans(self.documents.as_ref(), self.billing.as_ref(), at).await?;
        let purchases = Purchases {
            documents: self.documents.clone(),
            stripe: self.billing.clone(),
            trial_days: self.trial_days,
            prices: Prices::default(),
        };
        report.resumed_purchases = purchases.resume_stalled_purchases(at).await?;
        tracing::info!(%at, plans = report.outcomes.len(), "invoicing run finished");
        Ok(report)
    }
}
