//! The invoicing job in-process, against the embedded store and the Stripe sandbox.

use std::sync::Arc;

use billing::metrics::{OUTCOME, PLAN_INVOICES};
use billing::plans::invoicing::EntityOutcome;
use billing::plans::{self, CountAt, Entity};
use billing::remote::usage::{UploadMarker, usage_collection};
use billing::store::{DocumentStore, member_key};
use billing_testing::{Counts, TestClock, embedded_store};
use chrono::{DateTime, Duration, Utc};
use invoice_plans::InvoicePlans;
use serde_json::{Value, json};
use stripe_sandbox::RunningSandbox;
use uuid::Uuid;

struct Fixture {
    job: InvoicePlans,
    documents: Arc<dyn DocumentStore>,
    sandbox: RunningSandbox,
    clock: TestClock,
}

async fn fixture() -> Fixture {
    let (sandbox, billing) = billing_testing::sandbox_billing(800, billing_testing::fast_retries()).await;
    let documents: Arc<dyn DocumentStore> = embedded_store();
    let clock = TestClock::default();
    let job = InvoicePlans {
        documents: documents.clone(),
        billing,
        clock: clock.clock(),
        trial_days: 0,
        queue: None,
    }
    .declared();
    Fixture {
        job,
        documents,
        sandbox,
        clock,
    }
}

impl Fixture {
    /// A server on a `basic` plan bought for 6 licenses at `start`, paying with a card, whose
    /// users then went to 23, 20 and 21: API.md's worked example.
    async fn worked_example(&self, start: DateTime<Utc>) -> Entity {
        let entity = self.paying_server(6, start).await;
        let counts: Vec<CountAt> = [(4, 23), (9, 20), (19, 21)]
            .into_iter()
            .map(|(day, count)| CountAt {
                event_time: start + Duration::days(day),
                count,
            })
            .collect();
        let stored = plans::stored::load(self.documents.as_ref(), entity, start)
            .await
            .unwrap();
        let (synced, changes) = plans::sync_ledger(&stored.book, &counts);
        plans::stored::save(self.documents.as_ref(), &stored, &synced, &changes, start)
            .await
            .unwrap();
        entity
    }

    async fn uploaded_at(&self, entity: Entity, at: DateTime<Utc>) {
        let Entity::Server(server) = entity else { unreachable!() };
        let key = member_key(&usage_collection(server), "marker");
        let marker = serde_json::to_value(UploadMarker {
            last_audit_log_id: Some(1),
            last_upload_at: Some(at),
        })
        .unwrap();
        let version = self.documents.get_document(&key, at).await.unwrap().map(|d| d.version);
        self.documents
            .put_document(&key, &marker, None, version, at)
            .await
            .unwrap();
    }
}

fn at_event(at: DateTime<Utc>) -> Value {
    json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "at": at.to_rfc3339()})
}

/// The prorated price of one license added `day` days into a 31-day January.
fn prorated(day: i64) -> i64 {
    let left = (31 - day) as f64 * 86_400.0;
    (350.0 * left / (31.0 * 86_400.0) + 0.5) as i64
}

#[tokio::test]
async fn a_due_plan_is_invoiced_for_its_renewal_and_added_licenses_once() {
    let f = fixture().await;
    let start = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc();
    let entity = f.worked_example(start).await;
    let due = start + Duration::days(31);
    f.uploaded_at(entity, due).await;
    // When the job runs on the due date
    let report = f.job.handle(&at_event(due)).await.unwrap();
    // Then one invoice bills 17 added licenses prorated and the renewal for 21
    let [
        EntityOutcome::Invoiced {
            invoice: Some(invoice),
            items: 2,
            ..
        },
    ] = report.outcomes.as_slice()
    else {
        panic!("{report:?}");
    };
    let stripe = billing_testing::stripe_get(&f.sandbox, &format!("/v1/invoices/{invoice}")).await;
    assert_eq!(stripe["status"], "paid", "finalized and paid at once");
    assert_eq!(
        stripe["amount_due"].as_i64().unwrap(),
        17 * prorated(4) + 21 * 350,
        "{stripe}"
    );
    // And the plan's next invoice is a month later; a second run invoices nothing
    let book = plans::stored::load(f.documents.as_ref(), entity, due)
        .await
        .unwrap()
        .book;
    assert_eq!(book.plan.unwrap().next_invoice_date, Some(start + Duration::days(59)));
    let again = f.job.handle(&at_event(due + Duration::hours(1))).await.unwrap();
    assert!(again.outcomes.is_empty(), "{again:?}");
}

#[tokio::test]
async fn a_plan_whose_server_has_not_uploaded_since_the_due_date_is_deferred() {
    let counts = Counts::default();
    let _counting = counts.count_here();
    let f = fixture().await;
    let start = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc();
    let entity = f.worked_example(start).await;
    let due = start + Duration::days(31);
    f.uploaded_at(entity, due - Duration::days(2)).await;
    let report = f.job.handle(&at_event(due + Duration::days(1))).await.unwrap();
    assert_eq!(report.outcomes, [EntityOutcome::Deferred { entity }]);
    // Once the server uploads, the next run invoices it
    f.uploaded_at(entity, due + Duration::days(1)).await;
    let report = f.job.handle(&at_event(due + Duration::days(1))).await.unwrap();
    assert!(
        matches!(report.outcomes.as_slice(), [EntityOutcome::Invoiced { .. }]),
        "{report:?}"
    );
    assert_eq!(
        [
            counts.get(PLAN_INVOICES, &[(OUTCOME, "deferred")]),
            counts.get(PLAN_INVOICES, &[(OUTCOME, "invoiced")])
        ],
        [1, 1],
        "{:?}",
        counts.summary()
    );
}

#[tokio::test]
async fn a_run_that_failed_between_the_items_and_the_invoice_is_safe_to_run_again() {
    let f = fixture().await;
    let start = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc();
    let entity = f.worked_example(start).await;
    let due = start + Duration::days(31);
    f.uploaded_at(entity, due).await;
    // Given Stripe failing every invoice creation of the first run (after its items were added)
    f.sandbox.sandbox.fail_next_on(3, 500, Some("/v1/invoices"));
    let report = f.job.handle(&at_event(due)).await.unwrap();
    assert!(
        matches!(report.outcomes.as_slice(), [EntityOutcome::Failed { .. }]),
        "{report:?}"
    );
    // When the job runs again
    let report = f.job.handle(&at_event(due)).await.unwrap();
    let [
        EntityOutcome::Invoiced {
            invoice: Some(invoice), ..
        },
    ] = report.outcomes.as_slice()
    else {
        panic!("{report:?}");
    };
    // Then the invoice has each item once
    let stripe = billing_testing::stripe_get(&f.sandbox, &format!("/v1/invoices/{invoice}")).await;
    assert_eq!(stripe["lines"]["data"].as_array().unwrap().len(), 2, "{stripe}");
    assert_eq!(stripe["amount_due"].as_i64().unwrap(), 17 * prorated(4) + 21 * 350);
    let _ = f.clock.now();
}

#[tokio::test]
async fn a_run_near_its_deadline_leaves_the_remaining_plans_due_for_the_next_one() {
    let f = fixture().await;
    let start = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc();
    let entity = f.worked_example(start).await;
    let due = start + Duration::days(31);
    f.uploaded_at(entity, due).await;
    // Given an invocation with less time left than one plan may take
    let soon = std::time::SystemTime::now() + billing::plans::invoicing::TIME_PER_ENTITY / 2;
    let report = billing::deadline::within(Some(soon), f.job.handle(&at_event(due)))
        .await
        .unwrap();
    // Then nothing was started, and the plan is still due for the next run
    assert!(report.outcomes.is_empty(), "{report:?}");
    assert_eq!(report.left_for_next_run, 1);
    let report = f.job.handle(&at_event(due)).await.unwrap();
    assert!(
        matches!(report.outcomes.as_slice(), [EntityOutcome::Invoiced { .. }]),
        "{report:?}"
    );
}

impl Fixture {
    /// A server on basic for `users` from `start`, paying with a card, its users unchanged.
    async fn paying_server(&self, users: u32, start: DateTime<Utc>) -> Entity {
        let server = Uuid::new_v4();
        let entity = Entity::Server(server);
        let customer = self
            .job
            .billing
            .create_customer(server, "billing@example.org", &format!("{server}:customer"))
            .await
            .unwrap();
        self.job
            .billing
            .attach_default_payment_method(&customer.id, "pm_card_visa", &format!("{server}:card"))
            .await
            .unwrap();
        billing_testing::store_automatic_basic_plan(self.documents.as_ref(), entity, users, Some(customer.id), start)
            .await;
        entity
    }

    /// The invoices of the sandbox that invoicing runs made (Stripe over HTTP).
    async fn run_invoices(&self) -> Vec<Value> {
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = billing_testing::stripe_get(
                &self.sandbox,
                &format!(
                    "/v1/invoices?limit=100{}",
                    after
                        .as_deref()
                        .map(|id| format!("&starting_after={id}"))
                        .unwrap_or_default()
                ),
            )
            .await;
            let data = page["data"].as_array().unwrap();
            found.extend(
                data.iter()
                    .filter(|i| {
                        i["metadata"]["billing_reference"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("invoicing:"))
                    })
                    .cloned(),
            );
            if page["has_more"] != true {
                return found;
            }
            after = data.last().and_then(|i| i["id"].as_str()).map(str::to_owned);
        }
    }
}

#[tokio::test]
async fn more_due_plans_than_one_page_of_the_index_are_all_invoiced_by_one_run() {
    // Given 105 servers due on the same day (the index hands out 100 at a time), all uploaded
    let f = fixture().await;
    let start = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc();
    let due = start + Duration::days(31);
    let mut entities = Vec::new();
    for _ in 0..105 {
        let entity = f.paying_server(6, start).await;
        f.uploaded_at(entity, due).await;
        entities.push(entity);
    }
    // When the job runs once
    let report = f.job.handle(&at_event(due)).await.unwrap();
    // Then each one is invoiced once, on Stripe (the sandbox): 105 paid renewals of 6 × 350
    let invoiced: Vec<Entity> = report
        .outcomes
        .iter()
        .filter_map(|o| match o {
            EntityOutcome::Invoiced {
                entity,
                invoice: Some(_),
                ..
            } => Some(*entity),
            _ => None,
        })
        .collect();
    assert_eq!(invoiced.len(), 105, "{:?}", report.outcomes.len());
    entities.sort();
    let mut sorted = invoiced.clone();
    sorted.sort();
    assert_eq!(sorted, entities);
    let invoices = f.run_invoices().await;
    assert_eq!(invoices.len(), 105);
    assert!(
        invoices
            .iter()
            .all(|i| i["status"] == "paid" && i["amount_paid"] == 6 * 350)
    );
}

#[tokio::test]
async fn a_plan_the_job_missed_for_three_months_is_invoiced_once_for_each_due_date() {
    // Given a server due on 1 February, 1 March and 1 April, and no run since; it uploaded
    let f = fixture().await;
    let start = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc();
    let entity = f.paying_server(6, start).await;
    let now = DateTime::parse_from_rfc3339("2026-04-02T12:00:00Z").unwrap().to_utc();
    f.uploaded_at(entity, now).await;
    // When the job runs, and again an hour later
    let report = f.job.handle(&at_event(now)).await.unwrap();
    let again = f.job.handle(&at_event(now + Duration::hours(1))).await.unwrap();
    // Then one invoice per due date, each a renewal paid once, and the second run adds nothing
    assert_eq!(
        report
            .outcomes
            .iter()
            .filter(|o| matches!(o, EntityOutcome::Invoiced { invoice: Some(_), .. }))
            .count(),
        3,
        "{report:?}"
    );
    assert!(again.outcomes.is_empty(), "{again:?}");
    let invoices = f.run_invoices().await;
    let mut references: Vec<&str> = invoices
        .iter()
        .map(|i| i["metadata"]["billing_reference"].as_str().unwrap())
        .collect();
    references.sort();
    references.dedup();
    assert_eq!(references.len(), 3, "{invoices:#?}");
    assert!(
        invoices
            .iter()
            .all(|i| i["status"] == "paid" && i["amount_paid"] == 6 * 350)
    );
}

#[tokio::test]
async fn a_plan_without_a_stripe_customer_is_recorded_and_waits_for_a_person_without_a_charge() {
    // Given a plan whose entity has no Stripe customer (made by hand), due and uploaded
    let f = fixture().await;
    let start = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc();
    let entity = Entity::Server(Uuid::new_v4());
    billing_testing::store_automatic_basic_plan(f.documents.as_ref(), entity, 6, None, start).await;
    let due = start + Duration::days(31);
    f.uploaded_at(entity, due).await;
    // When the job runs three times, an hour apart
    let mut reasons = Vec::new();
    for hour in 0..3 {
        for outcome in f
            .job
            .handle(&at_event(due + Duration::hours(hour)))
            .await
            .unwrap()
            .outcomes
        {
            if let EntityOutcome::Failed {
                reason,
                needs_attention,
                ..
            } = outcome
            {
                reasons.push((reason, needs_attention));
            }
        }
    }
    // Then each says why, the third marks it for a person, and Stripe holds no invoice
    let why = "the entity has no Stripe customer".to_owned();
    assert_eq!(reasons, [(why.clone(), false), (why.clone(), false), (why, true)]);
    assert_eq!(f.run_invoices().await, Vec::<Value>::new());
}
