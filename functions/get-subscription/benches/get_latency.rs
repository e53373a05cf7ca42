//! Warm latency of `GET /subscriptions/{id}`: the handler called in-process, as a warm Lambda
//! calls it, against the embedded store and against DynamoDB in moto.
//!
//! Baselines measured in the same run: one read from the same store directly (embedded), and
//! one raw `GetItem` round trip to moto (the emulator's own cost, which the handler cannot beat).
//!
//! Needs moto (`AWS_ENDPOINT_URL`); run with `make bench`.

use std::sync::Arc;
use std::time::Instant;

use billing::store::{AuditEntry, Store};
use billing_http::Cors;
use billing_testing::{ApiEvent, Timings, embedded_store, new_subscription, raw_get_item_round_trips};
use get_subscription::GetSubscription;
use uuid::Uuid;

const IN_PROCESS: usize = 5000;
const AGAINST_MOTO: usize = 300;

async fn seed(store: &dyn Store, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let subscription = new_subscription(None);
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

async fn measure(function: &GetSubscription, ids: &[Uuid], runs: usize) -> Timings {
    let mut timings = Timings::default();
    for i in 0..runs {
        let id = ids[i % ids.len()];
        let request = ApiEvent::sample("apigw-get-subscription.json")
            .caller(id, "subscriptions")
            .path_id(&id.to_string())
            .build();
        let started = Instant::now();
        let response = function.handle(request).await;
        timings.push(started.elapsed());
        assert_eq!(response.status(), 200);
    }
    timings
}

#[tokio::main]
async fn main() {
    // In-process, embedded store
    let store: Arc<dyn Store> = embedded_store();
    let ids = seed(store.as_ref(), 50).await;
    let mut store_read = Timings::default();
    for i in 0..IN_PROCESS {
        let started = Instant::now();
        store.get_subscription(ids[i % ids.len()]).await.unwrap();
        store_read.push(started.elapsed());
    }
    let function = GetSubscription {
        store: store.clone(),
        cors: Cors::default(),
    };
    let embedded = measure(&function, &ids, IN_PROCESS).await;

    // Against moto
    let dynamo = Arc::new(billing_testing::moto_store("bench-get").await);
    let moto_ids = seed(dynamo.as_ref(), 5).await;
    let round_trip = raw_get_item_round_trips(&dynamo, &moto_ids, AGAINST_MOTO).await;
    let function = GetSubscription {
        store: dynamo.clone(),
        cors: Cors::default(),
    };
    let moto = measure(&function, &moto_ids, AGAINST_MOTO).await;

    print!(
        "{}",
        Timings::table(&[
            (
                "baseline: one subscription read (embedded store)",
                &store_read,
                &store_read
            ),
            (
                "GET handler, embedded store (target: p99 < 1 ms)",
                &embedded,
                &store_read
            ),
            ("baseline: one raw GetItem round trip to moto", &round_trip, &round_trip),
            ("GET handler, DynamoDB in moto", &moto, &round_trip),
        ])
    );
}
