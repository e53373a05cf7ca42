//! Warm latency of `GET /remote-billing-login/{token}`, the first page a self-hosted server's
//! administrator sees: the handler in-process (the access token opened, the server's record
//! checked, the email form rendered with its CSRF token), against the embedded store in memory
//! and against DynamoDB in moto.
//!
//! Baselines measured in the same run: one record read from the same store, and one raw
//! `GetItem` round trip to moto.
//!
//! Needs moto (`AWS_ENDPOINT_URL`); run with `make bench`.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use billing::remote::records::server_key;
use billing::remote::{BillingLinkRequest, RegisterRequest, RemoteBilling};
use billing::store::DocumentStore;
use billing_testing::{ApiEvent, Timings, in_memory_store, outbox, raw_get_item_round_trips, remote_billing_on};
use chrono::Utc;
use lambda_http::http::StatusCode;
use remote_billing_pages::RemoteBillingPages;
use serde_json::json;
use uuid::Uuid;

const IN_PROCESS: usize = 2000;
const AGAINST_MOTO: usize = 200;
const SERVER_KEY: &str = "kq3v9X2mR7tLw8ZpN4bY6cH1dF5gJ0sA";
const LOGIN_ROUTE: &str = "GET /remote-billing-login/{token}";

/// A registered server and the access token of a billing link it asked for.
async fn access_token(remote: &RemoteBilling) -> (Uuid, String) {
    let server_uuid = Uuid::new_v4();
    let now = Utc::now();
    remote
        .register_server(
            RegisterRequest {
                server_uuid: server_uuid.to_string(),
                server_key: SERVER_KEY.into(),
                hostname: "chat.example.org".into(),
                contact_email: "admin@example.org".into(),
                read_errors: Vec::new(),
            },
            None,
            now,
        )
        .await
        .unwrap();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{server_uuid}:{SERVER_KEY}"))
    );
    let server = remote.authenticate(Some(&basic), now).await.unwrap();
    let request: BillingLinkRequest = serde_json::from_value(json!({
        "user": {"uuid": Uuid::new_v4(), "email": "owner@example.org", "full_name": "Ada Owner"},
        "realm": {"uuid": Uuid::new_v4(), "host": "chat.example.org", "name": "Example Org"},
        "uri_scheme": "https://",
        "next_page": "billing",
    }))
    .unwrap();
    let url = remote.billing_link(&server, request, now).await.unwrap();
    let token = url.rsplit('/').next().unwrap().to_owned();
    (server_uuid, token)
}

async fn measure(pages: &RemoteBillingPages, token: &str, runs: usize) -> Timings {
    let mut timings = Timings::default();
    for _ in 0..runs {
        let request = ApiEvent::sample("apigw-remote-billing-login.json")
            .route(
                LOGIN_ROUTE,
                &format!("/remote-billing-login/{token}"),
                &[("token", token)],
            )
            .request_id(&Uuid::new_v4().to_string())
            .build();
        let started = Instant::now();
        let response = pages.handle(request).await;
        timings.push(started.elapsed());
        assert_eq!(response.status(), StatusCode::OK, "{:?}", response.body());
    }
    timings
}

fn pages_on(documents: Arc<dyn DocumentStore>) -> RemoteBillingPages {
    RemoteBillingPages {
        purchases: billing::plans::purchase::Purchases {
            documents: documents.clone(),
            stripe: Arc::new(billing_testing::FakeBilling::new(chrono::Utc::now())),
            trial_days: 0,
            prices: billing::plans::Prices::default(),
        },
        checkout_origin: "https://checkout.stripe.com".into(),
        remote: remote_billing_on(documents, outbox(), 5, 20),
        clock: std::sync::Arc::new(billing_adapters::SystemClock),
    }
}

#[tokio::main]
async fn main() {
    // In-process, embedded store in memory
    let store = in_memory_store();
    let pages = pages_on(store.clone());
    let (server, token) = access_token(&pages.remote).await;
    let embedded = measure(&pages, &token, IN_PROCESS).await;
    let record_read = billing_testing::record_reads(store.as_ref(), &server_key(server), IN_PROCESS).await;

    // Against moto
    let dynamo = Arc::new(billing_testing::moto_store("bench-pages").await);
    let pages = pages_on(dynamo.clone());
    let (_, token) = access_token(&pages.remote).await;
    let moto_round_trip = raw_get_item_round_trips(&dynamo, &[Uuid::new_v4()], AGAINST_MOTO).await;
    let moto = measure(&pages, &token, AGAINST_MOTO).await;

    print!(
        "{}",
        Timings::table(&[
            (
                "baseline: one record read (embedded store in memory)",
                &record_read,
                &record_read
            ),
            ("login page, embedded store in memory", &embedded, &record_read),
            (
                "baseline: one raw GetItem round trip to moto",
                &moto_round_trip,
                &moto_round_trip
            ),
            ("login page, DynamoDB in moto", &moto, &moto_round_trip),
        ])
    );
}
