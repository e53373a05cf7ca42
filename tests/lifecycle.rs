//! A subscription's life end to end: HTTP to the local server in `--aws` mode (DynamoDB and
//! SES in moto), Stripe in the sandbox with its webhooks delivered to the local server, and time
//! moved with `POST /_local/clock`. What the API stores is what Stripe bills, and the webhooks
//! that follow each change never revert it.

use bundle_tests::{Caller, all_delivered, eventually, ses_mails_to, start_server_against_moto, stripe_get};
use devserver::RunningServer;
use serde_json::{Value, json};
use uuid::Uuid;

fn new_user() -> (Uuid, String) {
    let user = Uuid::new_v4();
    (user, format!("life-{}@example.com", user.simple()))
}

async fn invoices(caller: &Caller, id: Uuid) -> Vec<Value> {
    let (status, body) = caller
        .send(caller.request(reqwest::Method::GET, &format!("/subscriptions/{id}/invoices")))
        .await;
    assert_eq!(status, 200, "{body}");
    body["invoices"].as_array().unwrap().clone()
}

async fn set_clock(server: &RunningServer, offset_seconds: i64) -> Value {
    let response = reqwest::Client::new()
        .post(format!("http://{}/_local/clock", server.address))
        .json(&json!({"offset_seconds": offset_seconds}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn stripe_subscription_of(server: &RunningServer, stored: &Value) -> Value {
    let sandbox = server.sandbox.as_ref().unwrap();
    stripe_get(
        sandbox,
        &format!("/v1/subscriptions/{}", stored["stripe_subscription"].as_str().unwrap()),
    )
    .await
}

#[tokio::test]
async fn a_subscription_is_upgraded_licensed_discounted_renewed_canceled_and_resubscribed() {
    let server = start_server_against_moto().await;
    let admin = Caller::admin(&server);
    let (user, email) = new_user();
    let me = Caller::user(&server, user);

    // Given a subscription created on basic_monthly with a card: active, its first invoice paid
    let (status, body) = admin
        .create(json!({"user_id": user, "email": email, "plan": "basic_monthly", "stripe_source": "pm_card_visa"}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["subscriptions"][0]["status"], "active");
    let first = invoices(&me, user).await;
    assert_eq!(
        (
            first.len(),
            first[0]["status"].as_str(),
            first[0]["amount_paid"].as_i64()
        ),
        (1, Some("paid"), Some(800))
    );

    // When the owner upgrades, then a proration invoice is paid at once
    let (status, body) = me.patch(user, json!({"plan": "business_monthly"})).await;
    assert_eq!(status, 200, "{body}");
    let after_upgrade = invoices(&me, user).await;
    assert_eq!(after_upgrade.len(), 2);
    assert_eq!(after_upgrade[0]["status"], "paid");
    assert!(
        after_upgrade[0]["amount_paid"].as_i64().unwrap() > 0,
        "{}",
        after_upgrade[0]
    );

    // When an administrator gives it 3 licenses at 20 % off, then Stripe bills exactly that
    let (status, body) = admin.patch(user, json!({"licenses": 3, "discount_percent": 20})).await;
    assert_eq!(status, 200, "{body}");
    let stored = body["subscriptions"][0].clone();
    let stripe = stripe_subscription_of(&server, &stored).await;
    assert_eq!(stripe["items"]["data"][0]["quantity"], 3);
    assert_eq!(stripe["items"]["data"][0]["price"]["id"], "price_business_monthly");
    let discount = stripe["discounts"][0].as_str().expect("a discount");
    assert!(discount.starts_with("di_"), "{discount}");

    // And the webhooks those changes made leave every field as set
    all_delivered(&server).await;
    let (_, body) = me.get(user).await;
    let read = &body["subscriptions"][0];
    assert_eq!(
        (
            &read["plan"],
            &read["licenses"],
            &read["discount_percent"],
            &read["status"]
        ),
        (&json!("business_monthly"), &json!(3), &json!(20), &json!("active"))
    );

    // When a month passes, then Stripe renews it: the stored period end moves, the renewal
    // invoice is listed, for 3 licenses at 20 % off
    let period_end = read["current_period_end"].as_str().unwrap().to_owned();
    let moved = set_clock(&server, 31 * 86_400).await;
    assert!(!moved["stripe_events"].as_array().unwrap().is_empty(), "{moved}");
    eventually(30, "the renewal to reach the stored subscription", || async {
        let (_, body) = me.get(user).await;
        body["subscriptions"][0]["current_period_end"].as_str() > Some(period_end.as_str())
    })
    .await;
    let renewed = invoices(&me, user).await;
    assert_eq!(renewed[0]["period_start"], json!(period_end), "{}", renewed[0]);
    assert_eq!(renewed[0]["status"], "paid");
    assert_eq!(renewed[0]["amount_paid"], 3 * 2_000 * 80 / 100);

    // When the owner cancels, then Stripe's subscription is canceled and ours stays readable
    let (status, body) = me
        .send(me.request(reqwest::Method::DELETE, &format!("/subscriptions/{user}")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subscriptions"][0]["status"], "canceled");
    let canceled = body["subscriptions"][0].clone();
    assert_eq!(stripe_subscription_of(&server, &canceled).await["status"], "canceled");

    // When the owner picks a plan again, then a new Stripe subscription bills it, with the
    // licenses and the discount it had
    let (status, body) = me.patch(user, json!({"plan": "basic_monthly"})).await;
    assert_eq!(status, 200, "{body}");
    let again = body["subscriptions"][0].clone();
    assert_eq!(again["status"], "active");
    assert_ne!(again["stripe_subscription"], canceled["stripe_subscription"]);
    let stripe = stripe_subscription_of(&server, &again).await;
    assert_eq!(stripe["items"]["data"][0]["quantity"], 3);
    assert_eq!(stripe["discounts"].as_array().unwrap().len(), 1);
    all_delivered(&server).await;
    let (_, body) = me.get(user).await;
    assert_eq!(
        body["subscriptions"][0]["stripe_subscription"],
        again["stripe_subscription"]
    );
    assert_eq!(body["subscriptions"][0]["status"], "active");
    set_clock(&server, 0).await;
}

#[tokio::test]
async fn a_renewal_that_needs_authentication_makes_it_past_due_and_mails_the_invoice() {
    let server = start_server_against_moto().await;
    let admin = Caller::admin(&server);
    let (user, email) = new_user();
    let me = Caller::user(&server, user);
    let (status, body) = admin
        .create(json!({"user_id": user, "email": email, "plan": "basic_monthly", "stripe_source": "pm_card_visa"}))
        .await;
    assert_eq!(status, 201, "{body}");
    // Given the owner's card is now one whose bank asks for 3-D Secure on every charge
    let (status, body) = me
        .patch(user, json!({"stripe_source": "pm_card_authenticationRequired"}))
        .await;
    assert_eq!(status, 200, "{body}");
    all_delivered(&server).await;
    // When the period ends, then the renewal waits for the customer: past due, and a mail
    // with the invoice's page to authenticate on
    set_clock(&server, 31 * 86_400).await;
    eventually(30, "the subscription to be past due", || async {
        let (_, body) = me.get(user).await;
        body["subscriptions"][0]["status"] == "past_due"
    })
    .await;
    let open = invoices(&me, user).await;
    assert_eq!(open[0]["status"], "open");
    let page = open[0]["hosted_invoice_url"].as_str().unwrap().to_owned();
    eventually(30, "the action-required mail", || async {
        ses_mails_to(&email)
            .await
            .iter()
            .any(|mail| mail["body"].as_str().is_some_and(|text| text.contains(&page)))
    })
    .await;
    set_clock(&server, 0).await;
}

/// PATCH one field, let the sandbox's `customer.subscription.updated` come back through the
/// webhook, and read the field back: the webhook agrees with what was set.
async fn set_and_read_back(server: &RunningServer, user: Uuid, change: Value, field: &str) -> Value {
    let admin = Caller::admin(server);
    let (status, body) = admin.patch(user, change.clone()).await;
    assert_eq!(status, 200, "{change}: {body}");
    let set = body["subscriptions"][0][field].clone();
    let sandbox = &server.sandbox.as_ref().unwrap().sandbox;
    let stripe_subscription = body["subscriptions"][0]["stripe_subscription"]
        .as_str()
        .unwrap()
        .to_owned();
    let updates = sandbox
        .events()
        .iter()
        .filter(|e| e["type"] == "customer.subscription.updated" && e["data"]["object"]["id"] == stripe_subscription)
        .count();
    assert!(updates > 0, "{change}: Stripe emitted no customer.subscription.updated");
    all_delivered(server).await;
    let (_, body) = admin.get(user).await;
    assert_eq!(body["subscriptions"][0][field], set, "{field} after the webhook");
    set
}

#[tokio::test]
async fn no_field_set_through_the_api_is_reverted_by_the_webhook_that_follows() {
    let server = start_server_against_moto().await;
    let admin = Caller::admin(&server);
    let (user, email) = new_user();
    let (status, body) = admin
        .create(json!({"user_id": user, "email": email, "plan": "basic_monthly", "stripe_source": "pm_card_visa"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let trial_end = (chrono::Utc::now() + chrono::Duration::days(45))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for (change, field, expected) in [
        (json!({"plan": "business_monthly"}), "plan", json!("business_monthly")),
        (json!({"licenses": 4}), "licenses", json!(4)),
        (json!({"discount_percent": 15}), "discount_percent", json!(15)),
        (
            json!({"cancel_at_period_end": true}),
            "cancel_at_period_end",
            json!(true),
        ),
        (
            json!({"cancel_at_period_end": false}),
            "cancel_at_period_end",
            json!(false),
        ),
        (json!({"trial_end": trial_end}), "trial_end", json!(trial_end)),
    ] {
        assert_eq!(
            set_and_read_back(&server, user, change, field).await,
            expected,
            "{field}"
        );
    }
    // The email reaches the customer (Stripe mails invoices there)
    let (status, body) = admin.patch(user, json!({"email": "renamed@example.com"})).await;
    assert_eq!(status, 200, "{body}");
    let customer = stripe_get(
        server.sandbox.as_ref().unwrap(),
        &format!(
            "/v1/customers/{}",
            body["subscriptions"][0]["stripe_customer"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(customer["email"], "renamed@example.com");
}
