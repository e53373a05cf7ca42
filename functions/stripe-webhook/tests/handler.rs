//! The webhook in-process, against the embedded store and a file outbox, with events built
//! from the Stripe event sample in `events/` and signed as Stripe signs them.

use std::sync::Arc;

use billing::metrics::{MAILS, OUTCOME, STRIPE_EVENTS};
use billing::store::{AuditEntry, Store};
use billing::subscription::{Status, Subscription, SubscriptionChange};
use billing::webhook::sign;
use billing_adapters::OutboxMailer;
use billing_testing::{ApiEvent, Counts, catalog, embedded_store};
use chrono::Utc;
use serde_json::{Value, json};
use stripe_webhook::StripeWebhook;
use uuid::Uuid;

const SECRET: &str = "whsec_handler_tests";

struct Fixture {
    webhook: StripeWebhook,
    store: Arc<dyn Store>,
    outbox: OutboxMailer,
    documents: Arc<dyn billing::store::DocumentStore>,
}

fn fixture() -> Fixture {
    let embedded = embedded_store();
    let store: Arc<dyn Store> = embedded.clone();
    let documents: Arc<dyn billing::store::DocumentStore> = embedded.clone();
    let outbox = OutboxMailer::new(std::env::temp_dir().join(format!("outbox-{}", Uuid::new_v4().simple()))).unwrap();
    let webhook = StripeWebhook {
        store: store.clone(),
        mailer: Arc::new(outbox.clone()),
        catalog: catalog(),
        secret: SECRET.into(),
        clock: std::sync::Arc::new(billing_adapters::SystemClock),
        purchases: billing::plans::purchase::Purchases {
            documents: embedded,
            stripe: Arc::new(billing_testing::FakeBilling::new(Utc::now())),
            trial_days: 0,
            prices: billing::plans::Prices::default(),
        },
    }
    .declared();
    Fixture {
        webhook,
        store,
        outbox,
        documents,
    }
}

impl Fixture {
    /// A stored subscription linked to Stripe subscription `sub`.
    async fn subscription(&self, sub: &str) -> Subscription {
        let user = Uuid::new_v4();
        let change = SubscriptionChange::from_json(
            json!({"user_id": user, "email": format!("{}@example.com", user.simple()), "stripe_customer": format!("cus_{}", user.simple()),
                   "stripe_subscription": sub})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let subscription = change
            .new_subscription(catalog().get("pending").unwrap(), Utc::now(), Utc::now())
            .unwrap();
        self.store
            .create_subscription(
                &subscription,
                &AuditEntry::between(None, &subscription, "system:test", "create"),
            )
            .await
            .unwrap();
        subscription
    }

    async fn deliver(&self, event: &Value, signature: Option<String>) -> (u16, Value) {
        let payload = event.to_string();
        let mut api = ApiEvent::sample("apigw-stripe-webhook.json");
        api = match signature {
            Some(signature) => api.header("stripe-signature", &signature),
            None => api,
        };
        let mut request = api.build();
        if request
            .headers()
            .get("stripe-signature")
            .is_some_and(|v| v.to_str().unwrap().contains("replaced-by-each-test"))
        {
            request.headers_mut().remove("stripe-signature");
        }
        *request.body_mut() = lambda_http::Body::Text(payload);
        let response = self.webhook.handle(request).await;
        (
            response.status().as_u16(),
            serde_json::from_slice(response.body()).unwrap_or(Value::Null),
        )
    }

    async fn deliver_signed(&self, event: &Value) -> (u16, Value) {
        let signature = sign(event.to_string().as_bytes(), SECRET, Utc::now().timestamp());
        self.deliver(event, Some(signature)).await
    }
}

/// The sample event, about `sub`, of `kind`, with the given status, created at `created`.
fn event(id: &str, kind: &str, sub: &str, status: &str, created: i64) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/stripe-customer-subscription-updated.json"
    );
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["id"] = json!(id);
    event["type"] = json!(kind);
    event["created"] = json!(created);
    event["data"]["object"]["id"] = json!(sub);
    event["data"]["object"]["status"] = json!(status);
    event
}

#[tokio::test]
async fn a_signed_subscription_update_is_applied() {
    let f = fixture();
    let stored = f.subscription("sub_a").await;
    let (status, body) = f
        .deliver_signed(&event("evt_1", "customer.subscription.updated", "sub_a", "active", 100))
        .await;
    assert_eq!((status, body), (200, json!({"received": true})));
    let now = f.store.get_subscription(stored.id).await.unwrap();
    assert_eq!(
        (now.status, now.plan.as_str(), now.version),
        (Status::Active, "basic_monthly", 2)
    );
    // and the audit trail names the event as the actor, with the fields it changed
    let audit = f.store.audit_trail(stored.id).await.unwrap().remove(1);
    assert_eq!(
        (audit.actor.as_str(), audit.action.as_str(), audit.event.as_deref()),
        ("stripe:evt_1", "customer.subscription.updated", Some("evt_1"))
    );
    assert!(
        audit
            .changes
            .as_array()
            .unwrap()
            .iter()
            .any(|change| change["field"] == "/status"
                && change["before"] == "trialing"
                && change["after"] == "active"),
        "{}",
        audit.changes
    );
}

#[tokio::test]
async fn forged_missing_and_old_signatures_are_refused_store_nothing_and_are_counted() {
    let counts = Counts::default();
    let _counting = counts.count_here();
    let f = fixture();
    let stored = f.subscription("sub_b").await;
    let update = event("evt_2", "customer.subscription.updated", "sub_b", "active", 100);
    let payload = update.to_string();
    let forged = sign(payload.as_bytes(), "whsec_forger", Utc::now().timestamp());
    let old = sign(payload.as_bytes(), SECRET, Utc::now().timestamp() - 301);
    for signature in [Some(forged), None, Some(old)] {
        let (status, body) = f.deliver(&update, signature).await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["param"], "Stripe-Signature");
    }
    assert_eq!(f.store.get_subscription(stored.id).await.unwrap(), stored);
    assert!(!f.store.is_recorded("stripe-event:evt_2").await.unwrap());
    // Each refusal is counted, for the alarm a wrong webhook secret raises
    assert_eq!(counts.get(billing::metrics::WEBHOOK_SIGNATURE_FAILURES, &[]), 3);
}

#[tokio::test]
async fn the_same_event_twice_is_applied_once_and_counted_by_outcome() {
    let counts = Counts::default();
    let _counting = counts.count_here();
    let f = fixture();
    let stored = f.subscription("sub_c").await;
    let update = event("evt_3", "customer.subscription.updated", "sub_c", "past_due", 100);
    assert_eq!(f.deliver_signed(&update).await, (200, json!({"received": true})));
    assert_eq!(
        f.deliver_signed(&update).await,
        (200, json!({"received": true, "duplicate": true}))
    );
    assert_eq!(f.store.audit_trail(stored.id).await.unwrap().len(), 2);
    assert_eq!(
        f.store.get_subscription(stored.id).await.unwrap().status,
        Status::PastDue
    );
    assert_eq!(
        counts.get(STRIPE_EVENTS, &[(OUTCOME, "applied")]),
        1,
        "{:?}",
        counts.summary()
    );
    assert_eq!(counts.get(STRIPE_EVENTS, &[(OUTCOME, "received")]), 1);
}

#[tokio::test]
async fn an_older_update_after_a_newer_deletion_leaves_the_subscription_canceled() {
    let f = fixture();
    let stored = f.subscription("sub_d").await;
    f.deliver_signed(&event(
        "evt_new",
        "customer.subscription.deleted",
        "sub_d",
        "canceled",
        200,
    ))
    .await;
    let (status, _) = f
        .deliver_signed(&event(
            "evt_old",
            "customer.subscription.updated",
            "sub_d",
            "active",
            100,
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        f.store.get_subscription(stored.id).await.unwrap().status,
        Status::Canceled
    );
    assert!(f.store.is_recorded("stripe-event:evt_old").await.unwrap());
}

#[tokio::test]
async fn events_for_unknown_subscriptions_and_other_types_are_acknowledged_and_recorded() {
    let f = fixture();
    let mut unknown = event("evt_u", "customer.subscription.updated", "sub_nobody", "active", 100);
    unknown["data"]["object"]["customer"] = json!("cus_nobody");
    assert_eq!(f.deliver_signed(&unknown).await.0, 200);
    // kept for review, with its body, and replayable: not recorded as handled
    let kept = f.store.kept_event("evt_u").await.unwrap();
    assert_eq!(
        (kept.outcome.as_str(), kept.subscription_id),
        ("unknown_subscription", None)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&kept.body).unwrap(),
        unknown
    );
    assert!(!f.store.is_recorded("stripe-event:evt_u").await.unwrap());
    let other = event("evt_o", "charge.refunded", "sub_nobody", "active", 100);
    assert_eq!(f.deliver_signed(&other).await, (200, json!({"received": true})));
    assert_eq!(
        f.deliver_signed(&other).await,
        (200, json!({"received": true, "duplicate": true}))
    );
    // and the duplicate delivery leaves the first outcome kept
    assert_eq!(f.store.kept_event("evt_o").await.unwrap().outcome, "ignored");
}

#[tokio::test]
async fn trial_will_end_mails_the_subscriber_once() {
    let counts = Counts::default();
    let _counting = counts.count_here();
    let f = fixture();
    let stored = f.subscription("sub_t").await;
    let warning = event(
        "evt_t",
        "customer.subscription.trial_will_end",
        "sub_t",
        "trialing",
        100,
    );
    assert_eq!(f.deliver_signed(&warning).await.0, 200);
    assert_eq!(
        f.deliver_signed(&warning).await,
        (200, json!({"received": true, "duplicate": true}))
    );
    let mails = f.outbox.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, stored.email);
    assert!(mails[0].subject.contains("trial"));
    assert_eq!(counts.get(MAILS, &[(OUTCOME, "sent")]), 1, "{:?}", counts.summary());
}

#[tokio::test]
async fn invoice_events_find_their_subscription_and_move_its_status() {
    let f = fixture();
    let stored = f.subscription("sub_i").await;
    let failed = json!({"id": "evt_if", "type": "invoice.payment_failed", "created": 100, "object": "event",
                        "data": {"object": {"object": "invoice", "customer": stored.stripe_customer,
                                             "parent": {"subscription_details": {"subscription": "sub_i"}}}}});
    f.deliver_signed(
        &json!({"id": "evt_act", "type": "customer.subscription.updated", "created": 50,
                             "data": {"object": {"id": "sub_i", "status": "active", "items": {"data": []}}}}),
    )
    .await;
    assert_eq!(f.deliver_signed(&failed).await.0, 200);
    assert_eq!(
        f.store.get_subscription(stored.id).await.unwrap().status,
        Status::PastDue
    );
}

#[tokio::test]
async fn a_signed_body_that_is_not_an_event_is_invalid_format() {
    let f = fixture();
    let (status, body) = f.deliver_signed(&json!({"hello": "world"})).await;
    assert_eq!(
        (status, body["errors"][0]["slug"].as_str()),
        (400, Some("invalid_format"))
    );
}

/// The Checkout sample event of `events/`, completing the session of `reference`.
fn checkout_completed(id: &str, reference: Option<&str>, customer: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/stripe-checkout-session-completed.json"
    );
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["id"] = json!(id);
    event["created"] = json!(Utc::now().timestamp());
    event["data"]["object"]["customer"] = json!(customer);
    event["data"]["object"]["metadata"] = match reference {
        Some(reference) => json!({"pending_upgrade": reference}),
        None => json!({}),
    };
    event
}

impl Fixture {
    /// A realm of 6 users whose owner asked to upgrade to basic and was sent to Checkout: the
    /// session's reference and the entity's Stripe customer.
    async fn upgrade_waiting_for_checkout(&self) -> (Uuid, String, String) {
        use billing::plans::purchase::{CheckoutLinks, UpgradeStart};
        let remote = billing_testing::remote_billing_on(self.documents.clone(), billing_testing::outbox(), 5, 20);
        let (server, realm) = (Uuid::new_v4(), Uuid::new_v4());
        let request = billing::remote::RegisterRequest::read(
            json!({"server_uuid": server, "server_key": "k".repeat(32), "hostname": "chat.example.org",
                   "contact_email": "admin@example.org"})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        remote.register_server(request, None, Utc::now()).await.unwrap();
        let server = remote
            .authenticate(
                Some(&format!("Basic {}", base64_of(&format!("{server}:{}", "k".repeat(32))))),
                Utc::now(),
            )
            .await
            .unwrap();
        let upload: billing::remote::usage::Upload = serde_json::from_value(json!({
            "realms": [{"uuid": realm, "host": "chat.example.org", "name": "Example Org"}],
            "realm_audit_logs": [{"id": 1, "realm": realm, "event_type": 101, "event_time": Utc::now().timestamp(),
                "extra_data": {"10": {"11": {"100": 1, "400": 5}}}}]}))
        .unwrap();
        remote.record_upload(&server, &upload, Utc::now()).await.unwrap();
        let entity = billing::plans::Entity::Realm(realm);
        let request = billing::plans::UpgradeRequest {
            tier: billing::plans::Tier::Basic,
            schedule: billing::plans::Schedule::Monthly,
            license_management: billing::plans::LicenseManagement::Automatic,
            licenses: None,
        };
        let links = CheckoutLinks {
            success_url: "https://billing.example.com/b".into(),
            cancel_url: "https://billing.example.com/u".into(),
        };
        let UpgradeStart::Checkout { url } = self
            .webhook
            .purchases
            .begin_upgrade(entity, request, "owner@example.org", &links, Utc::now())
            .await
            .unwrap()
        else {
            panic!("no card yet: Checkout");
        };
        let customer = remote
            .billing_view(entity, Utc::now())
            .await
            .unwrap()
            .customer
            .stripe_customer
            .unwrap();
        (realm, url.split('#').nth(1).unwrap().to_owned(), customer)
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn a_completed_checkout_starts_the_pending_upgrade_once() {
    // Given an owner sent to Checkout to buy basic
    let f = fixture();
    let (realm, reference, customer) = f.upgrade_waiting_for_checkout().await;
    // When Stripe reports the session completed, twice
    let event = checkout_completed("evt_checkout_1", Some(&reference), &customer);
    let (status, body) = f.deliver_signed(&event).await;
    assert_eq!((status, &body), (200, &json!({"received": true})));
    let (status, body) = f.deliver_signed(&event).await;
    // Then the plan started once, and the redelivery is a duplicate
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    let book = billing::plans::stored::load(f.documents.as_ref(), billing::plans::Entity::Realm(realm), Utc::now())
        .await
        .unwrap();
    let plan = book.book.plan.expect("the plan started");
    assert_eq!((plan.tier, book.book.ledger.len()), (billing::plans::Tier::Basic, 1));
    assert_eq!(book.book.customer.card_last4.as_deref(), Some("4242"));
    assert_eq!(book.history.len(), 1);
}

#[tokio::test]
async fn a_checkout_of_no_pending_upgrade_is_recorded_and_not_retried() {
    // Given a webhook with nothing pending
    let f = fixture();
    // When Stripe reports sessions completed without our reference, or with an unknown one
    let foreign = checkout_completed("evt_checkout_2", None, "cus_other");
    let unknown = checkout_completed(
        "evt_checkout_3",
        Some(&format!("realm/{}/{}", Uuid::new_v4(), Uuid::new_v4())),
        "cus_other",
    );
    // Then both are answered 200 (Stripe stops retrying) and recorded
    for event in [foreign, unknown] {
        let (status, body) = f.deliver_signed(&event).await;
        assert_eq!((status, &body), (200, &json!({"received": true})));
        let id = event["id"].as_str().unwrap();
        assert!(f.store.is_recorded(&format!("stripe-event:{id}")).await.unwrap());
    }
}
