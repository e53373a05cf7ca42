//! Self-hosted purchases (`billing::plans::purchase`) against the in-memory embedded store and
//! the fake Stripe: the realm is registered and its users uploaded through remote billing, as
//! the server does. The same flows run through the pages and the sandbox in the bundle's tests.

use std::sync::Arc;

use billing::plans::purchase::{CheckoutLinks, PurchaseError, Purchases, UpgradeStart, UpgradeState};
use billing::plans::{Entity, LicenseManagement, PlanStatus, Prices, Schedule, Tier, UpgradeRequest};
use billing::remote::RegisterRequest;
use billing::stripe::{BillingError, InvoiceStatus};
use billing_testing::{FakeBilling, in_memory_store, outbox, remote_billing_on};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_795_255_200, 0).unwrap()
}

struct World {
    purchases: Purchases,
    stripe: Arc<FakeBilling>,
    realm: Uuid,
}

/// A realm of `users` users whose server uploaded now, and purchases with `trial_days`.
async fn world(users: u32, trial_days: u32) -> World {
    let store = in_memory_store();
    let remote = remote_billing_on(store.clone(), outbox(), 5, 20);
    let (server, realm, key) = (Uuid::new_v4(), Uuid::new_v4(), "k".repeat(32));
    let register = json!({"server_uuid": server, "server_key": key, "hostname": "chat.example.org",
                          "contact_email": "admin@example.org"});
    let register = RegisterRequest::read(register.to_string().as_bytes()).unwrap();
    remote.register_server(register, None, now()).await.unwrap();
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{server}:{key}"))
    };
    let server = remote
        .authenticate(Some(&format!("Basic {basic}")), now())
        .await
        .unwrap();
    let upload = json!({
        "realms": [{"uuid": realm, "host": "chat.example.org", "name": "Example Org"}],
        "realm_audit_logs": [{"id": 1, "realm": realm, "event_type": 101, "event_time": now().timestamp() - 60,
            "extra_data": {"10": {"11": {"100": 1, "400": users - 1}}}}]});
    let upload = billing::remote::usage::Upload::read(upload.to_string().as_bytes()).unwrap();
    remote.record_upload(&server, &upload, now()).await.unwrap();
    let stripe = Arc::new(FakeBilling::new(now()));
    World {
        purchases: Purchases {
            documents: store,
            stripe: stripe.clone(),
            trial_days,
            prices: Prices::default(),
        },
        stripe,
        realm,
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

fn links() -> CheckoutLinks {
    CheckoutLinks {
        success_url: "https://billing.example.com/realm/x/billing/".into(),
        cancel_url: "https://billing.example.com/realm/x/upgrade/".into(),
    }
}

impl World {
    fn entity(&self) -> Entity {
        Entity::Realm(self.realm)
    }

    /// Starts an upgrade; it waits for Checkout (no card yet). Returns its reference.
    async fn begin(&self, request: UpgradeRequest) -> String {
        match self
            .purchases
            .begin_upgrade(self.entity(), request, "owner@example.org", &links(), now())
            .await
            .unwrap()
        {
            UpgradeStart::Checkout { url } => url.split('#').nth(1).unwrap().to_owned(),
            UpgradeStart::Started(plan) => panic!("started without a card: {plan:?}"),
        }
    }

    async fn customer(&self) -> String {
        let (book, _) = self.purchases.current(self.entity(), now()).await.unwrap();
        book.customer.stripe_customer.unwrap()
    }

    /// Invoices paid in (fake) Stripe.
    fn charges(&self) -> usize {
        self.stripe
            .invoices()
            .iter()
            .filter(|invoice| invoice.status == InvoiceStatus::Paid)
            .count()
    }
}

fn upgrade_id(reference: &str) -> Uuid {
    billing::plans::purchase::parse_reference(reference).unwrap().1
}

#[tokio::test]
async fn the_self_hosted_trial_on_basic_charges_nothing_and_business_is_charged_at_once() {
    // Given self-hosted trials of 30 days
    let world = world(6, 30).await;
    // When a realm buys basic through Checkout
    let reference = world
        .begin(request(Tier::Basic, LicenseManagement::Automatic, None))
        .await;
    let plan = world
        .purchases
        .checkout_completed(&reference, &world.customer().await, "seti_1", now())
        .await
        .unwrap();
    // Then it is a free trial, first invoiced at its end, and nothing was charged
    assert_eq!(plan.status, PlanStatus::FreeTrial);
    assert_eq!(plan.next_invoice_date, Some(now() + Duration::days(30)));
    assert_eq!(world.charges(), 0);

    // Given another realm with the same setting
    let other = world_with_trial_for_business().await;
    assert_eq!(other.0.status, PlanStatus::Active);
    assert_eq!(other.1, 1, "business has no trial: its first month is charged");
}

async fn world_with_trial_for_business() -> (billing::plans::Plan, usize) {
    let world = world(30, 30).await;
    let reference = world
        .begin(request(Tier::Business, LicenseManagement::Automatic, None))
        .await;
    let plan = world
        .purchases
        .checkout_completed(&reference, &world.customer().await, "seti_1", now())
        .await
        .unwrap();
    (plan, world.charges())
}

#[tokio::test]
async fn completing_an_upgrade_again_answers_the_same_plan_and_charges_once() {
    // Given an upgrade completed by Checkout
    let world = world(6, 0).await;
    let reference = world
        .begin(request(Tier::Basic, LicenseManagement::Manual, Some(8)))
        .await;
    let first = world
        .purchases
        .checkout_completed(&reference, &world.customer().await, "seti_1", now())
        .await
        .unwrap();
    // When the same event is handled again (a redelivery)
    let again = world
        .purchases
        .checkout_completed(&reference, &world.customer().await, "seti_1", now())
        .await
        .unwrap();
    // Then it is the same plan, paid once, with one ledger row of 8 licenses
    assert_eq!(first.id, again.id);
    assert_eq!(first.id, upgrade_id(&reference));
    assert_eq!(world.charges(), 1);
    let (book, upgrade) = world.purchases.current(world.entity(), now()).await.unwrap();
    assert_eq!(book.ledger.len(), 1);
    assert_eq!(book.ledger[0].licenses, 8);
    assert_eq!(upgrade.unwrap().state, UpgradeState::Started);
}

#[tokio::test]
async fn a_declined_card_leaves_no_plan_and_the_upgrade_keeps_stripes_message() {
    // Given an upgrade waiting for its charge
    let world = world(6, 0).await;
    let reference = world
        .begin(request(Tier::Basic, LicenseManagement::Automatic, None))
        .await;
    // When the card is declined
    world
        .stripe
        .set_default_card(&world.customer().await, "pm_card_chargeDeclined");
    let declined = world
        .purchases
        .complete_upgrade(world.entity(), upgrade_id(&reference), now())
        .await;
    // Then no plan exists and the upgrade says why, also when asked again
    assert!(matches!(declined, Err(PurchaseError::Declined(ref m)) if m == "Your card was declined."));
    let (book, upgrade) = world.purchases.current(world.entity(), now()).await.unwrap();
    assert!(book.plan.is_none() && !book.ever_had_plan);
    assert_eq!(
        upgrade.unwrap().state,
        UpgradeState::Declined {
            message: "Your card was declined.".into()
        }
    );
    let again = world
        .purchases
        .complete_upgrade(world.entity(), upgrade_id(&reference), now())
        .await;
    assert!(matches!(again, Err(PurchaseError::Declined(_))));
    // And its one invoice is void: nothing is owed
    let statuses: Vec<InvoiceStatus> = world.stripe.invoices().iter().map(|i| i.status).collect();
    assert_eq!(statuses, [InvoiceStatus::Void]);
    assert_eq!(world.charges(), 0);
}

#[tokio::test]
async fn stripe_failing_during_the_charge_leaves_the_upgrade_pending_and_a_retry_completes_it() {
    // Given an upgrade waiting for its charge
    let world = world(6, 0).await;
    let reference = world
        .begin(request(Tier::Basic, LicenseManagement::Automatic, None))
        .await;
    // When Stripe is unavailable for the charge
    world.stripe.fail_next(BillingError::Unavailable("timeout".into()));
    let failed = world
        .purchases
        .complete_upgrade(world.entity(), upgrade_id(&reference), now())
        .await;
    // Then nothing is stored, and the retry (Stripe's redelivery) starts the plan
    assert!(matches!(failed, Err(PurchaseError::Stripe(_))));
    let (book, upgrade) = world.purchases.current(world.entity(), now()).await.unwrap();
    assert!(book.plan.is_none());
    assert_eq!(upgrade.unwrap().state, UpgradeState::AwaitingCard);
    let plan = world
        .purchases
        .complete_upgrade(world.entity(), upgrade_id(&reference), now())
        .await
        .unwrap();
    assert_eq!(plan.status, PlanStatus::Active);
}

#[tokio::test]
async fn two_upgrade_attempts_make_one_stripe_customer_and_a_live_plan_refuses_another() {
    // Given an owner who started an upgrade and came back to start another
    let world = world(6, 0).await;
    world
        .begin(request(Tier::Basic, LicenseManagement::Automatic, None))
        .await;
    let reference = world
        .begin(request(Tier::Business, LicenseManagement::Automatic, None))
        .await;
    // Then one Stripe customer exists
    assert_eq!(world.stripe.customer_count(), 1);
    // When the second completes, then a third is refused: a plan is live
    world
        .purchases
        .checkout_completed(&reference, &world.customer().await, "seti_1", now())
        .await
        .unwrap();
    let refused = world
        .purchases
        .begin_upgrade(
            world.entity(),
            request(Tier::Basic, LicenseManagement::Automatic, None),
            "owner@example.org",
            &links(),
            now(),
        )
        .await;
    assert!(matches!(
        refused,
        Err(PurchaseError::Plan(billing::plans::PlanError::AlreadyHasPlan))
    ));
}

#[tokio::test]
async fn a_realm_cannot_buy_a_plan_while_its_server_has_one() {
    // Given a realm whose server is on a plan of its own
    let world = world(6, 0).await;
    let owner_key = billing::remote::records::realm_owner_key(world.realm);
    let owner = world
        .purchases
        .documents
        .get_document(&owner_key, now())
        .await
        .unwrap()
        .unwrap();
    let server: Uuid = serde_json::from_value(owner.body["server_uuid"].clone()).unwrap();
    billing_testing::store_automatic_basic_plan(
        world.purchases.documents.as_ref(),
        Entity::Server(server),
        6,
        None,
        now(),
    )
    .await;
    // When the realm's owner upgrades
    let refused = world
        .purchases
        .begin_upgrade(
            world.entity(),
            request(Tier::Basic, LicenseManagement::Automatic, None),
            "owner@example.org",
            &links(),
            now(),
        )
        .await;
    // Then it is refused, and no Stripe customer was made
    assert!(matches!(
        refused,
        Err(PurchaseError::Plan(billing::plans::PlanError::PlanElsewhere))
    ));
    assert_eq!(world.stripe.customer_count(), 0);
}
