//! The invoicing queue's consumer in-process, against the embedded store and the Stripe
//! sandbox; and the whole fan-out (scheduler → SQS FIFO queue in moto → consumer) over HTTP.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use billing::plans::Entity;
use billing::plans::invoicing::{InvoiceEntityMessage, schedule_invoicing};
use billing::store::DocumentStore;
use billing_adapters::{LocalInvoicingQueue, SqsInvoicingQueue};
use billing_testing::embedded_store;
use chrono::{DateTime, Duration, Utc};
use invoice_entity::{InvoiceEntity, Outcome};
use serde_json::{Value, json};
use stripe_sandbox::RunningSandbox;
use uuid::Uuid;

struct Fixture {
    consumer: InvoiceEntity,
    documents: Arc<dyn DocumentStore>,
    sandbox: RunningSandbox,
}

async fn fixture() -> Fixture {
    let (sandbox, billing) = billing_testing::sandbox_billing(800, billing_testing::fast_retries()).await;
    let documents: Arc<dyn DocumentStore> = embedded_store();
    let consumer = InvoiceEntity {
        documents: documents.clone(),
        billing,
    }
    .declared();
    Fixture {
        consumer,
        documents,
        sandbox,
    }
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc()
}

impl Fixture {
    /// A server on a basic plan of 6 licenses bought at the start, paying by card, that
    /// uploaded on its due date: due for its renewal.
    async fn due_server(&self) -> (Entity, DateTime<Utc>) {
        billing_testing::due_paying_server(self.documents.as_ref(), self.consumer.billing.as_ref(), 6, start()).await
    }

    /// The invoices the sandbox holds for invoicing runs.
    async fn invoices(&self) -> Vec<Value> {
        let all = billing_testing::stripe_get(&self.sandbox, "/v1/invoices?limit=100").await;
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| {
                i["metadata"]["billing_reference"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("invoicing:"))
            })
            .cloned()
            .collect()
    }
}

fn record(id: &str, body: &str) -> SqsMessage {
    serde_json::from_value(json!({
        "messageId": id,
        "receiptHandle": id,
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": "g"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:invoicing.fifo",
        "awsRegion": "us-east-1",
    }))
    .unwrap()
}

fn event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

fn message(entity: Entity, at: DateTime<Utc>) -> String {
    serde_json::to_string(&InvoiceEntityMessage { entity, at }).unwrap()
}

#[tokio::test]
async fn a_message_invoices_its_entity_once_and_its_duplicate_changes_nothing() {
    // Given a server due for its renewal
    let f = fixture().await;
    let (entity, due) = f.due_server().await;
    // When its message is delivered twice (SQS delivers at least once)
    let body = message(entity, due);
    let answer = f
        .consumer
        .handle(event(vec![record("m-1", &body), record("m-2", &body)]))
        .await;
    // Then both are acknowledged and one invoice of 6 renewed licenses is paid
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    let invoices = f.invoices().await;
    assert_eq!(invoices.len(), 1, "{invoices:#?}");
    assert_eq!(
        (invoices[0]["status"].as_str(), invoices[0]["amount_paid"].as_i64()),
        (Some("paid"), Some(6 * 350))
    );
}

#[tokio::test]
async fn a_failed_entity_is_returned_to_the_queue_alone_and_its_redelivery_finishes_it() {
    // Given two servers due, and Stripe failing every try to pay an invoice for a while
    let f = fixture().await;
    let (failing, due) = f.due_server().await;
    let (other, _) = f.due_server().await;
    f.sandbox.sandbox.fail_next_on(10, 500, Some("POST /v1/invoices/*/pay"));
    // When the first server's message comes
    let answer = f
        .consumer
        .handle(event(vec![record("m-fail", &message(failing, due))]))
        .await;
    // Then the failing one is named for redelivery
    let named: Vec<&str> = answer
        .batch_item_failures
        .iter()
        .map(|failure| failure.item_identifier.as_str())
        .collect();
    assert_eq!(named, ["m-fail"]);
    // And when Stripe is back, the redelivery and the other entity's message finish, one
    // paid invoice each
    f.sandbox.sandbox.fail_next(0, 500);
    let answer = f
        .consumer
        .handle(event(vec![
            record("m-fail-again", &message(failing, due + Duration::minutes(6))),
            record("m-other", &message(other, due)),
        ]))
        .await;
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    let invoices = f.invoices().await;
    assert_eq!(invoices.len(), 2, "{invoices:#?}");
    assert!(
        invoices
            .iter()
            .all(|i| i["status"] == "paid" && i["amount_paid"] == 6 * 350)
    );
}

#[tokio::test]
async fn a_message_that_is_not_ours_is_named_for_the_dead_letter_queue() {
    let f = fixture().await;
    let outcome = f
        .consumer
        .handle_message(&record("m-x", r#"{"entity": "nobody"}"#))
        .await;
    assert!(matches!(outcome, Outcome::Poison(_)), "{outcome:?}");
    let answer = f.consumer.handle(event(vec![record("m-x", "not json")])).await;
    assert_eq!(answer.batch_item_failures.len(), 1);
}

#[tokio::test]
async fn the_scheduler_enqueues_each_entity_once_and_invoices_nothing_itself() {
    // Given two servers due
    let f = fixture().await;
    let (first, due) = f.due_server().await;
    let (second, _) = f.due_server().await;
    // When the scheduler runs into a queue
    let queue = LocalInvoicingQueue::default();
    let enqueued = schedule_invoicing(f.documents.as_ref(), &queue, due).await.unwrap();
    // Then each entity is enqueued once, at the scheduler's time, and Stripe holds nothing yet
    assert_eq!(enqueued, 2);
    let mut entities: Vec<Entity> = queue.drain().iter().map(|m| m.entity).collect();
    entities.sort_by_key(|e| format!("{e:?}"));
    let mut wanted = vec![first, second];
    wanted.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(entities, wanted);
    assert!(f.invoices().await.is_empty());
}

#[tokio::test]
async fn entities_go_through_an_sqs_fifo_queue_once_each_and_are_invoiced_by_the_consumer() {
    // Given a FIFO queue in moto and three servers due
    billing_testing::moto_endpoint();
    let f = fixture().await;
    let sqs = aws_sdk_sqs::Client::new(&billing_adapters::aws::load_sdk_config().await);
    let name = format!("invoicing-{}.fifo", Uuid::new_v4().simple());
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let mut due = start();
    for _ in 0..3 {
        due = f.due_server().await.1;
    }
    // When the scheduler runs twice within the hour (its schedule retried)
    let queue = SqsInvoicingQueue::new(sqs.clone(), url.clone());
    assert_eq!(schedule_invoicing(f.documents.as_ref(), &queue, due).await.unwrap(), 3);
    assert_eq!(
        schedule_invoicing(f.documents.as_ref(), &queue, due + Duration::minutes(5))
            .await
            .unwrap(),
        3
    );
    // Then the queue holds one message per entity, each in its entity's group
    let mut received = Vec::new();
    for _ in 0..10 {
        let batch = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .unwrap();
        let messages = batch.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        received.extend(messages);
    }
    assert_eq!(received.len(), 3, "{received:?}");
    // And the consumer, handed them as Lambda would, invoices each entity once
    let records: Vec<SqsMessage> = received
        .iter()
        .map(|m| record(m.message_id().unwrap(), m.body().unwrap()))
        .collect();
    for message in &received {
        let parsed: InvoiceEntityMessage = serde_json::from_str(message.body().unwrap()).unwrap();
        let group = message
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId))
            .cloned();
        assert_eq!(group, Some(parsed.group()));
    }
    let answer = f.consumer.handle(event(records)).await;
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    let invoices = f.invoices().await;
    assert_eq!(invoices.len(), 3, "{invoices:#?}");
}
