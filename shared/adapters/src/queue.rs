//! The invoicing queue (`billing::plans::invoicing::InvoicingQueue`): SQS in AWS (a FIFO queue,
//! one message group per entity), and an in-process queue the local server drains itself.

use std::sync::Mutex;

use async_trait::async_trait;
use billing::plans::invoicing::{InvoiceEntityMessage, InvoicingQueue, QueueError};

/// The queue in this process: messages wait until [`LocalInvoicingQueue::drain`] takes them
/// (the local server hands them to the consumer at once, as Lambda's event source would).
#[derive(Debug, Default)]
pub struct LocalInvoicingQueue {
    waiting: Mutex<Vec<InvoiceEntityMessage>>,
}

impl LocalInvoicingQueue {
    /// Takes every waiting message, oldest first; a message a FIFO queue would drop as a
    /// duplicate (same deduplication id) is dropped here too.
    pub fn drain(&self) -> Vec<InvoiceEntityMessage> {
        let mut waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let mut seen = std::collections::HashSet::new();
        waiting.retain(|message| seen.insert(message.deduplication_id()));
        waiting
    }
}

#[async_trait]
impl InvoicingQueue for LocalInvoicingQueue {
    async fn enqueue(&self, messages: &[InvoiceEntityMessage]) -> Result<(), QueueError> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(messages);
        Ok(())
    }
}

#[cfg(feature = "sqs")]
pub use sqs::SqsInvoicingQueue;

#[cfg(feature = "sqs")]
mod sqs {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

    use super::{InvoiceEntityMessage, InvoicingQueue, QueueError, async_trait};
    use billing::config::{ConfigError, Environment, required};

    /// The invoicing queue on SQS: a FIFO queue (`.fifo`), each message in its entity's group
    /// with an hourly deduplication id, sent ten at a time.
    #[derive(Clone, Debug)]
    pub struct SqsInvoicingQueue {
        client: aws_sdk_sqs::Client,
        url: String,
    }

    /// How many times the entries SQS failed in a batch are sent again before giving up.
    const RESENDS: usize = 2;

    impl SqsInvoicingQueue {
        /// A queue at `url`, with `client`.
        pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
            SqsInvoicingQueue {
                client,
                url: url.into(),
            }
        }

        /// From `INVOICING_QUEUE_URL`, with the shared SDK configuration (timeouts, retries).
        pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
            let url = required(env, "INVOICING_QUEUE_URL")?;
            if !url.ends_with(".fifo") {
                return Err(ConfigError::Invalid {
                    name: "INVOICING_QUEUE_URL".into(),
                    reason: "the invoicing queue is a FIFO queue (its URL ends with .fifo)".into(),
                });
            }
            let config = crate::aws::load_sdk_config().await;
            Ok(SqsInvoicingQueue::new(aws_sdk_sqs::Client::new(&config), url))
        }
    }

    #[async_trait]
    impl InvoicingQueue for SqsInvoicingQueue {
        async fn enqueue(&self, messages: &[InvoiceEntityMessage]) -> Result<(), QueueError> {
            for chunk in messages.chunks(billing::plans::invoicing::ENQUEUE_BATCH) {
                let mut pending: Vec<(String, &InvoiceEntityMessage)> = chunk
                    .iter()
                    .enumerate()
                    .map(|(index, message)| (index.to_string(), message))
                    .collect();
                for attempt in 0..=RESENDS {
                    let entries = pending
                        .iter()
                        .map(|(id, message)| {
                            let body = serde_json::to_string(message)
                                .map_err(|e| QueueError::Unavailable(format!("a message did not serialize: {e}")))?;
                            SendMessageBatchRequestEntry::builder()
                                .id(id)
                                .message_body(body)
                                .message_group_id(message.group())
                                .message_deduplication_id(message.deduplication_id())
                                .build()
                                .map_err(|e| QueueError::Unavailable(e.to_string()))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let sent = self
                        .client
                        .send_message_batch()
                        .queue_url(&self.url)
                        .set_entries(Some(entries))
                        .send()
                        .await
                        .map_err(|e| QueueError::Unavailable(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
                    let failed: Vec<&str> = sent.failed().iter().map(|f| f.id()).collect();
                    if failed.is_empty() {
                        break;
                    }
                    if attempt == RESENDS {
                        let reasons: Vec<String> = sent
                            .failed()
                            .iter()
                            .map(|f| format!("{}: {}", f.code(), f.message().unwrap_or("")))
                            .collect();
                        return Err(QueueError::Unavailable(format!(
                            "SQS refused {} of the batch: {}",
                            failed.len(),
                            reasons.join("; ")
                        )));
                    }
                    pending.retain(|(id, _)| failed.contains(&id.as_str()));
                }
            }
            Ok(())
        }
    }
}
