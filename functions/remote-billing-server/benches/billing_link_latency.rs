//! Warm latency of `POST /api/v1/remotes/server/billing`, the call a self-hosted server makes
//! when one of its administrators opens billing: the handler in-process (HTTP Basic checked
//! against the stored salted key hash, the realm's record read and brought up to date, an
//! access token sealed), against the embedded store in memory and against DynamoDB in moto.
//!
//! Baselines measured in the same run: one record read from the same store, and one raw
//! `GetItem` round trip to moto.
//!
//! Needs moto (`AWS_ENDPOINT_URL`); run with `make bench`.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use billing::remote::records::server_key;
use billing::store::DocumentStore;
use billing_testing::{ApiEvent, Timings, in_memory_store, outbox, raw_get_item_round_trips, remote_billing_on};
use lambda_http::http::StatusCode;
use remote_billing_server::RemoteServerApi;
use serde_json::json;
use uuid::Uuid;

const IN_PROCESS: usize = 2000;
const AGAINST_MOTO: usize = 200;
const SERVER_KEY: &str = "kq3v9X2mR7tLw8ZpN4bY6cH1dF5gJ0sA";

fn api_on(documents: Arc<dyn DocumentStore>) -> RemoteServerApi {
    RemoteServerApi {
        remote: remote_billing_on(documents, outbox(), 5, 20),
        cors: Default::default(),
        clock: std::sync::Arc::new(billing_adapters::SystemClock),
    }
}

async fn registered(api: &RemoteServerApi) -> Uuid {
    let server = Uuid::new_v4();
    let body = json!({"server_uuid": server, "server_key": SERVER_KEY, "hostname": "chat.example.org",
                      "contact_email": "admin@example.org"});
    let response = api
        .handle(
            ApiEvent::sample("apigw-remote-server-register.json")
                .body(&body)
                .build(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    server
}

/// `runs` billing links for one realm of one registered server: the steady state of a
/// returning realm.
async fn measure(api: &RemoteServerApi, runs: usize) -> Timings {
    let server = registered(api).await;
    let authorization = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{server}:{SERVER_KEY}"))
    );
    let body = json!({
        "user": {"uuid": Uuid::new_v4(), "email": "owner@example.org", "full_name": "Ada Owner"},
        "realm": {"uuid": Uuid::new_v4(), "host": "chat.example.org", "name": "Example Org"},
        "uri_scheme": "https://",
        "next_page": "billing",
    });
    let mut timings = Timings::default();
    for _ in 0..runs {
        let request = ApiEvent::sample("apigw-remote-server-billing.json")
            .header("authorization", &authorization)
            .body(&body)
            .request_id(&Uuid::new_v4().to_string())
            .build();
        let started = Instant::now();
        let response = api.handle(request).await;
        timings.push(started.elapsed());
        assert_eq!(response.status(), StatusCode::OK, "{:?}", response.body());
    }
    timings
}

#[tokio::main]
async fn main() {
    // In-process, embedded store in memory
    let store = in_memory_store();
    let api = api_on(store.clone());
    let embedded = measure(&api, IN_PROCESS).await;
    let server = registered(&api).await;
    let record_read = billing_testing::record_reads(store.as_ref(), &server_key(server), IN_PROCESS).await;

    // Against moto
    let dynamo = Arc::new(billing_testing::moto_store("bench-remote").await);
    let moto_round_trip = raw_get_item_round_trips(&dynamo, &[Uuid::new_v4()], AGAINST_MOTO).await;
    let moto = measure(&api_on(dynamo.clone()), AGAINST_MOTO).await;

    print!(
        "{}",
        Timings::table(&[
            (
                "baseline: one record read (embedded store in memory)",
                &record_read,
                &record_read
            ),
            ("billing link, embedded store in memory", &embedded, &record_read),
            (
                "baseline: one raw GetItem round trip to moto",
                &moto_round_trip,
                &moto_round_trip
            ),
            ("billing link, DynamoDB in moto", &moto, &moto_round_trip),
        ])
    );
}
