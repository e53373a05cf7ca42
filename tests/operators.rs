//! The operators' endpoints end to end: HTTP to the local server in `--aws` mode, DynamoDB in
//! moto, Stripe in the sandbox. An operator finds subscriptions, reads who changed what, sees
//! which events were not applied and replays them, repairs a subscription whose events were
//! held back, takes events through EventBridge; a client retries a create safely.

use bundle_tests::{Caller, all_delivered, all_stripe_customers, start_server_against_moto, stripe_post};
use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

fn new_user() -> (Uuid, String) {
    let user = Uuid::new_v4();
    (user, format!("ops-{}@example.com", user.simple()))
}

/// A `customer.subscription.updated` event about this Stripe subscription (status `active`,
/// on `price`), made `seconds` from now.
fn subscription_event(id: &str, user: Uuid, customer: &str, subscription: &str, price: &str, seconds: i64) -> Value {
    json!({
        "id": id,
        "object": "event",
        "type": "customer.subscription.updated",
        "created": Utc::now().timestamp() + seconds,
        "data": {"object": {
            "id": subscription, "object": "subscription", "customer": customer, "status": "active",
            "cancel_at_period_end": false, "trial_end": null, "metadata": {"user_id": user},
            "items": {"data": [{"price": {"id": price}, "quantity": 1,
                                "current_period_end": Utc::now().timestamp() + 30 * 86_400}]}
        }}
    })
}

fn envelope(event: &Value) -> Value {
    json!({
        "version": "0", "id": Uuid::new_v4(), "detail-type": event["type"],
        "source": "aws.partner/stripe.com/ed_test_local", "account": "123456789012",
        "time": Utc::now().to_rfc3339(), "region": "eu-west-1", "resources": [], "detail": event
    })
}

/// What the local server answers to `event` delivered as the EventBridge partner bus would.
async fn deliver_by_eventbridge(server: &devserver::RunningServer, event: &Value) -> Value {
    reqwest::Client::new()
        .post(format!("http://{}/_local/eventbridge", server.address))
        .json(&envelope(event))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_operator_finds_a_subscription_and_reads_who_changed_each_field() {
    // Given a subscription created by an administrator and given a plan by its user
    let server = start_server_against_moto().await;
    let admin = Caller::admin(&server);
    let (user, email) = new_user();
    assert_eq!(admin.create(json!({"user_id": user, "email": email})).await.0, 201);
    let (status, body) = Caller::user(&server, user)
        .patch(user, json!({"plan": "basic_monthly", "stripe_source": "pm_card_visa"}))
        .await;
    assert_eq!(status, 200, "{body}");
    // Stripe's events of the creation and the change are applied (a creation snapshot applied
    // after the change shows the old plan until the change's own snapshot arrives)
    all_delivered(&server).await;

    // When the operator looks it up by its email (in another case)
    let (status, found) = admin
        .send(admin.request(
            reqwest::Method::GET,
            &format!("/subscriptions?email={}", email.to_uppercase()),
        ))
        .await;
    // Then it is the one found
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(found["subscriptions"][0]["id"], json!(user));

    // And walking the list of trialing basic_monthly subscriptions a page at a time finds it
    // once (during the trial, a plan change keeps the subscription trialing)
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/subscriptions?status=trialing&plan=basic_monthly&limit=1".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = admin.send(admin.request(reqwest::Method::GET, &path)).await;
        assert_eq!(status, 200, "{page}");
        assert!(page["subscriptions"].as_array().unwrap().len() <= 1);
        seen.extend(
            page["subscriptions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec![json!(user)]);

    // When the operator reads its audit trail
    let (status, trail) = admin
        .send(admin.request(reqwest::Method::GET, &format!("/subscriptions/{user}/audit")))
        .await;
    // Then the creation is the administrator's and the plan change the user's, before and after
    assert_eq!(status, 200, "{trail}");
    let audit = trail["audit"].as_array().unwrap();
    assert_eq!(audit[0]["action"], "create");
    assert!(audit[0]["actor"].as_str().unwrap().starts_with("admin:"));
    let change = audit
        .iter()
        .find(|entry| entry["actor"] == format!("user:{user}"))
        .expect("the user's change");
    let changes = change["changes"].as_array().unwrap();
    assert!(
        changes.contains(&json!({"field": "/plan", "before": "pending", "after": "basic_monthly"})),
        "{change}"
    );
    assert!(changes.contains(&json!({"field": "/has_payment_source", "before": false, "after": true})));
    // and the user may read their own trail, not someone else's
    assert_eq!(
        Caller::user(&server, user)
            .send(Caller::user(&server, user).request(reqwest::Method::GET, &format!("/subscriptions/{user}/audit")))
            .await
            .0,
        200
    );
    let stranger = Caller::user(&server, Uuid::new_v4());
    let (status, _) = stranger
        .send(stranger.request(reqwest::Method::GET, &format!("/subscriptions/{user}/audit")))
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn an_event_that_came_before_its_subscription_is_replayed_once_it_exists() {
    // Given an event about a subscription the service does not have, received through EventBridge
    let server = start_server_against_moto().await;
    let admin = Caller::admin(&server);
    let (user, email) = new_user();
    let (customer, stripe_subscription) = (format!("cus_{}", user.simple()), format!("sub_{}", user.simple()));
    let event_id = format!("evt_{}", Uuid::new_v4().simple());
    let event = subscription_event(
        &event_id,
        user,
        &customer,
        &stripe_subscription,
        "price_basic_monthly",
        5,
    );
    let delivered = deliver_by_eventbridge(&server, &event).await;
    assert_eq!(delivered["outcome"], "unknown_subscription");
    // When the operator asks which events were not applied
    let (status, unapplied) = admin
        .send(admin.request(reqwest::Method::GET, "/stripe/events?outcome=unknown_subscription"))
        .await;
    assert_eq!(status, 200, "{unapplied}");
    assert!(
        unapplied["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == json!(event_id)),
        "{unapplied}"
    );
    // And, once the subscription exists (restored with its Stripe ids), replays it
    let mut restored = billing_testing::new_subscription(Some((&customer, &stripe_subscription)));
    restored.id = user;
    restored.user_id = user;
    restored.email = email;
    server
        .store
        .create_subscription(
            &restored,
            &billing::store::AuditEntry::between(None, &restored, "system:restore", "create"),
        )
        .await
        .unwrap();
    let replay = |admin: &Caller| admin.request(reqwest::Method::POST, &format!("/stripe/events/{event_id}/replay"));
    let (status, replayed) = admin.send(replay(&admin)).await;
    // Then it is applied, once
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed, json!({"events": [{"id": event_id, "outcome": "applied"}]}));
    let (_, now) = admin.get(user).await;
    assert_eq!(
        (
            now["subscriptions"][0]["status"].as_str(),
            now["subscriptions"][0]["plan"].as_str()
        ),
        (Some("active"), Some("basic_monthly"))
    );
    let version = now["subscriptions"][0]["version"].clone();
    let (status, again) = admin.send(replay(&admin)).await;
    assert_eq!((status, &again["events"][0]["outcome"]), (200, &json!("applied")));
    assert_eq!(admin.get(user).await.1["subscriptions"][0]["version"], version);
}

#[tokio::test]
async fn reconcile_repairs_a_subscription_whose_webhooks_were_held_back() {
    // Given a subscription whose Stripe subscription is set to cancel while webhooks are held
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let admin = Caller::admin(&server);
    let (user, email) = new_user();
    let (_, created) = admin.create(json!({"user_id": user, "email": email})).await;
    let stripe_subscription = created["subscriptions"][0]["stripe_subscription"]
        .as_str()
        .unwrap()
        .to_owned();
    bundle_tests::all_delivered(&server).await;
    sandbox.sandbox.hold_webhooks();
    stripe_post(
        sandbox,
        &format!("/v1/subscriptions/{stripe_subscription}"),
        &[("cancel_at_period_end", "true")],
    )
    .await;
    assert_eq!(
        admin.get(user).await.1["subscriptions"][0]["cancel_at_period_end"],
        false
    );
    // When an administrator reconciles it
    let (status, reconciled) = admin
        .send(admin.request(reqwest::Method::POST, &format!("/subscriptions/{user}/reconcile")))
        .await;
    // Then it holds what Stripe holds, and the trail says so
    assert_eq!(status, 200, "{reconciled}");
    assert_eq!(reconciled["subscriptions"][0]["cancel_at_period_end"], true);
    assert_eq!(
        admin.get(user).await.1["subscriptions"][0]["cancel_at_period_end"],
        true
    );
    let (_, trail) = admin
        .send(admin.request(reqwest::Method::GET, &format!("/subscriptions/{user}/audit")))
        .await;
    let last = trail["audit"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "reconcile");
    assert_eq!(
        last["changes"],
        json!([{"field": "/cancel_at_period_end", "before": false, "after": true}])
    );
}

#[tokio::test]
async fn an_eventbridge_envelope_is_applied_once_and_the_same_event_by_webhook_is_a_duplicate() {
    // Given a subscription, and an update of it from Stripe
    let server = start_server_against_moto().await;
    let admin = Caller::admin(&server);
    let (user, email) = new_user();
    let (_, created) = admin.create(json!({"user_id": user, "email": email})).await;
    bundle_tests::all_delivered(&server).await;
    let created = &created["subscriptions"][0];
    let event_id = format!("evt_{}", Uuid::new_v4().simple());
    let event = subscription_event(
        &event_id,
        user,
        created["stripe_customer"].as_str().unwrap(),
        created["stripe_subscription"].as_str().unwrap(),
        "price_business_monthly",
        30,
    );
    let base = format!("http://{}", server.address);
    let client = reqwest::Client::new();
    // When it arrives through EventBridge, twice
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        outcomes.push(deliver_by_eventbridge(&server, &event).await["outcome"].clone());
    }
    // Then it is applied once
    assert_eq!(outcomes, vec![json!("applied"), json!("duplicate")]);
    let (_, now) = admin.get(user).await;
    assert_eq!(now["subscriptions"][0]["plan"], "business_monthly");
    let version = now["subscriptions"][0]["version"].clone();
    // And the same event signed and sent to the webhook is a duplicate too
    let payload = event.to_string();
    let signature = billing::webhook::sign(payload.as_bytes(), &server.webhook_secret, Utc::now().timestamp());
    let by_webhook: Value = client
        .post(format!("{base}/stripe/webhook"))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(payload)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_webhook, json!({"received": true, "duplicate": true}));
    assert_eq!(admin.get(user).await.1["subscriptions"][0]["version"], version);
    // and the kept event names its subscription
    let (_, applied) = admin
        .send(admin.request(reqwest::Method::GET, "/stripe/events?outcome=applied&limit=100"))
        .await;
    let kept = applied["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == json!(event_id))
        .cloned()
        .expect("the event is kept as applied");
    assert_eq!(kept["subscription_id"], json!(user));
}

#[tokio::test]
async fn a_create_retried_with_its_idempotency_key_gets_the_same_answer_and_one_stripe_customer() {
    // Given an administrator's create sent with an idempotency key
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let admin = Caller::admin(&server);
    let (user, email) = new_user();
    let create = || {
        admin
            .request(reqwest::Method::POST, "/subscriptions")
            .header("idempotency-key", format!("create-{user}"))
            .json(&json!({"user_id": user, "email": email}))
    };
    let first = create().send().await.unwrap();
    assert_eq!(first.status(), 201);
    let first_body: Value = first.json().await.unwrap();
    // When the client retries it (its answer was lost)
    let again = create().send().await.unwrap();
    // Then the answer is the first one, replayed, and Stripe has one customer for the address
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first_body);
    let customers = all_stripe_customers(sandbox).await;
    assert_eq!(customers.iter().filter(|c| c["email"] == json!(email)).count(), 1);
    // And the same key with another body is refused
    let (status, refused) = admin
        .send(
            admin
                .request(reqwest::Method::POST, "/subscriptions")
                .header("idempotency-key", format!("create-{user}"))
                .json(&json!({"user_id": Uuid::new_v4(), "email": email})),
        )
        .await;
    assert_eq!(
        (status, &refused["errors"][0]["slug"]),
        (422, &json!("idempotency_key_reused"))
    );
}
