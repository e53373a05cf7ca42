//! POST /subscriptions in-process, against the embedded store and the Stripe sandbox.

use std::sync::Arc;

use billing::store::Store;
use billing_http::Cors;
use billing_testing::{ApiEvent, catalog, embedded_store};
use create_subscription::CreateSubscription;
use serde_json::{Value, json};
use stripe_sandbox::RunningSandbox;
use uuid::Uuid;

struct Fixture {
    function: CreateSubscription,
    sandbox: RunningSandbox,
    store: Arc<dyn Store>,
}

async fn fixture() -> Fixture {
    fixture_with_prices(0).await
}

/// A fixture whose sandbox charges `amount` cents for every plan.
async fn fixture_with_prices(amount: i64) -> Fixture {
    let (sandbox, billing) = billing_testing::sandbox_billing(amount, billing_testing::fast_retries()).await;
    let store: Arc<dyn Store> = embedded_store();
    let function = CreateSubscription {
        store: store.clone(),
        billing,
        catalog: catalog(),
        cors: Cors::default(),
        clock: std::sync::Arc::new(billing_adapters::SystemClock),
        idempotency: billing_http::idempotent::Idempotency {
            documents: billing_testing::in_memory_store(),
            clock: std::sync::Arc::new(billing_adapters::SystemClock),
        },
    }
    .declared();
    Fixture {
        function,
        sandbox,
        store,
    }
}

fn admin_create(body: &Value) -> lambda_http::Request {
    ApiEvent::sample("apigw-create-subscription.json")
        .caller(Uuid::new_v4(), "subscriptions subscriptions_admin")
        .body(body)
        .build()
}

fn body(response: &lambda_http::Response<lambda_http::Body>) -> Value {
    serde_json::from_slice(response.body()).unwrap()
}

async fn customers_with_email(sandbox: &RunningSandbox, email: &str) -> usize {
    let url = format!("{}v1/customers?email={email}&limit=100", sandbox.base_url());
    let listed: Value = reqwest::Client::new()
        .get(url)
        .bearer_auth("sk_test_handler")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listed["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn admin_creates_a_pending_subscription_with_a_31_day_trial_in_stripe_and_the_store() {
    let f = fixture().await;
    let user = Uuid::new_v4();
    let response = f
        .function
        .handle(admin_create(
            &json!({"user_id": user.to_string(), "email": "ada@example.com"}),
        ))
        .await;
    assert_eq!(response.status(), 201, "{:?}", body(&response));
    let created = &body(&response)["subscriptions"][0];
    assert_eq!(created["id"], user.to_string());
    assert_eq!(created["plan"], "pending");
    assert_eq!(created["status"], "trialing");
    assert!(created["stripe_customer"].as_str().unwrap().starts_with("cus_"));
    assert!(created["stripe_subscription"].as_str().unwrap().starts_with("sub_"));
    let start = chrono::DateTime::parse_from_rfc3339(created["trial_start"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(created["trial_end"].as_str().unwrap()).unwrap();
    assert_eq!(end - start, chrono::Duration::days(31));
    let stored = f.store.get_subscription(user).await.unwrap();
    assert_eq!(serde_json::to_value(&stored).unwrap(), *created);
    assert_eq!(f.store.audit_trail(user).await.unwrap().len(), 1);
}

#[tokio::test]
async fn non_admin_cannot_create() {
    let f = fixture().await;
    let user = Uuid::new_v4();
    let request = ApiEvent::sample("apigw-create-subscription.json")
        .caller(user, "subscriptions")
        .body(&json!({"user_id": user.to_string(), "email": "ada@example.com"}))
        .build();
    let response = f.function.handle(request).await;
    assert_eq!(response.status(), 403);
    assert!(matches!(
        f.store.get_subscription(user).await,
        Err(billing::store::StoreError::NotFound)
    ));
}

#[tokio::test]
async fn create_without_user_id_and_email_reports_both() {
    let f = fixture().await;
    let response = f.function.handle(admin_create(&json!({"plan": "basic_monthly"}))).await;
    assert_eq!(response.status(), 400);
    let fields: Vec<_> = body(&response)["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, vec![json!("/user_id"), json!("/email")]);
}

#[tokio::test]
async fn second_create_for_a_user_is_a_conflict_on_user_id() {
    let f = fixture().await;
    let user = Uuid::new_v4();
    let create = json!({"user_id": user.to_string(), "email": "ada@example.com"});
    assert_eq!(f.function.handle(admin_create(&create)).await.status(), 201);
    let response = f.function.handle(admin_create(&create)).await;
    assert_eq!(response.status(), 409);
    assert_eq!(body(&response)["errors"][0]["field"], "/user_id");
}

#[tokio::test]
async fn stripe_failure_answers_502_stores_nothing_and_a_retry_makes_one_customer() {
    let f = fixture().await;
    let user = Uuid::new_v4();
    let email = format!("{}@example.com", user.simple());
    let create = json!({"user_id": user.to_string(), "email": email});
    // Given Stripe failing for longer than the retries last
    f.sandbox.sandbox.fail_next(3, 500);
    let response = f.function.handle(admin_create(&create)).await;
    assert_eq!(response.status(), 502);
    assert_eq!(body(&response)["errors"][0]["slug"], "upstream_unavailable");
    assert!(matches!(
        f.store.get_subscription(user).await,
        Err(billing::store::StoreError::NotFound)
    ));
    // When the retry gets the customer made but the subscription fails
    f.sandbox.sandbox.fail_next_on(3, 503, Some("/v1/subscriptions"));
    assert_eq!(f.function.handle(admin_create(&create)).await.status(), 502);
    assert_eq!(customers_with_email(&f.sandbox, &email).await, 1);
    // Then the next retry succeeds, still with one customer in Stripe
    let response = f.function.handle(admin_create(&create)).await;
    assert_eq!(response.status(), 201);
    assert_eq!(customers_with_email(&f.sandbox, &email).await, 1);
    assert_eq!(
        body(&response)["subscriptions"][0]["stripe_customer"],
        f.store.get_subscription(user).await.unwrap().stripe_customer.unwrap()
    );
}

#[tokio::test]
async fn empty_body_is_missing() {
    let f = fixture().await;
    let request = ApiEvent::sample("apigw-create-subscription.json")
        .caller(Uuid::new_v4(), "subscriptions_admin")
        .body(&Value::Null)
        .build();
    let mut request = request;
    *request.body_mut() = lambda_http::Body::Empty;
    let response = f.function.handle(request).await;
    assert_eq!(response.status(), 400);
    assert_eq!(body(&response)["errors"][0]["slug"], "missing");
}

#[tokio::test]
async fn a_malformed_user_id_does_not_hide_the_email_and_plan_errors() {
    // Given an administrator's create with three bad fields
    let f = fixture().await;
    let request = admin_create(&json!({"user_id": "x", "email": "nope", "plan": "gold"}));
    // When it is sent
    let response = f.function.handle(request).await;
    // Then all three are reported at once, and user_id is malformed, not missing
    assert_eq!(response.status(), 400);
    let errors = body(&response)["errors"].clone();
    let mut found: Vec<(String, String)> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["slug"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("/email".to_owned(), "invalid_value".to_owned()),
            ("/plan".to_owned(), "invalid_value".to_owned()),
            ("/user_id".to_owned(), "invalid_format".to_owned()),
        ]
    );
    assert_eq!(customers_with_email(&f.sandbox, "nope").await, 0);
}

#[tokio::test]
async fn a_paid_plan_created_with_a_good_card_is_active_not_incomplete() {
    // Given plans that cost money
    let f = fixture_with_prices(800).await;
    let user = Uuid::new_v4();
    // When an administrator creates a subscription on a paid plan with a card
    let response = f
        .function
        .handle(admin_create(&json!({
            "user_id": user,
            "email": "card@example.com",
            "plan": "basic_monthly",
            "stripe_source": "pm_card_visa",
        })))
        .await;
    // Then the card paid the first invoice: active in Stripe and in the store
    assert_eq!(response.status(), 201, "{}", body(&response));
    let created = body(&response)["subscriptions"][0].clone();
    assert_eq!(created["status"], "active", "{created}");
    assert_eq!(created["has_payment_source"], true);
    let stored = f.store.get_subscription(user).await.unwrap();
    assert_eq!(stored.status.as_str(), "active");
    let stripe = stripe_get(
        &f.sandbox,
        &format!("/v1/subscriptions/{}", created["stripe_subscription"].as_str().unwrap()),
    )
    .await;
    assert_eq!(stripe["status"], "active");
}

async fn stripe_get(sandbox: &RunningSandbox, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{}", sandbox.base_url(), path.trim_start_matches('/')))
        .bearer_auth("sk_test_handler")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn licenses_set_at_creation_are_the_quantity_stripe_bills() {
    // Given an administrator creating a subscription for three licenses
    let f = fixture_with_prices(800).await;
    let user = Uuid::new_v4();
    let response = f
        .function
        .handle(admin_create(
            &json!({"user_id": user, "email": "team@example.com", "licenses": 3}),
        ))
        .await;
    // Then Stripe's subscription item has quantity 3, and the store says 3 licenses
    assert_eq!(response.status(), 201, "{}", body(&response));
    let created = body(&response)["subscriptions"][0].clone();
    assert_eq!(created["licenses"], 3);
    let stripe = stripe_get(
        &f.sandbox,
        &format!("/v1/subscriptions/{}", created["stripe_subscription"].as_str().unwrap()),
    )
    .await;
    assert_eq!(stripe["items"]["data"][0]["quantity"], 3);
}

#[tokio::test]
async fn a_discount_set_at_creation_discounts_the_first_invoice() {
    // Given an administrator creating a paid subscription with a card at 10 % off
    let f = fixture_with_prices(800).await;
    let user = Uuid::new_v4();
    let response = f
        .function
        .handle(admin_create(&json!({"user_id": user, "email": "team@example.com",
            "plan": "basic_monthly", "stripe_source": "pm_card_visa", "discount_percent": 10})))
        .await;
    // Then the first invoice Stripe charged is 10 % off, and the store says 10
    assert_eq!(response.status(), 201, "{}", body(&response));
    let created = body(&response)["subscriptions"][0].clone();
    assert_eq!(created["discount_percent"], 10);
    let stripe = stripe_get(
        &f.sandbox,
        &format!("/v1/subscriptions/{}", created["stripe_subscription"].as_str().unwrap()),
    )
    .await;
    let invoice = stripe_get(
        &f.sandbox,
        &format!("/v1/invoices/{}", stripe["latest_invoice"].as_str().unwrap()),
    )
    .await;
    assert_eq!(invoice["amount_paid"], 720, "{invoice}");
}

/// A create by `admin`, with `Idempotency-Key: key`.
fn keyed_create(admin: Uuid, key: &str, body: &Value) -> lambda_http::Request {
    ApiEvent::sample("apigw-create-subscription.json")
        .caller(admin, "subscriptions subscriptions_admin")
        .header("idempotency-key", key)
        .body(body)
        .build()
}

#[tokio::test]
async fn a_create_repeated_with_its_idempotency_key_gets_the_first_answer_and_no_second_customer() {
    // Given an administrator's create sent with a key
    let f = fixture().await;
    let admin = Uuid::new_v4();
    let user = Uuid::new_v4();
    let email = format!("idem-{}@example.com", user.simple());
    let create = json!({"user_id": user, "email": email});
    let first = f.function.handle(keyed_create(admin, "create-ada-1", &create)).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    // When the client retries it with the same key (its first answer was lost)
    let again = f.function.handle(keyed_create(admin, "create-ada-1", &create)).await;
    // Then it gets the first answer again, marked as replayed, and Stripe has one customer
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["etag"], first.headers()["etag"]);
    assert_eq!(body(&again), body(&first));
    assert_eq!(customers_with_email(&f.sandbox, &email).await, 1);
    // While without the key the same create is a conflict: the subscription exists
    let unkeyed = f.function.handle(admin_create(&create)).await;
    assert_eq!(unkeyed.status(), 409);
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_request_is_refused_and_changes_nothing() {
    let f = fixture().await;
    let admin = Uuid::new_v4();
    let (first_user, second_user) = (Uuid::new_v4(), Uuid::new_v4());
    let first = f
        .function
        .handle(keyed_create(
            admin,
            "k-1",
            &json!({"user_id": first_user, "email": "a@example.com"}),
        ))
        .await;
    assert_eq!(first.status(), 201);
    let reused = f
        .function
        .handle(keyed_create(
            admin,
            "k-1",
            &json!({"user_id": second_user, "email": "b@example.com"}),
        ))
        .await;
    assert_eq!(reused.status(), 422);
    assert_eq!(body(&reused)["errors"][0]["slug"], "idempotency_key_reused");
    assert!(f.store.get_subscription(second_user).await.is_err());
    // Another caller's same key is theirs: it runs
    let other_admin = f
        .function
        .handle(keyed_create(
            Uuid::new_v4(),
            "k-1",
            &json!({"user_id": second_user, "email": "b@example.com"}),
        ))
        .await;
    assert_eq!(other_admin.status(), 201);
}

#[tokio::test]
async fn a_repeat_while_the_first_request_runs_is_a_conflict_and_a_bad_key_is_refused() {
    // Given a create whose first request is still running (its claim is stored, no answer yet)
    let f = fixture().await;
    let admin = Uuid::new_v4();
    let create = json!({"user_id": Uuid::new_v4(), "email": "ada@example.com"});
    let body_text = create.to_string();
    let fingerprint = billing::idempotency::fingerprint("POST", "/subscriptions", body_text.as_bytes());
    let claimed = billing::idempotency::begin(
        f.function.idempotency.documents.as_ref(),
        &admin.to_string(),
        "slow-1",
        &fingerprint,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert!(matches!(claimed, billing::idempotency::Begin::Run(_)));
    // When the client repeats it
    let repeat = f.function.handle(keyed_create(admin, "slow-1", &create)).await;
    // Then it is told to wait
    assert_eq!(repeat.status(), 409);
    assert_eq!(body(&repeat)["errors"][0]["param"], "Idempotency-Key");
    // And a key that is not 1 to 255 printable characters is refused
    let too_long = f.function.handle(keyed_create(admin, &"k".repeat(256), &create)).await;
    assert_eq!(too_long.status(), 400);
}
