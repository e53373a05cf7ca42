//! `invoice-entity`: the invoicing queue's consumer. The hourly scheduler (`invoice-plans`)
//! lists the entities with something to invoice and enqueues one message per entity; each
//! message here runs the resumable two-phase protocol for its entity
//! (`billing::plans::invoicing::invoice_entity`). The answer is a partial batch response
//! naming only the messages to deliver again:
//!
//! - invoiced, nothing due, or deferred for lack of an upload (the next hourly run lists it
//!   again): acknowledged;
//! - a failure (Stripe or the store unavailable, a refusal): reported, so SQS delivers it again
//!   after the visibility timeout; its run stays open and the next hourly run lists it too.
//!   After the queue's `maxReceiveCount` it moves to the dead-letter queue, which alarms;
//! - poison (not a message of ours): reported, and so dead-lettered, never dropped silently.
//!
//! Duplicated or concurrent messages are harmless: every step of the protocol is conditional
//! or reads Stripe before it writes, and the FIFO queue hands one entity's messages out one at
//! a time.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use billing::access::{Operation, declared_documents};
use billing::config::{ConfigError, Environment, billing_table};
use billing::plans::invoicing::{EntityOutcome, InvoiceEntityMessage, invoice_entity};
use billing::store::DocumentStore;
use billing::stripe::Billing;
use billing_adapters::{DynamoStore, StripeBilling};

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "invoice-entity";

/// What this function does with the store; its IAM policy grants exactly these.
pub const OPERATIONS: &[Operation] = &[
    Operation::GetDocument,
    Operation::ListDocuments,
    Operation::PutDocuments,
    Operation::ReadSecrets,
];

/// What became of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The protocol ran to its end for every due date (or nothing was due, or it waits for an
    /// upload): what it did.
    Done(Vec<EntityOutcome>),
    /// A step failed; the run stays open: delivered again. What it did up to the failure,
    /// the failure last.
    Retry(Vec<EntityOutcome>),
    /// Not a message of the scheduler's: dead-lettered after the queue's receives.
    Poison(String),
}

impl Outcome {
    /// Whether SQS may delete the message.
    pub fn acknowledged(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }
}

/// The consumer and what it needs.
pub struct InvoiceEntity {
    /// Where the plans and runs live.
    pub documents: Arc<dyn DocumentStore>,
    /// Stripe.
    pub billing: Arc<dyn Billing>,
}

impl InvoiceEntity {
    /// Reads `BILLING_TABLE` and `STRIPE_SECRET_KEY` (and `STRIPE_API_BASE`).
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let table = billing_table(env)?;
        let billing = StripeBilling::from_env(env)?;
        Ok(InvoiceEntity {
            documents: Arc::new(DynamoStore::connect(table).await),
            billing: Arc::new(billing),
        }
        .declared())
    }

    /// The same consumer, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        InvoiceEntity {
            documents: declared_documents(self.documents, FUNCTION, OPERATIONS),
            ..self
        }
    }

    /// Handles one message.
    pub async fn handle_message(&self, message: &SqsMessage) -> Outcome {
        let Some(body) = message.body.as_deref() else {
            return Outcome::Poison("the message has no body".into());
        };
        let parsed: InvoiceEntityMessage = match serde_json::from_str(body) {
            Ok(parsed) => parsed,
            Err(error) => return Outcome::Poison(format!("not an invoicing message: {error}")),
        };
        let outcomes = invoice_entity(self.documents.as_ref(), self.billing.as_ref(), parsed.entity, parsed.at).await;
        if outcomes
            .iter()
            .any(|outcome| matches!(outcome, EntityOutcome::Failed { .. }))
        {
            Outcome::Retry(outcomes)
        } else {
            Outcome::Done(outcomes)
        }
    }

    /// Handles a batch one message after another (a batch is one entity's group in order, or
    /// a few entities: their Stripe calls are what the concurrency limit paces), and names the
    /// messages to deliver again.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for message in &event.records {
            let id = message.message_id.clone().unwrap_or_default();
            let outcome = self.handle_message(message).await;
            match &outcome {
                Outcome::Done(outcomes) => {
                    tracing::info!(message = %id, outcomes = outcomes.len(), "entity invoiced");
                }
                Outcome::Retry(outcomes) => {
                    tracing::warn!(message = %id, ?outcomes, "invoicing failed; the message is delivered again");
                }
                Outcome::Poison(reason) => {
                    tracing::error!(message = %id, %reason, "not an invoicing message; it goes to the dead-letter queue");
                }
            }
            if !outcome.acknowledged() {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }
}
