//! Stripe's webhooks end to end: the sandbox signs and sends events for what changes in it to
//! the local server's `/stripe/webhook` (in `--aws` mode: DynamoDB and SES in moto), which keeps
//! the stored subscriptions true to Stripe whatever the order and repetition of delivery.

use std::collections::HashMap;

use billing::subscription::Status;
use bundle_tests::{Caller, all_delivered, eventually, start_server_against_moto, stripe_get, stripe_post};
use devserver::RunningServer;
use serde_json::{Value, json};
use stripe_sandbox::webhooks::Order;
use uuid::Uuid;

async fn subscribe(server: &RunningServer) -> (Uuid, Value) {
    let user = Uuid::new_v4();
    let (status, body) = Caller::admin(server)
        .create(json!({"user_id": user, "email": format!("{}@example.com", user.simple())}))
        .await;
    assert_eq!(status, 201, "{body}");
    (user, body["subscriptions"][0].clone())
}

/// Waits until the sandbox has delivered every event it made.
async fn post_event(server: &RunningServer, payload: &str, signature: Option<String>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/stripe/webhook", server.address))
        .header("content-type", "application/json")
        .body(payload.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_change_made_in_stripe_reaches_the_store() {
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let (user, created) = subscribe(&server).await;
    stripe_post(
        sandbox,
        &format!("/v1/subscriptions/{}", created["stripe_subscription"].as_str().unwrap()),
        &[("cancel_at_period_end", "true")],
    )
    .await;
    eventually(30, "the flag to arrive", || async {
        server.store.get_subscription(user).await.unwrap().cancel_at_period_end
    })
    .await;
}

#[tokio::test]
async fn a_discount_set_in_the_dashboard_reaches_the_store_though_events_name_it_by_id() {
    // Given a subscription without a discount, and a 15 % coupon made in Stripe
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let (user, created) = subscribe(&server).await;
    let coupon = stripe_post(
        sandbox,
        "/v1/coupons",
        &[("percent_off", "15"), ("duration", "forever")],
    )
    .await;
    // When someone applies it to the subscription in the Dashboard
    let stripe_id = created["stripe_subscription"].as_str().unwrap();
    let updated = stripe_post(
        sandbox,
        &format!("/v1/subscriptions/{stripe_id}"),
        &[("discounts[0][coupon]", coupon["id"].as_str().unwrap())],
    )
    .await;
    // (whose event names the discount only by its id)
    assert!(updated["discounts"][0].is_string(), "{updated}");
    // Then the stored subscription says 15 %
    eventually(30, "the discount to arrive", || async {
        server.store.get_subscription(user).await.unwrap().discount_percent == Some(15)
    })
    .await;
}

#[tokio::test]
async fn a_discount_removed_in_the_dashboard_is_removed_from_the_store() {
    // Given a subscription an administrator gave 20 % off
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let (user, created) = subscribe(&server).await;
    let (status, body) = Caller::admin(&server)
        .patch(user, json!({"discount_percent": 20}))
        .await;
    assert_eq!(status, 200, "{body}");
    // When someone removes the discount in the Dashboard (its event carries no discounts)
    let stripe_id = created["stripe_subscription"].as_str().unwrap();
    stripe_post(sandbox, &format!("/v1/subscriptions/{stripe_id}"), &[("discounts", "")]).await;
    // Then the stored subscription has none
    eventually(30, "the removal to arrive", || async {
        server
            .store
            .get_subscription(user)
            .await
            .unwrap()
            .discount_percent
            .is_none()
    })
    .await;
}

#[tokio::test]
async fn forged_missing_and_old_signatures_get_400_and_store_nothing() {
    let server = start_server_against_moto().await;
    let (user, created) = subscribe(&server).await;
    all_delivered(&server).await;
    let before = server.store.get_subscription(user).await.unwrap();
    // A second after the sandbox's own events: within one second events are ordered by id, and
    // a made-up id does not sort like Stripe's time-ordered ones.
    let event = json!({"id": format!("evt_{}", Uuid::new_v4().simple()), "type": "customer.subscription.deleted", "created": chrono::Utc::now().timestamp() + 1,
                       "data": {"object": {"id": created["stripe_subscription"], "status": "canceled", "items": {"data": []}}}})
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let signatures = [
        Some(billing::webhook::sign(event.as_bytes(), "whsec_forged", now)),
        None,
        Some(billing::webhook::sign(
            event.as_bytes(),
            &server.webhook_secret,
            now - 300 - 5,
        )),
    ];
    for signature in signatures {
        let (status, body) = post_event(&server, &event, signature).await;
        assert_eq!(status, 400, "{body}");
    }
    assert_eq!(server.store.get_subscription(user).await.unwrap(), before);
    // The genuine one applies
    let (status, _) = post_event(
        &server,
        &event,
        Some(billing::webhook::sign(event.as_bytes(), &server.webhook_secret, now)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        server.store.get_subscription(user).await.unwrap().status,
        Status::Canceled
    );
}

#[tokio::test]
async fn the_same_event_delivered_twice_is_applied_once() {
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let (user, created) = subscribe(&server).await;
    stripe_post(
        sandbox,
        &format!("/v1/subscriptions/{}", created["stripe_subscription"].as_str().unwrap()),
        &[("cancel_at_period_end", "true")],
    )
    .await;
    all_delivered(&server).await;
    let trail = server.store.audit_trail(user).await.unwrap().len();
    let update = sandbox
        .sandbox
        .events()
        .into_iter()
        .rev()
        .find(|e| e["type"] == "customer.subscription.updated")
        .unwrap();
    assert!(sandbox.sandbox.replay(update["id"].as_str().unwrap()));
    eventually(30, "the replay", || async {
        sandbox.sandbox.deliveries().len() > sandbox.sandbox.events().len()
    })
    .await;
    assert_eq!(server.store.audit_trail(user).await.unwrap().len(), trail);
}

#[tokio::test]
async fn an_older_update_arriving_after_a_newer_deletion_leaves_it_canceled() {
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let (user, created) = subscribe(&server).await;
    all_delivered(&server).await;
    let sub = created["stripe_subscription"].as_str().unwrap();
    sandbox.sandbox.hold_webhooks();
    stripe_post(
        sandbox,
        &format!("/v1/subscriptions/{sub}"),
        &[("cancel_at_period_end", "true")],
    )
    .await;
    // Stripe's timestamps are in seconds: make the deletion a later second than the update
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    reqwest::Client::new()
        .delete(format!("{}v1/subscriptions/{sub}", sandbox.base_url()))
        .bearer_auth(bundle_tests::TEST_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(sandbox.sandbox.release_webhooks(Order::Reversed, 0), 2);
    all_delivered(&server).await;
    let stored = server.store.get_subscription(user).await.unwrap();
    assert_eq!(stored.status, Status::Canceled);
}

#[tokio::test]
async fn a_shuffled_storm_with_duplicates_converges_to_stripes_final_state() {
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let mut subscriptions = Vec::new();
    for _ in 0..5 {
        subscriptions.push(subscribe(&server).await);
    }
    // Their trials end now (on the free `pending` price nothing is charged: all active), so that
    // renewals are charged during the storm.
    for (_, created) in &subscriptions {
        let sub = created["stripe_subscription"].as_str().unwrap();
        let ended = stripe_post(sandbox, &format!("/v1/subscriptions/{sub}"), &[("trial_end", "now")]).await;
        assert_eq!(ended["status"], "active", "{ended}");
    }
    all_delivered(&server).await;
    sandbox.sandbox.hold_webhooks();
    // 50 changes made in Stripe across the five subscriptions, over several seconds: plan
    // changes, cancellation flags, a deletion, and renewals paid or failing, whose invoice events
    // (`invoice.paid`, `invoice.payment_failed`) interleave with the subscriptions' snapshots
    let prices = [
        "price_basic_monthly",
        "price_business_monthly",
        "price_basic_annual",
        "price_business_annual",
        "price_pending",
    ];
    for round in 0..10 {
        for (i, (_, created)) in subscriptions.iter().enumerate() {
            let sub = created["stripe_subscription"].as_str().unwrap();
            let current = stripe_get(sandbox, &format!("/v1/subscriptions/{sub}")).await;
            if current["status"] == "canceled" {
                stripe_post(
                    sandbox,
                    &format!("/v1/subscriptions/{sub}"),
                    &[("metadata[round]", &round.to_string())],
                )
                .await;
                continue;
            }
            match (round + i) % 4 {
                0 | 1 => {
                    let item = current["items"]["data"][0]["id"].as_str().unwrap().to_owned();
                    let price = prices[(round * 3 + i) % prices.len()];
                    stripe_post(
                        sandbox,
                        &format!("/v1/subscriptions/{sub}"),
                        &[("items[0][id]", &item), ("items[0][price]", price)],
                    )
                    .await;
                }
                2 => {
                    let flag = if current["cancel_at_period_end"] == true {
                        "false"
                    } else {
                        "true"
                    };
                    stripe_post(
                        sandbox,
                        &format!("/v1/subscriptions/{sub}"),
                        &[("cancel_at_period_end", flag)],
                    )
                    .await;
                }
                _ if round == 7 && i == 2 => {
                    reqwest::Client::new()
                        .delete(format!("{}v1/subscriptions/{sub}", sandbox.base_url()))
                        .bearer_auth(bundle_tests::TEST_KEY)
                        .send()
                        .await
                        .unwrap();
                }
                _ => {
                    let pays = round % 2 == 1;
                    if sandbox.sandbox.renewal(sub, pays).is_none() {
                        stripe_post(
                            sandbox,
                            &format!("/v1/subscriptions/{sub}"),
                            &[("metadata[round]", &round.to_string())],
                        )
                        .await;
                    }
                }
            }
        }
        if round % 3 == 2 {
            tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        }
    }
    let released = sandbox.sandbox.release_webhooks(Order::Shuffled, 25);
    assert!(released >= 45, "{released}");
    all_delivered(&server).await;
    let plan_of: HashMap<&str, &str> = [
        ("price_pending", "pending"),
        ("price_basic_monthly", "basic_monthly"),
        ("price_basic_annual", "basic_annual"),
        ("price_business_monthly", "business_monthly"),
        ("price_business_annual", "business_annual"),
    ]
    .into_iter()
    .collect();
    for (user, created) in &subscriptions {
        let stripe = stripe_get(
            sandbox,
            &format!("/v1/subscriptions/{}", created["stripe_subscription"].as_str().unwrap()),
        )
        .await;
        let stored = server.store.get_subscription(*user).await.unwrap();
        assert_eq!(stored.status.as_str(), stripe["status"].as_str().unwrap(), "{user}");
        assert_eq!(
            stored.plan,
            plan_of[stripe["items"]["data"][0]["price"]["id"].as_str().unwrap()],
            "{user}"
        );
        assert_eq!(
            stored.cancel_at_period_end,
            stripe["cancel_at_period_end"].as_bool().unwrap(),
            "{user}"
        );
        assert_eq!(
            stored.trial_end.map(|t| t.timestamp()),
            stripe["trial_end"].as_i64(),
            "{user}"
        );
    }
}

#[tokio::test]
async fn trial_will_end_sends_exactly_one_mail_through_ses() {
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let (user, created) = subscribe(&server).await;
    all_delivered(&server).await;
    let event = sandbox
        .sandbox
        .trial_will_end(created["stripe_subscription"].as_str().unwrap())
        .unwrap();
    all_delivered(&server).await;
    assert!(sandbox.sandbox.replay(&event));
    eventually(30, "the replay", || async {
        sandbox
            .sandbox
            .deliveries()
            .iter()
            .filter(|d| d["event_id"] == event.as_str())
            .count()
            == 2
    })
    .await;
    let address = format!("{}@example.com", user.simple());
    let mails = bundle_tests::ses_mails_to(&address).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0]["subject"].as_str().unwrap().contains("trial"));
}

#[tokio::test]
async fn has_payment_source_follows_the_default_card_as_it_is_attached_and_detached_in_stripe() {
    // Given a subscriber who attached a card through the API
    let server = start_server_against_moto().await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let (user, created) = subscribe(&server).await;
    let (status, body) = Caller::user(&server, user)
        .patch(user, json!({"stripe_source": "pm_card_visa"}))
        .await;
    assert_eq!(status, 200, "{body}");
    all_delivered(&server).await;
    assert!(server.store.get_subscription(user).await.unwrap().has_payment_source);

    // When the card is detached in Stripe (the customer's portal, or the dashboard)
    let customer = created["stripe_customer"].as_str().unwrap();
    let stored = stripe_get(sandbox, &format!("/v1/customers/{customer}")).await;
    let card = stored["invoice_settings"]["default_payment_method"]
        .as_str()
        .unwrap()
        .to_owned();
    stripe_post(sandbox, &format!("/v1/payment_methods/{card}/detach"), &[]).await;

    // Then the customer's update reaches the subscription: it has no payment source
    eventually(30, "has_payment_source to follow the detach", || async {
        !server.store.get_subscription(user).await.unwrap().has_payment_source
    })
    .await;
}
