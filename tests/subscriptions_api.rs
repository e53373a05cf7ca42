//! The subscriptions API end to end: HTTP to the local server in `--aws` mode, DynamoDB in
//! moto, Stripe in the sandbox, as a client application and an administrator would use it.

use bundle_tests::{Caller, start_server_against_moto, stripe_get};
use serde_json::{Value, json};
use uuid::Uuid;

fn new_user() -> (Uuid, String) {
    let user = Uuid::new_v4();
    (user, format!("user-{}@example.com", user.simple()))
}

#[tokio::test]
async fn admin_creates_user_reads_and_chooses_a_plan_with_a_card() {
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let (user, email) = new_user();
    // The administrator creates the subscription
    let (status, body) = Caller::admin(&server)
        .create(json!({"user_id": user, "email": email}))
        .await;
    assert_eq!(status, 201, "{body}");
    let created = body["subscriptions"][0].clone();
    assert_eq!(
        (created["plan"].as_str(), created["status"].as_str()),
        (Some("pending"), Some("trialing"))
    );

    // The user reads it
    let me = Caller::user(&server, user);
    let (status, body) = me.get(user).await;
    assert_eq!(status, 200);
    assert_eq!(body["subscriptions"][0], created);

    // The user picks basic_monthly and attaches a card
    let (status, body) = me
        .patch(user, json!({"plan": "basic_monthly", "stripe_source": "pm_card_visa"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subscriptions"][0]["plan"], "basic_monthly");
    assert_eq!(body["subscriptions"][0]["has_payment_source"], true);

    // Stripe's subscription item has that price, the customer that default payment method
    let stripe_subscription = stripe_get(
        sandbox,
        &format!("/v1/subscriptions/{}", created["stripe_subscription"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        stripe_subscription["items"]["data"][0]["price"]["id"],
        "price_basic_monthly"
    );
    let customer = stripe_get(
        sandbox,
        &format!("/v1/customers/{}", created["stripe_customer"].as_str().unwrap()),
    )
    .await;
    let default_method = customer["invoice_settings"]["default_payment_method"]
        .as_str()
        .expect("a default payment method");
    let method = stripe_get(sandbox, &format!("/v1/payment_methods/{default_method}")).await;
    assert_eq!(
        (method["customer"].as_str(), method["card"]["brand"].as_str()),
        (created["stripe_customer"].as_str(), Some("visa"))
    );

    // And DynamoDB holds what the API answered (Stripe's webhooks confirm it, and may have
    // arrived first)
    let (_, body) = me.get(user).await;
    assert_eq!(body["subscriptions"][0]["plan"], "basic_monthly");
    assert_eq!(body["subscriptions"][0]["has_payment_source"], true);
}

#[tokio::test]
async fn a_second_user_can_neither_read_nor_patch_the_first_users_subscription() {
    let server = start_server_against_moto().await;
    let (user, email) = new_user();
    assert_eq!(
        Caller::admin(&server)
            .create(json!({"user_id": user, "email": email}))
            .await
            .0,
        201
    );
    let intruder = Caller::user(&server, Uuid::new_v4());
    let (status, body) = intruder.get(user).await;
    assert_eq!(
        (status, body["errors"][0]["slug"].as_str()),
        (403, Some("access_denied"))
    );
    let (status, _) = intruder.patch(user, json!({"plan": "business_annual"})).await;
    assert_eq!(status, 403);
    let (_, body) = Caller::user(&server, user).get(user).await;
    assert_eq!(body["subscriptions"][0]["plan"], "pending");
}

#[tokio::test]
async fn non_admin_gets_one_error_per_system_property_and_nothing_changes() {
    let server = start_server_against_moto().await;
    let (user, email) = new_user();
    let (_, created) = Caller::admin(&server)
        .create(json!({"user_id": user, "email": email}))
        .await;
    let me = Caller::user(&server, user);
    let (status, body) = me
        .patch(user, json!({"status": "active", "trial_end": "2031-01-01T00:00:00Z"}))
        .await;
    assert_eq!(status, 403);
    let errors: Vec<(Value, Value)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["slug"].clone(), e["field"].clone()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (json!("access_denied"), json!("/status")),
            (json!("access_denied"), json!("/trial_end"))
        ]
    );
    assert_eq!(me.get(user).await.1["subscriptions"][0], created["subscriptions"][0]);

    let (status, body) = me.patch(user, json!({"plan": "free"})).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (403, Some("/plan")));
    assert_eq!(me.get(user).await.1["subscriptions"][0], created["subscriptions"][0]);
}

#[tokio::test]
async fn ten_concurrent_creates_for_one_user_give_one_201_nine_409_and_one_stripe_customer() {
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let (user, email) = new_user();
    let admin = std::sync::Arc::new(Caller::admin(&server));
    let attempts: Vec<_> = (0..10)
        .map(|_| {
            let admin = admin.clone();
            let email = email.clone();
            tokio::spawn(async move { admin.create(json!({"user_id": user, "email": email})).await.0 })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [vec![201], vec![409; 9]].concat());
    let customers = stripe_get(sandbox, &format!("/v1/customers?email={email}&limit=100")).await;
    assert_eq!(customers["data"].as_array().unwrap().len(), 1);
    let subscriptions = stripe_get(
        sandbox,
        &format!(
            "/v1/subscriptions?customer={}",
            customers["data"][0]["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(subscriptions["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn stripe_failure_on_create_gives_502_and_a_retry_succeeds_with_one_customer() {
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let (user, email) = new_user();
    let admin = Caller::admin(&server);
    // Stripe fails after the customer is made, for longer than the retries last
    sandbox.sandbox.fail_next_on(10, 500, Some("/v1/subscriptions"));
    let (status, body) = admin.create(json!({"user_id": user, "email": email})).await;
    assert_eq!(
        (status, body["errors"][0]["slug"].as_str()),
        (502, Some("upstream_unavailable"))
    );
    assert_eq!(Caller::user(&server, user).get(user).await.0, 404);
    // Stripe recovers; the client retries
    sandbox.sandbox.fail_next(0, 500);
    let (status, body) = admin.create(json!({"user_id": user, "email": email})).await;
    assert_eq!(status, 201, "{body}");
    let customers = stripe_get(sandbox, &format!("/v1/customers?email={email}&limit=100")).await;
    assert_eq!(customers["data"].as_array().unwrap().len(), 1);
    assert_eq!(body["subscriptions"][0]["stripe_customer"], customers["data"][0]["id"]);
}

#[tokio::test]
async fn the_gateway_refuses_requests_without_a_valid_token() {
    let server = start_server_against_moto().await;
    let anonymous = Caller::new(&server, None);
    let (status, body) = anonymous.get(Uuid::new_v4()).await;
    assert_eq!((status, body), (401, json!({"message": "Unauthorized"})));
    let forged = Caller::new(
        &server,
        Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl".into()),
    );
    assert_eq!(forged.get(Uuid::new_v4()).await.0, 401);
}

#[tokio::test]
async fn preflight_and_content_negotiation_behave_through_the_gateway() {
    let server = start_server_against_moto().await;
    let admin = Caller::admin(&server);
    let response = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/subscriptions/{}", admin.base, Uuid::new_v4()),
        )
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PATCH")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        response.headers()["access-control-allow-headers"],
        "authorization, content-type, if-match, idempotency-key"
    );

    let (status, _) = admin
        .send(
            admin
                .request(reqwest::Method::GET, &format!("/subscriptions/{}", Uuid::new_v4()))
                .header("accept", "text/html"),
        )
        .await;
    assert_eq!(status, 406);
    let (status, _) = admin
        .send(
            admin
                .request(reqwest::Method::POST, "/subscriptions")
                .header("content-type", "text/plain")
                .body("user_id=1"),
        )
        .await;
    assert_eq!(status, 415);
    let huge = json!({"user_id": Uuid::new_v4(), "email": format!("{}@example.com", "a".repeat(70 * 1024))});
    assert_eq!(admin.create(huge).await.0, 413);
}

#[tokio::test]
async fn if_match_guards_against_lost_updates() {
    let server = start_server_against_moto().await;
    let (user, email) = new_user();
    Caller::admin(&server)
        .create(json!({"user_id": user, "email": email}))
        .await;
    let me = Caller::user(&server, user);
    let stale = me
        .request(reqwest::Method::PATCH, &format!("/subscriptions/{user}"))
        .header("if-match", "\"5\"")
        .json(&json!({"email": "new@example.com"}));
    assert_eq!(me.send(stale).await.0, 412);
    let current = me
        .request(reqwest::Method::PATCH, &format!("/subscriptions/{user}"))
        .header("if-match", "\"1\"")
        .json(&json!({"email": "new@example.com"}));
    let (status, body) = me.send(current).await;
    assert_eq!((status, body["subscriptions"][0]["version"].as_u64()), (200, Some(2)));
}
