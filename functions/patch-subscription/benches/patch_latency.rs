//! Warm latency of `PATCH /subscriptions/{id}`: the handler called in-process, each call
//! turning `cancel_at_period_end` over (one Stripe update through the sandbox on loopback, one
//! conditional write with its audit record), against the embedded store in memory (the
//! handler's own cost), on its file (plus the disk's fsync), and against moto.
//!
//! Baselines measured in the same run, the two things a PATCH is made of: one Stripe update
//! through the same client, and one conditional write with its audit record to the embedded
//! store's file; for moto, one raw `GetItem` round trip.
//!
//! Needs moto (`AWS_ENDPOINT_URL`); run with `make bench`.

use std::sync::Arc;
use std::time::Instant;

use billing::provisioning::{Provision, provision};
use billing::store::{AuditEntry, Store};
use billing::stripe::Billing;
use billing::subscription::{Subscription, SubscriptionChange};
use billing_adapters::RetryPolicy;
use billing_adapters::StripeBilling;
use billing_http::Cors;
use billing_testing::{ApiEvent, Timings, catalog, embedded_store, in_memory_store, raw_get_item_round_trips};
use chrono::Utc;
use patch_subscription::PatchSubscription;
use serde_json::json;
use uuid::Uuid;

const IN_PROCESS: usize = 1000;
const AGAINST_MOTO: usize = 200;

async fn subscriber(function: &PatchSubscription) -> Subscription {
    let user = Uuid::new_v4();
    let change = SubscriptionChange::from_json(
        json!({"user_id": user, "email": "bench@example.com"})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let catalog = catalog();
    let request = Provision {
        change: &change,
        plan: catalog.get("pending").unwrap(),
        trial_start: None,
        actor: "system:bench",
        now: Utc::now(),
    };
    provision(function.store.as_ref(), function.billing.as_ref(), request)
        .await
        .unwrap()
}

async fn measure(function: &PatchSubscription, runs: usize) -> Timings {
    let subscription = subscriber(function).await;
    let id = subscription.id;
    let mut timings = Timings::default();
    for i in 0..runs {
        let request = ApiEvent::sample("apigw-patch-subscription.json")
            .caller(id, "subscriptions")
            .path_id(&id.to_string())
            .body(&json!({"cancel_at_period_end": i % 2 == 0}))
            // Each request has its own id, as in API Gateway: Stripe idempotency keys derive from it.
            .request_id(&Uuid::new_v4().to_string())
            .build();
        let mut request = request;
        request.headers_mut().remove("if-match");
        let started = Instant::now();
        let response = function.handle(request).await;
        timings.push(started.elapsed());
        assert_eq!(response.status(), 200, "{:?}", response.body());
    }
    timings
}

/// One Stripe update per run through `billing`, as a PATCH of the flag makes it.
async fn stripe_updates(billing: &StripeBilling, stripe_subscription: &str, runs: usize) -> Timings {
    let mut timings = Timings::default();
    for i in 0..runs {
        let key = format!("bench-update-{}", Uuid::new_v4());
        let started = Instant::now();
        billing
            .set_cancel_at_period_end(stripe_subscription, i % 2 == 0, &key)
            .await
            .unwrap();
        timings.push(started.elapsed());
    }
    timings
}

/// One conditional write with its audit record per run, as a PATCH stores its change.
async fn store_writes(store: &dyn Store, subscription: Subscription, runs: usize) -> Timings {
    let mut current = subscription;
    let mut timings = Timings::default();
    for i in 0..runs {
        let change =
            SubscriptionChange::from_json(json!({"cancel_at_period_end": i % 2 == 0}).to_string().as_bytes()).unwrap();
        let next = change.apply(&current, Utc::now()).unwrap_or_else(|| current.clone());
        let audit = AuditEntry::between(Some(&current), &next, "system:bench", "patch");
        let started = Instant::now();
        store.update_subscription(&next, current.version, &audit).await.unwrap();
        timings.push(started.elapsed());
        current = next;
    }
    timings
}

#[tokio::main]
async fn main() {
    // Kept until the end of main: dropping it stops the sandbox.
    let (_sandbox, billing) = billing_testing::sandbox_billing(800, RetryPolicy::default()).await;
    let function = |store: Arc<dyn Store>| PatchSubscription {
        store,
        billing: billing.clone(),
        catalog: catalog(),
        cors: Cors::default(),
        clock: std::sync::Arc::new(billing_adapters::SystemClock),
        idempotency: billing_http::idempotent::Idempotency {
            documents: billing_testing::in_memory_store(),
            clock: std::sync::Arc::new(billing_adapters::SystemClock),
        },
    };

    // In-process: the handler's own cost (store in memory), then with the store's file.
    let in_memory = function(in_memory_store());
    let handler_in_memory = measure(&in_memory, IN_PROCESS).await;
    let on_file = function(embedded_store());
    let handler_on_file = measure(&on_file, IN_PROCESS).await;
    let some = subscriber(&on_file).await;
    let stripe_update = stripe_updates(&billing, some.stripe_subscription.as_deref().unwrap(), IN_PROCESS).await;
    let file_write = store_writes(on_file.store.as_ref(), some, IN_PROCESS).await;

    // Against moto
    let dynamo = Arc::new(billing_testing::moto_store("bench-patch").await);
    let against_moto = function(dynamo.clone());
    let known = subscriber(&against_moto).await;
    let moto_round_trip = raw_get_item_round_trips(&dynamo, &[known.id], AGAINST_MOTO).await;
    let handler_moto = measure(&against_moto, AGAINST_MOTO).await;

    print!(
        "{}",
        Timings::table(&[
            (
                "baseline: one Stripe update (sandbox on loopback)",
                &stripe_update,
                &stripe_update
            ),
            (
                "PATCH handler, embedded store in memory + sandbox (target: p99 < 2 ms)",
                &handler_in_memory,
                &stripe_update
            ),
            (
                "baseline: one conditional write + audit record, embedded store on file (fsync)",
                &file_write,
                &file_write
            ),
            (
                "PATCH handler, embedded store on file + sandbox",
                &handler_on_file,
                &file_write
            ),
            (
                "baseline: one raw GetItem round trip to moto",
                &moto_round_trip,
                &moto_round_trip
            ),
            (
                "PATCH handler, DynamoDB in moto + sandbox",
                &handler_moto,
                &moto_round_trip
            ),
        ])
    );
}
