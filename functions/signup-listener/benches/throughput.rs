//! Throughput of the signup consumer, in-process against the embedded store and the Stripe
//! sandbox: batches of ten fresh profile-created events, one after another.
//!
//! Absolute times drift on shared machines, so the result is also given as a ratio to a
//! baseline measured in the same run: one round trip to the sandbox through the same Stripe
//! client (each provisioned event makes two Stripe calls and four store operations).
//!
//! Run with `make bench` (or `cargo bench -p signup-listener --bench throughput`).

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use billing::stripe::{Billing, RetryPolicy, StripeBilling};
use billing::testing::{Timings, catalog, embedded_store};
use serde_json::json;
use signup_listener::SignupListener;
use stripe_sandbox::PriceSpec;
use uuid::Uuid;

const BATCHES: usize = 50;
const BATCH: usize = 10;

fn batch() -> SqsEvent {
    let mut event = SqsEvent::default();
    for _ in 0..BATCH {
        let user = Uuid::new_v4();
        let body = json!({"type": "profile.created", "event_id": Uuid::new_v4(), "user_id": user,
                          "email": format!("{}@example.com", user.simple()), "created_at": chrono::Utc::now().to_rfc3339()});
        let message: SqsMessage = serde_json::from_value(
            json!({"messageId": Uuid::new_v4().to_string(), "body": body.to_string(),
            "attributes": {}, "messageAttributes": {}}),
        )
        .expect("an SQS record");
        event.records.push(message);
    }
    event
}

#[tokio::main]
async fn main() {
    let prices: Vec<_> = catalog()
        .plans()
        .iter()
        .map(|p| PriceSpec::recurring(&p.stripe_price, 0, "month"))
        .collect();
    let sandbox = stripe_sandbox::start(0, &prices).await.expect("a sandbox");
    let billing = Arc::new(
        StripeBilling::new("sk_test_bench", Some(&sandbox.base_url()), RetryPolicy::default()).expect("a client"),
    );
    let listener = SignupListener {
        store: embedded_store(),
        billing: billing.clone(),
        catalog: catalog(),
    };

    // Baseline: one Stripe round trip through the same client (a customer creation).
    let mut baseline = Timings::default();
    for i in 0..200 {
        let started = Instant::now();
        billing
            .create_customer(
                Uuid::new_v4(),
                "baseline@example.com",
                &format!("baseline-{i}-{}", Uuid::new_v4()),
            )
            .await
            .expect("baseline call");
        baseline.push(started.elapsed());
    }

    // Warm up, then measure.
    for _ in 0..3 {
        listener.handle(batch()).await;
    }
    let mut per_batch = Timings::default();
    let started = Instant::now();
    for _ in 0..BATCHES {
        let event = batch();
        let t = Instant::now();
        let response = listener.handle(event).await;
        per_batch.push(t.elapsed());
        assert!(
            response.batch_item_failures.is_empty(),
            "a batch failed: {:?}",
            response.batch_item_failures
        );
    }
    let total = started.elapsed();
    let events_per_second = (BATCHES * BATCH) as f64 / total.as_secs_f64();
    println!("| measurement | p50 | p99 | p50 ratio to its baseline |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        baseline.row(
            "baseline: one Stripe round trip (sandbox, a customer creation)",
            &baseline
        )
    );
    println!(
        "{}",
        per_batch.row(
            &format!("batch of {BATCH} signups (embedded store, sandbox)"),
            &baseline
        )
    );
    println!();
    println!("Throughput: {events_per_second:.0} events/s, {BATCHES} batches of {BATCH} one after another.");
}
