//! The invoicing run's fault matrix, on the Stripe sandbox over HTTP (through async-stripe)
//! and the embedded store: every store write and every Stripe call of one entity's run fails
//! in turn, before it is done or after (done, the answer lost). The job then runs again at
//! once and after both clocks moved 25 hours (when Stripe may have forgotten every key), or
//! only after the 25 hours. The end state is always the same: one paid invoice for the due
//! date with the two expected lines, no invoice item left pending, the plan moved on once.

use std::sync::Arc;

use billing::plans::invoicing::{EntityOutcome, RUNS_OPEN, RunState, runs};
use billing::plans::{self, CountAt, Entity};
use billing::remote::usage::{UploadMarker, usage_collection};
use billing::store::{DocumentStore, member_key};
use billing::stripe::Billing;
use billing_testing::{FaultyDocuments, TestClock, WriteFault, embedded_store, stripe_get};
use chrono::{DateTime, Duration, Utc};
use invoice_plans::InvoicePlans;
use serde_json::{Value, json};
use stripe_sandbox::RunningSandbox;
use uuid::Uuid;

/// One point of the matrix.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Every attempt of the Stripe call (`METHOD /path`, `*` any segment) whose parameters
    /// contain the text fails before Stripe acts.
    StripeBefore(&'static str, Option<&'static str>),
    /// Stripe acts on the first attempt; every answer is lost.
    StripeAfter(&'static str, Option<&'static str>),
    /// The run's `n`th store write fails (1: the record, 2: the settlement).
    Store(usize, WriteFault),
}

/// When the job runs again.
#[derive(Clone, Copy, Debug)]
enum Rerun {
    /// At once, then after both clocks moved 25 hours.
    AtOnceThenNextDay,
    /// Only after both clocks moved 25 hours.
    NextDay,
}

struct Fixture {
    job: InvoicePlans,
    faulty: Arc<FaultyDocuments>,
    sandbox: RunningSandbox,
    customer: String,
    entity: Entity,
    start: DateTime<Utc>,
}

impl Fixture {
    /// API.md's worked example: a server on basic for 6 from 1 January, paying with a card,
    /// its users at 23, 20 and 21; due on 1 February, uploaded then.
    async fn worked_example() -> Fixture {
        let (sandbox, billing) = billing_testing::sandbox_billing(800, billing_testing::fast_retries()).await;
        let documents: Arc<dyn DocumentStore> = embedded_store();
        let faulty = Arc::new(FaultyDocuments::new(documents.clone()));
        let start = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc();
        let server = Uuid::new_v4();
        let entity = Entity::Server(server);
        let customer = billing
            .create_customer(server, "billing@example.org", &format!("{server}:customer"))
            .await
            .unwrap();
        billing
            .attach_default_payment_method(&customer.id, "pm_card_visa", &format!("{server}:card"))
            .await
            .unwrap();
        billing_testing::store_automatic_basic_plan(documents.as_ref(), entity, 6, Some(customer.id.clone()), start)
            .await;
        let counts: Vec<CountAt> = [(4, 23), (9, 20), (19, 21)]
            .into_iter()
            .map(|(day, count)| CountAt {
                event_time: start + Duration::days(day),
                count,
            })
            .collect();
        let stored = plans::stored::load(documents.as_ref(), entity, start).await.unwrap();
        let (synced, changes) = plans::sync_ledger(&stored.book, &counts);
        plans::stored::save(documents.as_ref(), &stored, &synced, &changes, start)
            .await
            .unwrap();
        let due = start + Duration::days(31);
        let marker = serde_json::to_value(UploadMarker {
            last_audit_log_id: Some(1),
            last_upload_at: Some(due),
        })
        .unwrap();
        documents
            .put_document(
                &member_key(&usage_collection(server), "marker"),
                &marker,
                None,
                None,
                due,
            )
            .await
            .unwrap();
        let clock = TestClock::default();
        let job = InvoicePlans {
            documents: faulty.clone(),
            billing,
            clock: clock.clock(),
            trial_days: 0,
            queue: None,
        }
        .declared();
        Fixture {
            job,
            faulty,
            sandbox,
            customer: customer.id,
            entity,
            start,
        }
    }

    fn due(&self) -> DateTime<Utc> {
        self.start + Duration::days(31)
    }

    async fn run(&self, at: DateTime<Utc>) -> Vec<EntityOutcome> {
        let event = json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events",
                           "at": at.to_rfc3339()});
        self.job.handle(&event).await.unwrap().outcomes
    }

    fn arm(&self, fault: Fault) {
        let sandbox = &self.sandbox.sandbox;
        match fault {
            // Three attempts: every retry of the adapter meets the fault.
            Fault::StripeBefore(call, text) => sandbox.fail_next_matching(3, 500, Some(call), text),
            Fault::StripeAfter(call, text) => sandbox.fail_next_after(3, 500, Some(call), text),
            Fault::Store(nth, when) => self.faulty.fail_write(nth, when),
        }
    }

    /// The customer's invoices made by invoicing runs.
    async fn run_invoices(&self) -> Vec<Value> {
        let list = stripe_get(
            &self.sandbox,
            &format!("/v1/invoices?customer={}&limit=100", self.customer),
        )
        .await;
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|invoice| {
                invoice["metadata"]["billing_reference"]
                    .as_str()
                    .is_some_and(|reference| reference.starts_with("invoicing:"))
            })
            .cloned()
            .collect()
    }

    /// What every fault must end in.
    async fn assert_invoiced_exactly_once(&self, label: &str) {
        let invoices = self.run_invoices().await;
        assert_eq!(
            invoices.len(),
            1,
            "{label}: one invoice for the due date: {invoices:#?}"
        );
        let invoice = &invoices[0];
        assert_eq!(invoice["status"], "paid", "{label}: {invoice}");
        assert_eq!(
            invoice["amount_paid"].as_i64(),
            Some(17 * prorated(4) + 21 * 350),
            "{label}: {invoice}"
        );
        let lines = invoice["lines"]["data"].as_array().unwrap();
        let descriptions: Vec<&str> = lines.iter().map(|line| line["description"].as_str().unwrap()).collect();
        assert_eq!(
            descriptions,
            ["Additional Basic license", "Basic - renewal"],
            "{label}: each line once"
        );
        let pending = stripe_get(
            &self.sandbox,
            &format!("/v1/invoiceitems?customer={}&pending=true", self.customer),
        )
        .await;
        assert_eq!(pending["data"], json!([]), "{label}: no invoice item left pending");
        let later = self.start + Duration::days(40);
        let book = plans::stored::load(self.faulty.as_ref(), self.entity, later)
            .await
            .unwrap()
            .book;
        assert_eq!(
            book.plan.unwrap().next_invoice_date,
            Some(self.start + Duration::days(59)),
            "{label}: the plan moved on once"
        );
        let runs = runs(self.faulty.as_ref(), self.entity, later).await.unwrap();
        let states: Vec<&RunState> = runs.iter().map(|(run, _)| &run.state).collect();
        assert_eq!(states, [&RunState::Paid], "{label}");
        let open = self
            .faulty
            .list_documents_range(RUNS_OPEN, None, "~", 10, later)
            .await
            .unwrap();
        assert!(open.is_empty(), "{label}: no run left open: {open:?}");
    }
}

/// The prorated price of one license added `day` days into a 31-day January.
fn prorated(day: i64) -> i64 {
    let left = (31 - day) as f64 * 86_400.0;
    (350.0 * left / (31.0 * 86_400.0) + 0.5) as i64
}

async fn fault_then_rerun(fault: Fault, rerun: Rerun) {
    let label = format!("{fault:?} then {rerun:?}");
    let f = Fixture::worked_example().await;
    let due = f.due();
    // Given the fault at one step of the run
    f.arm(fault);
    let first = f.run(due).await;
    assert!(
        matches!(first.as_slice(), [EntityOutcome::Failed { .. }]),
        "{label}: the fault stops the run: {first:?}"
    );
    // When the job runs again
    if let Rerun::AtOnceThenNextDay = rerun {
        f.run(due + Duration::minutes(1)).await;
    }
    f.sandbox.sandbox.advance_clock(25 * 60 * 60);
    f.run(due + Duration::hours(25)).await;
    // Then the entity is invoiced exactly once, and one more run changes nothing
    f.assert_invoiced_exactly_once(&label).await;
    let after = f.run(due + Duration::hours(26)).await;
    assert!(
        after
            .iter()
            .all(|outcome| !matches!(outcome, EntityOutcome::Invoiced { invoice: Some(_), .. })),
        "{label}: {after:?}"
    );
    f.assert_invoiced_exactly_once(&label).await;
}

const FIND: &str = "GET /v1/invoices";
const CREATE: &str = "POST /v1/invoices";
const LINES: &str = "GET /v1/invoiceitems";
const ADD_LINE: &str = "POST /v1/invoiceitems";
const FINALIZE: &str = "POST /v1/invoices/*/finalize";
const PAY: &str = "POST /v1/invoices/*/pay";
const FIRST_LINE: Option<&str> = Some("Additional Basic license");
const SECOND_LINE: Option<&str> = Some("Basic - renewal");

/// One test per point of the matrix and way of running again.
macro_rules! fault_matrix {
    ($($name:ident: $fault:expr,)*) => {
        mod at_once_then_next_day {
            use super::*;
            $(#[tokio::test]
            async fn $name() {
                fault_then_rerun($fault, Rerun::AtOnceThenNextDay).await;
            })*
        }
        mod next_day {
            use super::*;
            $(#[tokio::test]
            async fn $name() {
                fault_then_rerun($fault, Rerun::NextDay).await;
            })*
        }
    };
}

fault_matrix! {
    recording_the_run_fails: Fault::Store(1, WriteFault::Before),
    recording_the_run_lands_but_its_answer_is_lost: Fault::Store(1, WriteFault::After),
    finding_the_invoice_fails: Fault::StripeBefore(FIND, None),
    creating_the_invoice_fails: Fault::StripeBefore(CREATE, None),
    creating_the_invoice_lands_but_its_answer_is_lost: Fault::StripeAfter(CREATE, None),
    reading_the_invoice_lines_fails: Fault::StripeBefore(LINES, None),
    adding_the_first_line_fails: Fault::StripeBefore(ADD_LINE, FIRST_LINE),
    adding_the_first_line_lands_but_its_answer_is_lost: Fault::StripeAfter(ADD_LINE, FIRST_LINE),
    adding_the_second_line_fails: Fault::StripeBefore(ADD_LINE, SECOND_LINE),
    adding_the_second_line_lands_but_its_answer_is_lost: Fault::StripeAfter(ADD_LINE, SECOND_LINE),
    finalizing_fails: Fault::StripeBefore(FINALIZE, None),
    finalizing_lands_but_its_answer_is_lost: Fault::StripeAfter(FINALIZE, None),
    paying_fails: Fault::StripeBefore(PAY, None),
    paying_lands_but_its_answer_is_lost: Fault::StripeAfter(PAY, None),
    settling_the_run_fails: Fault::Store(2, WriteFault::Before),
    settling_the_run_lands_but_its_answer_is_lost: Fault::Store(2, WriteFault::After),
}

// What administrators see of a run that does not settle.

#[tokio::test]
async fn a_run_that_failed_three_times_shows_as_needing_a_person_until_it_settles() {
    use billing::remote::admin::{InvoicingView, invoicing_view};
    let f = Fixture::worked_example().await;
    let due = f.due();
    // Given Stripe refusing to create the invoice on three hourly runs
    let mut flags = Vec::new();
    for hour in 0..3 {
        f.arm(Fault::StripeBefore(CREATE, None));
        for outcome in f.run(due + Duration::hours(hour)).await {
            if let EntityOutcome::Failed { needs_attention, .. } = outcome {
                flags.push(needs_attention);
            }
        }
    }
    // Then the third marks it for a person, and the billing view says so
    assert_eq!(flags, [false, false, true]);
    let view = invoicing_view(f.faulty.as_ref(), f.entity, None, None, due + Duration::hours(3))
        .await
        .unwrap();
    assert!(
        matches!(view, Some(InvoicingView::NeedsManualResolution { tries: 3, .. })),
        "{view:?}"
    );
    // When Stripe is back, the next run settles it, once, and nothing waits any more
    f.run(due + Duration::hours(4)).await;
    f.assert_invoiced_exactly_once("after three failures").await;
    let view = invoicing_view(f.faulty.as_ref(), f.entity, None, None, due + Duration::hours(5))
        .await
        .unwrap();
    assert_eq!(view, None);
}

#[tokio::test]
async fn an_invoice_waiting_over_a_week_for_an_upload_shows_in_the_billing_view() {
    use billing::remote::admin::{InvoicingView, invoicing_view};
    let f = Fixture::worked_example().await;
    let due = f.due();
    let plan = plans::stored::load(f.faulty.as_ref(), f.entity, due)
        .await
        .unwrap()
        .book
        .plan
        .unwrap();
    let uploaded = Some(due - Duration::days(1));
    // A week after the due date it is only deferred; past the week, it shows
    let six_days = invoicing_view(
        f.faulty.as_ref(),
        f.entity,
        Some(&plan),
        uploaded,
        due + Duration::days(6),
    )
    .await
    .unwrap();
    let eight_days = invoicing_view(
        f.faulty.as_ref(),
        f.entity,
        Some(&plan),
        uploaded,
        due + Duration::days(8),
    )
    .await
    .unwrap();
    assert_eq!(six_days, None);
    assert_eq!(eight_days, Some(InvoicingView::WaitingForUpload { since: due }));
}
