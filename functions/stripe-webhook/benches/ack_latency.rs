//! Webhook acknowledgement latency: from a signed `customer.subscription.updated` arriving to
//! the 200 answer (verification, lookup by Stripe id, the once-only record and the subscription
//! write in one transaction), in-process against the embedded store and against DynamoDB in
//! moto.
//!
//! Baselines measured in the same run: one read of a subscription from the same embedded store,
//! the cheapest thing a handler does, and one raw `GetItem` round trip to moto.
//!
//! Needs moto (`AWS_ENDPOINT_URL`); run with `make bench`.

use std::sync::Arc;
use std::time::Instant;

use billing::store::{AuditEntry, Store};
use billing::subscription::SubscriptionChange;
use billing_testing::{ApiEvent, Timings, catalog, embedded_store, outbox, raw_get_item_round_trips};
use chrono::Utc;
use serde_json::{Value, json};
use stripe_webhook::StripeWebhook;
use uuid::Uuid;

const SECRET: &str = "whsec_bench";
const IN_PROCESS: usize = 2000;
const AGAINST_MOTO: usize = 200;
const SUBSCRIPTIONS: usize = 50;

fn webhook_on(store: Arc<dyn Store>) -> StripeWebhook {
    StripeWebhook {
        store,
        mailer: outbox(),
        catalog: catalog(),
        secret: SECRET.into(),
        clock: std::sync::Arc::new(billing_adapters::SystemClock),
        purchases: billing::plans::purchase::Purchases {
            documents: embedded_store(),
            stripe: Arc::new(billing_testing::FakeBilling::new(Utc::now())),
            trial_days: 0,
            prices: billing::plans::Prices::default(),
        },
    }
}

/// Subscriptions linked to Stripe subscriptions `sub_<tag><i>`; their ids.
async fn seed(store: &dyn Store, tag: &str) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..SUBSCRIPTIONS {
        let change = SubscriptionChange::from_json(
            json!({"user_id": Uuid::new_v4(), "email": "bench@example.com",
                   "stripe_customer": format!("cus_{tag}{i}"), "stripe_subscription": format!("sub_{tag}{i}")})
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
                &AuditEntry::between(None, &subscription, "bench", "create"),
            )
            .await
            .unwrap();
        ids.push(subscription.id);
    }
    ids
}

/// `runs` events, each newer than the last, over the seeded subscriptions in turn.
async fn measure(webhook: &StripeWebhook, tag: &str, runs: usize) -> Timings {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/stripe-customer-subscription-updated.json"
    );
    let sample: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let statuses = ["active", "past_due", "active", "unpaid"];
    let mut timings = Timings::default();
    for i in 0..runs {
        let mut event = sample.clone();
        event["id"] = json!(format!("evt_{tag}_{i:08}"));
        event["created"] = json!(1_795_255_200 + i as i64);
        event["data"]["object"]["id"] = json!(format!("sub_{tag}{}", i % SUBSCRIPTIONS));
        event["data"]["object"]["status"] = json!(statuses[i % statuses.len()]);
        let payload = event.to_string();
        let signature = billing::webhook::sign(payload.as_bytes(), SECRET, Utc::now().timestamp());
        let mut request = ApiEvent::sample("apigw-stripe-webhook.json")
            .header("stripe-signature", &signature)
            .build();
        *request.body_mut() = lambda_http::Body::Text(payload);
        let started = Instant::now();
        let response = webhook.handle(request).await;
        timings.push(started.elapsed());
        assert_eq!(response.status(), 200);
    }
    timings
}

#[tokio::main]
async fn main() {
    // In-process, embedded store
    let store: Arc<dyn Store> = embedded_store();
    let ids = seed(store.as_ref(), "bench").await;
    let mut store_read = Timings::default();
    for i in 0..IN_PROCESS {
        let started = Instant::now();
        store.get_subscription(ids[i % ids.len()]).await.unwrap();
        store_read.push(started.elapsed());
    }
    let embedded = measure(&webhook_on(store), "bench", IN_PROCESS).await;

    // Against moto
    let dynamo = Arc::new(billing_testing::moto_store("bench-webhook").await);
    let moto_ids = seed(dynamo.as_ref(), "moto").await;
    let moto_round_trip = raw_get_item_round_trips(&dynamo, &moto_ids, AGAINST_MOTO).await;
    let moto = measure(&webhook_on(dynamo), "moto", AGAINST_MOTO).await;

    print!(
        "{}",
        Timings::table(&[
            (
                "baseline: one subscription read (embedded store on file)",
                &store_read,
                &store_read
            ),
            (
                "webhook acknowledgement, embedded store on file (verify, look up, record + write)",
                &embedded,
                &store_read
            ),
            (
                "baseline: one raw GetItem round trip to moto",
                &moto_round_trip,
                &moto_round_trip
            ),
            ("webhook acknowledgement, DynamoDB in moto", &moto, &moto_round_trip),
        ])
    );
}
