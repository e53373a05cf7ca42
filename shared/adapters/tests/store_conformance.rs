//! The store conformance suite: the promises of the `Store` port, checked against every
//! adapter. The embedded halves (on a file and in memory) run anywhere; the DynamoDB half runs
//! against the moto server that `make test` starts (`AWS_ENDPOINT_URL`), each test on a table of
//! its own.

use std::sync::Arc;

use billing::store::{
    AuditEntry, DocumentStore, EventMark, EventOrder, EventWrite, KeptEvent, Store, StoreError, SubscriptionFilter,
    SubscriptionWrite,
};
use billing::subscription::{PlanCatalog, Status, Subscription, SubscriptionChange};
use billing_adapters::EmbeddedStore;
use chrono::{Duration, SubsecRound, Utc};
use uuid::Uuid;

fn catalog() -> PlanCatalog {
    PlanCatalog::standard(|id| Ok::<_, ()>(format!("price_{id}"))).unwrap()
}

fn change(json: &str) -> SubscriptionChange {
    SubscriptionChange::from_json(json.as_bytes()).unwrap()
}

/// A fresh trialing subscription for a new user, optionally with Stripe ids.
fn new_subscription(stripe: Option<(&str, &str)>) -> Subscription {
    let user = Uuid::new_v4();
    let mut body = format!(r#"{{"user_id": "{user}", "email": "user-{user}@example.com""#);
    if let Some((customer, subscription)) = stripe {
        body.push_str(&format!(
            r#", "stripe_customer": "{customer}", "stripe_subscription": "{subscription}""#
        ));
    }
    body.push('}');
    let now = Utc::now();
    change(&body)
        .new_subscription(catalog().get("pending").unwrap(), now, now)
        .unwrap()
}

fn created(subscription: &Subscription) -> AuditEntry {
    AuditEntry::between(None, subscription, "system:test", "create")
}

fn updated(next: &Subscription) -> AuditEntry {
    AuditEntry::between(None, next, "system:test", "patch")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

async fn create_then_get_returns_what_was_stored(store: Arc<impl Store>) {
    // Given a subscription with every optional attribute absent
    let subscription = new_subscription(None);
    // When it is created and read back
    store
        .create_subscription(&subscription, &created(&subscription))
        .await
        .unwrap();
    // Then it is exactly what was stored
    assert_eq!(store.get_subscription(subscription.id).await.unwrap(), subscription);

    // And so is one with every attribute present
    let mut full = new_subscription(Some((&unique("cus_"), &unique("sub_"))));
    full.licenses = Some(7);
    full.discount_percent = Some(20);
    full.current_period_end = Some(Utc::now().trunc_subsecs(0) + Duration::days(30));
    full.has_payment_source = true;
    store.create_subscription(&full, &created(&full)).await.unwrap();
    assert_eq!(store.get_subscription(full.id).await.unwrap(), full);
}

async fn create_twice_is_already_exists_and_keeps_the_first(store: Arc<impl Store>) {
    // Given a stored subscription
    let first = new_subscription(None);
    store.create_subscription(&first, &created(&first)).await.unwrap();
    // When another create for the same id arrives
    let mut second = first.clone();
    second.email = "someone-else@example.com".into();
    let outcome = store.create_subscription(&second, &created(&second)).await;
    // Then it is refused and the first is untouched
    assert!(matches!(outcome, Err(StoreError::AlreadyExists)));
    assert_eq!(store.get_subscription(first.id).await.unwrap(), first);
    assert_eq!(store.audit_trail(first.id).await.unwrap().len(), 1);
}

async fn concurrent_creates_for_one_id_store_exactly_one(store: Arc<impl Store + 'static>) {
    let subscription = new_subscription(None);
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            let mut candidate = subscription.clone();
            candidate.email = format!("attempt-{i}@example.com");
            tokio::spawn(async move { store.create_subscription(&candidate, &created(&candidate)).await })
        })
        .collect();
    let mut created_count = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => created_count += 1,
            Err(StoreError::AlreadyExists) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created_count, 1);
    assert_eq!(store.get_subscription(subscription.id).await.unwrap().version, 1);
}

async fn concurrent_updates_from_one_version_let_exactly_one_win(store: Arc<impl Store + 'static>) {
    // Given a stored subscription at version 1
    let subscription = new_subscription(None);
    store
        .create_subscription(&subscription, &created(&subscription))
        .await
        .unwrap();
    // When eight writers, each having read version 1, write different changes at once
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            let current = subscription.clone();
            tokio::spawn(async move {
                let what = change(&format!(r#"{{"licenses": {i}}}"#));
                let next = what.apply(&current, Utc::now()).unwrap_or_else(|| {
                    // licenses 0 still differs from the stored null
                    unreachable!()
                });
                store
                    .update_subscription(&next, 1, &updated(&next))
                    .await
                    .map(|()| next)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Ok(next) => winners.push(next),
            Err(StoreError::VersionConflict) => conflicts += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    // Then exactly one wins, the others are told of the conflict, and the winner's state is stored
    assert_eq!((winners.len(), conflicts), (1, 7));
    let stored = store.get_subscription(subscription.id).await.unwrap();
    assert_eq!(stored, winners[0]);
    assert_eq!(stored.version, 2);
    assert_eq!(store.audit_trail(subscription.id).await.unwrap().len(), 2);
}

async fn update_from_a_stale_version_is_a_conflict_and_changes_nothing(store: Arc<impl Store>) {
    let v1 = new_subscription(None);
    store.create_subscription(&v1, &created(&v1)).await.unwrap();
    let first = change(r#"{"plan": "basic_monthly"}"#);
    let v2 = first.apply(&v1, Utc::now()).unwrap();
    store.update_subscription(&v2, 1, &updated(&v2)).await.unwrap();

    // A writer still holding version 1
    let late = change(r#"{"email": "late@example.com"}"#);
    let stale = late.apply(&v1, Utc::now()).unwrap();
    let outcome = store.update_subscription(&stale, 1, &updated(&stale)).await;

    assert!(matches!(outcome, Err(StoreError::VersionConflict)));
    assert_eq!(store.get_subscription(v1.id).await.unwrap(), v2);
    let trail = store.audit_trail(v1.id).await.unwrap();
    assert_eq!(trail.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2]);
}

async fn unknown_ids_are_not_found(store: Arc<impl Store>) {
    let ghost = new_subscription(None);
    assert!(matches!(
        store.get_subscription(ghost.id).await,
        Err(StoreError::NotFound)
    ));
    let what = change(r#"{"plan": "basic_monthly"}"#);
    let next = what.apply(&ghost, Utc::now()).unwrap();
    assert!(matches!(
        store.update_subscription(&next, 1, &updated(&next)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.find_by_stripe_subscription(&unique("sub_")).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.find_by_stripe_customer(&unique("cus_")).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.audit_trail(ghost.id).await.unwrap(), vec![]);
}

async fn lookups_by_stripe_ids_follow_changes(store: Arc<impl Store>) {
    // Given two subscriptions with Stripe ids and one without
    let (customer, stripe_subscription) = (unique("cus_"), unique("sub_"));
    let ada = new_subscription(Some((&customer, &stripe_subscription)));
    let bob = new_subscription(Some((&unique("cus_"), &unique("sub_"))));
    let eve = new_subscription(None);
    for s in [&ada, &bob, &eve] {
        store.create_subscription(s, &created(s)).await.unwrap();
    }
    // Then each Stripe id finds its own subscription
    assert_eq!(store.find_by_stripe_customer(&customer).await.unwrap(), ada);
    assert_eq!(
        store.find_by_stripe_subscription(&stripe_subscription).await.unwrap(),
        ada
    );
    assert_eq!(
        store
            .find_by_stripe_customer(bob.stripe_customer.as_deref().unwrap())
            .await
            .unwrap(),
        bob
    );

    // When Ada's Stripe subscription is replaced
    let replacement = unique("sub_");
    let what = change(&format!(r#"{{"stripe_subscription": "{replacement}"}}"#));
    let next = what.apply(&ada, Utc::now()).unwrap();
    store.update_subscription(&next, 1, &updated(&next)).await.unwrap();
    // Then the new id finds her at the new version and the old one finds nothing
    assert_eq!(store.find_by_stripe_subscription(&replacement).await.unwrap(), next);
    assert!(matches!(
        store.find_by_stripe_subscription(&stripe_subscription).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.find_by_stripe_customer(&customer).await.unwrap().version, 2);
}

async fn an_id_is_recorded_once_until_it_expires(store: Arc<impl Store>) {
    let key = unique("evt_");
    let tomorrow = Utc::now() + Duration::days(1);
    assert_eq!(
        store.record_event(&key, tomorrow, "ignored", None).await.unwrap(),
        EventWrite::Recorded
    );
    assert_eq!(
        store.record_event(&key, tomorrow, "ignored", None).await.unwrap(),
        EventWrite::Duplicate
    );
    assert_eq!(
        store
            .record_event(&unique("evt_"), tomorrow, "ignored", None)
            .await
            .unwrap(),
        EventWrite::Recorded
    );
}

async fn an_expired_record_counts_as_absent_even_before_the_backend_deletes_it(store: Arc<impl Store>) {
    // Given a record that expired a minute ago (DynamoDB deletes expired items days late)
    let key = unique("evt_");
    let a_minute_ago = Utc::now() - Duration::minutes(1);
    assert_eq!(
        store.record_event(&key, a_minute_ago, "ignored", None).await.unwrap(),
        EventWrite::Recorded
    );
    // When the same id comes again, it is new again
    let tomorrow = Utc::now() + Duration::days(1);
    assert_eq!(
        store.record_event(&key, tomorrow, "ignored", None).await.unwrap(),
        EventWrite::Recorded
    );
    // And now lives until tomorrow
    assert_eq!(
        store.record_event(&key, tomorrow, "ignored", None).await.unwrap(),
        EventWrite::Duplicate
    );
}

async fn audit_trail_lists_every_version_oldest_first(store: Arc<impl Store>) {
    let v1 = new_subscription(None);
    store.create_subscription(&v1, &created(&v1)).await.unwrap();
    let what = change(r#"{"plan": "business_annual", "stripe_source": "pm_card_visa"}"#);
    let v2 = what.apply(&v1, Utc::now()).unwrap();
    store.update_subscription(&v2, 1, &updated(&v2)).await.unwrap();
    let trail = store.audit_trail(v1.id).await.unwrap();
    assert_eq!(trail, vec![created(&v1), updated(&v2)]);
}

async fn audit_pages_start_after_a_version_and_hold_at_most_the_limit(store: Arc<impl Store>) {
    // Given a subscription at version 4
    let mut current = new_subscription(None);
    store.create_subscription(&current, &created(&current)).await.unwrap();
    for flag in [true, false, true] {
        let next = change(&format!(r#"{{"cancel_at_period_end": {flag}}}"#))
            .apply(&current, Utc::now())
            .unwrap();
        store
            .update_subscription(&next, current.version, &updated(&next))
            .await
            .unwrap();
        current = next;
    }
    // When its trail is read two records at a time
    let versions = |page: Vec<AuditEntry>| page.iter().map(|entry| entry.version).collect::<Vec<_>>();
    // Then each page starts after the version given, oldest first, and the last one is short
    assert_eq!(versions(store.audit_page(current.id, 0, 2).await.unwrap()), vec![1, 2]);
    assert_eq!(versions(store.audit_page(current.id, 2, 2).await.unwrap()), vec![3, 4]);
    assert!(store.audit_page(current.id, 4, 2).await.unwrap().is_empty());
    assert!(store.audit_page(Uuid::new_v4(), 0, 2).await.unwrap().is_empty());
}

/// Every page of a list from its start, `limit` at a time.
async fn walk(store: &impl Store, filter: &SubscriptionFilter, limit: usize) -> Vec<Vec<Subscription>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_subscriptions(filter, limit, cursor.as_ref()).await.unwrap();
        assert!(page.subscriptions.len() <= limit);
        pages.push(page.subscriptions);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return pages,
        }
    }
}

async fn subscriptions_are_listed_by_email_status_and_plan_a_page_at_a_time(store: Arc<impl Store>) {
    // Given three subscriptions of one address, created a second apart (two active on
    // basic_monthly, one trialing on pending), and one of another address
    let email = format!("{}@Example.com", unique("list-"));
    let start = Utc::now().trunc_subsecs(0);
    let mut ours = Vec::new();
    for (i, (status, plan)) in [
        (Status::Active, "basic_monthly"),
        (Status::Active, "basic_monthly"),
        (Status::Trialing, "pending"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut subscription = new_subscription(None);
        subscription.email.clone_from(&email);
        subscription.status = status;
        subscription.plan = plan.to_owned();
        subscription.created_at = start + Duration::seconds(i64::try_from(i).unwrap());
        store
            .create_subscription(&subscription, &created(&subscription))
            .await
            .unwrap();
        ours.push(subscription);
    }
    let other = new_subscription(None);
    store.create_subscription(&other, &created(&other)).await.unwrap();
    let ids = |pages: &[Vec<Subscription>]| pages.iter().flatten().map(|s| s.id).collect::<Vec<_>>();
    let by_email = SubscriptionFilter {
        email: Some(email.to_lowercase()),
        ..SubscriptionFilter::default()
    };

    // When the address's list is read two at a time (in another case)
    let pages = walk(store.as_ref(), &by_email, 2).await;
    // Then it holds the three by creation, in two pages
    assert_eq!(ids(&pages), ours.iter().map(|s| s.id).collect::<Vec<_>>());
    assert_eq!(pages.len(), 2);

    // When it is narrowed to active subscriptions on basic_monthly
    let active_basic = SubscriptionFilter {
        status: Some(Status::Active),
        plan: Some("basic_monthly".into()),
        ..by_email.clone()
    };
    // Then the trialing one is left out
    assert_eq!(
        ids(&walk(store.as_ref(), &active_basic, 10).await),
        vec![ours[0].id, ours[1].id]
    );

    // When the trialing one becomes active on basic_monthly
    let what = change(r#"{"status": "active", "plan": "basic_monthly"}"#);
    let moved = what.apply(&ours[2], Utc::now()).unwrap();
    store.update_subscription(&moved, 1, &updated(&moved)).await.unwrap();
    // Then every list follows the write: the address's, and the status and plan list walked
    // whole (other tests' subscriptions among them), each of ours once, in order of creation
    assert_eq!(
        ids(&walk(store.as_ref(), &active_basic, 10).await),
        ours.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    let everyone_active_basic = SubscriptionFilter {
        email: None,
        ..active_basic.clone()
    };
    let listed = walk(store.as_ref(), &everyone_active_basic, 50).await;
    assert!(
        listed
            .iter()
            .flatten()
            .all(|s| s.status == Status::Active && s.plan == "basic_monthly"),
        "only active basic_monthly subscriptions"
    );
    let mine: Vec<Uuid> = ids(&listed)
        .into_iter()
        .filter(|id| ours.iter().any(|s| s.id == *id))
        .collect();
    assert_eq!(mine, ours.iter().map(|s| s.id).collect::<Vec<_>>());
    assert!(!ids(&listed).contains(&other.id));

    // And a cursor that was not given is refused
    let forged = serde_json::json!({"partition": "first"});
    assert!(matches!(
        store.list_subscriptions(&by_email, 2, Some(&forged)).await,
        Err(StoreError::InvalidCursor)
    ));
}

fn kept(id: &str, created: i64, outcome: &str, body: Vec<u8>) -> KeptEvent {
    KeptEvent {
        id: id.to_owned(),
        kind: "customer.subscription.updated".into(),
        created,
        outcome: outcome.to_owned(),
        subscription_id: None,
        body,
        kept_until: (Utc::now() + Duration::days(400)).trunc_subsecs(0),
    }
}

async fn a_kept_event_reads_back_and_only_a_replacing_keep_changes_its_outcome(store: Arc<impl Store>) {
    // Given an event kept as concerning an unknown subscription, with a body large enough to be
    // deflated
    let id = unique("evt_");
    let body = format!(r#"{{"id": "{id}", "data": "{}"}}"#, "x".repeat(20_000)).into_bytes();
    let first = kept(&id, 1_700_000_000, "unknown_subscription", body);
    store.keep_event(&first, false).await.unwrap();
    assert_eq!(store.kept_event(&id).await.unwrap(), first);
    // When a duplicate delivery keeps it again, it stays as it was
    let mut applied = first.clone();
    applied.outcome = "applied".into();
    applied.subscription_id = Some(Uuid::new_v4());
    store.keep_event(&applied, false).await.unwrap();
    assert_eq!(store.kept_event(&id).await.unwrap().outcome, "unknown_subscription");
    // And a replay that applied it replaces the outcome
    store.keep_event(&applied, true).await.unwrap();
    assert_eq!(store.kept_event(&id).await.unwrap(), applied);
    assert!(matches!(store.kept_event("evt_never").await, Err(StoreError::NotFound)));
}

async fn kept_events_are_listed_by_outcome_newest_first(store: Arc<impl Store>) {
    // Given three events of one outcome and one of another
    let outcome = "stale";
    let ids: Vec<String> = (0..3).map(|_| unique("evt_")).collect();
    for (i, id) in ids.iter().enumerate() {
        let created = 1_800_000_000 + i64::try_from(i).unwrap();
        store
            .keep_event(&kept(id, created, outcome, b"{}".to_vec()), false)
            .await
            .unwrap();
    }
    let other = unique("evt_");
    store
        .keep_event(&kept(&other, 1_800_000_009, "applied", b"{}".to_vec()), false)
        .await
        .unwrap();
    // When that outcome's list is read a page of two at a time
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_kept_events(Some(outcome), 2, cursor.as_ref()).await.unwrap();
        assert!(page.events.len() <= 2);
        assert!(page.events.iter().all(|event| event.outcome == outcome));
        listed.extend(page.events.into_iter().map(|event| event.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // Then ours are there once each, newest first, and the other outcome's is not
    let ours: Vec<&String> = listed.iter().filter(|id| ids.contains(id)).collect();
    assert_eq!(ours, vec![&ids[2], &ids[1], &ids[0]]);
    assert!(!listed.contains(&other));
}

async fn an_event_recorded_for_an_unknown_subscription_applies_when_it_comes_again(store: Arc<impl Store>) {
    // Given an event recorded as concerning an unknown subscription
    let key = unique("stripe-event:evt_");
    let tomorrow = Utc::now() + Duration::days(1);
    assert_eq!(
        store
            .record_event(&key, tomorrow, "unknown_subscription", None)
            .await
            .unwrap(),
        EventWrite::Recorded
    );
    // Then it does not count as handled, and a later delivery records what it did
    assert!(!store.is_recorded(&key).await.unwrap());
    assert_eq!(
        store.record_event(&key, tomorrow, "ignored", None).await.unwrap(),
        EventWrite::Recorded
    );
    assert!(store.is_recorded(&key).await.unwrap());
    assert_eq!(
        store.record_event(&key, tomorrow, "ignored", None).await.unwrap(),
        EventWrite::Duplicate
    );
}

fn mark(created: i64, id: &str) -> EventMark {
    EventMark {
        created,
        id: id.to_owned(),
    }
}

async fn an_event_and_its_subscription_write_are_recorded_together(store: Arc<impl Store>) {
    let v1 = new_subscription(None);
    store.create_subscription(&v1, &created(&v1)).await.unwrap();
    let what = change(r#"{"status": "active"}"#);
    let v2 = what.apply(&v1, Utc::now()).unwrap();
    let audit = updated(&v2);
    let key = unique("stripe-event:evt_");
    let write = SubscriptionWrite {
        next: &v2,
        expected_version: 1,
        audit: &audit,
        mark: &mark(100, "evt_a"),
        order: EventOrder::Snapshot,
    };
    let tomorrow = Utc::now() + Duration::days(1);
    assert!(!store.is_recorded(&key).await.unwrap());
    assert_eq!(
        store
            .record_event(&key, tomorrow, "applied", Some(write))
            .await
            .unwrap(),
        EventWrite::Recorded
    );
    assert!(store.is_recorded(&key).await.unwrap());
    assert_eq!(store.get_subscription(v1.id).await.unwrap(), v2);
    // The same event again changes nothing, whatever write it carries
    let again = what.apply(&v2, Utc::now()).unwrap_or_else(|| v2.clone());
    let mut again = again;
    again.version = 3;
    let audit3 = AuditEntry::between(None, &again, "system:test", "patch");
    let write = SubscriptionWrite {
        next: &again,
        expected_version: 2,
        audit: &audit3,
        mark: &mark(100, "evt_a"),
        order: EventOrder::Snapshot,
    };
    assert_eq!(
        store
            .record_event(&key, tomorrow, "applied", Some(write))
            .await
            .unwrap(),
        EventWrite::Duplicate
    );
    assert_eq!(store.get_subscription(v1.id).await.unwrap(), v2);
    assert_eq!(store.audit_trail(v1.id).await.unwrap().len(), 2);
}

async fn an_event_older_than_the_last_applied_is_stale_and_writes_nothing(store: Arc<impl Store>) {
    let v1 = new_subscription(None);
    store.create_subscription(&v1, &created(&v1)).await.unwrap();
    let tomorrow = Utc::now() + Duration::days(1);
    let newer = change(r#"{"status": "canceled"}"#);
    let v2 = newer.apply(&v1, Utc::now()).unwrap();
    let audit = updated(&v2);
    let write = SubscriptionWrite {
        next: &v2,
        expected_version: 1,
        audit: &audit,
        mark: &mark(200, "evt_b"),
        order: EventOrder::Snapshot,
    };
    assert_eq!(
        store
            .record_event(&unique("e:"), tomorrow, "applied", Some(write))
            .await
            .unwrap(),
        EventWrite::Recorded
    );

    // An older event, and one of the same second with a smaller id, arrive late
    for (created_at, id) in [(100, "evt_z"), (200, "evt_a"), (200, "evt_b")] {
        let older = change(r#"{"status": "active"}"#);
        let v3 = older.apply(&v2, Utc::now()).unwrap();
        let audit = updated(&v3);
        let key = unique("e:");
        let write = SubscriptionWrite {
            next: &v3,
            expected_version: 2,
            audit: &audit,
            mark: &mark(created_at, id),
            order: EventOrder::Snapshot,
        };
        assert_eq!(
            store
                .record_event(&key, tomorrow, "applied", Some(write))
                .await
                .unwrap(),
            EventWrite::Stale,
            "{created_at} {id}"
        );
        assert!(!store.is_recorded(&key).await.unwrap());
    }
    assert_eq!(store.get_subscription(v1.id).await.unwrap(), v2);
    // A newer one of the same second applies
    let later = change(r#"{"status": "past_due"}"#);
    let v3 = later.apply(&v2, Utc::now()).unwrap();
    let audit = updated(&v3);
    let write = SubscriptionWrite {
        next: &v3,
        expected_version: 2,
        audit: &audit,
        mark: &mark(200, "evt_c"),
        order: EventOrder::Snapshot,
    };
    assert_eq!(
        store
            .record_event(&unique("e:"), tomorrow, "applied", Some(write))
            .await
            .unwrap(),
        EventWrite::Recorded
    );
}

async fn an_event_write_from_a_stale_version_is_a_conflict_and_records_nothing(store: Arc<impl Store>) {
    let v1 = new_subscription(None);
    store.create_subscription(&v1, &created(&v1)).await.unwrap();
    let patch = change(r#"{"email": "moved@example.com"}"#);
    let v2 = patch.apply(&v1, Utc::now()).unwrap();
    store.update_subscription(&v2, 1, &updated(&v2)).await.unwrap();
    let event = change(r#"{"status": "past_due"}"#);
    let stale = event.apply(&v1, Utc::now()).unwrap();
    let audit = updated(&stale);
    let key = unique("e:");
    let write = SubscriptionWrite {
        next: &stale,
        expected_version: 1,
        audit: &audit,
        mark: &mark(1, "evt_1"),
        order: EventOrder::Snapshot,
    };
    let outcome = store
        .record_event(&key, Utc::now() + Duration::days(1), "applied", Some(write))
        .await
        .unwrap();
    assert_eq!(outcome, EventWrite::VersionConflict);
    assert!(!store.is_recorded(&key).await.unwrap());
    assert_eq!(store.get_subscription(v1.id).await.unwrap(), v2);
}

async fn an_event_without_a_write_is_recorded_for_review(store: Arc<impl Store>) {
    let key = unique("e:");
    let tomorrow = Utc::now() + Duration::days(1);
    assert_eq!(
        store.record_event(&key, tomorrow, "ignored", None).await.unwrap(),
        EventWrite::Recorded
    );
    assert_eq!(
        store.record_event(&key, tomorrow, "ignored", None).await.unwrap(),
        EventWrite::Duplicate
    );
    assert!(store.is_recorded(&key).await.unwrap());
    let expired = unique("e:");
    store
        .record_event(&expired, Utc::now() - Duration::minutes(1), "ignored", None)
        .await
        .unwrap();
    assert!(!store.is_recorded(&expired).await.unwrap());
}

async fn an_event_that_changes_nothing_advances_the_mark_without_a_new_version(store: Arc<impl Store>) {
    let v1 = new_subscription(None);
    store.create_subscription(&v1, &created(&v1)).await.unwrap();
    let tomorrow = Utc::now() + Duration::days(1);
    let audit = AuditEntry::between(None, &v1, "system:test", "stripe");
    let write = SubscriptionWrite {
        next: &v1,
        expected_version: 1,
        audit: &audit,
        mark: &mark(300, "evt_same"),
        order: EventOrder::Snapshot,
    };
    assert_eq!(
        store
            .record_event(&unique("e:"), tomorrow, "applied", Some(write))
            .await
            .unwrap(),
        EventWrite::Recorded
    );
    assert_eq!(store.get_subscription(v1.id).await.unwrap(), v1);
    assert_eq!(store.audit_trail(v1.id).await.unwrap().len(), 1);
    // The mark moved: an older event with a change is now stale
    let older = change(r#"{"status": "active"}"#);
    let v2 = older.apply(&v1, Utc::now()).unwrap();
    let audit = updated(&v2);
    let write = SubscriptionWrite {
        next: &v2,
        expected_version: 1,
        audit: &audit,
        mark: &mark(200, "evt_older"),
        order: EventOrder::Snapshot,
    };
    assert_eq!(
        store
            .record_event(&unique("e:"), tomorrow, "applied", Some(write))
            .await
            .unwrap(),
        EventWrite::Stale
    );
    // And an unchanged write from a stale version is a conflict, recording nothing
    let patch = change(r#"{"email": "elsewhere@example.com"}"#);
    let moved = patch.apply(&v1, Utc::now()).unwrap();
    store.update_subscription(&moved, 1, &updated(&moved)).await.unwrap();
    let key = unique("e:");
    let write = SubscriptionWrite {
        next: &v1,
        expected_version: 1,
        audit: &audit,
        mark: &mark(400, "evt_late"),
        order: EventOrder::Snapshot,
    };
    assert_eq!(
        store
            .record_event(&key, tomorrow, "applied", Some(write))
            .await
            .unwrap(),
        EventWrite::VersionConflict
    );
    assert!(!store.is_recorded(&key).await.unwrap());
}

/// Applies one event's change to the stored subscription, ordered as `order`.
async fn apply_event(store: &impl Store, id: Uuid, json: &str, at: (i64, &str), order: EventOrder) -> EventWrite {
    let current = store.get_subscription(id).await.unwrap();
    let what = change(json);
    let next = what.apply(&current, Utc::now()).unwrap_or_else(|| current.clone());
    let audit = updated(&next);
    let write = SubscriptionWrite {
        next: &next,
        expected_version: current.version,
        audit: &audit,
        mark: &mark(at.0, at.1),
        order,
    };
    store
        .record_event(&unique("e:"), Utc::now() + Duration::days(1), "applied", Some(write))
        .await
        .unwrap()
}

async fn invoice_events_and_snapshots_are_ordered_each_against_their_own_kind(store: Arc<impl Store>) {
    let v1 = new_subscription(None);
    store.create_subscription(&v1, &created(&v1)).await.unwrap();
    use EventOrder::{Invoice, Snapshot};
    // Given an invoice event applied at 200
    let failed = apply_event(
        &*store,
        v1.id,
        r#"{"status": "past_due"}"#,
        (200, "evt_inv_200"),
        Invoice,
    )
    .await;
    assert_eq!(failed, EventWrite::Recorded);
    // When an older snapshot, never applied, arrives: it applies (invoices do not fence it)
    let snapshot = apply_event(
        &*store,
        v1.id,
        r#"{"status": "unpaid"}"#,
        (150, "evt_sub_150"),
        Snapshot,
    )
    .await;
    assert_eq!(snapshot, EventWrite::Recorded);
    assert_eq!(store.get_subscription(v1.id).await.unwrap().status.as_str(), "unpaid");
    // and an older invoice event is stale against the newer invoice event
    let older_invoice = apply_event(&*store, v1.id, r#"{"status": "active"}"#, (180, "evt_inv_180"), Invoice).await;
    assert_eq!(older_invoice, EventWrite::Stale);
    // Then a newer snapshot applies, and an invoice event older than it never rolls it back
    let newer = apply_event(
        &*store,
        v1.id,
        r#"{"status": "active"}"#,
        (300, "evt_sub_300"),
        Snapshot,
    )
    .await;
    assert_eq!(newer, EventWrite::Recorded);
    let late_invoice = apply_event(
        &*store,
        v1.id,
        r#"{"status": "past_due"}"#,
        (250, "evt_inv_250"),
        Invoice,
    )
    .await;
    assert_eq!(late_invoice, EventWrite::Stale);
    assert_eq!(store.get_subscription(v1.id).await.unwrap().status.as_str(), "active");
    // while an invoice event newer than every snapshot still changes the status
    let fresh = apply_event(
        &*store,
        v1.id,
        r#"{"status": "past_due"}"#,
        (400, "evt_inv_400"),
        Invoice,
    )
    .await;
    assert_eq!(fresh, EventWrite::Recorded);
    assert_eq!(store.get_subscription(v1.id).await.unwrap().status.as_str(), "past_due");
}

async fn a_collection_lists_its_members_in_order_and_nothing_else(store: Arc<impl DocumentStore>) {
    // Given three members of a collection, one expired, a member of a neighbouring collection
    // and a document keyed like the collection itself
    let now = Utc::now();
    let collection = unique("realms#");
    let neighbour = format!("{collection}x");
    for (member, expires) in [("b", None), ("a", None), ("c", Some(now - Duration::minutes(1)))] {
        let key = billing::store::member_key(&collection, member);
        store
            .put_document(&key, &document_body(1), expires, None, now)
            .await
            .unwrap();
    }
    let other = billing::store::member_key(&neighbour, "a");
    store
        .put_document(&other, &document_body(2), None, None, now)
        .await
        .unwrap();
    store
        .put_document(&collection, &document_body(3), None, None, now)
        .await
        .unwrap();
    // When the collection is listed
    let members = store.list_documents(&collection, now).await.unwrap();
    // Then it holds exactly its live members, in member order, each readable by its key too
    let names: Vec<&str> = members.iter().map(|(member, _)| member.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(members[0].1.body, document_body(1));
    let key = billing::store::member_key(&collection, "a");
    assert_eq!(store.get_document(&key, now).await.unwrap().unwrap().version, 1);
    assert!(store.list_documents(&unique("empty#"), now).await.unwrap().is_empty());
}

async fn several_documents_are_written_all_or_none(store: Arc<impl DocumentStore>) {
    use billing::store::DocumentWrite;
    // Given one document at version 1
    let now = Utc::now();
    let (existing, fresh) = (unique("doc"), unique("doc"));
    store
        .put_document(&existing, &document_body(1), None, None, now)
        .await
        .unwrap();
    let (two, three) = (document_body(2), document_body(3));
    // When a write of both names a stale version of the first
    let stale = [
        DocumentWrite {
            key: &existing,
            body: &two,
            expires_at: None,
            expected: Some(7),
        },
        DocumentWrite {
            key: &fresh,
            body: &three,
            expires_at: None,
            expected: None,
        },
    ];
    // Then neither is written
    assert!(matches!(
        store.put_documents(&stale, now).await,
        Err(StoreError::VersionConflict)
    ));
    assert_eq!(store.get_document(&fresh, now).await.unwrap(), None);
    assert_eq!(
        store.get_document(&existing, now).await.unwrap().unwrap().body,
        document_body(1)
    );
    // And with the right version both are
    let right = [
        DocumentWrite {
            key: &existing,
            body: &two,
            expires_at: None,
            expected: Some(1),
        },
        DocumentWrite {
            key: &fresh,
            body: &three,
            expires_at: None,
            expected: None,
        },
    ];
    store.put_documents(&right, now).await.unwrap();
    assert_eq!(store.get_document(&existing, now).await.unwrap().unwrap().version, 2);
    assert_eq!(
        store.get_document(&fresh, now).await.unwrap().unwrap().body,
        document_body(3)
    );
    // while inserting a present document again fails whole
    let again = [DocumentWrite {
        key: &fresh,
        body: &two,
        expires_at: None,
        expected: None,
    }];
    assert!(matches!(
        store.put_documents(&again, now).await,
        Err(StoreError::VersionConflict)
    ));
}

async fn a_stripe_id_linked_to_another_subscription_is_refused_and_nothing_is_written(store: Arc<impl Store>) {
    // Given a subscription linked to a Stripe customer and subscription
    let (customer, stripe_id) = (unique("cus_"), unique("sub_"));
    let first = new_subscription(Some((&customer, &stripe_id)));
    store.create_subscription(&first, &created(&first)).await.unwrap();
    // When another is created with the same customer
    let mut second = new_subscription(None);
    second.stripe_customer = Some(customer.clone());
    let refused = store.create_subscription(&second, &created(&second)).await;
    // Then it is refused on that field and not stored
    assert!(
        matches!(refused, Err(StoreError::LinkTaken("/stripe_customer"))),
        "{refused:?}"
    );
    assert!(matches!(
        store.get_subscription(second.id).await,
        Err(StoreError::NotFound)
    ));
    // And when a third, stored without Stripe ids, is updated to the first's subscription id
    let third = new_subscription(None);
    store.create_subscription(&third, &created(&third)).await.unwrap();
    let what = change(&format!(r#"{{"stripe_subscription": "{stripe_id}"}}"#));
    let next = what.apply(&third, Utc::now()).unwrap();
    let refused = store.update_subscription(&next, 1, &updated(&next)).await;
    // Then it is refused too, the third is unchanged, and the id still finds the first
    assert!(
        matches!(refused, Err(StoreError::LinkTaken("/stripe_subscription"))),
        "{refused:?}"
    );
    assert_eq!(store.get_subscription(third.id).await.unwrap(), third);
    assert_eq!(
        store.find_by_stripe_subscription(&stripe_id).await.unwrap().id,
        first.id
    );
    // while the first may be written again with its own ids
    let own = change(r#"{"status": "active"}"#);
    let next = own.apply(&first, Utc::now()).unwrap();
    store.update_subscription(&next, 1, &updated(&next)).await.unwrap();
}

async fn customer_events_are_ordered_only_against_customer_events(store: Arc<impl Store>) {
    let v1 = new_subscription(None);
    store.create_subscription(&v1, &created(&v1)).await.unwrap();
    use EventOrder::{Customer, Snapshot};
    // Given a snapshot applied at 300
    let snapshot = apply_event(
        &*store,
        v1.id,
        r#"{"status": "active"}"#,
        (300, "evt_sub_300"),
        Snapshot,
    )
    .await;
    assert_eq!(snapshot, EventWrite::Recorded);
    // When a customer event of 200 arrives, it still applies (snapshots do not fence it)
    let customer = apply_event(
        &*store,
        v1.id,
        r#"{"email": "a@example.com"}"#,
        (200, "evt_cus_200"),
        Customer,
    )
    .await;
    assert_eq!(customer, EventWrite::Recorded);
    // and an older customer event after it is stale
    let older = apply_event(
        &*store,
        v1.id,
        r#"{"email": "b@example.com"}"#,
        (100, "evt_cus_100"),
        Customer,
    )
    .await;
    assert_eq!(older, EventWrite::Stale);
    assert_eq!(store.get_subscription(v1.id).await.unwrap().email, "a@example.com");
}

fn document_body(n: u32) -> serde_json::Value {
    serde_json::json!({"n": n, "name": "ünïcödé \"quoted\""})
}

async fn a_document_is_inserted_once_and_read_back_with_its_version(store: Arc<impl DocumentStore>) {
    let key = unique("doc");
    let now = Utc::now();
    assert_eq!(store.get_document(&key, now).await.unwrap(), None);
    assert_eq!(
        store
            .put_document(&key, &document_body(1), None, None, now)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        store.put_document(&key, &document_body(2), None, None, now).await,
        Err(StoreError::AlreadyExists)
    ));
    let document = store.get_document(&key, now).await.unwrap().unwrap();
    assert_eq!(document.body, document_body(1));
    assert_eq!(document.version, 1);
    assert_eq!(document.expires_at, None);
}

async fn a_document_is_replaced_only_from_the_version_read(store: Arc<impl DocumentStore>) {
    let key = unique("doc");
    let now = Utc::now();
    store
        .put_document(&key, &document_body(1), None, None, now)
        .await
        .unwrap();
    assert_eq!(
        store
            .put_document(&key, &document_body(2), None, Some(1), now)
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        store.put_document(&key, &document_body(3), None, Some(1), now).await,
        Err(StoreError::VersionConflict)
    ));
    assert!(matches!(
        store
            .put_document(&unique("absent"), &document_body(3), None, Some(1), now)
            .await,
        Err(StoreError::VersionConflict)
    ));
    let document = store.get_document(&key, now).await.unwrap().unwrap();
    assert_eq!((document.body, document.version), (document_body(2), 2));
}

async fn concurrent_replaces_of_a_document_let_exactly_one_win(store: Arc<impl DocumentStore + 'static>) {
    let key = unique("doc");
    let now = Utc::now();
    store
        .put_document(&key, &document_body(0), None, None, now)
        .await
        .unwrap();
    let writers: Vec<_> = (1..=8)
        .map(|n| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                store
                    .put_document(&key, &document_body(n), None, Some(1), Utc::now())
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Ok(2) => wins += 1,
            Err(StoreError::VersionConflict) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.get_document(&key, now).await.unwrap().unwrap().version, 2);
}

async fn an_expired_document_counts_as_absent_and_can_be_written_anew(store: Arc<impl DocumentStore>) {
    let key = unique("doc");
    let now = Utc::now();
    let expiry = now + Duration::hours(1);
    store
        .put_document(&key, &document_body(1), Some(expiry), None, now)
        .await
        .unwrap();
    let live = store.get_document(&key, now).await.unwrap().unwrap();
    assert_eq!(live.expires_at.map(|e| e.timestamp()), Some(expiry.timestamp()));
    let later = now + Duration::hours(2);
    assert_eq!(store.get_document(&key, later).await.unwrap(), None);
    assert_eq!(
        store
            .put_document(&key, &document_body(2), None, None, later)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.get_document(&key, later).await.unwrap().unwrap().body,
        document_body(2)
    );
}

async fn a_plan_book_round_trips_and_a_stale_append_is_a_conflict(store: Arc<impl DocumentStore>) {
    use billing::plans::{self, CountAt, Entity};
    let now = Utc::now().trunc_subsecs(0);
    let entity = Entity::Realm(Uuid::new_v4());
    // Given a plan bought and stored
    assert_eq!(
        plans::stored::load(store.as_ref(), entity, now).await.unwrap().book,
        plans::Book::new(entity)
    );
    let bought = billing_testing::store_automatic_basic_plan(store.as_ref(), entity, 6, None, now).await;
    // When it is read back, then it is what was stored
    let stored = plans::stored::load(store.as_ref(), entity, now).await.unwrap();
    assert_eq!(stored.book, bought);
    // When sixty uploaded counts are synced in one write, then all sixty rows are appended
    let counts: Vec<CountAt> = (1..=60)
        .map(|i| CountAt {
            event_time: now + Duration::minutes(i),
            count: 6 + u32::try_from(i).unwrap(),
        })
        .collect();
    let (synced, changes) = plans::sync_ledger(&stored.book, &counts);
    assert_eq!(changes.rows.len(), 60);
    plans::stored::save(store.as_ref(), &stored, &synced, &changes, now)
        .await
        .unwrap();
    let read = plans::stored::load(store.as_ref(), entity, now).await.unwrap();
    assert_eq!(read.book.ledger.len(), 61);
    assert_eq!(read.book, synced);
    // And a writer that read before them cannot append its own next row
    let late = [CountAt {
        event_time: now + Duration::minutes(1),
        count: 99,
    }];
    let (stale, changes) = plans::sync_ledger(&stored.book, &late);
    assert!(matches!(
        plans::stored::save(store.as_ref(), &stored, &stale, &changes, now).await,
        Err(StoreError::VersionConflict)
    ));
    assert_eq!(
        plans::stored::load(store.as_ref(), entity, now).await.unwrap().book,
        synced
    );
}

async fn a_range_of_a_collection_is_read_a_page_at_a_time_from_a_cursor(store: Arc<impl DocumentStore>) {
    // Given members a to e, and d expired
    let now = Utc::now();
    let collection = unique("range#");
    for member in ["a", "b", "c", "d", "e"] {
        let expires = (member == "d").then(|| now - Duration::seconds(1));
        store
            .put_document(
                &billing::store::member_key(&collection, member),
                &document_body(1),
                expires,
                None,
                now - Duration::seconds(5),
            )
            .await
            .unwrap();
    }
    let names = |page: Vec<(String, billing::store::Document)>| page.into_iter().map(|(m, _)| m).collect::<Vec<_>>();
    // When it is read through "d", two at a time, then the pages follow each other
    let first = store
        .list_documents_range(&collection, None, "d", 2, now)
        .await
        .unwrap();
    assert_eq!(names(first), ["a", "b"]);
    let second = store
        .list_documents_range(&collection, Some("b"), "d", 2, now)
        .await
        .unwrap();
    assert_eq!(names(second), ["c"], "d is expired, e is past the bound");
    let none = store
        .list_documents_range(&collection, Some("c"), "d", 2, now)
        .await
        .unwrap();
    assert!(none.is_empty());
    // and an empty range is empty
    assert!(
        store
            .list_documents_range(&collection, Some("e"), "a", 5, now)
            .await
            .unwrap()
            .is_empty()
    );
}

macro_rules! conformance_suite {
    ($store:expr) => {
        conformance_suite!(@tests $store;
            create_then_get_returns_what_was_stored,
            create_twice_is_already_exists_and_keeps_the_first,
            concurrent_creates_for_one_id_store_exactly_one,
            concurrent_updates_from_one_version_let_exactly_one_win,
            update_from_a_stale_version_is_a_conflict_and_changes_nothing,
            unknown_ids_are_not_found,
            lookups_by_stripe_ids_follow_changes,
            an_id_is_recorded_once_until_it_expires,
            an_expired_record_counts_as_absent_even_before_the_backend_deletes_it,
            audit_trail_lists_every_version_oldest_first,
            audit_pages_start_after_a_version_and_hold_at_most_the_limit,
            subscriptions_are_listed_by_email_status_and_plan_a_page_at_a_time,
            a_kept_event_reads_back_and_only_a_replacing_keep_changes_its_outcome,
            kept_events_are_listed_by_outcome_newest_first,
            an_event_recorded_for_an_unknown_subscription_applies_when_it_comes_again,
            an_event_and_its_subscription_write_are_recorded_together,
            an_event_older_than_the_last_applied_is_stale_and_writes_nothing,
            an_event_write_from_a_stale_version_is_a_conflict_and_records_nothing,
            an_event_without_a_write_is_recorded_for_review,
            an_event_that_changes_nothing_advances_the_mark_without_a_new_version,
            invoice_events_and_snapshots_are_ordered_each_against_their_own_kind,
            customer_events_are_ordered_only_against_customer_events,
            a_document_is_inserted_once_and_read_back_with_its_version,
            a_document_is_replaced_only_from_the_version_read,
            concurrent_replaces_of_a_document_let_exactly_one_win,
            an_expired_document_counts_as_absent_and_can_be_written_anew,
            a_collection_lists_its_members_in_order_and_nothing_else,
            several_documents_are_written_all_or_none,
            a_stripe_id_linked_to_another_subscription_is_refused_and_nothing_is_written,
            a_plan_book_round_trips_and_a_stale_append_is_a_conflict,
            a_range_of_a_collection_is_read_a_page_at_a_time_from_a_cursor,
        );
    };
    (@tests $store:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(std::sync::Arc::new($store)).await;
            }
        )*
    };
}

mod embedded {
    use super::*;

    fn store() -> EmbeddedStore {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("billing.redb")).unwrap();
        // The file stays open through the handle; the directory is removed when the test ends.
        std::mem::forget(dir);
        store
    }

    conformance_suite!(store());
}

/// The embedded store without its file: what the in-process benches measure handlers on.
mod embedded_in_memory {
    use super::*;

    conformance_suite!(EmbeddedStore::in_memory().unwrap());
}

mod dynamodb {
    use super::*;

    conformance_suite!(billing_testing::moto_store("billing-test").await);

    /// Attributes that feed an index are left out, never written as NULL, and the index keys
    /// appear only when the subscription has the Stripe id.
    #[tokio::test]
    async fn absent_optional_attributes_are_omitted_not_null() {
        let store = billing_testing::moto_store("billing-test").await;
        let subscription = new_subscription(None);
        store
            .create_subscription(&subscription, &created(&subscription))
            .await
            .unwrap();
        let item = store
            .client()
            .get_item()
            .table_name(store.table())
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("SUBSCRIPTION#{}", subscription.id)),
            )
            .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("STATE".into()))
            .send()
            .await
            .unwrap()
            .item
            .unwrap();
        assert!(item.values().all(|v| !v.is_null()), "{item:?}");
        for absent in ["gsi1pk", "gsi2pk", "stripe_customer", "trial_end_never", "licenses"] {
            assert!(!item.contains_key(absent), "{absent} in {item:?}");
        }
    }

    #[tokio::test]
    async fn the_billing_table_has_the_declared_indexes_and_ttl() {
        let store = billing_testing::moto_store("billing-test").await;
        let table = store
            .client()
            .describe_table()
            .table_name(store.table())
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        let mut indexes: Vec<_> = table
            .global_secondary_indexes()
            .iter()
            .filter_map(|i| i.index_name().map(str::to_owned))
            .collect();
        indexes.sort();
        assert_eq!(
            indexes,
            vec!["by_stripe_customer", "by_stripe_subscription", "listings"]
        );
        let ttl = store
            .client()
            .describe_time_to_live()
            .table_name(store.table())
            .send()
            .await
            .unwrap();
        assert_eq!(
            ttl.time_to_live_description().and_then(|d| d.attribute_name()),
            Some(billing_adapters::TABLE_DEFINITION.ttl_attribute)
        );
    }
}
