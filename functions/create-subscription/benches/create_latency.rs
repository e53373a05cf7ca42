//! Warm latency of `POST /subscriptions` by an administrator: the handler in-process, each
//! call for a new user (a Stripe customer and a trialing subscription through the sandbox on
//! loopback, then the conditional create with its audit record), against the embedded store in
//! memory and against DynamoDB in moto.
//!
//! Baselines measured in the same run: one Stripe customer creation through the same client
//! (a creation makes two such calls), and one raw `GetItem` round trip to moto.
//!
//! Needs moto (`AWS_ENDPOINT_URL`); run with `make bench`.

use std::sync::Arc;
use std::time::Instant;

use billing::store::Store;
use billing::stripe::Billing;
use billing_adapters::RetryPolicy;
use billing_http::Cors;
use billing_testing::{ApiEvent, Timings, catalog, in_memory_store, raw_get_item_round_trips};
use create_subscription::CreateSubscription;
use serde_json::json;
use uuid::Uuid;

const IN_PROCESS: usize = 500;
const AGAINST_MOTO: usize = 100;

async fn measure(function: &CreateSubscription, runs: usize) -> Timings {
    let mut timings = Timings::default();
    for _ in 0..runs {
        let user = Uuid::new_v4();
        let request = ApiEvent::sample("apigw-create-subscription.json")
            .caller(Uuid::new_v4(), "subscriptions subscriptions_admin")
            .body(&json!({"user_id": user, "email": format!("{}@example.com", user.simple())}))
            .request_id(&Uuid::new_v4().to_string())
            .build();
        let started = Instant::now();
        let response = function.handle(request).await;
        timings.push(started.elapsed());
        assert_eq!(response.status(), 201, "{:?}", response.body());
    }
    timings
}

#[tokio::main]
async fn main() {
    // Kept until the end of main: dropping it stops the sandbox.
    let (_sandbox, billing) = billing_testing::sandbox_billing(800, RetryPolicy::default()).await;
    let function = |store: Arc<dyn Store>| CreateSubscription {
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

    // In-process, embedded store in memory
    let embedded = measure(&function(in_memory_store()), IN_PROCESS).await;
    let mut customer_creation = Timings::default();
    for _ in 0..IN_PROCESS {
        let user = Uuid::new_v4();
        let started = Instant::now();
        billing
            .create_customer(user, "baseline@example.com", &format!("bench-customer-{user}"))
            .await
            .unwrap();
        customer_creation.push(started.elapsed());
    }

    // Against moto
    let dynamo = Arc::new(billing_testing::moto_store("bench-create").await);
    let moto_round_trip = raw_get_item_round_trips(&dynamo, &[Uuid::new_v4()], AGAINST_MOTO).await;
    let moto = measure(&function(dynamo.clone()), AGAINST_MOTO).await;

    print!(
        "{}",
        Timings::table(&[
            (
                "baseline: one Stripe customer creation (sandbox on loopback)",
                &customer_creation,
                &customer_creation
            ),
            (
                "create handler, embedded store in memory + sandbox (two Stripe calls)",
                &embedded,
                &customer_creation
            ),
            (
                "baseline: one raw GetItem round trip to moto",
                &moto_round_trip,
                &moto_round_trip
            ),
            ("create handler, DynamoDB in moto + sandbox", &moto, &moto_round_trip),
        ])
    );
}
