//! Tests of webhook verification and of what one event does to a subscription. Ordering and
//! duplicates are tested through the store, in `tests/use_cases.rs`.

use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::subscription::SubscriptionChange;

const SECRET: &str = "whsec_test_secret";
const NOW: i64 = 1_795_255_200;

fn catalog() -> PlanCatalog {
    PlanCatalog::standard(|id| Ok::<_, ()>(format!("price_{id}"))).unwrap()
}

fn subscription() -> Subscription {
    let change = SubscriptionChange::from_json(
        br#"{"user_id": "0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b", "email": "ada@example.com"}"#,
    )
    .unwrap();
    let now = Utc.timestamp_opt(NOW, 0).unwrap();
    let mut subscription = change
        .new_subscription(catalog().get("pending").unwrap(), now, now)
        .unwrap();
    subscription.stripe_subscription = Some("sub_1".into());
    subscription
}

fn subscription_event(id: &str, created: i64, status: &str, price: &str, cancel: bool) -> StripeEvent {
    StripeEvent {
        id: id.into(),
        kind: "customer.subscription.updated".into(),
        created,
        object: json!({"id": "sub_1", "customer": "cus_1", "status": status, "cancel_at_period_end": cancel, "trial_end": null,
                       "items": {"data": [{"price": {"id": price}, "current_period_end": NOW + 30 * 86400}]}}),
    }
}

// Verification

#[test]
fn a_signature_made_with_the_secret_verifies() {
    let payload = br#"{"id": "evt_1"}"#;
    assert_eq!(verify(payload, Some(&sign(payload, SECRET, NOW)), SECRET, NOW), Ok(()));
}

#[test]
fn any_of_several_v1_signatures_may_match() {
    let payload = br#"{"id": "evt_1"}"#;
    let good = sign(payload, SECRET, NOW);
    let other = sign(payload, "whsec_old", NOW);
    let header = format!("{},{}", other, good.split(',').nth(1).unwrap());
    assert_eq!(verify(payload, Some(&header), SECRET, NOW), Ok(()));
}

#[test]
fn a_missing_header_is_refused() {
    assert_eq!(verify(b"{}", None, SECRET, NOW), Err(SignatureError::Missing));
}

#[test]
fn a_forged_signature_is_refused() {
    let payload = br#"{"id": "evt_1"}"#;
    assert_eq!(
        verify(payload, Some(&sign(payload, "whsec_forger", NOW)), SECRET, NOW),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_tampered_payload_is_refused() {
    let header = sign(br#"{"amount": 1}"#, SECRET, NOW);
    assert_eq!(
        verify(br#"{"amount": 1000}"#, Some(&header), SECRET, NOW),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_signature_older_than_five_minutes_is_refused() {
    let payload = b"{}";
    assert_eq!(
        verify(payload, Some(&sign(payload, SECRET, NOW - 301)), SECRET, NOW),
        Err(SignatureError::Expired)
    );
    assert_eq!(
        verify(payload, Some(&sign(payload, SECRET, NOW - 299)), SECRET, NOW),
        Ok(())
    );
}

#[test]
fn a_malformed_header_is_refused() {
    for header in ["", "t=abc,v1=00", "v1=00", "t=1795255200", "t=1795255200,v1=zz"] {
        assert!(verify(b"{}", Some(header), SECRET, NOW).is_err(), "{header}");
    }
}

// Reading and applying events

#[test]
fn an_event_is_read_from_its_json() {
    let event = StripeEvent::parse(br#"{"id": "evt_9", "type": "invoice.paid", "created": 5, "data": {"object": {"parent": {"subscription_details": {"subscription": "sub_7"}}}}}"#).unwrap();
    assert_eq!(
        (event.kind(), event.stripe_subscription()),
        (EventKind::InvoicePaid, Some("sub_7"))
    );
    assert!(StripeEvent::parse(b"{\"id\": 3}").is_err());
}

#[test]
fn a_subscription_update_sets_status_plan_flags_and_period() {
    let next = apply_event(
        &subscription(),
        &subscription_event("evt_1", NOW, "active", "price_basic_monthly", true),
        &catalog(),
    );
    assert_eq!(
        (next.status, next.plan.as_str(), next.cancel_at_period_end),
        (Status::Active, "basic_monthly", true)
    );
    assert_eq!(next.trial_end, None);
    assert_eq!(next.current_period_end.unwrap().timestamp(), NOW + 30 * 86400);
}

#[test]
fn an_unknown_price_leaves_the_plan_alone() {
    let next = apply_event(
        &subscription(),
        &subscription_event("evt_1", NOW, "active", "price_elsewhere", false),
        &catalog(),
    );
    assert_eq!(next.plan, "pending");
}

#[test]
fn invoice_events_move_status_between_active_and_past_due() {
    let mut current = subscription();
    current.status = Status::Active;
    let failed = StripeEvent {
        id: "evt_f".into(),
        kind: "invoice.payment_failed".into(),
        created: NOW,
        object: json!({}),
    };
    let paid = StripeEvent {
        id: "evt_p".into(),
        kind: "invoice.paid".into(),
        created: NOW,
        object: json!({}),
    };
    let past_due = apply_event(&current, &failed, &catalog());
    assert_eq!(past_due.status, Status::PastDue);
    assert_eq!(apply_event(&past_due, &paid, &catalog()).status, Status::Active);
    let mut canceled = current.clone();
    canceled.status = Status::Canceled;
    assert_eq!(apply_event(&canceled, &paid, &catalog()).status, Status::Canceled);
}

#[test]
fn the_user_is_read_from_subscription_and_invoice_metadata() {
    let user = "0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b";
    let mut update = subscription_event("evt_1", NOW, "active", "price_pending", false);
    update.object["metadata"] = json!({"user_id": user});
    assert_eq!(update.user_id().map(|u| u.to_string()).as_deref(), Some(user));
    let invoice = StripeEvent {
        id: "evt_2".into(),
        kind: "invoice.paid".into(),
        created: NOW,
        object: json!({"parent": {"subscription_details": {"subscription": "sub_1", "metadata": {"user_id": user}}}}),
    };
    assert_eq!(invoice.user_id().map(|u| u.to_string()).as_deref(), Some(user));
    let other = StripeEvent {
        kind: "charge.succeeded".into(),
        ..invoice
    };
    assert_eq!(other.user_id(), None);
}

#[test]
fn the_period_end_is_read_from_the_subscription_or_else_from_its_first_item() {
    // Given a snapshot of an older API version, with the period on the subscription only
    let mut older = subscription_event("evt_1", NOW, "active", "price_basic_monthly", false);
    older.object["current_period_end"] = json!(NOW + 7 * 86400);
    older.object["items"]["data"][0]["current_period_end"] = serde_json::Value::Null;
    // and one of a current version, with the period on its item only
    let current = subscription_event("evt_2", NOW, "active", "price_basic_monthly", false);
    // Then both give the period's end
    let read = |event: &StripeEvent| apply_event(&subscription(), event, &catalog()).current_period_end;
    assert_eq!(read(&older), Utc.timestamp_opt(NOW + 7 * 86400, 0).single());
    assert_eq!(read(&current), Utc.timestamp_opt(NOW + 30 * 86400, 0).single());
}

#[test]
fn a_snapshot_sets_the_licenses_and_discount_changed_outside_the_service() {
    // Given a subscription of 5 licenses at 20% off
    let mut stored = subscription();
    stored.licenses = Some(5);
    stored.discount_percent = Some(20);
    // When a snapshot says 7 licenses and 10% off (changed in the Dashboard)
    let mut event = subscription_event("evt_q", NOW + 1, "active", "price_basic_monthly", false);
    event.object["items"]["data"][0]["quantity"] = json!(7);
    event.object["discounts"] = json!([{"id": "di_1", "coupon": {"id": "c10", "percent_off": 10.0}}]);
    let next = apply_event(&stored, &event, &catalog());
    // Then both follow Stripe
    assert_eq!((next.licenses, next.discount_percent), (Some(7), Some(10)));
    // When a snapshot names discounts only by id, or none (an event may be older than the
    // service's own change), then the stored discount stands
    event.object["discounts"] = json!(["di_2"]);
    assert_eq!(apply_event(&stored, &event, &catalog()).discount_percent, Some(20));
    event.object["discounts"] = json!([]);
    assert_eq!(apply_event(&stored, &event, &catalog()).discount_percent, Some(20));
    // When a discount's coupon takes 0 % off (how a discount read from Stripe as none is
    // written), then there is none
    event.object["discounts"] = json!([{"source": {"coupon": {"percent_off": 0.0}}}]);
    assert_eq!(apply_event(&stored, &event, &catalog()).discount_percent, None);
}

#[test]
fn a_quantity_of_one_does_not_give_licenses_to_a_subscription_that_never_counted_them() {
    let stored = subscription();
    let mut event = subscription_event("evt_q", NOW + 1, "active", "price_basic_monthly", false);
    event.object["items"]["data"][0]["quantity"] = json!(1);
    assert_eq!(apply_event(&stored, &event, &catalog()).licenses, None);
}

fn invoice_event(kind: &str, invoice: &str, billing_reason: &str) -> StripeEvent {
    StripeEvent {
        id: format!("evt_{invoice}_{kind}"),
        kind: kind.into(),
        created: NOW,
        object: json!({"id": invoice, "billing_reason": billing_reason,
                       "parent": {"subscription_details": {"subscription": "sub_1"}}}),
    }
}

#[test]
fn a_snapshot_records_the_latest_invoice_and_only_its_payment_makes_a_past_due_subscription_active() {
    // Given a subscription past due on its renewal in_2 (its snapshot named in_2 the latest)
    let mut event = subscription_event("evt_s", NOW, "past_due", "price_basic_monthly", false);
    event.object["latest_invoice"] = json!("in_2");
    let past_due = apply_event(&subscription(), &event, &catalog());
    assert_eq!(
        (past_due.status, past_due.latest_invoice.as_deref()),
        (Status::PastDue, Some("in_2"))
    );
    // When last month's invoice in_1 is paid late, then it stays past due
    let older = invoice_event("invoice.paid", "in_1", "subscription_cycle");
    assert_eq!(apply_event(&past_due, &older, &catalog()).status, Status::PastDue);
    // When in_2 is paid, then it is active
    let latest = invoice_event("invoice.paid", "in_2", "subscription_cycle");
    assert_eq!(apply_event(&past_due, &latest, &catalog()).status, Status::Active);
}

#[test]
fn a_declined_change_invoice_leaves_an_active_subscription_active() {
    // Given an active subscription whose plan change was declined: Stripe kept the change
    // pending on its invoice, the subscription as it was
    let mut active = subscription();
    active.status = Status::Active;
    active.latest_invoice = Some("in_9".into());
    // When the change's invoice fails, then nothing changes
    let change = invoice_event("invoice.payment_failed", "in_9", "subscription_update");
    assert_eq!(apply_event(&active, &change, &catalog()).status, Status::Active);
    // When its renewal fails, then it is past due
    let renewal = invoice_event("invoice.payment_failed", "in_9", "subscription_cycle");
    assert_eq!(apply_event(&active, &renewal, &catalog()).status, Status::PastDue);
}
