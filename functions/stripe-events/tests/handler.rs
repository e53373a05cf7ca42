//! The operators' Stripe-event endpoints in-process, against the embedded store and the Stripe
//! sandbox: events kept by the receive path the webhook uses, listed, replayed; a subscription
//! reconciled with what the sandbox holds.

use std::sync::Arc;

use billing::plans::purchase::Purchases;
use billing::provisioning::{Provision, provision};
use billing::store::{AuditEntry, Store};
use billing::subscription::{Status, Subscription, SubscriptionChange};
use billing::webhook::{EventContext, Handled, Receiver, StripeEvent, receive};
use billing_adapters::{EmbeddedStore, OutboxMailer, SystemClock};
use billing_http::Cors;
use billing_testing::{ApiEvent, catalog};
use chrono::Utc;
use serde_json::{Value, json};
use stripe_events::{StripeEvents, routes};
use stripe_sandbox::RunningSandbox;
use uuid::Uuid;

struct Fixture {
    function: StripeEvents,
    store: Arc<EmbeddedStore>,
    sandbox: RunningSandbox,
    admin: Uuid,
}

async fn fixture() -> Fixture {
    let (sandbox, billing) = billing_testing::sandbox_billing(800, billing_testing::fast_retries()).await;
    let store = billing_testing::embedded_store();
    let outbox: Arc<OutboxMailer> = billing_testing::outbox();
    let function = StripeEvents {
        store: store.clone(),
        mailer: outbox,
        billing: billing.clone(),
        catalog: catalog(),
        cors: Cors::default(),
        clock: Arc::new(SystemClock),
        idempotency: billing_http::idempotent::Idempotency {
            documents: billing_testing::in_memory_store(),
            clock: std::sync::Arc::new(billing_adapters::SystemClock),
        },
        purchases: Purchases {
            documents: store.clone(),
            stripe: billing,
            trial_days: 0,
            prices: billing::plans::Prices::default(),
        },
    }
    .declared();
    Fixture {
        function,
        store,
        sandbox,
        admin: Uuid::new_v4(),
    }
}

/// The sample `customer.subscription.updated` (status `active`, `basic_monthly`), made about
/// this user's Stripe subscription.
fn update_event(id: &str, user: Uuid, stripe_subscription: &str, customer: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/stripe-customer-subscription-updated.json"
    );
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["id"] = json!(id);
    event["data"]["object"]["id"] = json!(stripe_subscription);
    event["data"]["object"]["customer"] = json!(customer);
    event["data"]["object"]["metadata"]["user_id"] = json!(user);
    event
}

fn body(response: &lambda_http::Response<lambda_http::Body>) -> Value {
    serde_json::from_slice(response.body()).unwrap()
}

impl Fixture {
    /// What the webhook does with a verified event: handled and kept.
    async fn received(&self, event: &Value) -> Handled {
        let raw = event.to_string().into_bytes();
        let parsed = StripeEvent::parse(&raw).unwrap();
        let receiver = Receiver {
            events: EventContext {
                store: self.store.as_ref(),
                mailer: self.function.mailer.as_ref(),
                catalog: &self.function.catalog,
                clock: self.function.clock.as_ref(),
            },
            purchases: &self.function.purchases,
        };
        receive(receiver, &parsed, &raw).await.unwrap()
    }

    async fn call(&self, route: &str, path: &str, parameters: &[(&str, &str)], query: &[(&str, &str)]) -> (u16, Value) {
        let request = ApiEvent::sample("apigw-stripe-events-list.json")
            .caller(self.admin, "subscriptions subscriptions_admin")
            .route(route, path, parameters)
            .query(query)
            .build();
        let response = self.function.handle(request).await;
        (response.status().as_u16(), body(&response))
    }

    async fn list(&self, query: &[(&str, &str)]) -> Value {
        let (status, body) = self.call(routes::LIST, "/stripe/events", &[], query).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn replay(&self, id: &str) -> (u16, Value) {
        self.call(
            routes::REPLAY,
            &format!("/stripe/events/{id}/replay"),
            &[("event_id", id)],
            &[],
        )
        .await
    }

    /// A subscription stored with these Stripe ids, trialing on `pending`.
    async fn stored(&self, user: Uuid, customer: &str, stripe_subscription: &str) -> Subscription {
        billing_testing::store_pending_subscription(
            self.store.as_ref(),
            json!({"user_id": user, "email": "ada@example.com", "stripe_customer": customer,
                   "stripe_subscription": stripe_subscription}),
        )
        .await
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_event_that_came_before_its_subscription_is_listed_and_applies_when_replayed() {
    // Given an update of a subscription the service does not have yet, received and kept
    let f = fixture().await;
    let user = Uuid::new_v4();
    let event = update_event("evt_early", user, "sub_early", "cus_early");
    assert_eq!(f.received(&event).await, Handled::Recorded("unknown_subscription"));
    // When an operator lists what was not applied
    let unapplied = f.list(&[("outcome", "unknown_subscription")]).await;
    // Then it is there, with no subscription
    assert_eq!(ids(&unapplied), vec!["evt_early"]);
    assert_eq!(
        unapplied["events"][0],
        json!({"id": "evt_early", "type": "customer.subscription.updated", "created": event["created"],
               "outcome": "unknown_subscription", "subscription_id": null})
    );
    // When the subscription exists and the event is replayed
    f.stored(user, "cus_early", "sub_early").await;
    let (status, replayed) = f.replay("evt_early").await;
    // Then it is applied once, and no longer listed as unapplied
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed, json!({"events": [{"id": "evt_early", "outcome": "applied"}]}));
    let stored = f.store.get_subscription(user).await.unwrap();
    assert_eq!(
        (stored.status, stored.plan.as_str(), stored.version),
        (Status::Active, "basic_monthly", 2)
    );
    assert!(ids(&f.list(&[("outcome", "unknown_subscription")]).await).is_empty());
    let applied = f.list(&[("outcome", "applied")]).await;
    assert_eq!(applied["events"][0]["subscription_id"], json!(user));
    // and a second replay changes nothing
    let (status, again) = f.replay("evt_early").await;
    assert_eq!((status, &again["events"][0]["outcome"]), (200, &json!("applied")));
    assert_eq!(f.store.get_subscription(user).await.unwrap().version, 2);
    let trail = f.store.audit_trail(user).await.unwrap();
    assert_eq!(trail.last().unwrap().actor, "stripe:evt_early");
}

#[tokio::test]
async fn kept_events_are_listed_newest_first_a_page_at_a_time_across_outcomes() {
    // Given three events of unknown subscriptions, a second apart, and one ignored
    let f = fixture().await;
    for (i, id) in ["evt_a", "evt_b", "evt_c"].iter().enumerate() {
        let mut event = update_event(id, Uuid::new_v4(), &format!("sub_{id}"), "cus_x");
        event["created"] = json!(1_795_255_200 + i64::try_from(i).unwrap());
        f.received(&event).await;
    }
    let mut other = update_event("evt_other", Uuid::new_v4(), "sub_o", "cus_o");
    other["type"] = json!("charge.refunded");
    assert_eq!(f.received(&other).await, Handled::Recorded("ignored"));
    // When the unapplied ones are read two at a time
    let first = f.list(&[("outcome", "unknown_subscription"), ("limit", "2")]).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = f
        .list(&[("outcome", "unknown_subscription"), ("limit", "2"), ("cursor", &cursor)])
        .await;
    // Then they come newest first, and the ignored one is not among them
    assert_eq!(ids(&first), vec!["evt_c", "evt_b"]);
    assert_eq!(ids(&second), vec!["evt_a"]);
    assert_eq!(second["next_cursor"], Value::Null);
    // And without an outcome, every kept event is listed
    assert_eq!(ids(&f.list(&[]).await).len(), 4);
    // And the cursor of one outcome is refused for another
    let (status, refused) = f
        .call(
            routes::LIST,
            "/stripe/events",
            &[],
            &[("outcome", "applied"), ("cursor", &cursor)],
        )
        .await;
    assert_eq!((status, &refused["errors"][0]["param"]), (400, &json!("cursor")));
}

#[tokio::test]
async fn an_unknown_outcome_a_missing_event_and_a_body_are_refused() {
    let f = fixture().await;
    let (status, body) = f
        .call(routes::LIST, "/stripe/events", &[], &[("outcome", "lost")])
        .await;
    assert_eq!((status, &body["errors"][0]["param"]), (400, &json!("outcome")));
    assert_eq!(f.replay("evt_never_kept").await.0, 404);
    let (status, body) = f.replay("not-an-event").await;
    assert_eq!((status, &body["errors"][0]["param"]), (400, &json!("event_id")));
    let with_body = ApiEvent::sample("apigw-stripe-events-list.json")
        .caller(f.admin, "subscriptions_admin")
        .route(routes::REPLAY, "/stripe/events/evt_1/replay", &[("event_id", "evt_1")])
        .header("content-type", "application/json")
        .body(&json!({"force": true}))
        .build();
    assert_eq!(f.function.handle(with_body).await.status(), 400);
}

#[tokio::test]
async fn the_operators_endpoints_are_for_administrators_only() {
    let f = fixture().await;
    let user = Uuid::new_v4();
    let id = user.to_string();
    for (route, path, parameters) in [
        (routes::LIST, "/stripe/events".to_owned(), vec![]),
        (
            routes::REPLAY,
            "/stripe/events/evt_1/replay".to_owned(),
            vec![("event_id", "evt_1")],
        ),
        (
            routes::RECONCILE,
            format!("/subscriptions/{id}/reconcile"),
            vec![("id", id.as_str())],
        ),
    ] {
        let request = ApiEvent::sample("apigw-stripe-events-list.json")
            .caller(user, "subscriptions")
            .route(route, &path, &parameters)
            .build();
        let response = f.function.handle(request).await;
        assert_eq!(response.status(), 403, "{route}");
        assert_eq!(body(&response)["errors"][0]["slug"], "access_denied");
    }
}

#[tokio::test]
async fn reconcile_stores_what_the_sandbox_holds_after_an_event_was_lost() {
    // Given a paying subscriber whose Stripe subscription was set to cancel in Stripe, the
    // event of it never arriving
    let f = fixture().await;
    let user = Uuid::new_v4();
    let change = SubscriptionChange::from_json(
        json!({"user_id": user, "email": "ada@example.com", "plan": "basic_monthly", "stripe_source": "pm_card_visa"})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let catalog = catalog();
    let subscription = provision(
        f.store.as_ref(),
        f.function.billing.as_ref(),
        Provision {
            change: &change,
            plan: catalog.get("basic_monthly").unwrap(),
            trial_start: None,
            actor: "system:test",
            now: Utc::now(),
        },
    )
    .await
    .unwrap();
    let stripe_id = subscription.stripe_subscription.clone().unwrap();
    let changed = reqwest::Client::new()
        .post(format!("{}v1/subscriptions/{stripe_id}", f.sandbox.base_url()))
        .basic_auth("sk_test_fixture", Some(""))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("cancel_at_period_end=true")
        .send()
        .await
        .unwrap();
    assert!(changed.status().is_success());
    assert!(!f.store.get_subscription(user).await.unwrap().cancel_at_period_end);
    // When an administrator reconciles it
    let id = user.to_string();
    let (status, answer) = f
        .call(
            routes::RECONCILE,
            &format!("/subscriptions/{id}/reconcile"),
            &[("id", &id)],
            &[],
        )
        .await;
    // Then the stored subscription holds Stripe's state, and the trail names the administrator
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["subscriptions"][0]["cancel_at_period_end"], true);
    assert!(f.store.get_subscription(user).await.unwrap().cancel_at_period_end);
    let last = f.store.audit_trail(user).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.actor, last.action.as_str()),
        (format!("admin:{}", f.admin), "reconcile")
    );
    assert_eq!(
        last.changes,
        json!([{"field": "/cancel_at_period_end", "before": false, "after": true}])
    );
    // And a subscription without a Stripe subscription cannot be reconciled
    let unlinked = billing_testing::new_subscription(None);
    f.store
        .create_subscription(
            &unlinked,
            &AuditEntry::between(None, &unlinked, "system:test", "create"),
        )
        .await
        .unwrap();
    let bare = unlinked.id;
    let (status, refused) = f
        .call(
            routes::RECONCILE,
            &format!("/subscriptions/{bare}/reconcile"),
            &[("id", &bare.to_string())],
            &[],
        )
        .await;
    assert_eq!((status, &refused["errors"][0]["slug"]), (409, &json!("conflict")));
}
