//! The use cases of the billing crate, driven against the in-memory embedded store, the fake
//! Stripe of `billing-testing` and a fixed clock: provisioning, changing a subscription, and
//! applying Stripe's events (including a property test of their ordering through the store's
//! own ordering, the path production takes).

use std::sync::Arc;

use async_trait::async_trait;
use billing::change::{ChangeContext, ChangeError, ChangeRequest, change_subscription};
use billing::clock::FixedClock;
use billing::mail::{Mail, MailError, Mailer, texts};
use billing::provisioning::{Provision, ProvisionError, provision};
use billing::store::Store;
use billing::stripe::BillingError;
use billing::subscription::{PlanCatalog, Status, Subscription, SubscriptionChange};
use billing::webhook::{EventContext, EventError, Handled, StripeEvent, apply_stripe_event};
use billing_adapters::{EmbeddedStore, OutboxMailer};
use billing_testing::FakeBilling;
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

const NOW: i64 = 1_795_255_200;

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(NOW, 0).unwrap()
}

fn catalog() -> PlanCatalog {
    billing_testing::catalog()
}

fn change(json: serde_json::Value) -> SubscriptionChange {
    SubscriptionChange::from_json(json.to_string().as_bytes()).unwrap()
}

/// The world a use case runs in.
struct World {
    store: Arc<EmbeddedStore>,
    billing: FakeBilling,
    outbox: Arc<OutboxMailer>,
    catalog: PlanCatalog,
    clock: FixedClock,
}

impl World {
    fn new() -> Self {
        World {
            store: Arc::new(EmbeddedStore::in_memory().unwrap()),
            billing: FakeBilling::new(now()),
            outbox: billing_testing::outbox(),
            catalog: catalog(),
            clock: FixedClock(now()),
        }
    }

    async fn provision(&self, user: Uuid) -> Result<Subscription, ProvisionError> {
        let create = change(json!({"user_id": user, "email": "ada@example.com"}));
        provision(
            self.store.as_ref(),
            &self.billing,
            Provision {
                change: &create,
                plan: self.catalog.get(PlanCatalog::PENDING).unwrap(),
                trial_start: None,
                actor: "system:test",
                now: now(),
            },
        )
        .await
    }

    fn change_context(&self) -> ChangeContext<'_> {
        ChangeContext {
            store: self.store.as_ref(),
            billing: &self.billing,
            catalog: &self.catalog,
            clock: &self.clock,
        }
    }

    async fn change(
        &self,
        id: Uuid,
        what: serde_json::Value,
        expected_version: Option<u64>,
    ) -> Result<Subscription, ChangeError> {
        let what = change(what);
        change_subscription(
            self.change_context(),
            ChangeRequest {
                id,
                change: &what,
                expected_version,
                actor: "user:test",
                origin: "req-1",
            },
        )
        .await
    }

    fn event_context<'a>(&'a self, mailer: &'a dyn Mailer) -> EventContext<'a> {
        EventContext {
            store: self.store.as_ref(),
            mailer,
            catalog: &self.catalog,
            clock: &self.clock,
        }
    }

    async fn deliver(&self, event: &StripeEvent) -> Result<Handled, EventError> {
        apply_stripe_event(self.event_context(self.outbox.as_ref()), event).await
    }
}

// Provisioning

#[tokio::test]
async fn provisioning_twice_makes_one_customer_and_one_subscription() {
    // Given a user provisioned once
    let world = World::new();
    let user = Uuid::new_v4();
    let first = world.provision(user).await.unwrap();
    // When the same user is provisioned again
    let again = world.provision(user).await;
    // Then it already exists, and Stripe holds one customer
    assert!(matches!(again, Err(ProvisionError::AlreadyExists)), "{again:?}");
    assert_eq!(world.billing.customer_count(), 1);
    assert_eq!(first.status, Status::Trialing);
    assert_eq!(first.trial_end, Some(now() + Duration::days(31)));
}

#[tokio::test]
async fn provisioning_when_stripe_fails_stores_nothing() {
    let world = World::new();
    world.billing.fail_next(BillingError::Unavailable("down".into()));
    let user = Uuid::new_v4();
    assert!(matches!(world.provision(user).await, Err(ProvisionError::Billing(_))));
    assert!(world.store.get_subscription(user).await.is_err());
}

// Changing a subscription

#[tokio::test]
async fn a_plan_change_reaches_stripe_before_the_store() {
    // Given a provisioned subscription
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    // When its owner picks a plan and a card
    let changed = world
        .change(
            subscription.id,
            json!({"plan": "basic_monthly", "stripe_source": "pm_card_visa"}),
            None,
        )
        .await
        .unwrap();
    // Then Stripe bills the plan's price with the card as default, and the store holds version 2
    let stripe_id = subscription.stripe_subscription.as_deref().unwrap();
    assert_eq!(
        world.billing.subscription(stripe_id).unwrap().price,
        "price_basic_monthly"
    );
    assert!(
        world
            .billing
            .default_payment_method(subscription.stripe_customer.as_deref().unwrap())
            .is_some()
    );
    assert_eq!(changed.plan, "basic_monthly");
    assert_eq!(changed.version, 2);
    assert_eq!(world.store.get_subscription(subscription.id).await.unwrap(), changed);
}

#[tokio::test]
async fn a_declined_card_changes_nothing() {
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let outcome = world
        .change(
            subscription.id,
            json!({"stripe_source": "pm_card_chargeDeclined"}),
            None,
        )
        .await;
    assert!(
        matches!(outcome, Err(ChangeError::Billing(BillingError::CardDeclined(_)))),
        "{outcome:?}"
    );
    assert_eq!(
        world.store.get_subscription(subscription.id).await.unwrap(),
        subscription
    );
}

#[tokio::test]
async fn a_stale_expected_version_is_refused_before_stripe_is_called() {
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let calls_before = world.billing.calls().len();
    let outcome = world
        .change(subscription.id, json!({"plan": "basic_monthly"}), Some(7))
        .await;
    assert!(
        matches!(
            outcome,
            Err(ChangeError::VersionMismatch {
                expected: 7,
                current: 1
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(world.billing.calls().len(), calls_before);
}

#[tokio::test]
async fn a_plan_for_a_subscription_never_made_in_stripe_makes_one_and_other_stripe_changes_are_refused() {
    // Given a subscription stored without Stripe ids
    let world = World::new();
    let bare = change(json!({"user_id": Uuid::new_v4(), "email": "ada@example.com"}))
        .new_subscription(world.catalog.get("pending").unwrap(), now(), now())
        .unwrap();
    let audit = billing::store::AuditEntry::between(None, &bare, "system:test", "create");
    world.store.create_subscription(&bare, &audit).await.unwrap();
    // When only the end-of-period flag is sent, it is refused and nothing is stored
    let outcome = world.change(bare.id, json!({"cancel_at_period_end": true}), None).await;
    assert!(matches!(outcome, Err(ChangeError::NotInStripe)), "{outcome:?}");
    assert_eq!(world.store.get_subscription(bare.id).await.unwrap().version, 1);
    // And when a plan is chosen, a Stripe customer and subscription are made and stored
    let changed = world
        .change(bare.id, json!({"plan": "basic_monthly"}), None)
        .await
        .unwrap();
    assert!(changed.stripe_customer.is_some() && changed.stripe_subscription.is_some());
    assert_eq!(changed.plan, "basic_monthly");
    let calls = world.billing.calls();
    assert!(
        calls.contains(&"create_customer".to_owned()) && calls.contains(&"create_subscription".to_owned()),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_change_of_an_unknown_subscription_is_not_found() {
    let world = World::new();
    let outcome = world
        .change(Uuid::new_v4(), json!({"plan": "basic_monthly"}), None)
        .await;
    assert!(matches!(outcome, Err(ChangeError::NotFound)), "{outcome:?}");
}

#[tokio::test]
async fn a_change_that_changes_nothing_writes_nothing() {
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let same = world
        .change(subscription.id, json!({"plan": "pending"}), None)
        .await
        .unwrap();
    assert_eq!(same.version, 1);
    assert_eq!(world.store.audit_trail(subscription.id).await.unwrap().len(), 1);
}

// Stripe events

fn subscription_event(id: &str, created: i64, stripe_id: &str, status: &str, price: &str) -> StripeEvent {
    StripeEvent {
        id: id.into(),
        kind: "customer.subscription.updated".into(),
        created,
        object: json!({"id": stripe_id, "customer": "cus_x", "status": status, "cancel_at_period_end": false,
                       "trial_end": null, "items": {"data": [{"price": {"id": price}, "current_period_end": NOW + 30 * 86400}]}}),
    }
}

#[tokio::test]
async fn an_event_is_applied_once() {
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let stripe_id = subscription.stripe_subscription.clone().unwrap();
    let event = subscription_event("evt_1", NOW + 10, &stripe_id, "active", "price_basic_monthly");
    assert_eq!(world.deliver(&event).await.unwrap(), Handled::Applied);
    assert_eq!(world.deliver(&event).await.unwrap(), Handled::Duplicate);
    let stored = world.store.get_subscription(subscription.id).await.unwrap();
    assert_eq!(
        (stored.status, stored.plan.as_str(), stored.version),
        (Status::Active, "basic_monthly", 2)
    );
}

#[tokio::test]
async fn an_older_event_after_a_newer_one_is_recorded_as_stale() {
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let stripe_id = subscription.stripe_subscription.clone().unwrap();
    let newer = subscription_event("evt_2", NOW + 20, &stripe_id, "canceled", "price_basic_monthly");
    let older = subscription_event("evt_1", NOW + 10, &stripe_id, "active", "price_basic_monthly");
    world.deliver(&newer).await.unwrap();
    assert_eq!(world.deliver(&older).await.unwrap(), Handled::Recorded("stale"));
    let stored = world.store.get_subscription(subscription.id).await.unwrap();
    assert_eq!(stored.status, Status::Canceled);
}

#[tokio::test]
async fn an_event_for_an_unknown_subscription_and_an_unknown_type_are_recorded() {
    let world = World::new();
    let unknown = subscription_event("evt_u", NOW, "sub_nobody", "active", "price_basic_monthly");
    assert_eq!(
        world.deliver(&unknown).await.unwrap(),
        Handled::Recorded("unknown_subscription")
    );
    let other = StripeEvent {
        id: "evt_o".into(),
        kind: "charge.succeeded".into(),
        created: NOW,
        object: json!({}),
    };
    assert_eq!(world.deliver(&other).await.unwrap(), Handled::Recorded("ignored"));
    assert_eq!(world.deliver(&other).await.unwrap(), Handled::Duplicate);
}

fn invoice_event(id: &str, kind: &str, created: i64, stripe_id: Option<&str>) -> StripeEvent {
    StripeEvent {
        id: id.into(),
        kind: kind.into(),
        created,
        object: json!({"id": format!("in_{id}"), "customer": "cus_x", "subscription": stripe_id}),
    }
}

#[tokio::test]
async fn an_older_snapshot_still_applies_after_a_newer_invoice_event() {
    // Given an active subscription whose renewal payment failed at +20
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let stripe_id = subscription.stripe_subscription.clone().unwrap();
    let active = subscription_event("evt_1", NOW + 5, &stripe_id, "active", "price_basic_monthly");
    world.deliver(&active).await.unwrap();
    let failed = invoice_event("evt_3", "invoice.payment_failed", NOW + 20, Some(&stripe_id));
    assert_eq!(world.deliver(&failed).await.unwrap(), Handled::Applied);
    // When Stripe's snapshot of +10 (unpaid) arrives after it
    let snapshot = subscription_event("evt_2", NOW + 10, &stripe_id, "unpaid", "price_basic_monthly");
    // Then it is applied, not dropped as older than the invoice event
    assert_eq!(world.deliver(&snapshot).await.unwrap(), Handled::Applied);
    let stored = world.store.get_subscription(subscription.id).await.unwrap();
    assert_eq!(stored.status, Status::Unpaid);
}

#[tokio::test]
async fn an_invoice_event_older_than_the_last_snapshot_never_rolls_it_back() {
    // Given a subscription Stripe says is active as of +30
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let stripe_id = subscription.stripe_subscription.clone().unwrap();
    let active = subscription_event("evt_2", NOW + 30, &stripe_id, "active", "price_basic_monthly");
    world.deliver(&active).await.unwrap();
    // When a payment failure of +20 arrives late
    let failed = invoice_event("evt_1", "invoice.payment_failed", NOW + 20, Some(&stripe_id));
    // Then it is recorded as stale and the subscription stays active
    assert_eq!(world.deliver(&failed).await.unwrap(), Handled::Recorded("stale"));
    let stored = world.store.get_subscription(subscription.id).await.unwrap();
    assert_eq!(stored.status, Status::Active);
}

#[tokio::test]
async fn a_one_off_invoice_changes_no_subscription() {
    // Given an active subscription
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let stripe_id = subscription.stripe_subscription.clone().unwrap();
    world
        .deliver(&subscription_event(
            "evt_1",
            NOW + 5,
            &stripe_id,
            "active",
            "price_basic_monthly",
        ))
        .await
        .unwrap();
    let before = world.store.get_subscription(subscription.id).await.unwrap();
    // When an invoice of the same customer without a subscription fails
    let one_off = invoice_event("evt_2", "invoice.payment_failed", NOW + 10, None);
    // Then it is recorded as ignored and the subscription is untouched
    assert_eq!(world.deliver(&one_off).await.unwrap(), Handled::Recorded("ignored"));
    assert_eq!(world.store.get_subscription(subscription.id).await.unwrap(), before);
}

fn trial_will_end(stripe_id: &str) -> StripeEvent {
    StripeEvent {
        id: "evt_trial".into(),
        kind: "customer.subscription.trial_will_end".into(),
        created: NOW,
        object: json!({"id": stripe_id, "customer": "cus_x", "trial_end": NOW + 3 * 86400}),
    }
}

#[tokio::test]
async fn trial_will_end_mails_the_subscriber_once_with_the_text_of_the_mail_module() {
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let event = trial_will_end(subscription.stripe_subscription.as_deref().unwrap());
    assert_eq!(world.deliver(&event).await.unwrap(), Handled::Recorded("mailed"));
    assert_eq!(world.deliver(&event).await.unwrap(), Handled::Duplicate);
    assert_eq!(
        world.outbox.mails(),
        vec![texts::trial_ending("ada@example.com", subscription.trial_end)]
    );
}

/// A mail service that refuses or fails every mail.
struct BrokenMailer {
    refuses: bool,
}

#[async_trait]
impl Mailer for BrokenMailer {
    async fn send(&self, _mail: &Mail) -> Result<String, MailError> {
        let cause: Box<dyn std::error::Error + Send + Sync> = "the mail service said no".into();
        Err(if self.refuses {
            MailError::Refused(cause)
        } else {
            MailError::Unavailable(cause)
        })
    }
}

#[tokio::test]
async fn a_refused_trial_mail_is_recorded_for_review_and_an_unavailable_one_is_retried() {
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let event = trial_will_end(subscription.stripe_subscription.as_deref().unwrap());
    // When the mail service is down, nothing is recorded and Stripe will deliver again
    let down = BrokenMailer { refuses: false };
    let outcome = apply_stripe_event(world.event_context(&down), &event).await;
    assert!(matches!(outcome, Err(EventError::Mail(_))), "{outcome:?}");
    // When it refuses the mail, the event is recorded as refused
    let refusing = BrokenMailer { refuses: true };
    let outcome = apply_stripe_event(world.event_context(&refusing), &event)
        .await
        .unwrap();
    assert_eq!(outcome, Handled::Recorded("mail_refused"));
}

// Ordering, through the store: any order and any duplication of a subscription's events ends
// where delivering them once, in order, ends.

fn events() -> impl Strategy<Value = Vec<(i64, &'static str, &'static str)>> {
    let statuses = prop::sample::select(vec!["trialing", "active", "past_due", "canceled"]);
    let prices = prop::sample::select(vec!["price_pending", "price_basic_monthly", "price_business_monthly"]);
    prop::collection::vec((0i64..5, statuses, prices), 1..7)
}

fn converge(events: &[(i64, &'static str, &'static str)], deliveries: &[usize]) -> (Subscription, Subscription) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let deliver_all = |order: Vec<usize>| async move {
            let world = World::new();
            let user = Uuid::from_u128(7);
            let subscription = world.provision(user).await.unwrap();
            let stripe_id = subscription.stripe_subscription.clone().unwrap();
            for i in order {
                let (offset, status, price) = events[i];
                let event = subscription_event(&format!("evt_{i}"), NOW + offset, &stripe_id, status, price);
                world.deliver(&event).await.unwrap();
            }
            let mut stored = world.store.get_subscription(user).await.unwrap();
            // Versions count writes, which differ with the order; the state must not.
            stored.version = 0;
            stored.updated_at = now();
            stored.stripe_customer = None;
            stored.stripe_subscription = None;
            stored
        };
        let mut in_order: Vec<usize> = (0..events.len()).collect();
        in_order.sort_by_key(|&i| (events[i].0, format!("evt_{i}")));
        (deliver_all(in_order).await, deliver_all(deliveries.to_vec()).await)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn any_order_with_any_duplicates_converges_to_the_in_order_result(
        (events, deliveries) in events().prop_flat_map(|events| {
            let n = events.len();
            let extra = prop::collection::vec(0..n, 0..2 * n);
            (Just(events), extra.prop_flat_map(move |extra| {
                let mut all: Vec<usize> = (0..n).chain(extra).collect();
                all.sort();
                Just(all).prop_shuffle()
            }))
        })
    ) {
        let (expected, delivered) = converge(&events, &deliveries);
        prop_assert_eq!(delivered, expected);
    }
}

#[tokio::test]
async fn a_late_event_of_a_canceled_stripe_subscription_leaves_the_new_one_alone() {
    // Given a subscription whose first Stripe subscription was canceled and replaced
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let old_id = subscription.stripe_subscription.clone().unwrap();
    let mut moved = subscription.clone();
    moved.stripe_subscription = Some("sub_new".into());
    moved.status = Status::Active;
    moved.version = 2;
    let audit = billing::store::AuditEntry::between(None, &moved, "system:test", "patch");
    world.store.update_subscription(&moved, 1, &audit).await.unwrap();
    // When the old one's deletion arrives (same customer, no metadata)
    let mut late = subscription_event("evt_late", NOW + 50, &old_id, "canceled", "price_basic_monthly");
    late.kind = "customer.subscription.deleted".into();
    late.object["customer"] = json!(subscription.stripe_customer.clone().unwrap());
    // Then it concerns no stored subscription, and the new one stays active
    assert_eq!(
        world.deliver(&late).await.unwrap(),
        Handled::Recorded("unknown_subscription")
    );
    assert_eq!(
        world.store.get_subscription(subscription.id).await.unwrap().status,
        Status::Active
    );
}

/// A store whose first subscription update loses a race: just before it, another writer (a
/// late event of a canceled Stripe subscription, say) stores a new version.
struct LosesOneRace {
    inner: Arc<EmbeddedStore>,
    raced: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Store for LosesOneRace {
    async fn create_subscription(
        &self,
        subscription: &Subscription,
        audit: &billing::store::AuditEntry,
    ) -> Result<(), billing::store::StoreError> {
        self.inner.create_subscription(subscription, audit).await
    }
    async fn get_subscription(&self, id: Uuid) -> Result<Subscription, billing::store::StoreError> {
        self.inner.get_subscription(id).await
    }
    async fn update_subscription(
        &self,
        next: &Subscription,
        expected_version: u64,
        audit: &billing::store::AuditEntry,
    ) -> Result<(), billing::store::StoreError> {
        if !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let current = self.inner.get_subscription(next.id).await?;
            let mut other = current.clone();
            other.version += 1;
            other.current_period_end = Some(now() + Duration::days(3));
            let record = billing::store::AuditEntry::between(Some(&current), &other, "stripe:evt_late", "late");
            self.inner.update_subscription(&other, current.version, &record).await?;
        }
        self.inner.update_subscription(next, expected_version, audit).await
    }
    async fn find_by_stripe_subscription(&self, id: &str) -> Result<Subscription, billing::store::StoreError> {
        self.inner.find_by_stripe_subscription(id).await
    }
    async fn find_by_stripe_customer(&self, id: &str) -> Result<Subscription, billing::store::StoreError> {
        self.inner.find_by_stripe_customer(id).await
    }
    async fn audit_page(
        &self,
        id: Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Vec<billing::store::AuditEntry>, billing::store::StoreError> {
        self.inner.audit_page(id, after, limit).await
    }
    async fn record_event(
        &self,
        key: &str,
        expires_at: DateTime<Utc>,
        outcome: &str,
        write: Option<billing::store::SubscriptionWrite<'_>>,
    ) -> Result<billing::store::EventWrite, billing::store::StoreError> {
        self.inner.record_event(key, expires_at, outcome, write).await
    }
    async fn is_recorded(&self, key: &str) -> Result<bool, billing::store::StoreError> {
        self.inner.is_recorded(key).await
    }
    async fn keep_event(
        &self,
        event: &billing::store::KeptEvent,
        replace: bool,
    ) -> Result<(), billing::store::StoreError> {
        self.inner.keep_event(event, replace).await
    }
    async fn kept_event(&self, id: &str) -> Result<billing::store::KeptEvent, billing::store::StoreError> {
        self.inner.kept_event(id).await
    }
    async fn list_kept_events(
        &self,
        outcome: Option<&str>,
        limit: usize,
        cursor: Option<&serde_json::Value>,
    ) -> Result<billing::store::KeptEventPage, billing::store::StoreError> {
        self.inner.list_kept_events(outcome, limit, cursor).await
    }
    async fn list_subscriptions(
        &self,
        filter: &billing::store::SubscriptionFilter,
        limit: usize,
        cursor: Option<&serde_json::Value>,
    ) -> Result<billing::store::SubscriptionPage, billing::store::StoreError> {
        self.inner.list_subscriptions(filter, limit, cursor).await
    }
}

#[tokio::test]
async fn a_resubscription_that_loses_a_race_makes_one_stripe_subscription() {
    // Given a canceled subscription
    let world = World::new();
    let user = Uuid::new_v4();
    world.provision(user).await.unwrap();
    billing::change::cancel_subscription(world.change_context(), user, "user:test", "req-0")
        .await
        .unwrap();
    assert_eq!(world.billing.subscription_count(), 1);
    // When the owner subscribes again and the first write loses a race with another writer
    let racing = LosesOneRace {
        inner: world.store.clone(),
        raced: false.into(),
    };
    let what = change(json!({"plan": "basic_monthly"}));
    let stored = change_subscription(
        ChangeContext {
            store: &racing,
            ..world.change_context()
        },
        ChangeRequest {
            id: user,
            change: &what,
            expected_version: None,
            actor: "user:test",
            origin: "req-1",
        },
    )
    .await
    .unwrap();
    // Then the second attempt meets the Stripe subscription the first one made: one new one
    assert_eq!(world.billing.subscription_count(), 2);
    assert_eq!(stored.status, Status::Active);
    assert!(
        world
            .billing
            .subscription(stored.stripe_subscription.as_deref().unwrap())
            .is_some()
    );
    assert_eq!(stored.version, 4);
}

#[tokio::test]
async fn a_cancel_that_loses_a_race_to_a_stripe_event_is_stored_not_refused() {
    // Given an active subscription
    let world = World::new();
    let user = Uuid::new_v4();
    world.provision(user).await.unwrap();
    // When its owner cancels it and the first write loses a race with another writer (the
    // trial's end arriving from Stripe, say)
    let racing = LosesOneRace {
        inner: world.store.clone(),
        raced: false.into(),
    };
    let canceled = billing::change::cancel_subscription(
        ChangeContext {
            store: &racing,
            ..world.change_context()
        },
        user,
        "user:test",
        "req-cancel",
    )
    .await
    // Then the retry meets Stripe's first answer, and the cancel is stored
    .unwrap();
    assert_eq!(canceled.status, Status::Canceled);
    assert_eq!(
        world.store.get_subscription(user).await.unwrap().status,
        Status::Canceled
    );
}

fn customer_updated(id: &str, created: i64, customer: &str, user: Uuid, default_method: Option<&str>) -> StripeEvent {
    StripeEvent {
        id: id.into(),
        kind: "customer.updated".into(),
        created,
        object: json!({"id": customer, "object": "customer", "metadata": {"user_id": user},
                       "default_source": null, "invoice_settings": {"default_payment_method": default_method}}),
    }
}

#[tokio::test]
async fn has_payment_source_follows_the_customers_default_payment_method_in_order() {
    // Given a subscriber whose customer gets a default card at +10 and loses it at +20
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let customer = subscription.stripe_customer.clone().unwrap();
    let added = customer_updated("evt_1", NOW + 10, &customer, subscription.id, Some("pm_1"));
    let removed = customer_updated("evt_2", NOW + 20, &customer, subscription.id, None);
    // When the removal arrives first, then the addition
    assert_eq!(world.deliver(&removed).await.unwrap(), Handled::Applied);
    assert_eq!(world.deliver(&added).await.unwrap(), Handled::Recorded("stale"));
    // Then the subscription has no payment source, as Stripe's latest customer says
    assert!(
        !world
            .store
            .get_subscription(subscription.id)
            .await
            .unwrap()
            .has_payment_source
    );
    // and a later addition sets it
    let again = customer_updated("evt_3", NOW + 30, &customer, subscription.id, Some("pm_2"));
    assert_eq!(world.deliver(&again).await.unwrap(), Handled::Applied);
    assert!(
        world
            .store
            .get_subscription(subscription.id)
            .await
            .unwrap()
            .has_payment_source
    );
}

#[tokio::test]
async fn a_payment_needing_authentication_makes_the_subscription_past_due_and_mails_the_invoice_once() {
    // Given an active subscription
    let world = World::new();
    let subscription = world.provision(Uuid::new_v4()).await.unwrap();
    let stripe_id = subscription.stripe_subscription.clone().unwrap();
    world
        .deliver(&subscription_event(
            "evt_1",
            NOW + 5,
            &stripe_id,
            "active",
            "price_basic_monthly",
        ))
        .await
        .unwrap();
    // When Stripe says the renewal needs the customer's authentication, twice (a redelivery)
    let mut event = invoice_event("evt_2", "invoice.payment_action_required", NOW + 10, Some(&stripe_id));
    event.object["hosted_invoice_url"] = json!("https://invoice.stripe.com/i/acct_1/in_2");
    assert_eq!(world.deliver(&event).await.unwrap(), Handled::Applied);
    assert_eq!(world.deliver(&event).await.unwrap(), Handled::Duplicate);
    // Then it is past due, and one mail with the invoice's page went to the subscriber
    let stored = world.store.get_subscription(subscription.id).await.unwrap();
    assert_eq!(stored.status, Status::PastDue);
    let mails = world.outbox.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(
        mails[0],
        texts::payment_action_required(&stored.email, "https://invoice.stripe.com/i/acct_1/in_2")
    );
}

// Reconciling with Stripe

#[tokio::test]
async fn reconcile_stores_what_stripe_holds_after_its_events_were_lost() {
    // Given a subscription whose Stripe subscription went past due and was set to cancel,
    // without any event reaching the service
    let world = World::new();
    let user = Uuid::new_v4();
    let subscription = world.provision(user).await.unwrap();
    let stripe_id = subscription.stripe_subscription.clone().unwrap();
    let renewed = now() + Duration::days(60);
    world.billing.change_behind_our_back(&stripe_id, |stripe| {
        stripe.status = Status::PastDue;
        stripe.trial_end = None;
        stripe.current_period_end = Some(renewed);
        stripe.cancel_at_period_end = true;
        stripe.price = "price_business_monthly".into();
        stripe.quantity = Some(7);
    });
    // When an administrator reconciles it
    let stored = billing::change::reconcile_subscription(world.change_context(), user, "admin:operator")
        .await
        .unwrap();
    // Then it holds Stripe's state, and the audit trail says who reconciled what
    assert_eq!(
        (
            stored.status,
            stored.plan.as_str(),
            stored.trial_end,
            stored.current_period_end
        ),
        (Status::PastDue, "business_monthly", None, Some(renewed))
    );
    assert!(stored.cancel_at_period_end);
    assert_eq!(stored.licenses, Some(7));
    assert_eq!(world.store.get_subscription(user).await.unwrap(), stored);
    let audit = world.store.audit_trail(user).await.unwrap().pop().unwrap();
    assert_eq!(
        (audit.actor.as_str(), audit.action.as_str()),
        ("admin:operator", "reconcile")
    );
    let fields: Vec<&str> = audit
        .changes
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"/status") && fields.contains(&"/plan"), "{fields:?}");
}

#[tokio::test]
async fn reconcile_of_a_subscription_without_a_stripe_subscription_is_refused() {
    let world = World::new();
    let bare = billing_testing::new_subscription(None);
    let audit = billing::store::AuditEntry::between(None, &bare, "system:test", "create");
    world.store.create_subscription(&bare, &audit).await.unwrap();
    let refused = billing::change::reconcile_subscription(world.change_context(), bare.id, "admin:operator").await;
    assert!(matches!(refused, Err(ChangeError::NotInStripe)), "{refused:?}");
    let missing =
        billing::change::reconcile_subscription(world.change_context(), Uuid::new_v4(), "admin:operator").await;
    assert!(matches!(missing, Err(ChangeError::NotFound)), "{missing:?}");
}

/// A PATCH as the owner sends it, with no `If-Match`.
async fn patch_as_owner(
    world: &World,
    user: Uuid,
    body: serde_json::Value,
    origin: &str,
) -> Result<Subscription, ChangeError> {
    change_subscription(
        world.change_context(),
        ChangeRequest {
            id: user,
            change: &change(body),
            expected_version: None,
            actor: "user:test",
            origin,
        },
    )
    .await
}

#[tokio::test]
async fn a_change_to_a_subscription_stripe_canceled_before_its_event_is_a_conflict_and_stores_the_cancel() {
    // Given a subscription Stripe has canceled, its deleted event not yet arrived
    let world = World::new();
    let user = Uuid::new_v4();
    let provisioned = world.provision(user).await.unwrap();
    let stripe_id = provisioned.stripe_subscription.clone().unwrap();
    world
        .billing
        .change_behind_our_back(&stripe_id, |s| s.status = Status::Canceled);
    // When the owner asks to cancel at the period's end
    let refused = patch_as_owner(&world, user, json!({"cancel_at_period_end": true}), "req-1").await;
    // Then the change is refused as a conflict, not a failure, and the store shows the cancel
    assert!(matches!(refused, Err(ChangeError::Canceled)), "{refused:?}");
    let stored = world.store.get_subscription(user).await.unwrap();
    assert_eq!((stored.status, stored.cancel_at_period_end), (Status::Canceled, false));
    let trail = world.store.audit_trail(user).await.unwrap();
    let last = trail.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.action.as_str()),
        ("system:stripe", "reconcile")
    );
}

#[tokio::test]
async fn a_new_plan_for_a_subscription_stripe_canceled_before_its_event_subscribes_again_once() {
    // Given a subscription Stripe has canceled, its deleted event not yet arrived
    let world = World::new();
    let user = Uuid::new_v4();
    let provisioned = world.provision(user).await.unwrap();
    let old = provisioned.stripe_subscription.clone().unwrap();
    world
        .billing
        .change_behind_our_back(&old, |s| s.status = Status::Canceled);
    // When the owner picks a paid plan
    let stored = patch_as_owner(&world, user, json!({"plan": "basic_monthly"}), "req-2")
        .await
        .unwrap();
    // Then a new Stripe subscription is made (one), and the subscription is on it
    assert_eq!(world.billing.subscription_count(), 2);
    assert_ne!(stored.stripe_subscription.as_deref(), Some(old.as_str()));
    assert_eq!((stored.plan.as_str(), stored.status), ("basic_monthly", Status::Active));
}

// Every kind of event at once, in any order and with duplicates, against an oracle written
// from the rules, not from the code: the newest snapshot (updates and the deletion alike)
// decides the plan, the cancel flag and the status, whatever invoice events and older snapshots
// arrive after it; the newest customer event decides the payment source.

#[derive(Clone, Copy, Debug)]
enum Kind {
    Snapshot(&'static str, &'static str, bool),
    Deleted,
    Paid,
    Failed,
    Customer(bool),
}

/// A stream as Stripe sends one: snapshots, deletions, invoice and customer events in any mix,
/// ending with a snapshot (Stripe follows every status an invoice changes with a snapshot of
/// the subscription), possibly followed by customer events.
fn mixed_events() -> impl Strategy<Value = Vec<Kind>> {
    let snapshot = || {
        let statuses = prop::sample::select(vec!["trialing", "active", "past_due", "unpaid"]);
        let prices = prop::sample::select(vec!["price_pending", "price_basic_monthly", "price_business_monthly"]);
        prop_oneof![
            4 => (statuses, prices, any::<bool>()).prop_map(|(s, p, c)| Kind::Snapshot(s, p, c)),
            1 => Just(Kind::Deleted),
        ]
    };
    let kind = prop_oneof![
        5 => snapshot(),
        2 => Just(Kind::Paid),
        2 => Just(Kind::Failed),
        2 => any::<bool>().prop_map(Kind::Customer),
    ];
    let customers = prop::collection::vec(any::<bool>().prop_map(Kind::Customer), 0..2);
    (prop::collection::vec(kind, 0..8), snapshot(), customers).prop_map(|(mut kinds, last, customers)| {
        kinds.push(last);
        kinds.extend(customers);
        kinds
    })
}

/// The event of `kind` created at `NOW + at` (each event its own second: Stripe's order).
fn mixed_event(kind: Kind, at: usize, stripe_id: &str, customer: &str) -> StripeEvent {
    let id = format!("evt_{at}");
    let created = NOW + at as i64;
    match kind {
        Kind::Snapshot(status, price, cancel) => {
            let mut event = subscription_event(&id, created, stripe_id, status, price);
            event.object["cancel_at_period_end"] = json!(cancel);
            event
        }
        Kind::Deleted => {
            let mut event = subscription_event(&id, created, stripe_id, "canceled", "price_basic_monthly");
            event.kind = "customer.subscription.deleted".into();
            event
        }
        Kind::Paid => invoice_event(&id, "invoice.paid", created, Some(stripe_id)),
        Kind::Failed => invoice_event(&id, "invoice.payment_failed", created, Some(stripe_id)),
        Kind::Customer(has_card) => StripeEvent {
            id,
            kind: "customer.updated".into(),
            created,
            object: json!({"id": customer, "default_source": null,
                           "invoice_settings": {"default_payment_method": if has_card { json!("pm_1") } else { json!(null) }}}),
        },
    }
}

/// What the rules say the subscription ends as, from `initial`.
fn oracle(initial: &Subscription, kinds: &[Kind]) -> (Status, String, bool, bool) {
    let (mut status, mut plan, mut cancel) = (initial.status, initial.plan.clone(), initial.cancel_at_period_end);
    let newest_snapshot = kinds
        .iter()
        .rposition(|k| matches!(k, Kind::Snapshot(..) | Kind::Deleted));
    if let Some(at) = newest_snapshot {
        match kinds[at] {
            Kind::Snapshot(s, price, c) => {
                status = Status::parse(s).unwrap();
                plan = price.trim_start_matches("price_").to_owned();
                cancel = c;
            }
            _ => {
                status = Status::Canceled;
                plan = "basic_monthly".to_owned();
                cancel = false;
            }
        }
    }
    for kind in &kinds[newest_snapshot.map_or(0, |at| at + 1)..] {
        match kind {
            Kind::Paid if matches!(status, Status::Incomplete | Status::PastDue | Status::Unpaid) => {
                status = Status::Active;
            }
            Kind::Failed if status == Status::Active => status = Status::PastDue,
            _ => {}
        }
    }
    let card = kinds
        .iter()
        .rev()
        .find_map(|k| match k {
            Kind::Customer(has) => Some(*has),
            _ => None,
        })
        .unwrap_or(initial.has_payment_source);
    (status, plan, cancel, card)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn mixed_events_in_any_order_end_where_the_newest_snapshot_and_later_events_say(
        (kinds, order) in mixed_events().prop_flat_map(|kinds| {
            let n = kinds.len();
            let extra = prop::collection::vec(0..n, 0..n);
            (Just(kinds), extra.prop_flat_map(move |extra| {
                let all: Vec<usize> = (0..n).chain(extra).collect();
                Just(all).prop_shuffle()
            }))
        })
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (initial, stored) = runtime.block_on(async {
            let world = World::new();
            let subscription = world.provision(Uuid::from_u128(9)).await.unwrap();
            let stripe_id = subscription.stripe_subscription.clone().unwrap();
            let customer = subscription.stripe_customer.clone().unwrap();
            for &at in &order {
                world.deliver(&mixed_event(kinds[at], at, &stripe_id, &customer)).await.unwrap();
            }
            (subscription.clone(), world.store.get_subscription(subscription.id).await.unwrap())
        });
        let expected = oracle(&initial, &kinds);
        prop_assert_eq!(
            (stored.status, stored.plan.clone(), stored.cancel_at_period_end, stored.has_payment_source),
            expected,
            "kinds {:?} delivered {:?}", kinds, order
        );
    }
}

#[tokio::test]
async fn a_rate_limited_answer_releases_its_idempotency_key_and_a_kept_one_is_replayed() {
    use billing::idempotency::{Begin, KeptAnswer, begin, finish};
    let documents = billing_testing::in_memory_store();
    let answer = |status: u16| KeptAnswer {
        status,
        body: "{}".into(),
        headers: Vec::new(),
    };
    // Given a request under a key refused with 429 (a limit whose window ends soon)
    let Begin::Run(version) = begin(documents.as_ref(), "user", "key-429", "fp", now()).await.unwrap() else {
        panic!("the first request runs");
    };
    finish(
        documents.as_ref(),
        "user",
        "key-429",
        "fp",
        version,
        &answer(429),
        now(),
    )
    .await
    .unwrap();
    // When it is retried with the same key after the window, then it runs again
    let retried = begin(
        documents.as_ref(),
        "user",
        "key-429",
        "fp",
        now() + Duration::minutes(1),
    )
    .await
    .unwrap();
    let Begin::Run(version) = retried else {
        panic!("a 429 is not replayed: {retried:?}");
    };
    // And an answer that stands (201) is kept and replayed
    finish(
        documents.as_ref(),
        "user",
        "key-429",
        "fp",
        version,
        &answer(201),
        now(),
    )
    .await
    .unwrap();
    let replayed = begin(
        documents.as_ref(),
        "user",
        "key-429",
        "fp",
        now() + Duration::minutes(2),
    )
    .await
    .unwrap();
    assert!(
        matches!(replayed, Begin::Replay(KeptAnswer { status: 201, .. })),
        "{replayed:?}"
    );
}
