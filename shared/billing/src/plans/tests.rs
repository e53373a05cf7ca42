//! The plan rules with the numbers of API.md's worked example and of Zulip's tests.

use chrono::TimeZone;

use super::*;

fn at(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 12, 0, 0).unwrap()
}

fn realm() -> Entity {
    Entity::Realm(Uuid::from_u128(7))
}

fn context(billed_count: u32, now: DateTime<Utc>) -> UpgradeContext {
    UpgradeContext {
        billed_count,
        trial_days: 0,
        prices: Prices::default(),
        now,
        plan_id: Uuid::new_v4(),
    }
}

fn request(tier: Tier, management: LicenseManagement, licenses: Option<u32>) -> UpgradeRequest {
    UpgradeRequest {
        tier,
        schedule: Schedule::Monthly,
        license_management: management,
        licenses,
    }
}

/// A `basic` monthly plan bought on 1 January for 6 licenses, its licenses following the users.
fn automatic_basic_for_six() -> Book {
    let (book, _) = upgrade(
        &Book::new(realm()),
        &request(Tier::Basic, LicenseManagement::Automatic, None),
        &context(6, at(2026, 1, 1)),
    )
    .unwrap();
    book
}

fn tuples(book: &Book) -> Vec<(bool, u32, u32)> {
    book.ledger
        .iter()
        .map(|r| (r.is_renewal, r.licenses, r.licenses_at_next_renewal))
        .collect()
}

fn counts(points: &[(DateTime<Utc>, u32)]) -> Vec<CountAt> {
    points
        .iter()
        .map(|(event_time, count)| CountAt {
            event_time: *event_time,
            count: *count,
        })
        .collect()
}

#[test]
fn the_worked_example_ledger_keeps_the_high_water_mark_within_a_period() {
    // Given a basic plan bought for 6 licenses
    let book = automatic_basic_for_six();
    // When the server reports 23, 20 and 21 users in January, then 22 after the renewal
    let (book, changes) = sync_ledger(
        &book,
        &counts(&[
            (at(2026, 1, 5), 23),
            (at(2026, 1, 10), 20),
            (at(2026, 1, 20), 21),
            (at(2026, 2, 3), 22),
        ]),
    );
    // Then the ledger is API.md's
    assert_eq!(
        tuples(&book),
        [
            (true, 6, 6),
            (false, 23, 23),
            (false, 23, 20),
            (false, 23, 21),
            (true, 21, 21),
            (false, 22, 22)
        ]
    );
    assert_eq!(changes.rows.len(), 5);
    assert_eq!(
        book.ledger[4].event_time,
        at(2026, 2, 1),
        "the renewal is at the period's start"
    );
}

#[test]
fn a_second_end_of_cycle_for_the_same_boundary_adds_no_row() {
    let book = automatic_basic_for_six();
    let (once, first) = end_of_cycle(&book, at(2026, 2, 2));
    let (twice, second) = end_of_cycle(&once, at(2026, 2, 3));
    assert_eq!(first.rows.len(), 1);
    assert!(second.rows.is_empty());
    assert_eq!(twice, once);
    // and no renewal the day before the anniversary
    let (before, none) = end_of_cycle(&book, at(2026, 1, 31));
    assert!(none.rows.is_empty());
    assert_eq!(before, book);
}

#[test]
fn an_upload_replayed_across_two_boundaries_renews_twice_in_order() {
    let book = automatic_basic_for_six();
    let (book, _) = sync_ledger(&book, &counts(&[(at(2026, 3, 15), 9)]));
    assert_eq!(tuples(&book), [(true, 6, 6), (true, 6, 6), (true, 6, 6), (false, 9, 9)]);
    let renewals: Vec<_> = book
        .ledger
        .iter()
        .filter(|r| r.is_renewal)
        .map(|r| r.event_time)
        .collect();
    assert_eq!(renewals, [at(2026, 1, 1), at(2026, 2, 1), at(2026, 3, 1)]);
}

#[test]
fn an_automatic_plan_refuses_manual_changes() {
    let book = automatic_basic_for_six();
    let change = ManualChange {
        licenses: Some(30),
        licenses_at_next_renewal: None,
    };
    assert_eq!(
        update_licenses(&book, change, 6, at(2026, 1, 2)).unwrap_err(),
        PlanError::AutomaticLicenses
    );
}

fn manual_business_for(licenses: u32) -> Book {
    upgrade(
        &Book::new(realm()),
        &request(Tier::Business, LicenseManagement::Manual, Some(licenses)),
        &context(20, at(2026, 1, 1)),
    )
    .unwrap()
    .0
}

#[test]
fn manual_licenses_never_decrease_within_a_period_and_the_next_renewal_moves_freely_above_the_floor() {
    let book = manual_business_for(30);
    let now = at(2026, 1, 10);
    let set = |licenses, next| ManualChange {
        licenses,
        licenses_at_next_renewal: next,
    };
    assert_eq!(
        update_licenses(&book, set(Some(28), None), 20, now).unwrap_err(),
        PlanError::CannotDecrease
    );
    assert_eq!(
        update_licenses(&book, set(Some(30), None), 20, now).unwrap_err(),
        PlanError::AlreadyOn(30)
    );
    let (book, _) = update_licenses(&book, set(Some(40), None), 20, now).unwrap();
    assert_eq!(tuples(&book).last(), Some(&(false, 40, 40)));
    // the next renewal goes down, but never below the billed count or the tier's minimum
    let (book, _) = update_licenses(&book, set(None, Some(26)), 20, now).unwrap();
    assert_eq!(tuples(&book).last(), Some(&(false, 40, 26)));
    assert_eq!(
        update_licenses(&book, set(None, Some(24)), 20, now).unwrap_err(),
        PlanError::TooFewLicenses { minimum: 25 }
    );
    assert_eq!(
        update_licenses(&book, set(None, Some(29)), 29 + 1, now).unwrap_err(),
        PlanError::TooFewLicenses { minimum: 30 }
    );
    assert_eq!(
        update_licenses(&book, set(None, Some(26)), 20, now).unwrap_err(),
        PlanError::AlreadyScheduled(26)
    );
    // and the renewal starts the next period with it
    let (book, _) = end_of_cycle(&book, at(2026, 2, 1));
    assert_eq!(tuples(&book).last(), Some(&(true, 26, 26)));
}

#[test]
fn manual_plans_are_never_synced_from_uploads() {
    let book = manual_business_for(30);
    let (after, changes) = sync_ledger(&book, &counts(&[(at(2026, 1, 5), 50)]));
    assert!(changes.rows.is_empty());
    assert_eq!(after, book);
}

#[test]
fn the_minimums_are_one_for_basic_and_twenty_five_for_business() {
    let book = Book::new(realm());
    let now = at(2026, 1, 1);
    let (basic, _) = upgrade(
        &book,
        &request(Tier::Basic, LicenseManagement::Automatic, None),
        &context(0, now),
    )
    .unwrap();
    assert_eq!(tuples(&basic), [(true, 1, 1)]);
    let (business, _) = upgrade(
        &book,
        &request(Tier::Business, LicenseManagement::Automatic, None),
        &context(11, now),
    )
    .unwrap();
    assert_eq!(tuples(&business), [(true, 25, 25)]);
    assert_eq!(
        upgrade(
            &book,
            &request(Tier::Business, LicenseManagement::Manual, Some(24)),
            &context(11, now)
        )
        .unwrap_err(),
        PlanError::TooFewLicenses { minimum: 25 }
    );
    assert_eq!(
        upgrade(
            &book,
            &request(Tier::Basic, LicenseManagement::Manual, Some(8)),
            &context(9, now)
        )
        .unwrap_err(),
        PlanError::TooFewLicenses { minimum: 9 }
    );
    // and an automatic plan's next-renewal count never falls below the minimum
    let (business, _) = sync_ledger(&business, &counts(&[(at(2026, 1, 3), 3)]));
    assert_eq!(tuples(&business).last(), Some(&(false, 25, 25)));
}

#[test]
fn a_discount_prices_a_license_at_the_floor() {
    assert_eq!(discounted(350, 0), 350);
    assert_eq!(discounted(350, 25), 262, "262.5 rounds down");
    assert_eq!(discounted(8_000, 15), 6_800);
    assert_eq!(discounted(4_200, 33), 2_814);
    let mut book = Book::new(realm());
    book.customer.default_discount = 25;
    let (book, _) = upgrade(
        &book,
        &request(Tier::Basic, LicenseManagement::Automatic, None),
        &context(6, at(2026, 1, 1)),
    )
    .unwrap();
    let plan = book.plan.unwrap();
    assert_eq!((plan.price_per_license, plan.discount_percent), (262, 25));
}

#[test]
fn a_trial_is_offered_on_basic_only_and_never_to_an_entity_that_had_a_plan() {
    let mut context = context(6, at(2026, 1, 1));
    context.trial_days = 30;
    let fresh = Book::new(realm());
    let (trial, _) = upgrade(
        &fresh,
        &request(Tier::Basic, LicenseManagement::Automatic, None),
        &context,
    )
    .unwrap();
    let plan = trial.plan.clone().unwrap();
    assert_eq!(plan.status, PlanStatus::FreeTrial);
    assert_eq!(plan.next_invoice_date, Some(at(2026, 1, 31)));
    let (business, _) = upgrade(
        &fresh,
        &request(Tier::Business, LicenseManagement::Automatic, None),
        &context,
    )
    .unwrap();
    assert_eq!(business.plan.unwrap().status, PlanStatus::Active);
    let mut had_one = fresh.clone();
    had_one.ever_had_plan = true;
    let (again, _) = upgrade(
        &had_one,
        &request(Tier::Basic, LicenseManagement::Automatic, None),
        &context,
    )
    .unwrap();
    assert_eq!(again.plan.unwrap().status, PlanStatus::Active);
    // the trial's end starts the paid periods there, with a renewal for the users counted
    let (trial, _) = sync_ledger(&trial, &counts(&[(at(2026, 1, 20), 8)]));
    let (ended, _) = end_of_cycle(&trial, at(2026, 2, 1));
    let plan = ended.plan.clone().unwrap();
    assert_eq!(
        (plan.status, plan.billing_cycle_anchor),
        (PlanStatus::Active, at(2026, 1, 31))
    );
    assert_eq!(tuples(&ended).last(), Some(&(true, 8, 8)));
}

#[test]
fn invoicing_bills_the_renewal_and_the_added_licenses_prorated_then_moves_on_a_month() {
    // Given the worked example's ledger, and an upload after the due date
    let book = automatic_basic_for_six();
    let (book, _) = sync_ledger(
        &book,
        &counts(&[(at(2026, 1, 5), 23), (at(2026, 1, 10), 20), (at(2026, 1, 20), 21)]),
    );
    let due = at(2026, 2, 1);
    // When the plan is invoiced on its due date
    let InvoiceRun::Invoice { items, book, .. } = invoice_plan(&book, due, Some(at(2026, 2, 1))) else {
        panic!("due and uploaded: invoiced");
    };
    // Then 17 added licenses are billed for the 27 of 31 January days left, and the renewal for 21
    let january = 31.0 * 86_400.0;
    let left = (at(2026, 2, 1) - at(2026, 1, 5)).num_seconds() as f64;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(
        (items[0].quantity, items[0].unit_amount),
        (17, (350.0 * left / january + 0.5) as u64)
    );
    assert_eq!((items[1].quantity, items[1].unit_amount), (21, 350));
    assert_eq!(items[1].description, "Basic - renewal");
    assert!(items.iter().all(|i| i.idempotency_key.starts_with("ledger_entry:")));
    let plan = book.plan.clone().unwrap();
    assert_eq!(plan.next_invoice_date, Some(at(2026, 3, 1)));
    assert_eq!(plan.invoiced_through, book.ledger.last().map(|r| r.seq));
    // And invoicing again bills nothing more until the next due date
    assert_eq!(
        invoice_plan(&book, at(2026, 2, 2), Some(at(2026, 2, 2))),
        InvoiceRun::NotDue
    );
}

#[test]
fn an_invoice_waits_for_an_upload_made_at_or_after_its_due_date() {
    let book = automatic_basic_for_six();
    assert_eq!(
        invoice_plan(&book, at(2026, 1, 15), Some(at(2026, 1, 15))),
        InvoiceRun::NotDue
    );
    assert_eq!(
        invoice_plan(&book, at(2026, 2, 2), Some(at(2026, 1, 25))),
        InvoiceRun::Deferred
    );
    assert_eq!(invoice_plan(&book, at(2026, 2, 2), None), InvoiceRun::Deferred);
    assert!(matches!(
        invoice_plan(&book, at(2026, 2, 2), Some(at(2026, 2, 1))),
        InvoiceRun::Invoice { .. }
    ));
}

#[test]
fn an_annual_automatic_plan_is_invoiced_monthly_for_added_users() {
    let (book, _) = upgrade(
        &Book::new(realm()),
        &UpgradeRequest {
            tier: Tier::Business,
            schedule: Schedule::Annual,
            license_management: LicenseManagement::Automatic,
            licenses: None,
        },
        &context(30, at(2026, 1, 1)),
    )
    .unwrap();
    assert_eq!(book.plan.as_ref().unwrap().next_invoice_date, Some(at(2026, 2, 1)));
    let (book, _) = sync_ledger(&book, &counts(&[(at(2026, 1, 11), 35)]));
    let InvoiceRun::Invoice { items, book, .. } = invoice_plan(&book, at(2026, 2, 1), Some(at(2026, 2, 1))) else {
        panic!("invoiced");
    };
    // 5 added licenses for the rest of the year; no renewal in February
    assert_eq!(items.len(), 1);
    let year = (at(2027, 1, 1) - at(2026, 1, 1)).num_seconds() as f64;
    let left = (at(2027, 1, 1) - at(2026, 1, 11)).num_seconds() as f64;
    assert_eq!(
        (items[0].quantity, items[0].unit_amount),
        (5, (8_000.0 * left / year + 0.5) as u64)
    );
    assert_eq!(book.plan.unwrap().next_invoice_date, Some(at(2026, 3, 1)));
}

#[test]
fn a_plan_set_to_downgrade_ends_at_its_period_end_and_only_paid_tiers_are_sold() {
    let mut book = automatic_basic_for_six();
    book.plan.as_mut().unwrap().status = PlanStatus::DowngradeAtEndOfCycle;
    let (ended, changes) = end_of_cycle(&book, at(2026, 2, 1));
    assert!(ended.plan.is_none() && ended.ledger.is_empty());
    assert_eq!(changes.ended[0].status, PlanStatus::Ended);
    assert!(ended.ever_had_plan);
    assert_eq!(
        upgrade(
            &Book::new(realm()),
            &request(Tier::Community, LicenseManagement::Automatic, None),
            &context(1, at(2026, 1, 1))
        )
        .unwrap_err(),
        PlanError::NotForSale("community")
    );
    assert_eq!(
        upgrade(
            &automatic_basic_for_six(),
            &request(Tier::Basic, LicenseManagement::Automatic, None),
            &context(1, at(2026, 1, 1))
        )
        .unwrap_err(),
        PlanError::AlreadyHasPlan
    );
}

#[test]
fn periods_follow_the_calendar_from_the_anchor() {
    let anchor = at(2026, 1, 31);
    assert_eq!(period_boundary(anchor, Schedule::Monthly, 1), at(2026, 2, 28));
    assert_eq!(period_boundary(anchor, Schedule::Monthly, 2), at(2026, 3, 31));
    assert_eq!(
        next_period_start(anchor, Schedule::Monthly, at(2026, 3, 1)),
        at(2026, 3, 31)
    );
    assert_eq!(period_start(anchor, Schedule::Monthly, at(2026, 3, 1)), at(2026, 2, 28));
    assert_eq!(period_boundary(anchor, Schedule::Annual, 1), at(2027, 1, 31));
}

#[test]
fn a_cancelled_plan_ends_at_its_period_end_unless_the_cancellation_is_undone() {
    // Given a basic plan bought on 1 January
    let book = automatic_basic_for_six();
    // When its owner cancels on 10 January
    let (cancelled, _) = cancel_at_end_of_cycle(&book, at(2026, 1, 10)).unwrap();
    // Then it still runs until 1 February, and ends there
    assert_eq!(
        cancelled.plan.as_ref().unwrap().status,
        PlanStatus::DowngradeAtEndOfCycle
    );
    assert_eq!(
        cancel_at_end_of_cycle(&cancelled, at(2026, 1, 11)).unwrap_err(),
        PlanError::AlreadyEnding
    );
    let (ended, _) = end_of_cycle(&cancelled, at(2026, 2, 1));
    assert!(ended.plan.is_none());
    // And undoing the cancellation before then renews it as before
    let (undone, _) = undo_cancel(&cancelled, at(2026, 1, 20)).unwrap();
    assert_eq!(undone.plan.as_ref().unwrap().status, PlanStatus::Active);
    let (renewed, changes) = end_of_cycle(&undone, at(2026, 2, 1));
    assert_eq!(renewed.plan.unwrap().status, PlanStatus::Active);
    assert!(changes.rows[0].is_renewal);
    assert_eq!(
        undo_cancel(&undone, at(2026, 1, 21)).unwrap_err(),
        PlanError::NothingToUndo
    );
}

#[test]
fn a_cancelled_trial_ends_at_the_trial_end_without_an_invoice() {
    // Given a 30-day trial on basic
    let (book, _) = upgrade(
        &Book::new(realm()),
        &request(Tier::Basic, LicenseManagement::Automatic, None),
        &UpgradeContext {
            trial_days: 30,
            ..context(6, at(2026, 1, 1))
        },
    )
    .unwrap();
    assert_eq!(book.plan.as_ref().unwrap().status, PlanStatus::FreeTrial);
    // When it is cancelled during the trial
    let (cancelled, _) = cancel_at_end_of_cycle(&book, at(2026, 1, 5)).unwrap();
    assert_eq!(
        cancelled.plan.as_ref().unwrap().status,
        PlanStatus::DowngradeAtEndOfFreeTrial
    );
    // Then invoicing at the trial's end bills nothing and ends it
    let InvoiceRun::Invoice { items, book: after, .. } =
        invoice_plan(&cancelled, at(2026, 1, 31), Some(at(2026, 1, 31)))
    else {
        panic!("due at the trial's end");
    };
    assert!(items.is_empty());
    assert!(after.plan.is_none());
    // And undoing it before the end makes it a trial again
    let (undone, _) = undo_cancel(&cancelled, at(2026, 1, 6)).unwrap();
    assert_eq!(undone.plan.unwrap().status, PlanStatus::FreeTrial);
}

/// A 30-day trial of basic monthly for 6, bought on 1 January, licenses following the users.
fn basic_trial_for_six() -> Book {
    upgrade(
        &Book::new(realm()),
        &request(Tier::Basic, LicenseManagement::Automatic, None),
        &UpgradeContext {
            trial_days: 30,
            ..context(6, at(2026, 1, 1))
        },
    )
    .unwrap()
    .0
}

#[test]
fn users_added_during_a_trial_are_billed_only_as_the_renewal_at_its_end() {
    // Given a trial for 6 whose users went to 12 on day 2 and 15 on day 5
    let trial = basic_trial_for_six();
    let (grown, _) = sync_ledger(&trial, &counts(&[(at(2026, 1, 3), 12), (at(2026, 1, 6), 15)]));
    // When it is invoiced at the trial's end
    let InvoiceRun::Invoice { items, book: after, .. } = invoice_plan(&grown, at(2026, 1, 31), Some(at(2026, 1, 31)))
    else {
        panic!("due at the trial's end");
    };
    // Then one line bills the renewal for the 15 users counted then, nothing as "additional"
    let lines: Vec<(String, u32, u64)> = items
        .iter()
        .map(|item| (item.description.clone(), item.quantity, item.unit_amount))
        .collect();
    assert_eq!(lines, vec![("Basic - renewal".to_owned(), 15, 350)]);
    let plan = after.plan.clone().unwrap();
    assert_eq!(plan.status, PlanStatus::Active);
    assert_eq!(plan.invoiced_through, after.ledger.last().map(|row| row.seq));
    // And the period after bills only what it added
    let (later, _) = sync_ledger(&after, &counts(&[(at(2026, 2, 5), 16)]));
    let InvoiceRun::Invoice { items, .. } = invoice_plan(&later, at(2026, 3, 2), Some(at(2026, 3, 2))) else {
        panic!("due a month after the trial");
    };
    assert_eq!(items.len(), 2, "one added license and the renewal: {items:?}");
    assert_eq!((items[0].quantity, items[1].quantity), (1, 16));
}

#[test]
fn a_trial_cancelled_after_users_were_added_invoices_nothing() {
    // Given a trial for 6 that reported 15 users on day 2, then was cancelled
    let trial = basic_trial_for_six();
    let (grown, _) = sync_ledger(&trial, &counts(&[(at(2026, 1, 3), 15)]));
    let (cancelled, _) = cancel_at_end_of_cycle(&grown, at(2026, 1, 4)).unwrap();
    // When the trial's end is invoiced
    let InvoiceRun::Invoice { items, book: after, .. } =
        invoice_plan(&cancelled, at(2026, 1, 31), Some(at(2026, 1, 31)))
    else {
        panic!("due at the trial's end");
    };
    // Then nothing is billed and the plan is over
    assert_eq!(items, Vec::new());
    assert!(after.plan.is_none());
}

#[test]
fn a_plan_cancelled_at_its_period_end_is_still_billed_for_the_licenses_added_in_its_last_period() {
    // Given a basic plan of 6 whose users grew to 10 on 11 January, then cancelled
    let book = automatic_basic_for_six();
    let (grown, _) = sync_ledger(&book, &counts(&[(at(2026, 1, 11), 10)]));
    let (cancelled, _) = cancel_at_end_of_cycle(&grown, at(2026, 1, 20)).unwrap();
    // When it is invoiced at its end
    let InvoiceRun::Invoice { items, book, .. } = invoice_plan(&cancelled, at(2026, 2, 1), Some(at(2026, 2, 1))) else {
        panic!("due at the period's end");
    };
    // Then the 4 added licenses are billed for the rest of January, no renewal, and it ended
    assert_eq!(items.len(), 1, "{items:?}");
    let month = (at(2026, 2, 1) - at(2026, 1, 1)).num_seconds() as f64;
    let left = (at(2026, 2, 1) - at(2026, 1, 11)).num_seconds() as f64;
    assert_eq!(
        (items[0].quantity, items[0].unit_amount),
        (4, (350.0 * left / month + 0.5) as u64)
    );
    assert!(book.plan.is_none());
}

/// A realm on a legacy plan from 1 January to 1 April, its server reporting 30 users.
fn legacy_until_april() -> Book {
    let (book, _) = start_legacy(&Book::new(realm()), at(2026, 4, 1), 30, at(2026, 1, 1), Uuid::new_v4()).unwrap();
    book
}

#[test]
fn uploads_while_an_upgrade_is_scheduled_never_lower_the_manual_count_chosen_for_it() {
    // Given a legacy plan with business, manual, 40 licenses scheduled from its end
    let (scheduled, _) = upgrade(
        &legacy_until_april(),
        &request(Tier::Business, LicenseManagement::Manual, Some(40)),
        &context(30, at(2026, 2, 1)),
    )
    .unwrap();
    assert_eq!(scheduled.last_row().unwrap().licenses_at_next_renewal, 40);
    // When the server reports 26 users, then 45
    let (lowered, _) = sync_ledger(&scheduled, &counts(&[(at(2026, 2, 10), 26)]));
    // Then the count for the next plan stays 40 (the defect Zulip fixed lowered it to 26)
    assert_eq!(lowered.last_row().unwrap().licenses_at_next_renewal, 40);
    let (raised, _) = sync_ledger(&lowered, &counts(&[(at(2026, 2, 20), 45)]));
    assert_eq!(raised.last_row().unwrap().licenses_at_next_renewal, 45);
}

#[test]
fn a_scheduled_upgrade_starts_at_the_legacy_end_date_and_is_invoiced_for_its_count() {
    // Given business, manual 40, scheduled on a legacy plan ending 1 April, 20% off
    let mut legacy = legacy_until_april();
    legacy.customer.default_discount = 20;
    let (scheduled, _) = upgrade(
        &legacy,
        &request(Tier::Business, LicenseManagement::Manual, Some(40)),
        &context(30, at(2026, 2, 1)),
    )
    .unwrap();
    let next = scheduled.next_plan.as_ref().unwrap();
    assert_eq!(
        (next.status, next.billing_cycle_anchor),
        (PlanStatus::NeverStarted, at(2026, 4, 1))
    );
    assert_eq!(next.price_per_license, 640);
    assert_eq!(
        scheduled.plan.as_ref().unwrap().status,
        PlanStatus::SwitchPlanTierAtPlanEnd
    );
    let (lowered, _) = sync_ledger(&scheduled, &counts(&[(at(2026, 3, 1), 26)]));
    // When the invoicing job runs at the end date, the server having uploaded
    let InvoiceRun::Invoice { items, book, changes } = invoice_plan(&lowered, at(2026, 4, 1), Some(at(2026, 4, 1)))
    else {
        panic!("due at the end date");
    };
    // Then the legacy plan ended, business is active, and its first invoice is 40 × $6.40
    assert_eq!(changes.ended[0].tier, Tier::Legacy);
    let plan = book.plan.unwrap();
    assert_eq!((plan.tier, plan.status), (Tier::Business, PlanStatus::Active));
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!((items[0].quantity, items[0].unit_amount), (40, 640));
    assert_eq!(plan.next_invoice_date, Some(at(2026, 5, 1)));
}

#[test]
fn cancelling_a_scheduled_upgrade_puts_the_legacy_plan_back_and_it_ends_at_its_date() {
    // Given an upgrade scheduled on a legacy plan
    let (scheduled, _) = upgrade(
        &legacy_until_april(),
        &request(Tier::Basic, LicenseManagement::Automatic, None),
        &context(30, at(2026, 2, 1)),
    )
    .unwrap();
    // When it is cancelled
    let (cancelled, changes) = undo_cancel(&scheduled, at(2026, 2, 2)).unwrap();
    // Then the scheduled plan ended, the legacy plan is active again
    assert!(cancelled.next_plan.is_none());
    assert_eq!(changes.ended[0].status, PlanStatus::Ended);
    assert_eq!(cancelled.plan.as_ref().unwrap().status, PlanStatus::Active);
    // And with nothing scheduled, it ends at its end date: the entity is self-managed
    let (ended, _) = end_of_cycle(&cancelled, at(2026, 4, 1));
    assert!(ended.plan.is_none() && ended.ever_had_plan);
    // And no trial is offered to an entity that had a legacy plan
    assert!(!trial_offered(&ended, Tier::Basic, 30));
}

#[test]
fn a_legacy_plan_is_refused_while_a_plan_is_live_and_needs_a_future_end_date() {
    assert_eq!(
        start_legacy(
            &automatic_basic_for_six(),
            at(2026, 6, 1),
            6,
            at(2026, 1, 2),
            Uuid::new_v4()
        )
        .unwrap_err(),
        PlanError::AlreadyHasPlan
    );
    assert_eq!(
        start_legacy(&Book::new(realm()), at(2026, 1, 1), 6, at(2026, 1, 2), Uuid::new_v4()).unwrap_err(),
        PlanError::EndDateNotInFuture
    );
}

#[test]
fn a_discount_reprices_the_live_plan_and_the_scheduled_one_and_later_plans_start_with_it() {
    // Given a legacy plan with basic monthly scheduled after it
    let (scheduled, _) = upgrade(
        &legacy_until_april(),
        &request(Tier::Basic, LicenseManagement::Automatic, None),
        &context(30, at(2026, 2, 1)),
    )
    .unwrap();
    // When the customer gets 25% off
    let (discounted_book, old) = set_discount(&scheduled, 25, &Prices::default()).unwrap();
    // Then the scheduled plan costs floor(350 × 0.75) = 262, the legacy plan stays free
    assert_eq!(old, 0);
    assert_eq!(discounted_book.next_plan.as_ref().unwrap().price_per_license, 262);
    assert_eq!(discounted_book.plan.as_ref().unwrap().price_per_license, 0);
    // And a plan bought after a downgrade starts with the discount too
    let (ended, _) = end_of_cycle(
        &undo_cancel(&discounted_book, at(2026, 2, 2)).unwrap().0,
        at(2026, 4, 2),
    );
    let (bought, _) = upgrade(
        &ended,
        &request(Tier::Business, LicenseManagement::Automatic, None),
        &context(30, at(2026, 4, 2)),
    )
    .unwrap();
    assert_eq!(bought.plan.unwrap().price_per_license, 600);
    assert_eq!(
        set_discount(&ended, 100, &Prices::default()).unwrap_err(),
        PlanError::InvalidDiscount(100)
    );
}

#[test]
fn an_approved_sponsorship_starts_community_now_or_at_the_end_of_the_paid_period() {
    // Given an entity with no plan, and one on basic bought on 1 January
    let mut pending = Book::new(realm());
    pending.customer.sponsorship_pending = true;
    // When the sponsorship of the first is approved, then it is on community at once, never invoiced
    let (sponsored, _) = approve_sponsorship(&pending, 12, at(2026, 1, 5), Uuid::new_v4()).unwrap();
    let plan = sponsored.plan.as_ref().unwrap();
    assert_eq!(
        (plan.tier, plan.status, plan.next_invoice_date),
        (Tier::Community, PlanStatus::Active, None)
    );
    assert!(!sponsored.customer.sponsorship_pending);
    assert_eq!(
        approve_sponsorship(&sponsored, 12, at(2026, 1, 6), Uuid::new_v4()).unwrap_err(),
        PlanError::AlreadyCommunity
    );
    // When the second's is approved on 10 January, then basic runs to 1 February, then community
    let (switching, _) = approve_sponsorship(&automatic_basic_for_six(), 6, at(2026, 1, 10), Uuid::new_v4()).unwrap();
    assert_eq!(
        switching.plan.as_ref().unwrap().status,
        PlanStatus::SwitchPlanTierAtPlanEnd
    );
    assert_eq!(
        switching.next_plan.as_ref().unwrap().billing_cycle_anchor,
        at(2026, 2, 1)
    );
    let InvoiceRun::Invoice { items, book, .. } = invoice_plan(&switching, at(2026, 2, 1), Some(at(2026, 2, 1))) else {
        panic!("due on 1 February");
    };
    // And nothing more is charged: no renewal, community is not invoiced
    assert!(items.is_empty(), "{items:?}");
    let plan = book.plan.unwrap();
    assert_eq!((plan.tier, plan.next_invoice_date), (Tier::Community, None));
}
