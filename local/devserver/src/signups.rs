//! Signup delivery on the local server, as SQS and Lambda's event source mapping would do it.
//!
//! - Embedded mode: an in-process queue. Batches of up to ten go to the signup consumer; the
//!   messages it hands back are delivered again a second later, and after five receives they are
//!   set aside as dead letters (logged, and listed by `GET /_local/signup/dead-letters`).
//! - `--aws` mode: a poller of `SIGNUP_QUEUE_URL` (created with its dead-letter queue when the
//!   variable is unset) that long-polls, hands each batch to the consumer, and deletes only the
//!   messages it acknowledged, so the queue's redrive policy fills the dead-letter queue exactly
//!   as in AWS.
//!
//! `POST /_local/signup` enqueues an event. A JSON object gets the fields it lacks (`type`,
//! `event_id`, `user_id`, `email`, `created_at`) filled in; any other body is enqueued as it is,
//! so poison messages can be tried too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use serde_json::{Value, json};
use signup_listener::SignupListener;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Receives after which a message is a dead letter, as the template's redrive policy says.
pub const MAX_RECEIVES: u32 = 5;
const BATCH: usize = 10;

/// Fills in what a hand-written signup event lacks.
pub fn complete_event(body: &str) -> String {
    let Ok(Value::Object(mut event)) = serde_json::from_str::<Value>(body) else {
        return body.to_owned();
    };
    let user = Uuid::new_v4();
    let defaults = [
        ("type", json!(billing::signup::PROFILE_CREATED)),
        ("event_id", json!(Uuid::new_v4())),
        ("user_id", json!(user)),
        ("email", json!(format!("user-{}@example.com", user.simple()))),
        (
            "created_at",
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ),
    ];
    for (name, value) in defaults {
        event.entry(name).or_insert(value);
    }
    Value::Object(event).to_string()
}

/// One SQS record as Lambda's event source mapping hands it over.
pub(crate) fn sqs_message(id: &str, receipt: &str, body: &str, receive_count: u32, source: &str) -> SqsMessage {
    serde_json::from_value(json!({
        "messageId": id,
        "receiptHandle": receipt,
        "body": body,
        "attributes": {"ApproximateReceiveCount": receive_count.to_string()},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": source,
        "awsRegion": "us-east-1",
    }))
    .expect("a well-formed SQS record")
}

/// Where `POST /_local/signup` puts events.
#[derive(Clone)]
pub enum SignupQueue {
    Local {
        sender: mpsc::UnboundedSender<Pending>,
        dead_letters: Arc<Mutex<Vec<String>>>,
    },
    Sqs {
        client: aws_sdk_sqs::Client,
        url: String,
    },
}

pub struct Pending {
    id: String,
    body: String,
    receives: u32,
}

impl SignupQueue {
    /// Enqueues one event; returns its message id.
    pub async fn send(&self, body: String) -> Result<String, String> {
        match self {
            SignupQueue::Local { sender, .. } => {
                let id = Uuid::new_v4().to_string();
                sender
                    .send(Pending {
                        id: id.clone(),
                        body,
                        receives: 0,
                    })
                    .map_err(|e| e.to_string())?;
                Ok(id)
            }
            SignupQueue::Sqs { client, url } => client
                .send_message()
                .queue_url(url)
                .message_body(body)
                .send()
                .await
                .map(|out| out.message_id.unwrap_or_default())
                .map_err(|e| format!("{e:?}")),
        }
    }

    pub fn dead_letters(&self) -> Vec<String> {
        match self {
            SignupQueue::Local { dead_letters, .. } => dead_letters.lock().map(|d| d.clone()).unwrap_or_default(),
            SignupQueue::Sqs { .. } => Vec::new(),
        }
    }
}

/// The in-process queue and its worker.
pub fn start_local(listener: Arc<SignupListener>) -> SignupQueue {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Pending>();
    let dead_letters = Arc::new(Mutex::new(Vec::new()));
    let queue = SignupQueue::Local {
        sender: sender.clone(),
        dead_letters: dead_letters.clone(),
    };
    tokio::spawn(async move {
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let mut event = SqsEvent::default();
            for pending in &mut batch {
                pending.receives += 1;
                event.records.push(sqs_message(
                    &pending.id,
                    &pending.id,
                    &pending.body,
                    pending.receives,
                    "arn:local:sqs:signups",
                ));
            }
            let failed: Vec<String> = listener
                .handle(event)
                .await
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect();
            for pending in batch.into_iter().filter(|p| failed.contains(&p.id)) {
                if pending.receives >= MAX_RECEIVES {
                    tracing::error!(message_id = %pending.id, "signup moved to the dead letters after {MAX_RECEIVES} receives");
                    if let Ok(mut dead) = dead_letters.lock() {
                        dead.push(pending.body);
                    }
                } else {
                    let sender = sender.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = sender.send(pending);
                    });
                }
            }
        }
    });
    queue
}

/// The queue at `SIGNUP_QUEUE_URL`, or a `billing-signups` queue with its dead-letter queue
/// (redrive after five receives) made now when the variable is unset.
pub async fn sqs_queue(client: &aws_sdk_sqs::Client, configured: Option<String>) -> Result<String, String> {
    if let Some(url) = configured {
        return Ok(url);
    }
    let dead = client
        .create_queue()
        .queue_name("billing-signups-dlq")
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let dead_url = dead.queue_url.unwrap_or_default();
    let attributes = client
        .get_queue_attributes()
        .queue_url(&dead_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let dead_arn = attributes
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    let redrive = json!({"deadLetterTargetArn": dead_arn, "maxReceiveCount": MAX_RECEIVES}).to_string();
    let queue = client
        .create_queue()
        .queue_name("billing-signups")
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(QueueAttributeName::VisibilityTimeout, "5")
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(queue.queue_url.unwrap_or_default())
}

/// Long-polls the queue like an event source mapping: batches of ten, acknowledged messages
/// deleted, the others left to come back after their visibility timeout.
pub fn start_poller(listener: Arc<SignupListener>, client: aws_sdk_sqs::Client, url: String) {
    tokio::spawn(async move {
        loop {
            let received = client
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(BATCH as i32)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await;
            let messages = match received {
                Ok(output) => output.messages.unwrap_or_default(),
                Err(error) => {
                    tracing::warn!(error = ?error, "could not poll the signup queue");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            let mut event = SqsEvent::default();
            let mut receipts = HashMap::new();
            for message in &messages {
                let id = message.message_id.clone().unwrap_or_default();
                let receipt = message.receipt_handle.clone().unwrap_or_default();
                let count = message
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                event.records.push(sqs_message(
                    &id,
                    &receipt,
                    message.body.as_deref().unwrap_or(""),
                    count,
                    &url,
                ));
                receipts.insert(id, receipt);
            }
            let failed: Vec<String> = listener
                .handle(event)
                .await
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect();
            let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
                .iter()
                .filter(|(id, _)| !failed.contains(id))
                .enumerate()
                .filter_map(|(i, (_, receipt))| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .receipt_handle(receipt)
                        .build()
                        .ok()
                })
                .collect();
            if !entries.is_empty()
                && let Err(error) = client
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
            {
                tracing::warn!(error = ?error, "could not delete acknowledged signups; they will be delivered again");
            }
        }
    });
}
