//! Self-hosted invoicing on the local server, as the hourly schedule, the invoicing queue and
//! its consumer do it in AWS: `POST /_local/invoice-plans` runs the scheduler
//! (`invoice-plans`), which enqueues one message per entity on an in-process queue, then hands
//! the messages to the consumer (`invoice-entity`) at once, ten to a batch, as Lambda's event
//! source mapping would. A message the consumer reports failed stays failed (its run stays
//! open): the next call lists its entity again, as the next hourly run would in AWS.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use billing::plans::invoicing::{InvoicingReport, ScheduleError};
use billing_adapters::LocalInvoicingQueue;
use invoice_entity::{InvoiceEntity, Outcome};
use invoice_plans::InvoicePlans;

/// The scheduler, the queue between them and the consumer.
pub struct LocalInvoicing {
    /// `invoice-plans`, enqueuing on [`LocalInvoicing::queue`].
    pub scheduler: InvoicePlans,
    /// The in-process invoicing queue.
    pub queue: Arc<LocalInvoicingQueue>,
    /// `invoice-entity`.
    pub consumer: InvoiceEntity,
}

impl LocalInvoicing {
    /// Runs the scheduler at the time `input` names (else the clock's), then the consumer over
    /// every message it enqueued. The report is the scheduler's, with the consumer's outcomes.
    pub async fn run(&self, input: &serde_json::Value) -> Result<InvoicingReport, ScheduleError> {
        let mut report = self.scheduler.handle(input).await?;
        let messages = self.queue.drain();
        for (batch_number, batch) in messages.chunks(billing::plans::invoicing::ENQUEUE_BATCH).enumerate() {
            let mut event = SqsEvent::default();
            for (index, message) in batch.iter().enumerate() {
                let id = format!("local-invoicing-{batch_number}-{index}");
                let body = serde_json::to_string(message).unwrap_or_default();
                event.records.push(crate::signups::sqs_message(
                    &id,
                    &id,
                    &body,
                    1,
                    "arn:local:sqs:invoicing.fifo",
                ));
            }
            for record in &event.records {
                match self.consumer.handle_message(record).await {
                    Outcome::Done(outcomes) | Outcome::Retry(outcomes) => report.outcomes.extend(outcomes),
                    Outcome::Poison(reason) => {
                        tracing::error!(%reason, "the local invoicing queue held a message of no one's")
                    }
                }
            }
        }
        Ok(report)
    }
}
