//! Warm latency of `PATCH /subscriptions/{id}`: the handler called in-process, each call
//! turning `cancel_at_period_end` over (one Stripe update through the sandbox on loopback, one
//! conditional write with its audit record), against the embedded store and against moto.
//!
//! Baselines measured in the same run: one Stripe round trip to the sandbox (a subscription
//! read through the same kind of HTTP client), and one raw `GetItem` round trip to moto.
//!
//! Needs moto (`AWS_ENDPOINT_URL`); run with `make bench`.

use std::sync::Arc;
use std::time::Instant;

use billing::http::Cors;
use billing::provisioning::{Provision, provision};
use billing::store::{DynamoStore, Store};
use billing::stripe::{RetryPolicy, StripeBilling};
use billing::subscription::{Subscription, SubscriptionChange};
use billing::testing::{ApiEvent, Timings, catalog, embedded_store};
use chrono::Utc;
use patch_subscription::PatchSubscription;
use serde_json::json;
use stripe_sandbox::PriceSpec;
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

#[tokio::main]
async fn main() {
    let prices: Vec<_> = catalog()
        .plans()
        .iter()
        .map(|p| PriceSpec::recurring(&p.stripe_price, 800, "month"))
        .collect();
    let sandbox = stripe_sandbox::start(0, &prices).await.unwrap();
    let billing =
        Arc::new(StripeBilling::new("sk_test_bench", Some(&sandbox.base_url()), RetryPolicy::default()).unwrap());

    // In-process, embedded store
    let store: Arc<dyn Store> = embedded_store();
    let function = PatchSubscription {
        store,
        billing: billing.clone(),
        catalog: catalog(),
        cors: Cors::default(),
    };
    let embedded = measure(&function, IN_PROCESS).await;
    let some = subscriber(&function).await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}v1/subscriptions/{}",
        sandbox.base_url(),
        some.stripe_subscription.as_deref().unwrap()
    );
    let mut stripe_round_trip = Timings::default();
    for _ in 0..IN_PROCESS {
        let started = Instant::now();
        let response = http.get(&url).bearer_auth("sk_test_bench").send().await.unwrap();
        response.bytes().await.unwrap();
        stripe_round_trip.push(started.elapsed());
    }

    // Against moto
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL: this bench needs moto; run `make bench`");
    let dynamo = Arc::new(DynamoStore::connect(format!("bench-patch-{}", Uuid::new_v4().simple())).await);
    dynamo.ensure_table().await.unwrap();
    let mut moto_round_trip = Timings::default();
    for _ in 0..AGAINST_MOTO {
        let started = Instant::now();
        dynamo
            .client()
            .get_item()
            .table_name(dynamo.table())
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S("SUBSCRIPTION#none".into()),
            )
            .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("STATE".into()))
            .send()
            .await
            .unwrap();
        moto_round_trip.push(started.elapsed());
    }
    let function = PatchSubscription {
        store: dynamo.clone(),
        billing,
        catalog: catalog(),
        cors: Cors::default(),
    };
    let moto = measure(&function, AGAINST_MOTO).await;

    println!("| measurement | p50 | p99 | p50 ratio to its baseline |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        stripe_round_trip.row(
            "baseline: one Stripe round trip (sandbox on loopback)",
            &stripe_round_trip
        )
    );
    println!(
        "{}",
        embedded.row(
            "PATCH handler, embedded store + sandbox (target: p99 < 2 ms)",
            &stripe_round_trip
        )
    );
    println!(
        "{}",
        moto_round_trip.row("baseline: one raw GetItem round trip to moto", &moto_round_trip)
    );
    println!(
        "{}",
        moto.row("PATCH handler, DynamoDB in moto + sandbox", &moto_round_trip)
    );
}
