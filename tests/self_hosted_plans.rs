//! Self-hosted plans end to end: HTTP to the local server in `--aws` mode (the plans, ledger and
//! uploads in moto's DynamoDB), Stripe in the sandbox, time moved with `POST /_local/clock`. A
//! server's uploads move its realm's license ledger, and the daily invoicing run
//! (`POST /_local/invoice-plans`) bills the ledger in Stripe.

use billing::plans::{self, Entity, Schedule};
use billing::stripe::Billing;
use bundle_tests::{billing_for, register_remote_server, start_server_against_moto, stripe_get};
use chrono::{Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

fn audit_row(id: u64, realm: Uuid, at: chrono::DateTime<Utc>, users: u32) -> Value {
    json!({"id": id, "realm": realm, "event_type": 101, "event_time": at.timestamp(),
           "extra_data": {"10": {"11": {"100": 1, "400": users - 1}}}})
}

async fn post(url: String, authorization: Option<String>, body: &Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).json(body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn uploads_move_the_ledger_and_the_invoicing_run_bills_it_a_month_later() {
    let server = start_server_against_moto().await;
    let base = format!("http://{}", server.address);
    let sandbox = server.sandbox.as_ref().unwrap();
    let remote_server = register_remote_server(&base, "admin@example.org").await;
    let realm = Uuid::new_v4();
    let analytics = format!("{base}/api/v1/remotes/server/analytics");
    // Given the realm registered by a first upload, on a basic plan bought for 6 licenses that
    // follow its users, paid by card (stored as the upgrade page stores it)
    let listing = json!({"uuid": realm, "host": "chat.example.org", "name": "Example Org"});
    let (status, body) = post(
        analytics.clone(),
        Some(remote_server.basic()),
        &json!({"realms": [listing]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stripe = billing_for(sandbox);
    let customer = stripe
        .create_customer(realm, "owner@example.org", &format!("{realm}:customer"))
        .await
        .unwrap();
    stripe
        .attach_default_payment_method(&customer.id, "pm_card_visa", &format!("{realm}:card"))
        .await
        .unwrap();
    let documents = server.remote.records.documents().clone();
    let start = Utc::now();
    billing_testing::store_automatic_basic_plan(
        documents.as_ref(),
        Entity::Realm(realm),
        6,
        Some(customer.id.clone()),
        start,
    )
    .await;
    // When the server uploads 23, 20 and 21 users over the month
    let rows = json!({"realms": [], "realm_audit_logs": [
        audit_row(1, realm, start + Duration::days(4), 23),
        audit_row(2, realm, start + Duration::days(9), 20),
        audit_row(3, realm, start + Duration::days(19), 21)]});
    let (status, body) = post(analytics.clone(), Some(remote_server.basic()), &rows).await;
    assert_eq!((status, &body["ledger_rows"]), (200, &json!(3)), "{body}");
    // Then the administrators' view has API.md's ledger
    let admin = server
        .keys
        .mint(Uuid::new_v4(), "subscriptions subscriptions_admin", Duration::hours(1));
    let view: Value = reqwest::Client::new()
        .get(format!("{base}/remote-realms/{realm}/billing"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ledger: Vec<(bool, u64, u64)> = view["billing"][0]["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["is_renewal"].as_bool().unwrap(),
                r["licenses"].as_u64().unwrap(),
                r["licenses_at_next_renewal"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ledger,
        [(true, 6, 6), (false, 23, 23), (false, 23, 20), (false, 23, 21)]
    );
    // When a month has passed, the server has uploaded again and the invoicing job runs
    let (status, _) = post(
        format!("{base}/_local/clock"),
        None,
        &json!({"offset_seconds": 32 * 86_400}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = post(analytics, Some(remote_server.basic()), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, report) = post(format!("{base}/_local/invoice-plans"), None, &json!({})).await;
    assert_eq!(status, 200, "{report}");
    // Then one invoice bills the 17 added licenses for the rest of the first period and the
    // renewal of 21, and the ledger has its renewal
    let outcome = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["entity"]["uuid"] == json!(realm))
        .cloned()
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(outcome["outcome"], "invoiced", "{outcome}");
    let invoice = stripe_get(
        sandbox,
        &format!("/v1/invoices/{}", outcome["invoice"].as_str().unwrap()),
    )
    .await;
    let period_end = plans::next_period_start(start, Schedule::Monthly, start);
    let whole = (period_end - start).num_seconds() as f64;
    let left = (period_end - (start + Duration::days(4))).num_seconds() as f64;
    let prorated = (350.0 * left / whole + 0.5) as i64;
    assert_eq!(
        invoice["amount_due"].as_i64().unwrap(),
        17 * prorated + 21 * 350,
        "{invoice}"
    );
    assert_eq!(invoice["customer"], customer.id.as_str());
    let book = plans::stored::load(documents.as_ref(), Entity::Realm(realm), Utc::now())
        .await
        .unwrap()
        .book;
    assert_eq!(book.ledger.last().map(|r| (r.is_renewal, r.licenses)), Some((true, 21)));
    post(format!("{base}/_local/clock"), None, &json!({"offset_seconds": 0})).await;
}
