//! The daily invoicing of self-hosted plans (API.md, "Invoicing"): every live plan whose next
//! invoice date has come is run through [`invoice_plan`](super::invoice_plan), its ledger rows
//! become Stripe invoice items under `ledger_entry:<row id>` keys, one invoice of them is made
//! and finalized (charged automatically), and the plan's new state is stored.
//!
//! Safe to re-run after a crash at any point: the items and the invoice carry idempotency keys
//! derived from the ledger and the due date, so a second run within Stripe's 24 hours gets the
//! same objects back, and the plan's state is stored last, on the version read.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::stored::{self, LiveEntry, PLANS_DUE};
use super::{Entity, InvoiceRun, purchase};
use crate::store::{DocumentStore, StoreError};
use crate::stripe::{Billing, BillingError};

/// What the run did with one entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EntityOutcome {
    /// Invoiced: the Stripe invoice (none when nothing was owed) and its item count.
    Invoiced {
        /// Whose plan.
        entity: Entity,
        /// The Stripe invoice.
        invoice: Option<String>,
        /// How many items it has.
        items: usize,
    },
    /// Due, but its server has not uploaded since the due date: tried again on the next run.
    Deferred {
        /// Whose plan.
        entity: Entity,
    },
    /// Refused or failed; tried again on the next run.
    Failed {
        /// Whose plan.
        entity: Entity,
        /// Why.
        reason: String,
    },
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InvoicingReport {
    /// One outcome per due plan.
    pub outcomes: Vec<EntityOutcome>,
    /// Due plans of the page being read left for the next run because the invocation's
    /// deadline was near (more may follow them); they stay due, so the next run picks them up.
    pub left_for_next_run: usize,
}

/// The time one entity's invoicing may take: no entity is started with less left.
pub const TIME_PER_ENTITY: std::time::Duration = std::time::Duration::from_secs(10);

/// Why one entity's invoicing failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("Stripe: {0}")]
    Billing(#[from] BillingError),
    #[error("the entity has no Stripe customer")]
    NoCustomer,
}

/// When the server whose uploads count for `entity` last uploaded (`None`: never, or a realm no
/// server lists).
async fn last_upload(
    documents: &dyn DocumentStore,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    match purchase::server_of(documents, entity, now).await? {
        Some(server) => purchase::last_upload_of(documents, server, now).await,
        None => Ok(None),
    }
}

/// How many due plans one read of the index hands out.
const PAGE: usize = 100;

/// Invoices every plan due at `at`, read from the due-date index a page at a time from a cursor
/// (only the plans due are read); one entity's failure does not stop the others. A plan due
/// several times over (the job did not run for a while) is invoiced at its oldest due date
/// first; its entry moves to the next date, later in the range, and is met again.
pub async fn invoice_plans(
    documents: &dyn DocumentStore,
    billing: &dyn Billing,
    at: DateTime<Utc>,
) -> Result<InvoicingReport, StoreError> {
    let mut report = InvoicingReport::default();
    let through = stored::due_through(at);
    let mut cursor: Option<String> = None;
    loop {
        let page = documents
            .list_documents_range(PLANS_DUE, cursor.as_deref(), &through, PAGE, at)
            .await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        let next_cursor = last.clone();
        for (index, (_, document)) in page.iter().enumerate() {
            if crate::deadline::remaining().is_some_and(|left| left < TIME_PER_ENTITY) {
                report.left_for_next_run = page.len() - index;
                tracing::warn!(
                    left = report.left_for_next_run,
                    "invoicing stopped before the deadline; more may be due"
                );
                return Ok(report);
            }
            let Ok(entry) = serde_json::from_value::<LiveEntry>(document.body.clone()) else {
                continue;
            };
            let outcome = match invoice_entity(documents, billing, entry.entity, at).await {
                Ok(outcome) => outcome,
                Err(failure) => {
                    tracing::warn!(entity = ?entry.entity, error = %failure, "plan not invoiced");
                    Some(EntityOutcome::Failed {
                        entity: entry.entity,
                        reason: failure.to_string(),
                    })
                }
            };
            if let Some(outcome) = &outcome {
                crate::metrics::plan_invoice(match outcome {
                    EntityOutcome::Invoiced { .. } => "invoiced",
                    EntityOutcome::Deferred { .. } => "deferred",
                    EntityOutcome::Failed { .. } => "failed",
                });
            }
            report.outcomes.extend(outcome);
        }
        cursor = Some(next_cursor);
    }
    Ok(report)
}

/// Invoices one entity's plan once if it is due at `at`; `None` when it is not (any more).
async fn invoice_entity(
    documents: &dyn DocumentStore,
    billing: &dyn Billing,
    entity: Entity,
    at: DateTime<Utc>,
) -> Result<Option<EntityOutcome>, Failure> {
    let stored = stored::load(documents, entity, at).await?;
    let Some(plan) = stored.book.plan.clone() else {
        return Ok(None);
    };
    let Some(due) = plan.next_invoice_date else {
        return Ok(None);
    };
    let upload = last_upload(documents, entity, at).await?;
    match super::invoice_plan(&stored.book, at, upload) {
        InvoiceRun::NotDue => Ok(None),
        InvoiceRun::Deferred => {
            tracing::info!(?entity, %due, ?upload, "invoice deferred: no upload since it was due");
            Ok(Some(EntityOutcome::Deferred { entity }))
        }
        InvoiceRun::Invoice { items, book, changes } => {
            let mut invoice = None;
            if !items.is_empty() {
                let customer = stored
                    .book
                    .customer
                    .stripe_customer
                    .clone()
                    .ok_or(Failure::NoCustomer)?;
                for item in &items {
                    billing.add_invoice_item(&customer, item, &item.idempotency_key).await?;
                }
                let key = format!("invoice_plan:{}:{}", plan.id, due.timestamp());
                let description = format!("{} plan", plan.tier.display_name());
                invoice = Some(billing.invoice_pending_items(&customer, &description, &key).await?.id);
            }
            stored::save(documents, &stored, &book, &changes, at).await?;
            tracing::info!(?entity, %due, items = items.len(), ?invoice, "plan invoiced");
            Ok(Some(EntityOutcome::Invoiced {
                entity,
                invoice,
                items: items.len(),
            }))
        }
    }
}
