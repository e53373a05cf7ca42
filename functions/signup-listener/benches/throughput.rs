//! Throughput of the signup consumer, in-process with the Stripe sandbox, against the embedded
//! store and against DynamoDB in moto: batches of ten fresh profile-created events, one after
//! another.
//!
//! Absolute times drift on shared machines, so the results are also given as ratios to
//! baselines measured in the same run: one round trip to the sandbox through the same Stripe
//! client (each provisioned event makes two Stripe calls and four store operations), and one raw
//! `GetItem` round trip to moto.
//!
//! Needs moto (`AWS_ENDPOINT_URL`); run with `make bench`.

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use billing::store::Store;
use billing::stripe::Billing;
use billing_adapters::RetryPolicy;
use billing_adapters::StripeBilling;
use billing_testing::{Timings, catalog, embedded_store, raw_get_item_round_trips};
use serde_json::json;
use signup_listener::SignupListener;
use stripe_sandbox::PriceSpec;
use uuid::Uuid;

const BATCHES: usize = 50;
const BATCHES_AGAINST_MOTO: usize = 10;
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

/// Per-batch latencies of `batches` batches after three to warm up, and the events per second
/// over the measured batches.
async fn measure(listener: &SignupListener, batches: usize) -> (Timings, f64) {
    for _ in 0..3 {
        listener.handle(batch()).await;
    }
    let mut per_batch = Timings::default();
    let started = Instant::now();
    for _ in 0..batches {
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
    let events_per_second = (batches * BATCH) as f64 / started.elapsed().as_secs_f64();
    (per_batch, events_per_second)
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
    let listener = |store: Arc<dyn Store>| SignupListener {
        store,
        billing: billing.clone(),
        catalog: catalog(),
        clock: std::sync::Arc::new(billing_adapters::SystemClock),
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
    let (embedded, embedded_rate) = measure(&listener(embedded_store()), BATCHES).await;

    // Against moto
    let dynamo = Arc::new(billing_testing::moto_store("bench-signup").await);
    let moto_round_trip = raw_get_item_round_trips(&dynamo, &[Uuid::new_v4()], 200).await;
    let (moto, moto_rate) = measure(&listener(dynamo.clone()), BATCHES_AGAINST_MOTO).await;

    let embedded_row = format!("batch of {BATCH} signups, embedded store on file + sandbox");
    let moto_row = format!("batch of {BATCH} signups, DynamoDB in moto + sandbox");
    print!(
        "{}",
        Timings::table(&[
            (
                "baseline: one Stripe round trip (sandbox, a customer creation)",
                &baseline,
                &baseline
            ),
            (&embedded_row, &embedded, &baseline),
            (
                "baseline: one raw GetItem round trip to moto",
                &moto_round_trip,
                &moto_round_trip
            ),
            (&moto_row, &moto, &moto_round_trip),
        ])
    );
    println!();
    println!(
        "Throughput, batches one after another: {embedded_rate:.0} events/s on the embedded store, \
         {moto_rate:.0} events/s against moto."
    );
}
