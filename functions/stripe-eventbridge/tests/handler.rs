//! EventBridge envelopes in-process, against the embedded store: the sample envelope of
//! `events/`, applied once however it arrives.

use std::sync::Arc;

use billing::plans::purchase::Purchases;
use billing::store::Store;
use billing::subscription::Status;
use billing::webhook::{EventContext, Handled, Receiver, StripeEvent, receive};
use billing_adapters::{EmbeddedStore, SystemClock};
use billing_testing::{FakeBilling, catalog};
use chrono::Utc;
use serde_json::{Value, json};
use stripe_eventbridge::StripeEventBridge;
use uuid::Uuid;

/// The user the sample event's metadata names.
const SAMPLE_USER: &str = "0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b";

fn envelope() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/eventbridge-stripe-event.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn function(store: Arc<EmbeddedStore>) -> StripeEventBridge {
    StripeEventBridge {
        store: store.clone(),
        mailer: billing_testing::outbox(),
        catalog: catalog(),
        clock: Arc::new(SystemClock),
        purchases: Purchases {
            documents: store,
            stripe: Arc::new(FakeBilling::new(Utc::now())),
            trial_days: 0,
            prices: billing::plans::Prices::default(),
        },
    }
    .declared()
}

/// The sample's subscriber, trialing on `pending`, linked to the sample's Stripe ids.
async fn sample_subscriber(store: &dyn Store) {
    let event = &envelope()["detail"]["data"]["object"];
    billing_testing::store_pending_subscription(
        store,
        json!({"user_id": SAMPLE_USER, "email": "ada@example.com", "stripe_customer": event["customer"],
               "stripe_subscription": event["id"]}),
    )
    .await;
}

#[tokio::test]
async fn an_envelope_is_applied_once_whichever_way_the_event_comes_again() {
    // Given the sample envelope's subscriber
    let store = billing_testing::embedded_store();
    sample_subscriber(store.as_ref()).await;
    let function = function(store.clone());
    // When the envelope arrives
    let answer = function.handle(&envelope()).await.unwrap();
    // Then the event is applied and kept
    assert_eq!(answer, json!({"id": "evt_1QfixtureUpdated", "outcome": "applied"}));
    let user: Uuid = SAMPLE_USER.parse().unwrap();
    let stored = store.get_subscription(user).await.unwrap();
    assert_eq!((stored.status, stored.version), (Status::Active, 2));
    assert_eq!(
        store.kept_event("evt_1QfixtureUpdated").await.unwrap().outcome,
        "applied"
    );
    // And the same envelope again, or the same event through the webhook's path, changes nothing
    assert_eq!(function.handle(&envelope()).await.unwrap()["outcome"], "duplicate");
    let raw = envelope()["detail"].to_string().into_bytes();
    let receiver = Receiver {
        events: EventContext {
            store: store.as_ref(),
            mailer: function.mailer.as_ref(),
            catalog: &function.catalog,
            clock: function.clock.as_ref(),
        },
        purchases: &function.purchases,
    };
    let by_webhook = receive(receiver, &StripeEvent::parse(&raw).unwrap(), &raw)
        .await
        .unwrap();
    assert_eq!(by_webhook, Handled::Duplicate);
    assert_eq!(store.get_subscription(user).await.unwrap().version, 2);
}

#[tokio::test]
async fn an_envelope_of_another_source_or_without_an_event_is_refused_and_stores_nothing() {
    let store = billing_testing::embedded_store();
    let function = function(store.clone());
    let mut foreign = envelope();
    foreign["source"] = json!("aws.partner/example.com/other");
    let mut empty = envelope();
    empty["detail"] = json!({"hello": "world"});
    let mut mislabelled = envelope();
    mislabelled["detail-type"] = json!("invoice.paid");
    for envelope in [foreign, empty, mislabelled] {
        assert_eq!(function.handle(&envelope).await.unwrap()["outcome"], "refused");
    }
    assert!(store.kept_event("evt_1QfixtureUpdated").await.is_err());
}

#[tokio::test]
async fn an_event_of_an_unknown_subscription_is_kept_for_replay() {
    let store = billing_testing::embedded_store();
    let answer = function(store.clone()).handle(&envelope()).await.unwrap();
    assert_eq!(answer["outcome"], "unknown_subscription");
    let kept = store.kept_event("evt_1QfixtureUpdated").await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&kept.body).unwrap(),
        envelope()["detail"]
    );
}
