//! `invoice-plans`: the hourly scheduler of self-hosted invoicing (an EventBridge schedule). It
//! lists every entity with an open invoicing run or a plan due and enqueues one message per
//! entity on the invoicing queue, whose consumer (`invoice-entity`) runs the resumable
//! two-phase protocol of `billing::plans::invoicing` for it; then it resumes purchases that
//! stalled while charging (`billing::plans::purchase`). Without a queue (the local server
//! without AWS, tests of the protocol) it invoices the entities itself, one after the other.
//! The time is the clock's, unless the event names one (`{"at": "2026-12-01T00:00:00Z"}`), as
//! the local server's `POST /_local/invoice-plans` does. A failure of the store or the queue
//! fails the invocation (the schedule retries it, and the next hour runs again; a re-run is
//! safe).

use std::sync::Arc;

use billing::access::{Operation, declared_documents, declared_queue};
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment, billing_table, self_hosted_free_trial_days};
use billing::plans::Prices;
use billing::plans::invoicing::{InvoicingQueue, InvoicingReport, ScheduleError, invoice_plans, schedule_invoicing};
use billing::plans::purchase::Purchases;
use billing::store::DocumentStore;
use billing::stripe::Billing;
use billing_adapters::{DynamoStore, SqsInvoicingQueue, StripeBilling, SystemClock};
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
    Operation::EnqueueInvoicing,
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
    /// Where the entities to invoice go; `None` invoices them in this process.
    pub queue: Option<Arc<dyn InvoicingQueue>>,
}

impl InvoicePlans {
    /// Reads `BILLING_TABLE`, `INVOICING_QUEUE_URL` and `STRIPE_SECRET_KEY` (and
    /// `STRIPE_API_BASE`).
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let table = billing_table(env)?;
        let billing = StripeBilling::from_env(env)?;
        let queue = SqsInvoicingQueue::from_env(env).await?;
        Ok(InvoicePlans {
            documents: Arc::new(DynamoStore::connect(table).await),
            billing: Arc::new(billing),
            clock: Arc::new(SystemClock),
            trial_days: self_hosted_free_trial_days(env)?,
            queue: Some(Arc::new(queue)),
        }
        .declared())
    }

    /// The same job, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        InvoicePlans {
            documents: declared_documents(self.documents, FUNCTION, OPERATIONS),
            queue: self.queue.map(|queue| declared_queue(queue, FUNCTION, OPERATIONS)),
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

    /// Runs once. Stalled purchases are resumed even when the invoicing could not be
    /// scheduled (their customers have paid; their plans must not wait for the queue).
    pub async fn handle(&self, event: &serde_json::Value) -> Result<InvoicingReport, ScheduleError> {
        let at = self.time_of(event);
        let invoiced = match &self.queue {
            Some(queue) => schedule_invoicing(self.documents.as_ref(), queue.as_ref(), at)
                .await
                .map(|enqueued| InvoicingReport {
                    enqueued,
                    ..InvoicingReport::default()
                }),
            None => invoice_plans(self.documents.as_ref(), self.billing.as_ref(), at)
                .await
                .map_err(ScheduleError::from),
        };
        let purchases = Purchases {
            documents: self.documents.clone(),
            stripe: self.billing.clone(),
            trial_days: self.trial_days,
            prices: Prices::default(),
        };
        let resumed = purchases.resume_stalled_purchases(at).await;
        let mut report = invoiced?;
        report.resumed_purchases = resumed?;
        billing::metrics::invoicing_run();
        tracing::info!(%at, plans = report.outcomes.len(), "invoicing run finished");
        Ok(report)
    }
}
