//! The self-hosted purchase's fault matrix and its races, on the Stripe sandbox over HTTP
//! (through async-stripe) and the embedded store: every store write and every Stripe call of a
//! purchase fails in turn, before it is done or after (done, the answer lost), for a customer
//! whose card is on file and for one buying through Checkout. The purchase is then tried again
//! as its users would (the form sent again, or Checkout's completion delivered again) at once,
//! and after both clocks moved 25 hours (when Stripe may have forgotten every key). The end
//! state is always one paid invoice of the first period, no invoice item pending, one plan.

use std::sync::Arc;

use billing::plans::purchase::{CheckoutLinks, PurchaseError, Purchases, UpgradeStart, UpgradeState};
use billing::plans::{Entity, LicenseManagement, PlanStatus, Prices, Schedule, Tier, UpgradeRequest, stored};
use billing::remote::RegisterRequest;
use billing::store::DocumentStore;
use billing_testing::{
    FaultyDocuments, RunningSandbox, WriteFault, complete_checkout, in_memory_store, outbox, remote_billing_on,
    stripe_get,
};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use uuid::Uuid;

/// A realm of 30 users buying business monthly: 30 × 800 cents for its first month.
const FIRST_PERIOD: i64 = 30 * 800;

struct World {
    purchases: Purchases,
    faulty: Arc<FaultyDocuments>,
    sandbox: RunningSandbox,
    realm: Uuid,
    now: DateTime<Utc>,
}

async fn world() -> World {
    let store = in_memory_store();
    let documents: Arc<dyn DocumentStore> = store;
    let now = Utc::now();
    let remote = remote_billing_on(documents.clone(), outbox(), 5, 20);
    let (server, realm, key) = (Uuid::new_v4(), Uuid::new_v4(), "k".repeat(32));
    let register = json!({"server_uuid": server, "server_key": key, "hostname": "chat.example.org",
                          "contact_email": "admin@example.org"});
    remote
        .register_server(
            RegisterRequest::read(register.to_string().as_bytes()).unwrap(),
            None,
            now,
        )
        .await
        .unwrap();
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{server}:{key}"))
    };
    let server = remote.authenticate(Some(&format!("Basic {basic}")), now).await.unwrap();
    let upload = json!({
        "realms": [{"uuid": realm, "host": "chat.example.org", "name": "Example Org"}],
        "realm_audit_logs": [{"id": 1, "realm": realm, "event_type": 101, "event_time": now.timestamp() - 60,
            "extra_data": {"10": {"11": {"100": 1, "400": 29}}}}]});
    let upload = billing::remote::usage::Upload::read(upload.to_string().as_bytes()).unwrap();
    remote.record_upload(&server, &upload, now).await.unwrap();
    let (sandbox, stripe) = billing_testing::sandbox_billing(800, billing_testing::fast_retries()).await;
    let faulty = Arc::new(FaultyDocuments::new(documents));
    World {
        purchases: Purchases {
            documents: faulty.clone(),
            stripe,
            trial_days: 0,
            prices: Prices::default(),
        },
        faulty,
        sandbox,
        realm,
        now,
    }
}

fn business() -> UpgradeRequest {
    UpgradeRequest {
        tier: Tier::Business,
        schedule: Schedule::Monthly,
        license_management: LicenseManagement::Automatic,
        licenses: None,
    }
}

fn links() -> CheckoutLinks {
    CheckoutLinks {
        success_url: "http://127.0.0.1:9/realm/x/billing/".into(),
        cancel_url: "http://127.0.0.1:9/realm/x/upgrade/".into(),
    }
}

impl World {
    fn entity(&self) -> Entity {
        Entity::Realm(self.realm)
    }

    /// A returning customer: a Stripe customer paying with a card, recorded as on file.
    async fn card_on_file(&self) {
        let stripe = &self.purchases.stripe;
        let customer = stripe
            .create_entity_customer(self.entity(), "owner@example.org", &format!("{}:customer", self.realm))
            .await
            .unwrap();
        stripe
            .attach_default_payment_method(&customer.id, "pm_card_visa", &format!("{}:card", self.realm))
            .await
            .unwrap();
        let held = stored::load(self.faulty.as_ref(), self.entity(), self.now)
            .await
            .unwrap();
        let mut book = held.book.clone();
        book.customer.stripe_customer = Some(customer.id);
        book.customer.card_last4 = Some("4242".into());
        stored::save(self.faulty.as_ref(), &held, &book, &Default::default(), self.now)
            .await
            .unwrap();
    }

    async fn customer(&self) -> String {
        let (book, _) = self.purchases.current(self.entity(), self.now).await.unwrap();
        book.customer.stripe_customer.unwrap()
    }

    async fn form(&self, at: DateTime<Utc>) -> Result<UpgradeStart, PurchaseError> {
        self.purchases
            .begin_upgrade(self.entity(), business(), "owner@example.org", &links(), at)
            .await
    }

    /// The form of a customer without a card: the Checkout page completed with a card; the
    /// session's reference and SetupIntent.
    async fn checkout(&self) -> (String, String) {
        self.checkout_at(self.now).await
    }

    async fn checkout_at(&self, at: DateTime<Utc>) -> (String, String) {
        let Ok(UpgradeStart::Checkout { url }) = self.form(at).await else {
            panic!("a Checkout without a card on file");
        };
        let session = url.rsplit('/').next().unwrap().to_owned();
        let intent = complete_checkout(&self.sandbox, &url, "pm_card_visa").await;
        let held = stripe_get(&self.sandbox, &format!("/v1/checkout/sessions/{session}")).await;
        (held["metadata"]["pending_upgrade"].as_str().unwrap().to_owned(), intent)
    }

    async fn checkout_completed(
        &self,
        (reference, intent): &(String, String),
        at: DateTime<Utc>,
    ) -> Result<(), PurchaseError> {
        let customer = self.customer().await;
        self.purchases
            .checkout_completed(reference, &customer, intent, at)
            .await
            .map(|_| ())
    }

    fn arm(&self, fault: Fault) {
        let sandbox = &self.sandbox.sandbox;
        match fault {
            Fault::StripeBefore(call) => sandbox.fail_next_matching(3, 500, Some(call), None),
            Fault::StripeAfter(call) => sandbox.fail_next_after(3, 500, Some(call), None),
            Fault::Store(nth, when) => self.faulty.fail_write(nth, when),
        }
    }

    /// What every fault must end in.
    async fn assert_one_plan_charged_once(&self, label: &str) {
        let customer = self.customer().await;
        let invoices = stripe_get(&self.sandbox, &format!("/v1/invoices?customer={customer}&limit=100")).await;
        let invoices: Vec<&Value> = invoices["data"].as_array().unwrap().iter().collect();
        let paid: Vec<i64> = invoices
            .iter()
            .filter(|invoice| invoice["status"] == "paid")
            .map(|invoice| invoice["amount_paid"].as_i64().unwrap())
            .collect();
        assert_eq!(paid, [FIRST_PERIOD], "{label}: one paid first period: {invoices:#?}");
        assert!(
            invoices
                .iter()
                .all(|invoice| matches!(invoice["status"].as_str(), Some("paid" | "void" | "draft"))),
            "{label}: nothing else owed: {invoices:#?}"
        );
        let pending = stripe_get(
            &self.sandbox,
            &format!("/v1/invoiceitems?customer={customer}&pending=true"),
        )
        .await;
        assert_eq!(pending["data"], json!([]), "{label}: no invoice item pending");
        let later = self.now + Duration::hours(30);
        let held = stored::load(self.faulty.as_ref(), self.entity(), later).await.unwrap();
        let live: Vec<_> = held.history.iter().filter(|plan| plan.status.is_live()).collect();
        assert_eq!(live.len(), 1, "{label}: one plan: {:?}", held.history);
        assert_eq!((live[0].tier, live[0].status), (Tier::Business, PlanStatus::Active));
        let (_, upgrade) = self.purchases.current(self.entity(), later).await.unwrap();
        assert_eq!(upgrade.map(|u| u.state), Some(UpgradeState::Started), "{label}");
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    StripeBefore(&'static str),
    StripeAfter(&'static str),
    /// The purchase's `n`th store write fails.
    Store(usize, WriteFault),
}

/// A purchase with a card on file: the fault, then the form sent again at once and the next day.
async fn card_on_file_fault(fault: Fault) {
    let label = format!("card on file, {fault:?}");
    let w = world().await;
    w.card_on_file().await;
    // Given the fault at one step of the purchase
    w.arm(fault);
    let first = w.form(w.now).await;
    assert!(first.is_err(), "{label}: the fault stops the purchase: {first:?}");
    // When the owner sends the form again at once, and the next day
    let _ = w.form(w.now + Duration::seconds(5)).await;
    w.sandbox.sandbox.advance_clock(25 * 60 * 60);
    let _ = w.form(w.now + Duration::hours(25)).await;
    // Then one plan was bought and charged once
    w.assert_one_plan_charged_once(&label).await;
}

/// A purchase through Checkout: the fault while its completion is handled, then the completion
/// delivered again at once and the next day.
async fn checkout_fault(fault: Fault) {
    let label = format!("Checkout, {fault:?}");
    let w = world().await;
    let completed = w.checkout().await;
    // Given the fault at one step of handling the completion
    w.arm(fault);
    let first = w.checkout_completed(&completed, w.now).await;
    assert!(first.is_err(), "{label}: the fault stops the purchase: {first:?}");
    // When Stripe delivers the completion again at once, and the next day
    let _ = w.checkout_completed(&completed, w.now + Duration::seconds(5)).await;
    w.sandbox.sandbox.advance_clock(25 * 60 * 60);
    w.checkout_completed(&completed, w.now + Duration::hours(25))
        .await
        .unwrap();
    // Then one plan was bought and charged once
    w.assert_one_plan_charged_once(&label).await;
}

const FIND: &str = "GET /v1/invoices";
const CREATE: &str = "POST /v1/invoices";
const LINES: &str = "GET /v1/invoiceitems";
const ADD_LINE: &str = "POST /v1/invoiceitems";
const FINALIZE: &str = "POST /v1/invoices/*/finalize";
const PAY: &str = "POST /v1/invoices/*/pay";
const SAVE_CARD: &str = "POST /v1/customers/*";

macro_rules! fault_matrix {
    ($run:ident in $module:ident { $($name:ident: $fault:expr,)* }) => {
        mod $module {
            use super::*;
            $(#[tokio::test]
            async fn $name() {
                $run($fault).await;
            })*
        }
    };
}

fault_matrix!(card_on_file_fault in card_on_file {
    claiming_fails: Fault::Store(1, WriteFault::Before),
    claiming_lands_but_its_answer_is_lost: Fault::Store(1, WriteFault::After),
    finding_the_invoice_fails: Fault::StripeBefore(FIND),
    creating_the_invoice_fails: Fault::StripeBefore(CREATE),
    creating_the_invoice_lands_but_its_answer_is_lost: Fault::StripeAfter(CREATE),
    reading_its_lines_fails: Fault::StripeBefore(LINES),
    adding_the_line_fails: Fault::StripeBefore(ADD_LINE),
    adding_the_line_lands_but_its_answer_is_lost: Fault::StripeAfter(ADD_LINE),
    finalizing_fails: Fault::StripeBefore(FINALIZE),
    finalizing_lands_but_its_answer_is_lost: Fault::StripeAfter(FINALIZE),
    paying_fails: Fault::StripeBefore(PAY),
    paying_lands_but_its_answer_is_lost: Fault::StripeAfter(PAY),
    starting_the_plan_fails: Fault::Store(2, WriteFault::Before),
    starting_the_plan_lands_but_its_answer_is_lost: Fault::Store(2, WriteFault::After),
});

fault_matrix!(checkout_fault in checkout {
    saving_the_card_fails: Fault::StripeBefore(SAVE_CARD),
    saving_the_card_lands_but_its_answer_is_lost: Fault::StripeAfter(SAVE_CARD),
    recording_the_card_fails: Fault::Store(1, WriteFault::Before),
    recording_the_card_lands_but_its_answer_is_lost: Fault::Store(1, WriteFault::After),
    taking_the_claim_fails: Fault::Store(2, WriteFault::Before),
    taking_the_claim_lands_but_its_answer_is_lost: Fault::Store(2, WriteFault::After),
    creating_the_invoice_fails: Fault::StripeBefore(CREATE),
    creating_the_invoice_lands_but_its_answer_is_lost: Fault::StripeAfter(CREATE),
    adding_the_line_lands_but_its_answer_is_lost: Fault::StripeAfter(ADD_LINE),
    finalizing_lands_but_its_answer_is_lost: Fault::StripeAfter(FINALIZE),
    paying_fails: Fault::StripeBefore(PAY),
    paying_lands_but_its_answer_is_lost: Fault::StripeAfter(PAY),
    starting_the_plan_fails: Fault::Store(3, WriteFault::Before),
    starting_the_plan_lands_but_its_answer_is_lost: Fault::Store(3, WriteFault::After),
});

#[tokio::test]
async fn two_forms_sent_at_once_buy_one_plan_and_charge_once() {
    // Given a returning customer whose card is on file
    let w = world().await;
    w.card_on_file().await;
    // When the Business form is sent twice at once (a double click, two tabs)
    let (first, second) = tokio::join!(w.form(w.now), w.form(w.now));
    // Then one started the plan and the other was refused before anything was charged
    let outcomes = [&first, &second];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Ok(UpgradeStart::Started(_))))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Err(PurchaseError::PurchaseInProgress)))
            .count(),
        1,
        "{outcomes:?}"
    );
    w.assert_one_plan_charged_once("two forms").await;
}

#[tokio::test]
async fn one_checkout_completed_twice_at_once_buys_one_plan() {
    // Given a Checkout completed by the customer
    let w = world().await;
    let completed = w.checkout().await;
    // When its completion reaches the service twice at once (the webhook and the return page)
    let (first, second) = tokio::join!(
        w.checkout_completed(&completed, w.now),
        w.checkout_completed(&completed, w.now)
    );
    // Then one plan is bought, charged once, and both answer it
    assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
    w.assert_one_plan_charged_once("one Checkout twice").await;
}

#[tokio::test]
async fn two_checkouts_completed_at_once_buy_one_plan_and_the_older_is_refused_with_its_card_saved() {
    // Given two Checkouts opened from two tabs, both completed with a card
    let w = world().await;
    let older = w.checkout().await;
    let newer = w.checkout_at(w.now + Duration::seconds(1)).await;
    // When both completions arrive at once
    let (older_outcome, newer_outcome) = tokio::join!(
        w.checkout_completed(&older, w.now + Duration::seconds(2)),
        w.checkout_completed(&newer, w.now + Duration::seconds(2))
    );
    // Then the newer form's purchase made the plan, charged once, and the older was refused
    assert!(newer_outcome.is_ok(), "{newer_outcome:?}");
    assert!(
        matches!(older_outcome, Err(PurchaseError::PurchaseInProgress)),
        "{older_outcome:?}"
    );
    w.assert_one_plan_charged_once("two Checkouts").await;
    // And the card of the older Checkout is saved all the same
    let customer = stripe_get(&w.sandbox, &format!("/v1/customers/{}", w.customer().await)).await;
    assert!(
        customer["invoice_settings"]["default_payment_method"].is_string(),
        "{customer}"
    );
}

#[tokio::test]
async fn a_purchase_charged_by_a_request_that_died_is_started_by_the_hourly_job() {
    // Given a card-on-file purchase whose first period was paid, and whose plan was never
    // written (the request died), and no form sent again
    let w = world().await;
    w.card_on_file().await;
    w.arm(Fault::Store(2, WriteFault::Before));
    assert!(w.form(w.now).await.is_err());
    // When the hourly job looks for stalled purchases, first too early, then after a while
    let early = w
        .purchases
        .resume_stalled_purchases(w.now + Duration::seconds(30))
        .await
        .unwrap();
    let resumed = w
        .purchases
        .resume_stalled_purchases(w.now + Duration::minutes(5))
        .await
        .unwrap();
    // Then the second resumes it: the plan starts, charged once, and the server may buy again
    assert_eq!(early, []);
    assert_eq!(
        resumed.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(),
        ["started"],
        "{resumed:?}"
    );
    w.assert_one_plan_charged_once("resumed by the job").await;
    let claims = w
        .faulty
        .list_documents_range("purchase_claims", None, "~", 10, w.now + Duration::minutes(6))
        .await
        .unwrap();
    assert!(claims.is_empty(), "the claim is released: {claims:?}");
}
