//! The invoicing of self-hosted plans (API.md, "Invoicing"), as a resumable two-phase run.
//!
//! For each plan whose next invoice date has come (read from the due-date index a page at a
//! time), [`invoice_plan`](super::invoice_plan) decides the end-of-cycle rows and the exact
//! lines owed. Then:
//!
//! 1. **Record.** One transaction writes the end-of-cycle rows, the plan moved on
//!    (`invoiced_through`, next invoice date) and an [`InvoicingRun`] holding the due date and
//!    the exact lines with their keys, plus an entry in the index of open runs. Nothing has
//!    been asked of Stripe yet; a fault here leaves nothing behind.
//! 2. **Charge.** [`charge`] makes the run's invoice in Stripe from what
//!    Stripe holds (the invoice found by its metadata, its lines by theirs), so a re-run at once
//!    or a day later (when Stripe may have forgotten the keys) never makes a second invoice.
//! 3. **Settle.** One transaction records the invoice and its outcome on the run and closes its
//!    open entry.
//!
//! A run that fails stays open and is resumed by the next job (hourly), before anything new is
//! decided for its entity; after [`ATTENTION_AFTER_FAILURES`] failures, or once it has been
//! open for [`ATTENTION_AFTER`], it is marked for a person (and counted as `needs_attention`),
//! and still resumed, since resuming is safe.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::charge::{Charged, InvoiceSpec, charge};
use super::stored::{self, PLANS_DUE, PlannedWrite};
use super::{Entity, InvoiceItem, InvoiceRun, purchase};
use crate::store::{AsConflict, DocumentStore, StoreError, member_key, retry_on_conflict};
use crate::stripe::{Billing, BillingError};

/// A run open longer than this is marked for a person.
pub const ATTENTION_AFTER: Duration = Duration::hours(6);

/// A run that failed this many times is marked for a person.
pub const ATTENTION_AFTER_FAILURES: u32 = 3;

/// The index of open invoicing runs (`invoicing_open/<entity>`), read by every job first.
pub const RUNS_OPEN: &str = "invoicing_open";

/// Where a run is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    /// Recorded; Stripe may hold part of its invoice.
    Open,
    /// The invoice is paid (or owed nothing).
    Paid,
    /// The invoice is finalized and its payment failed: Stripe's retries collect it.
    PaymentFailed {
        /// What Stripe said.
        message: String,
    },
    /// The invoice was voided or marked uncollectible in Stripe while the run was open: nothing
    /// was collected, and a person decides (the run is marked for attention).
    Voided,
}

/// The invoice of one plan for one due date, written before its first Stripe call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoicingRun {
    /// Whose plan.
    pub entity: Entity,
    /// The plan invoiced.
    pub plan: Uuid,
    /// The due date it invoices.
    pub due: DateTime<Utc>,
    /// What the invoice says it is for.
    pub description: String,
    /// Its exact lines and their keys.
    pub lines: Vec<InvoiceItem>,
    /// The Stripe invoice, once known.
    pub invoice: Option<String>,
    /// Where it is.
    #[serde(flatten)]
    pub state: RunState,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// How many attempts failed.
    pub failures: u32,
    /// Why the last one failed.
    pub last_failure: Option<String>,
    /// Whether it waits for a person ([`ATTENTION_AFTER`], [`ATTENTION_AFTER_FAILURES`]).
    pub needs_attention: bool,
}

impl InvoicingRun {
    /// What names its invoice in Stripe's metadata and roots its keys.
    pub fn reference(&self) -> String {
        format!("invoicing:{}:{}", self.plan, self.due.timestamp())
    }

    fn member(&self) -> String {
        format!("invoicing#{:020}#{}", self.due.timestamp().max(0), self.plan)
    }
}

/// An entity's entry in [`RUNS_OPEN`].
fn open_member(entity: Entity) -> String {
    match entity {
        Entity::Realm(uuid) => format!("realm#{uuid}"),
        Entity::Server(uuid) => format!("server#{uuid}"),
    }
}

/// The runs of an entity, oldest due date first, with their versions.
pub async fn runs(
    documents: &dyn DocumentStore,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<Vec<(InvoicingRun, u64)>, StoreError> {
    let collection = stored::collection(entity);
    let mut runs = Vec::new();
    let mut after = "invoicing#".to_owned();
    loop {
        let page = documents
            .list_documents_range(&collection, Some(&after), "invoicing#~", PAGE, now)
            .await?;
        let full = page.len() == PAGE;
        for (member, document) in page {
            let run =
                serde_json::from_value(document.body).map_err(|e| StoreError::Corrupt(format!("{member}: {e}")))?;
            runs.push((run, document.version));
            after = member;
        }
        if !full {
            return Ok(runs);
        }
    }
}

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
    /// Refused or failed; its run stays open and is resumed by the next job.
    Failed {
        /// Whose plan.
        entity: Entity,
        /// Why.
        reason: String,
        /// Whether its run now waits for a person.
        needs_attention: bool,
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
    /// Purchases found stalled while charging, and what resuming them did.
    pub resumed_purchases: Vec<super::purchase::ResumedPurchase>,
    /// Entities handed to the invoicing queue (the scheduler's work; the outcomes are then the
    /// consumer's).
    pub enqueued: usize,
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

impl AsConflict for Failure {
    fn is_conflict(&self) -> bool {
        matches!(
            self,
            Failure::Store(StoreError::VersionConflict | StoreError::AlreadyExists)
        )
    }
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

/// Every entity with something to invoice at `at`, each once: first those with an open run
/// (to be resumed), then those whose plan is due, read from the due-date index a page at a time
/// (only the plans due are read).
pub async fn due_entities(documents: &dyn DocumentStore, at: DateTime<Utc>) -> Result<Vec<Entity>, StoreError> {
    let mut entities = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for index in [RUNS_OPEN, PLANS_DUE] {
        let through = if index == RUNS_OPEN {
            "~".to_owned()
        } else {
            stored::due_through(at)
        };
        let mut cursor: Option<String> = None;
        loop {
            let page = documents
                .list_documents_range(index, cursor.as_deref(), &through, PAGE, at)
                .await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            cursor = Some(last.clone());
            for (_, document) in &page {
                let Some(entity) = document
                    .body
                    .get("entity")
                    .cloned()
                    .and_then(|entity| serde_json::from_value::<Entity>(entity).ok())
                else {
                    continue;
                };
                if seen.insert(entity) {
                    entities.push(entity);
                }
            }
        }
    }
    Ok(entities)
}

/// Runs the job at `at` in this process: every entity [`due_entities`] lists is invoiced with
/// [`invoice_entity`], one after the other; one entity's failure does not stop the others. The
/// deployed job hands the entities to a queue instead ([`schedule_invoicing`]), whose consumer
/// runs [`invoice_entity`] for each; this is the same work without the queue (the local server
/// without AWS, and the tests of the protocol).
pub async fn invoice_plans(
    documents: &dyn DocumentStore,
    billing: &dyn Billing,
    at: DateTime<Utc>,
) -> Result<InvoicingReport, StoreError> {
    let mut report = InvoicingReport::default();
    let entities = due_entities(documents, at).await?;
    for (position, entity) in entities.iter().enumerate() {
        if crate::deadline::remaining().is_some_and(|left| left < TIME_PER_ENTITY) {
            report.left_for_next_run = entities.len() - position;
            tracing::warn!(
                left = report.left_for_next_run,
                "invoicing stopped before the deadline; more may be due"
            );
            return Ok(report);
        }
        report
            .outcomes
            .extend(invoice_entity(documents, billing, *entity, at).await);
    }
    Ok(report)
}

/// One entity to invoice, as the scheduler hands it to the invoicing queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceEntityMessage {
    /// Whose plan.
    pub entity: Entity,
    /// The time the scheduler ran: what is due is decided as of then.
    pub at: DateTime<Utc>,
}

impl InvoiceEntityMessage {
    /// The message group of a FIFO queue: one per entity, so no two messages of one entity are
    /// ever handled at once, and one entity's failing message holds back no other entity.
    pub fn group(&self) -> String {
        open_member(self.entity)
    }

    /// The deduplication id: the entity and the hour, so a scheduler run retried within SQS's
    /// five-minute deduplication window enqueues the entity once (a later duplicate is
    /// harmless: the protocol is idempotent).
    pub fn deduplication_id(&self) -> String {
        format!("{}#{}", open_member(self.entity), self.at.format("%Y%m%d%H"))
    }
}

/// Why messages could not be enqueued; nothing is lost (the next hourly run lists the same
/// entities again).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue refused or could not be reached.
    #[error("the invoicing queue is unavailable: {0}")]
    Unavailable(String),
}

/// Where the scheduler puts the entities to invoice (SQS in AWS).
#[async_trait::async_trait]
pub trait InvoicingQueue: Send + Sync {
    /// Enqueues the messages, all or an error.
    async fn enqueue(&self, messages: &[InvoiceEntityMessage]) -> Result<(), QueueError>;
}

/// Why the scheduler failed: a re-run is safe.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The store failed while listing.
    #[error("listing the due entities failed")]
    Store(#[from] StoreError),
    /// The queue failed.
    #[error("enqueueing failed")]
    Queue(#[from] QueueError),
}

/// How many messages one enqueue carries (SQS's batch limit).
pub const ENQUEUE_BATCH: usize = 10;

/// The scheduler's work: lists every entity with something to invoice at `at` and enqueues one
/// message per entity. Returns how many were enqueued. Duplicated messages are harmless: the
/// protocol is idempotent, and the FIFO queue runs one entity's messages one at a time.
pub async fn schedule_invoicing(
    documents: &dyn DocumentStore,
    queue: &dyn InvoicingQueue,
    at: DateTime<Utc>,
) -> Result<usize, ScheduleError> {
    let entities = due_entities(documents, at).await?;
    let messages: Vec<_> = entities
        .into_iter()
        .map(|entity| InvoiceEntityMessage { entity, at })
        .collect();
    for batch in messages.chunks(ENQUEUE_BATCH) {
        queue.enqueue(batch).await?;
    }
    crate::metrics::plan_invoices_enqueued(messages.len());
    tracing::info!(%at, enqueued = messages.len(), "invoicing scheduled");
    Ok(messages.len())
}

impl EntityOutcome {
    /// Whose plan the outcome is about.
    pub fn entity(&self) -> Entity {
        match self {
            EntityOutcome::Invoiced { entity, .. }
            | EntityOutcome::Deferred { entity }
            | EntityOutcome::Failed { entity, .. } => *entity,
        }
    }

    fn metric(&self) -> &'static str {
        match self {
            EntityOutcome::Invoiced { .. } => "invoiced",
            EntityOutcome::Deferred { .. } => "deferred",
            EntityOutcome::Failed {
                needs_attention: true, ..
            } => "needs_attention",
            EntityOutcome::Failed { .. } => "failed",
        }
    }
}

/// The most due dates one call catches up on (a plan the job missed for months).
const CATCH_UP_LIMIT: usize = 24;

/// Invoices one entity: resumes its open run if it has one, then invoices its plan for each
/// due date up to `at` (oldest first: a plan the job missed for a while is caught up). What it
/// did, one outcome per run (none when nothing was due); a failure stops it, its run left
/// open for the next try. Every outcome is counted in the `PlanInvoices` metric.
pub async fn invoice_entity(
    documents: &dyn DocumentStore,
    billing: &dyn Billing,
    entity: Entity,
    at: DateTime<Utc>,
) -> Vec<EntityOutcome> {
    let outcomes = invoice_entity_uncounted(documents, billing, entity, at).await;
    for outcome in &outcomes {
        crate::metrics::plan_invoice(outcome.metric());
    }
    outcomes
}

async fn invoice_entity_uncounted(
    documents: &dyn DocumentStore,
    billing: &dyn Billing,
    entity: Entity,
    at: DateTime<Utc>,
) -> Vec<EntityOutcome> {
    let mut outcomes = Vec::new();
    let open = match runs(documents, entity, at).await {
        Ok(runs) => runs.into_iter().find(|(run, _)| run.state == RunState::Open),
        Err(error) => {
            return vec![failed(entity, &error.into(), false)];
        }
    };
    if let Some((run, version)) = open {
        match resume(documents, billing, run, version, at).await {
            Ok(outcome) => outcomes.push(outcome),
            // An open run is settled before anything new is decided for its entity.
            Err(outcome) => return vec![outcome],
        }
    }
    for _ in 0..CATCH_UP_LIMIT {
        // Out of time is not a failure: the due dates left are met by the next run.
        if !outcomes.is_empty() && crate::deadline::remaining().is_some_and(|left| left < TIME_PER_ENTITY) {
            tracing::warn!(?entity, "catching up stopped before the deadline; the next run goes on");
            break;
        }
        match record(documents, entity, at).await {
            Ok(Recorded::NotDue) => break,
            Ok(Recorded::Deferred { since }) => {
                if at - since > crate::remote::admin::WAITING_FOR_UPLOAD_AFTER {
                    // Counted apart, for the alarm: a week without uploads is a server to call.
                    crate::metrics::plan_invoice("waiting_for_upload");
                }
                outcomes.push(EntityOutcome::Deferred { entity });
                break;
            }
            Ok(Recorded::NothingOwed) => outcomes.push(EntityOutcome::Invoiced {
                entity,
                invoice: None,
                items: 0,
            }),
            Ok(Recorded::Run(run, version)) => match resume(documents, billing, *run, version, at).await {
                Ok(outcome) => outcomes.push(outcome),
                Err(outcome) => {
                    outcomes.push(outcome);
                    break;
                }
            },
            Err(failure) => {
                outcomes.push(failed(entity, &failure, false));
                break;
            }
        }
    }
    outcomes
}

fn failed(entity: Entity, failure: &Failure, needs_attention: bool) -> EntityOutcome {
    tracing::warn!(?entity, error = %failure, needs_attention, "plan not invoiced");
    EntityOutcome::Failed {
        entity,
        reason: failure.to_string(),
        needs_attention,
    }
}

/// What phase 1 did.
enum Recorded {
    NotDue,
    /// Due since `since`, waiting for an upload.
    Deferred {
        since: DateTime<Utc>,
    },
    /// Due with nothing owed: the plan moved on, no run.
    NothingOwed,
    /// The run recorded, with its version.
    Run(Box<InvoicingRun>, u64),
}

/// Phase 1: decides what the plan owes at its due date and records it, with the plan moved on,
/// in one transaction; re-read and decided again when another writer got there first.
async fn record(documents: &dyn DocumentStore, entity: Entity, at: DateTime<Utc>) -> Result<Recorded, Failure> {
    retry_on_conflict(|_| async move {
        let stored = stored::load(documents, entity, at).await?;
        let Some(plan) = stored.book.plan.clone() else {
            return Ok(Recorded::NotDue);
        };
        let Some(due) = plan.next_invoice_date else {
            return Ok(Recorded::NotDue);
        };
        let upload = last_upload(documents, entity, at).await?;
        let (items, book, changes) = match super::invoice_plan(&stored.book, at, upload) {
            InvoiceRun::NotDue => return Ok(Recorded::NotDue),
            InvoiceRun::Deferred => {
                tracing::info!(?entity, %due, ?upload, "invoice deferred: no upload since it was due");
                return Ok(Recorded::Deferred { since: due });
            }
            InvoiceRun::Invoice { items, book, changes } => (items, book, changes),
        };
        let mut writes = stored::writes_for(&stored, &book, &changes, at);
        if items.is_empty() {
            let writes: Vec<_> = writes.iter().map(PlannedWrite::as_write).collect();
            if !writes.is_empty() {
                documents.put_documents(&writes, at).await?;
            }
            tracing::info!(?entity, %due, "plan due with nothing owed");
            return Ok(Recorded::NothingOwed);
        }
        let run = InvoicingRun {
            entity,
            plan: plan.id,
            due,
            description: format!("{} plan", plan.tier.display_name()),
            lines: items,
            invoice: None,
            state: RunState::Open,
            recorded_at: at,
            failures: 0,
            last_failure: None,
            needs_attention: false,
        };
        writes.push(PlannedWrite {
            key: member_key(&stored::collection(entity), &run.member()),
            body: encode(&run),
            expected: None,
            expires_at: None,
        });
        writes.push(PlannedWrite {
            key: member_key(RUNS_OPEN, &open_member(entity)),
            body: serde_json::json!({"entity": entity, "plan": run.plan, "due": due}),
            expected: None,
            expires_at: None,
        });
        let writes: Vec<_> = writes.iter().map(PlannedWrite::as_write).collect();
        documents.put_documents(&writes, at).await?;
        tracing::info!(?entity, %due, lines = run.lines.len(), "invoicing run recorded");
        Ok(Recorded::Run(Box::new(run), 1))
    })
    .await
}

fn encode<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("invoicing documents serialize")
}

/// Phases 2 and 3: charges the run's invoice from what Stripe holds and settles the run. A
/// failure is recorded on the run (which stays open) and answered as the outcome.
async fn resume(
    documents: &dyn DocumentStore,
    billing: &dyn Billing,
    run: InvoicingRun,
    version: u64,
    at: DateTime<Utc>,
) -> Result<EntityOutcome, EntityOutcome> {
    let entity = run.entity;
    match charge_run(documents, billing, &run, at).await {
        Ok(charged) => match settle(documents, &run, version, &charged, at).await {
            Ok(()) => {
                tracing::info!(?entity, due = %run.due, invoice = charged.invoice(), "plan invoiced");
                Ok(EntityOutcome::Invoiced {
                    entity,
                    invoice: Some(charged.invoice().to_owned()),
                    items: run.lines.len(),
                })
            }
            Err(error) => Err(note_failure(documents, run, version, &error.into(), at).await),
        },
        Err(failure) => Err(note_failure(documents, run, version, &failure, at).await),
    }
}

async fn charge_run(
    documents: &dyn DocumentStore,
    billing: &dyn Billing,
    run: &InvoicingRun,
    at: DateTime<Utc>,
) -> Result<Charged, Failure> {
    let stored = stored::load(documents, run.entity, at).await?;
    let customer = stored
        .book
        .customer
        .stripe_customer
        .clone()
        .ok_or(Failure::NoCustomer)?;
    let reference = run.reference();
    let spec = InvoiceSpec {
        customer: &customer,
        reference: &reference,
        description: &run.description,
        lines: &run.lines,
        auto_advance: true,
    };
    Ok(charge(billing, spec, run.invoice.as_deref()).await?)
}

/// Phase 3: the run's outcome and its open entry closed, in one transaction.
async fn settle(
    documents: &dyn DocumentStore,
    run: &InvoicingRun,
    version: u64,
    charged: &Charged,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let settled = InvoicingRun {
        invoice: Some(charged.invoice().to_owned()),
        state: match charged {
            Charged::Declined { message, .. } => RunState::PaymentFailed {
                message: message.clone(),
            },
            Charged::Paid { .. } => RunState::Paid,
            Charged::Voided { .. } => RunState::Voided,
        },
        needs_attention: run.needs_attention || matches!(charged, Charged::Voided { .. }),
        ..run.clone()
    };
    let open_key = member_key(RUNS_OPEN, &open_member(run.entity));
    let open = documents.get_document(&open_key, at).await?;
    let mut writes = vec![PlannedWrite {
        key: member_key(&stored::collection(run.entity), &run.member()),
        body: encode(&settled),
        expected: Some(version),
        expires_at: None,
    }];
    if let Some(open) = open {
        writes.push(PlannedWrite {
            key: open_key,
            body: Value::Null,
            expected: Some(open.version),
            expires_at: Some(at),
        });
    }
    let writes: Vec<_> = writes.iter().map(PlannedWrite::as_write).collect();
    documents.put_documents(&writes, at).await
}

/// Records a failed attempt on the open run (best effort: the run stays open either way) and
/// marks it for a person when it has failed too often or stayed open too long.
async fn note_failure(
    documents: &dyn DocumentStore,
    run: InvoicingRun,
    version: u64,
    failure: &Failure,
    at: DateTime<Utc>,
) -> EntityOutcome {
    let failures = run.failures + 1;
    let needs_attention = failures >= ATTENTION_AFTER_FAILURES || at - run.recorded_at >= ATTENTION_AFTER;
    let noted = InvoicingRun {
        failures,
        last_failure: Some(failure.to_string()),
        needs_attention,
        ..run.clone()
    };
    let key = member_key(&stored::collection(run.entity), &run.member());
    let body = encode(&noted);
    let write = crate::store::DocumentWrite {
        key: &key,
        body: &body,
        expires_at: None,
        expected: Some(version),
    };
    if let Err(error) = documents.put_documents(&[write], at).await {
        tracing::warn!(entity = ?run.entity, %error, "the failed attempt could not be recorded on its run");
    }
    if needs_attention {
        tracing::error!(entity = ?run.entity, due = %run.due, failures, "invoicing run needs a person");
    }
    failed(run.entity, failure, needs_attention)
}
