//! Webhook acknowledgement latency, in-process against the embedded store: from a signed
//! `customer.subscription.updated` arriving to the 200 answer (verification, lookup by Stripe
//! id, the once-only record and the subscription write in one transaction).
//!
//! Reported against a baseline measured in the same run: one read of a subscription from the
//! same store, the cheapest thing a handler does.
//!
//! Run with `make bench` (or `cargo bench -p stripe-webhook --bench ack_latency`).

use std::sync::Arc;
use std::time::Instant;

use billing::mail::OutboxMailer;
use billing::store::{AuditEntry, Store};
use billing::subscription::SubscriptionChange;
use billing::testing::{ApiEvent, Timings, catalog, embedded_store};
use chrono::Utc;
use serde_json::{Value, json};
use stripe_webhook::StripeWebhook;
use uuid::Uuid;

const SECRET: &str = "whsec_bench";
const EVENTS: usize = 2000;

#[tokio::main]
async fn main() {
    let store: Arc<dyn Store> = embedded_store();
    let outbox =
        OutboxMailer::new(std::env::temp_dir().join(format!("bench-outbox-{}", Uuid::new_v4().simple()))).unwrap();
    let webhook = StripeWebhook {
        store: store.clone(),
        mailer: Arc::new(outbox),
        catalog: catalog(),
        secret: SECRET.into(),
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/stripe-customer-subscription-updated.json"
    );
    let sample: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();

    // 50 subscriptions linked to Stripe subscriptions
    let mut ids = Vec::new();
    for i in 0..50 {
        let user = Uuid::new_v4();
        let change = SubscriptionChange::from_json(
            json!({"user_id": user, "email": "bench@example.com", "stripe_customer": format!("cus_bench{i}"), "stripe_subscription": format!("sub_bench{i}")})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let subscription = change
            .new_subscription(catalog().get("pending").unwrap(), Utc::now(), Utc::now())
            .unwrap();
        store
            .create_subscription(
                &subscription,
                &AuditEntry::of(&subscription, "bench", "create", Value::Null),
            )
            .await
            .unwrap();
        ids.push(subscription.id);
    }

    let mut baseline = Timings::default();
    for i in 0..EVENTS {
        let started = Instant::now();
        store.get_subscription(ids[i % ids.len()]).await.unwrap();
        baseline.push(started.elapsed());
    }

    let statuses = ["active", "past_due", "active", "unpaid"];
    let mut latencies = Timings::default();
    for i in 0..EVENTS {
        let mut event = sample.clone();
        event["id"] = json!(format!("evt_bench_{i:08}"));
        event["created"] = json!(1_795_255_200 + i as i64);
        event["data"]["object"]["id"] = json!(format!("sub_bench{}", i % ids.len()));
        event["data"]["object"]["status"] = json!(statuses[i % statuses.len()]);
        let payload = event.to_string();
        let signature = billing::webhook::sign(payload.as_bytes(), SECRET, Utc::now().timestamp());
        let mut request = ApiEvent::sample("apigw-stripe-webhook.json")
            .header("stripe-signature", &signature)
            .build();
        *request.body_mut() = lambda_http::Body::Text(payload);
        let started = Instant::now();
        let response = webhook.handle(request).await;
        latencies.push(started.elapsed());
        assert_eq!(response.status(), 200);
    }
    println!("| measurement | p50 | p99 | p50 ratio to baseline |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        baseline.row("baseline: one subscription read (embedded store)", &baseline)
    );
    println!(
        "{}",
        latencies.row("webhook acknowledgement (verify, look up, record + write)", &baseline)
    );
}
