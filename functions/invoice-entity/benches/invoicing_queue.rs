//! Invoicing through the queue at scale: N servers due (10,000 by default,
//! `INVOICING_QUEUE_BENCH_ENTITIES` to change it), the scheduler enqueueing one message per
//! entity, and `INVOICING_QUEUE_BENCH_CONCURRENCY` consumers at once (20, the template's
//! `InvoicingMaximumConcurrency`) taking them, with the Stripe sandbox answering every call in
//! 300 ms (`INVOICING_QUEUE_BENCH_LATENCY_MS`), as Stripe's live API roughly does. Reports
//! entities a minute, the Stripe requests a second that made (against the live limit of 100),
//! and the entities a day that rate allows.

use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use aws_lambda_events::event::sqs::SqsMessage;
use billing::plans::invoicing::schedule_invoicing;
use billing::store::DocumentStore;
use billing_adapters::LocalInvoicingQueue;
use chrono::{DateTime, Duration, TimeZone, Utc};
use invoice_entity::{InvoiceEntity, Outcome};

/// Stripe's documented live-mode limit, requests a second.
const STRIPE_LIVE_LIMIT: f64 = 100.0;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn record(index: usize, body: String) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(format!("bench-{index}"));
    message.body = Some(body);
    message
}

#[tokio::main]
async fn main() {
    let entities = setting("INVOICING_QUEUE_BENCH_ENTITIES", 10_000) as usize;
    let concurrency = setting("INVOICING_QUEUE_BENCH_CONCURRENCY", 20) as usize;
    let latency = StdDuration::from_millis(setting("INVOICING_QUEUE_BENCH_LATENCY_MS", 300));
    let (sandbox, billing) = billing_testing::sandbox_billing(350, billing_testing::fast_retries()).await;
    let documents: Arc<dyn DocumentStore> = billing_testing::in_memory_store();
    // Seeding is not measured: the customers and cards at no latency, many at once.
    let seeds: Vec<_> = (0..entities).collect();
    for chunk in seeds.chunks(64) {
        let work = chunk
            .iter()
            .map(|_| billing_testing::due_paying_server(documents.as_ref(), billing.as_ref(), 6, start()));
        futures_util::future::join_all(work).await;
    }
    let consumer = Arc::new(InvoiceEntity {
        documents: documents.clone(),
        billing: billing.clone(),
    });
    let due = start() + Duration::days(31);
    let queue = LocalInvoicingQueue::default();
    sandbox.sandbox.set_latency(latency);
    let requests_before = sandbox.sandbox.requests_served();
    let started = Instant::now();
    let enqueued = schedule_invoicing(documents.as_ref(), &queue, due).await.unwrap();
    let scheduled_in = started.elapsed();
    let messages = Arc::new(Mutex::new(
        queue
            .drain()
            .into_iter()
            .enumerate()
            .map(|(index, message)| record(index, serde_json::to_string(&message).unwrap()))
            .collect::<Vec<_>>(),
    ));
    let failures = Arc::new(Mutex::new(0usize));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (messages, consumer, failures) = (messages.clone(), consumer.clone(), failures.clone());
            tokio::spawn(async move {
                loop {
                    let Some(message) = messages.lock().unwrap().pop() else {
                        break;
                    };
                    if !matches!(consumer.handle_message(&message).await, Outcome::Done(_)) {
                        *failures.lock().unwrap() += 1;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = (sandbox.sandbox.requests_served() - requests_before) as f64;
    let failures = *failures.lock().unwrap();
    assert_eq!(enqueued, entities, "every due entity enqueued once");
    assert_eq!(failures, 0, "every entity invoiced");
    let per_minute = entities as f64 / elapsed * 60.0;
    let rate = requests / elapsed;
    let per_entity = requests / entities as f64;
    let per_day_at_limit = STRIPE_LIVE_LIMIT / per_entity * 86_400.0;
    println!(
        "| entities | consumers | Stripe latency | scheduling | run | entities a minute | Stripe requests an entity | Stripe requests a second | ratio to the live limit (100/s) | entities a day at the limit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {entities} | {concurrency} | {} ms | {:.2} s | {elapsed:.0} s | {per_minute:.0} | {per_entity:.1} | {rate:.1} | {:.2} | {per_day_at_limit:.0} |",
        latency.as_millis(),
        scheduled_in.as_secs_f64(),
        rate / STRIPE_LIVE_LIMIT,
    );
}
