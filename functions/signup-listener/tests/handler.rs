//! The signup consumer in-process, against the embedded store and the Stripe sandbox, fed the
//! SQS batch sample of `events/` and events made for each case.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use billing::metrics::{OUTCOME, SIGNUPS};
use billing::store::{Store, StoreError};
use billing::subscription::Status;
use billing_testing::{Counts, catalog, embedded_store};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use signup_listener::SignupListener;
use stripe_sandbox::RunningSandbox;
use uuid::Uuid;

struct Fixture {
    listener: SignupListener,
    sandbox: RunningSandbox,
    store: Arc<dyn Store>,
}

async fn fixture() -> Fixture {
    let (sandbox, billing) = billing_testing::sandbox_billing(0, billing_testing::fast_retries()).await;
    let store: Arc<dyn Store> = embedded_store();
    Fixture {
        listener: SignupListener {
            store: store.clone(),
            billing,
            catalog: catalog(),
            clock: std::sync::Arc::new(billing_adapters::SystemClock),
        }
        .declared(),
        sandbox,
        store,
    }
}

impl Fixture {
    async fn customers(&self, email: &str) -> usize {
        let url = format!("{}v1/customers?email={email}&limit=100", self.sandbox.base_url());
        let listed: Value = reqwest::Client::new()
            .get(url)
            .bearer_auth("sk_test_signup")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        listed["data"].as_array().unwrap().len()
    }
}

fn sample_batch() -> SqsEvent {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/sqs-signup-batch.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn message(id: &str, body: &Value) -> SqsMessage {
    serde_json::from_value(json!({"messageId": id, "receiptHandle": id, "body": body.to_string(), "attributes": {}, "messageAttributes": {}})).unwrap()
}

fn signup(user: Uuid, email: &str, created_at: DateTime<Utc>) -> Value {
    json!({"type": "profile.created", "event_id": Uuid::new_v4(), "user_id": user, "email": email, "created_at": created_at.to_rfc3339()})
}

fn batch(messages: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages;
    event
}

fn failed_ids(response: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

const POISON_ID: &str = "0f6c2a1e-6b8d-4c1a-9e2f-3a4b5c6d7e03";

#[tokio::test]
async fn a_poison_message_is_reported_alone_and_the_rest_of_its_batch_is_provisioned() {
    let counts = Counts::default();
    let _counting = counts.count_here();
    let f = fixture().await;
    let response = f.listener.handle(sample_batch()).await;
    assert_eq!(failed_ids(&response), vec![POISON_ID]);
    for (user, email) in [
        ("01", "ada@example.com"),
        ("02", "grace@example.com"),
        ("05", "edsger@example.com"),
    ] {
        let id: Uuid = format!("3e1d5c7a-9b2f-4e6d-8a1c-5f7e9d3b2a{user}").parse().unwrap();
        let stored = f.store.get_subscription(id).await.unwrap();
        assert_eq!(
            (stored.plan.as_str(), stored.status, stored.email.as_str()),
            ("pending", Status::Trialing, email)
        );
        assert_eq!(f.store.audit_trail(id).await.unwrap()[0].actor, "system:signup");
    }
    assert_eq!(
        counts.get(SIGNUPS, &[(OUTCOME, "created")]),
        3,
        "{:?}",
        counts.summary()
    );
    assert_eq!(counts.get(SIGNUPS, &[(OUTCOME, "poison")]), 1);
}

#[tokio::test]
async fn a_redelivered_batch_creates_nothing_new() {
    let f = fixture().await;
    f.listener.handle(sample_batch()).await;
    let before = f
        .store
        .get_subscription("3e1d5c7a-9b2f-4e6d-8a1c-5f7e9d3b2a01".parse().unwrap())
        .await
        .unwrap();
    let response = f.listener.handle(sample_batch()).await;
    assert_eq!(failed_ids(&response), vec![POISON_ID]);
    for email in ["ada@example.com", "grace@example.com", "edsger@example.com"] {
        assert_eq!(f.customers(email).await, 1, "{email}");
    }
    assert_eq!(f.store.get_subscription(before.id).await.unwrap(), before);
}

#[tokio::test]
async fn a_duplicate_event_with_another_id_for_the_same_user_is_acknowledged_without_a_second_customer() {
    let f = fixture().await;
    let user = Uuid::new_v4();
    let email = format!("{}@example.com", user.simple());
    let first = message("m-1", &signup(user, &email, Utc::now()));
    let duplicate = message("m-2", &signup(user, &email, Utc::now()));
    assert!(failed_ids(&f.listener.handle(batch(vec![first])).await).is_empty());
    assert!(failed_ids(&f.listener.handle(batch(vec![duplicate])).await).is_empty());
    assert_eq!(f.customers(&email).await, 1);
}

#[tokio::test]
async fn a_stripe_failure_fails_only_its_item_and_the_retry_makes_no_duplicate() {
    let counts = Counts::default();
    let _counting = counts.count_here();
    let f = fixture().await;
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let emails: Vec<String> = users.iter().map(|u| format!("{}@example.com", u.simple())).collect();
    let messages: Vec<SqsMessage> = users
        .iter()
        .zip(&emails)
        .enumerate()
        .map(|(i, (user, email))| message(&format!("m-{i}"), &signup(*user, email, Utc::now())))
        .collect();
    // Given Stripe failing every call about the second user's subscription
    f.sandbox
        .sandbox
        .fail_next_matching(100, 500, Some("/v1/subscriptions"), Some(&users[1].to_string()));
    let response = f.listener.handle(batch(messages.clone())).await;
    // Then only that message is handed back
    assert_eq!(failed_ids(&response), vec!["m-1"]);
    assert!(matches!(
        f.store.get_subscription(users[1]).await,
        Err(StoreError::NotFound)
    ));
    assert!(f.store.get_subscription(users[0]).await.is_ok() && f.store.get_subscription(users[2]).await.is_ok());
    assert_eq!(counts.get(SIGNUPS, &[(OUTCOME, "retry")]), 1, "{:?}", counts.summary());
    // When Stripe recovers and SQS delivers it again
    f.sandbox.sandbox.fail_next(0, 500);
    let response = f.listener.handle(batch(vec![messages[1].clone()])).await;
    assert!(failed_ids(&response).is_empty());
    // Then each user has exactly one customer
    for email in &emails {
        assert_eq!(f.customers(email).await, 1, "{email}");
    }
}

#[tokio::test]
async fn a_trial_is_counted_from_signup_so_a_two_day_old_signup_has_29_days_left() {
    let f = fixture().await;
    let user = Uuid::new_v4();
    let signed_up = Utc::now() - chrono::Duration::days(2);
    f.listener
        .handle(batch(vec![message("m", &signup(user, "late@example.com", signed_up))]))
        .await;
    let stored = f.store.get_subscription(user).await.unwrap();
    let left = stored.trial_end.unwrap() - Utc::now();
    assert!((left - chrono::Duration::days(29)).num_seconds().abs() <= 5, "{left}");
    assert_eq!(stored.trial_start.unwrap().timestamp(), signed_up.timestamp());
}

#[tokio::test]
async fn a_signup_from_the_future_starts_its_trial_now() {
    let f = fixture().await;
    let user = Uuid::new_v4();
    f.listener
        .handle(batch(vec![message(
            "m",
            &signup(user, "early@example.com", Utc::now() + chrono::Duration::days(3)),
        )]))
        .await;
    let stored = f.store.get_subscription(user).await.unwrap();
    let left = stored.trial_end.unwrap() - Utc::now();
    assert!((left - chrono::Duration::days(31)).num_seconds().abs() <= 5, "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenfold_redelivery_storm_makes_no_duplicate() {
    let f = Arc::new(fixture().await);
    let users: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    let messages: Vec<SqsMessage> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            message(
                &format!("m-{i}"),
                &signup(*user, &format!("{}@example.com", user.simple()), Utc::now()),
            )
        })
        .collect();
    // The same batch delivered ten times at once
    let deliveries: Vec<_> = (0..10)
        .map(|_| {
            let (f, event) = (f.clone(), batch(messages.clone()));
            tokio::spawn(async move { f.listener.handle(event).await })
        })
        .collect();
    let mut unacknowledged = Vec::new();
    for delivery in deliveries {
        unacknowledged.extend(failed_ids(&delivery.await.unwrap()));
    }
    // Whatever was handed back is acknowledged on its next delivery
    if !unacknowledged.is_empty() {
        let again: Vec<SqsMessage> = messages
            .iter()
            .filter(|m| unacknowledged.contains(m.message_id.as_ref().unwrap()))
            .cloned()
            .collect();
        assert!(failed_ids(&f.listener.handle(batch(again)).await).is_empty());
    }
    for user in &users {
        assert_eq!(f.customers(&format!("{}@example.com", user.simple())).await, 1);
        assert_eq!(f.store.audit_trail(*user).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn signups_unfinished_before_the_deadline_are_reported_and_the_finished_acknowledged() {
    // Given a batch of a signup and another event type, and a Stripe taking 3 s per call
    let f = fixture().await;
    f.sandbox.sandbox.set_latency(std::time::Duration::from_millis(3000));
    let user = Uuid::new_v4();
    let other = json!({"type": "profile.deleted", "event_id": Uuid::new_v4()});
    let event = batch(vec![
        message("slow", &signup(user, "slow@example.com", Utc::now())),
        message("other", &other),
    ]);
    // When the invocation has 2 s left
    let started = std::time::Instant::now();
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    let response = f.listener.handle_within(event, Some(deadline)).await;
    // Then it answers before the deadline, reporting only the signup, which stored nothing
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(failed_ids(&response), ["slow"]);
    assert!(matches!(
        f.store.get_subscription(user).await,
        Err(StoreError::NotFound)
    ));
}
