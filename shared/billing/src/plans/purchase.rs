//! Buying and changing a self-hosted plan (API.md, "Pages"): the steps behind the `upgrade/`
//! and `billing/` forms and behind `checkout.session.completed`, over the stored book and
//! Stripe.
//!
//! An upgrade is first written down as a [`PendingUpgrade`] whose id becomes the plan's id and
//! the root of every Stripe key of the purchase, with what it buys fixed at that moment (users
//! counted, price and discount, period start): every retry and every redelivered Checkout
//! completion charges the same thing under the same keys.
//!
//! One purchase at a time per server: accepting a form writes a [`PurchaseClaim`] under the
//! server's key (a realm's owner, or the server itself) in the same transaction as the pending
//! upgrade, on the condition that no other purchase holds it. Holding the claim, the live plans
//! of the entity, its server and its realms are read again; since every plan bought is written
//! with the claim's release, nothing can start a plan in between. A second form for the same
//! server is refused before anything is charged; a second Checkout for an entity whose newer
//! form replaced it saves its card and is refused.
//!
//! 1. `begin_upgrade` validates the form against fresh usage data, makes the entity's Stripe
//!    customer once (keyed by the entity), claims and stores the pending upgrade, and either
//!    sends the browser to a Checkout Session in `mode=setup` (no card saved yet) or completes
//!    it at once.
//! 2. `checkout_completed` (the webhook, or the return page) makes the saved card the
//!    customer's default, records its last four digits, and completes the upgrade.
//! 3. `complete_upgrade` starts a trial (nothing charged) or charges the first period through
//!    [`charge`] (an invoice named `upgrade:<id>` in Stripe's metadata,
//!    found again by it however old its keys); the plan, the upgrade's outcome and the claim's
//!    release are written in one transaction, only once the invoice is paid. A declined card
//!    voids the invoice, and the upgrade records Stripe's message for the billing page; no plan
//!    exists.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::charge::{Charged, InvoiceSpec, charge, void_declined};
use super::stored::{self, PlannedWrite, StoredBook};
use super::{
    Book, Changes, Entity, InvoiceItem, LicenseManagement, ManualChange, Plan, PlanError, PlanStatus, Prices, Schedule,
    Tier, UpgradeContext, UpgradeRequest, end_of_cycle, next_period_start,
};
use crate::remote::records::{RealmOwner, realm_owner_key};
use crate::remote::usage::{LatestCounts, UploadMarker, usage_collection};
use crate::store::{AsConflict, DocumentStore, DocumentWrite, StoreError, member_key, retry_on_conflict};
use crate::stripe::{Billing, BillingError, SetupCheckout, idempotency_key};

/// Usage data older than this cannot count an entity's users: the upgrade page refuses.
pub const FRESH_DATA: Duration = Duration::days(2);

/// How long a pending upgrade (and the outcome the billing page shows) is kept.
pub const KEEP_UPGRADES_FOR: Duration = Duration::days(30);

/// Where an upgrade is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum UpgradeState {
    /// Waiting for the card from Checkout (or for its charge).
    AwaitingCard,
    /// The plan started.
    Started,
    /// The card was declined: Stripe's message. No plan.
    Declined {
        /// What Stripe said.
        message: String,
    },
    /// The upgrade could no longer be made when the card arrived (a plan started meanwhile).
    Refused {
        /// Why.
        message: String,
    },
}

/// An upgrade asked for on the `upgrade/` page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpgrade {
    /// Its id: the plan's id once it starts.
    pub id: Uuid,
    /// Whose.
    pub entity: Entity,
    /// What was asked for.
    pub tier: Tier,
    /// How often it renews.
    pub schedule: Schedule,
    /// Who sets the license count.
    pub license_management: LicenseManagement,
    /// The count asked for (manual management).
    pub licenses: Option<u32>,
    /// When it was asked for: the first period starts then.
    pub created_at: DateTime<Utc>,
    /// The users counted when it was asked for.
    #[serde(default)]
    pub billed_count: Option<u32>,
    /// Cents per license then, discount applied.
    #[serde(default)]
    pub price_per_license: Option<u64>,
    /// The discount then, in percent.
    #[serde(default)]
    pub discount_percent: Option<u8>,
    /// Where it is.
    #[serde(flatten)]
    pub state: UpgradeState,
}

/// Who holds the one purchase a server and its realms may have in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseClaim {
    /// The entity buying.
    pub entity: Entity,
    /// Its pending upgrade.
    pub upgrade: Uuid,
    /// Whether the purchase is being charged (no other form may replace it then).
    pub charging: bool,
    /// When it was claimed.
    pub claimed_at: DateTime<Utc>,
}

/// What the hourly job did with one stalled purchase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResumedPurchase {
    /// Whose.
    pub entity: Entity,
    /// Its pending upgrade.
    pub upgrade: Uuid,
    /// `started`, `released` (its upgrade was gone), or why it did not start.
    pub outcome: String,
}

/// A purchase charging for longer than this has stalled: a request for the same entity resumes it.
pub const STALLED_AFTER: Duration = Duration::minutes(2);

/// The collection of purchase claims.
pub const PURCHASE_CLAIMS: &str = "purchase_claims";

/// How long the claim an administrator's plan start writes holds when it displaced nothing:
/// only as long as the write itself; what keeps a later purchase out is the plan it wrote with
/// it.
const ADMIN_CLAIM_FOR: Duration = Duration::seconds(1);

/// The write that makes an administrator's plan start (a legacy plan, an approved sponsorship)
/// one at a time with purchases: the server's purchase claim, taken in the start's own
/// transaction. Refused while a purchase of the server is being charged. A purchase only
/// waiting for Checkout is displaced: the claim then names no upgrade, for the entity that
/// held it and as long as its Checkout lives, so that Checkout, if completed, saves the card
/// and is refused (it never takes the claim again to buy behind the plan started here), while
/// a new form of that entity may still replace it. A purchase that claims after this re-reads
/// the plans and finds the one started here; one that claimed before makes this write fail
/// its condition, and the start is read again. The caller checks the live plans after this
/// read, inside the same attempt.
pub async fn admin_claim_write(
    documents: &dyn DocumentStore,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<PlannedWrite, PurchaseError> {
    let group = match server_of(documents, entity, now).await? {
        Some(server) => server,
        None => entity_parts(entity).1,
    };
    let key = member_key(PURCHASE_CLAIMS, &group.to_string());
    let (expected, holder, holds_for) = match documents.get_document(&key, now).await? {
        None => (None, entity, ADMIN_CLAIM_FOR),
        Some(document) => {
            let claim: PurchaseClaim = decode(&key, document.body.clone())?;
            if claim.charging {
                return Err(PurchaseError::PurchaseInProgress);
            }
            (Some(document.version), claim.entity, CLAIM_AWAITING_CARD_FOR)
        }
    };
    let claim = PurchaseClaim {
        entity: holder,
        upgrade: Uuid::nil(),
        charging: false,
        claimed_at: now,
    };
    Ok(PlannedWrite {
        key,
        body: serde_json::to_value(&claim).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        expected,
        expires_at: Some(now + holds_for),
    })
}

/// How long a claim waiting for Checkout holds: as long as a Checkout Session stays open.
pub const CLAIM_AWAITING_CARD_FOR: Duration = Duration::hours(24);

impl PendingUpgrade {
    fn request(&self) -> UpgradeRequest {
        UpgradeRequest {
            tier: self.tier,
            schedule: self.schedule,
            license_management: self.license_management,
            licenses: self.licenses,
        }
    }

    /// The reference a Checkout Session carries in its metadata (`pending_upgrade`).
    pub fn reference(&self) -> String {
        let (kind, uuid) = entity_parts(self.entity);
        format!("{kind}/{uuid}/{}", self.id)
    }
}

fn entity_parts(entity: Entity) -> (&'static str, Uuid) {
    match entity {
        Entity::Realm(uuid) => ("realm", uuid),
        Entity::Server(uuid) => ("server", uuid),
    }
}

/// The entity and upgrade a Checkout reference names.
pub fn parse_reference(reference: &str) -> Option<(Entity, Uuid)> {
    let mut parts = reference.split('/');
    let (kind, entity, upgrade) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let entity_uuid = crate::ids::parse_canonical_uuid(entity)?;
    let upgrade = crate::ids::parse_canonical_uuid(upgrade)?;
    let entity = match kind {
        "realm" => Entity::Realm(entity_uuid),
        "server" => Entity::Server(entity_uuid),
        _ => return None,
    };
    Some((entity, upgrade))
}

fn upgrade_key(entity: Entity, id: Uuid) -> String {
    member_key(&stored::collection(entity), &format!("upgrade#{id}"))
}

/// What the entity's server last told us.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// The users billed now (`None`: the server never reported the entity).
    pub billed: Option<u32>,
    /// The server's last upload.
    pub last_upload: Option<DateTime<Utc>>,
}

impl Usage {
    /// Whether the data can count the entity's users at `now`.
    pub fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        self.last_upload.is_some_and(|at| now - at <= FRESH_DATA)
    }
}

/// Where the browser goes from Checkout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutLinks {
    /// Once the card is saved: the billing page.
    pub success_url: String,
    /// When the customer gives up: the upgrade page.
    pub cancel_url: String,
}

/// How an upgrade went on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeStart {
    /// The browser goes to Stripe's Checkout to save a card first.
    Checkout {
        /// The Checkout page.
        url: String,
    },
    /// The plan started (a trial, or paid at once).
    Started(Box<Plan>),
}

/// Why a purchase step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PurchaseError {
    /// The plan rules refused; nothing changed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The card was declined: Stripe's message. The invoice was voided; no plan.
    #[error("{0}")]
    Declined(String),
    /// No such pending upgrade (unknown, or older than [`KEEP_UPGRADES_FOR`]).
    #[error("no such pending upgrade")]
    UnknownUpgrade,
    /// The entity's server has not uploaded for [`FRESH_DATA`].
    #[error("missing data")]
    MissingData,
    /// Another purchase for this server or one of its organizations is being made.
    #[error(
        "Another purchase for this server or one of its organizations is in progress; nothing was charged for this one."
    )]
    PurchaseInProgress,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stripe failed or refused; nothing was charged that a retry would charge again.
    #[error(transparent)]
    Stripe(BillingError),
}

impl AsConflict for PurchaseError {
    fn is_conflict(&self) -> bool {
        matches!(
            self,
            PurchaseError::Store(StoreError::VersionConflict | StoreError::AlreadyExists)
        )
    }
}

impl From<BillingError> for PurchaseError {
    fn from(error: BillingError) -> Self {
        match error {
            BillingError::CardDeclined(message) => PurchaseError::Declined(message),
            other => PurchaseError::Stripe(other),
        }
    }
}

/// Self-hosted purchases: the store, Stripe and the settings they follow.
#[derive(Clone)]
pub struct Purchases {
    /// Where books, usage and pending upgrades live.
    pub documents: Arc<dyn DocumentStore>,
    /// Stripe.
    pub stripe: Arc<dyn Billing>,
    /// `SELF_HOSTED_FREE_TRIAL_DAYS`.
    pub trial_days: u32,
    /// The list prices.
    pub prices: Prices,
}

impl Purchases {
    /// Purchases keeping books in `documents` and charging through `stripe`, with the trial of
    /// `SELF_HOSTED_FREE_TRIAL_DAYS` and the list prices.
    pub fn from_env(
        env: &dyn crate::config::Environment,
        documents: Arc<dyn DocumentStore>,
        stripe: Arc<dyn Billing>,
    ) -> Result<Self, crate::config::ConfigError> {
        Ok(Purchases {
            documents,
            stripe,
            trial_days: crate::config::self_hosted_free_trial_days(env)?,
            prices: Prices::default(),
        })
    }

    /// The same purchases, their documents restricted to what `function` declares.
    pub fn declared(self, function: &'static str, operations: &'static [crate::access::Operation]) -> Self {
        Purchases {
            documents: crate::access::declared_documents(self.documents, function, operations),
            ..self
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, body: Value) -> Result<T, StoreError> {
    serde_json::from_value(body).map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))
}

impl Purchases {
    /// The billed count and last upload of the entity's server.
    pub async fn usage(&self, entity: Entity, now: DateTime<Utc>) -> Result<Usage, StoreError> {
        usage_of(self.documents.as_ref(), entity, now).await
    }
}

/// The billed count and last upload of the entity's server.
pub async fn usage_of(documents: &dyn DocumentStore, entity: Entity, now: DateTime<Utc>) -> Result<Usage, StoreError> {
    let Some(server) = server_of(documents, entity, now).await? else {
        return Ok(Usage::default());
    };
    let last_upload = last_upload_of(documents, server, now).await?;
    let latest_key = member_key(&usage_collection(server), "latest");
    let billed = match documents.get_document(&latest_key, now).await? {
        Some(latest) => {
            let latest = decode::<LatestCounts>(&latest_key, latest.body)?;
            match entity {
                Entity::Realm(realm) => Some(latest.realms.get(&realm).map_or(0, |(_, count)| *count)),
                Entity::Server(_) => Some(latest.total()),
            }
        }
        None => None,
    };
    Ok(Usage { billed, last_upload })
}

/// The server whose uploads count for `entity`: itself, or a realm's owner (`None` for a realm
/// no server has listed).
pub async fn server_of(
    documents: &dyn DocumentStore,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, StoreError> {
    match entity {
        Entity::Server(server) => Ok(Some(server)),
        Entity::Realm(realm) => {
            let key = realm_owner_key(realm);
            match documents.get_document(&key, now).await? {
                Some(owner) => Ok(Some(decode::<RealmOwner>(&key, owner.body)?.server_uuid)),
                None => Ok(None),
            }
        }
    }
}

/// When `server` last uploaded its usage, if ever.
pub async fn last_upload_of(
    documents: &dyn DocumentStore,
    server: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let marker_key = member_key(&usage_collection(server), "marker");
    match documents.get_document(&marker_key, now).await? {
        Some(marker) => Ok(decode::<UploadMarker>(&marker_key, marker.body)?.last_upload_at),
        None => Ok(None),
    }
}

/// The other billing entities whose plans exclude this one's: a realm's server, or a server's
/// realms (a server and any of its realms never both have a live plan).
pub async fn related_entities(
    documents: &dyn DocumentStore,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<Vec<Entity>, StoreError> {
    Ok(match entity {
        Entity::Realm(realm) => {
            let key = realm_owner_key(realm);
            match documents.get_document(&key, now).await? {
                Some(owner) => vec![Entity::Server(decode::<RealmOwner>(&key, owner.body)?.server_uuid)],
                None => Vec::new(),
            }
        }
        Entity::Server(server) => documents
            .list_documents(&crate::remote::records::server_realms(server), now)
            .await?
            .into_iter()
            .filter_map(|(member, _)| crate::ids::parse_canonical_uuid(&member))
            .map(Entity::Realm)
            .collect(),
    })
}

/// Whether a related entity ([`related_entities`]) has a live plan now.
pub async fn live_plan_elsewhere(
    documents: &dyn DocumentStore,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    for other in related_entities(documents, entity, now).await? {
        let stored = stored::load(documents, other, now).await?;
        if end_of_cycle(&stored.book, now).0.plan.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A sponsorship request from the `sponsorship/` form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SponsorshipRequest {
    /// The organization's type (`opensource`, `nonprofit`, `education`, `research`, `event`,
    /// `other`).
    pub org_type: String,
    /// Its website, if any.
    pub website: Option<String>,
    /// What it does and why it asks.
    pub description: String,
    /// The users it expects.
    pub expected_total_users: u32,
    /// The users it pays for today.
    pub paid_users_count: u32,
    /// The plan it would use.
    pub plan_to_use: String,
    /// Who asked (a billing user's address): told of the decision.
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
}

/// The organization types a sponsorship request may name.
pub const SPONSORSHIP_ORG_TYPES: [&str; 6] = ["opensource", "nonprofit", "education", "research", "event", "other"];

/// Stores a sponsorship request and marks the customer's sponsorship pending, in one write.
/// Refused while one is pending already or the entity is sponsored.
pub async fn request_sponsorship(
    documents: &dyn DocumentStore,
    entity: Entity,
    request: &SponsorshipRequest,
    now: DateTime<Utc>,
) -> Result<(), PurchaseError> {
    retry_on_conflict(|_| async move {
        let stored = stored::load(documents, entity, now).await?;
        let (book, cycle) = end_of_cycle(&stored.book, now);
        if book.customer.sponsorship_pending {
            return Err(PlanError::SponsorshipPending.into());
        }
        if book.plan.as_ref().is_some_and(|plan| plan.tier == Tier::Community) {
            return Err(PlanError::AlreadyCommunity.into());
        }
        let mut after = book.clone();
        after.customer.sponsorship_pending = true;
        let mut writes = stored::writes_for(&stored, &after, &cycle, now);
        writes.push(PlannedWrite {
            key: member_key(
                &stored::collection(entity),
                &format!("sponsorship#{:020}#{}", now.timestamp_micros(), Uuid::new_v4()),
            ),
            body: serde_json::to_value(request).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            expected: None,
            expires_at: None,
        });
        let writes: Vec<_> = writes.iter().map(PlannedWrite::as_write).collect();
        documents.put_documents(&writes, now).await?;
        tracing::info!(?entity, "sponsorship requested");
        Ok(())
    })
    .await
}

/// The entity's sponsorship requests, oldest first.
pub async fn sponsorship_requests(
    documents: &dyn DocumentStore,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<Vec<SponsorshipRequest>, StoreError> {
    documents
        .list_documents_range(
            &stored::collection(entity),
            Some("sponsorship#"),
            "sponsorship#~",
            100,
            now,
        )
        .await?
        .into_iter()
        .map(|(member, document)| decode(&member, document.body))
        .collect()
}

/// Whether the entity has a paid plan that is not scheduled to end (what keeps its server from
/// being deactivated).
pub async fn has_renewing_paid_plan(
    documents: &dyn DocumentStore,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let stored = stored::load(documents, entity, now).await?;
    let (book, _) = end_of_cycle(&stored.book, now);
    let renewing = |plan: &Plan| {
        plan.tier.is_paid()
            && !matches!(
                plan.status,
                PlanStatus::DowngradeAtEndOfCycle | PlanStatus::DowngradeAtEndOfFreeTrial
            )
    };
    Ok(book.plan.iter().chain(book.next_plan.iter()).any(renewing))
}

impl Purchases {
    /// The entity's book as of `now` (its end-of-cycle updates applied, not written: a read
    /// never writes), and its newest pending upgrade.
    pub async fn current(
        &self,
        entity: Entity,
        now: DateTime<Utc>,
    ) -> Result<(Book, Option<PendingUpgrade>), StoreError> {
        let stored = stored::load(self.documents.as_ref(), entity, now).await?;
        let (book, _) = end_of_cycle(&stored.book, now);
        Ok((book, self.latest_upgrade(entity, now).await?))
    }

    /// The newest upgrade asked for in the last [`KEEP_UPGRADES_FOR`].
    pub async fn latest_upgrade(
        &self,
        entity: Entity,
        now: DateTime<Utc>,
    ) -> Result<Option<PendingUpgrade>, StoreError> {
        let collection = stored::collection(entity);
        let mut upgrades = Vec::new();
        let mut after = "upgrade#".to_owned();
        loop {
            let page = self
                .documents
                .list_documents_range(&collection, Some(&after), "upgrade#~", 100, now)
                .await?;
            let full = page.len() == 100;
            for (member, document) in page {
                upgrades.push(decode::<PendingUpgrade>(&member, document.body)?);
                after = member;
            }
            if !full {
                break;
            }
        }
        Ok(upgrades.into_iter().max_by_key(|u| (u.created_at, u.id)))
    }

    /// The `upgrade/` form: see the module's documentation. `email` is who the Stripe
    /// customer is billed at, when one is made.
    pub async fn begin_upgrade(
        &self,
        entity: Entity,
        request: UpgradeRequest,
        email: &str,
        links: &CheckoutLinks,
        now: DateTime<Utc>,
    ) -> Result<UpgradeStart, PurchaseError> {
        if !request.tier.is_paid() {
            return Err(PlanError::NotForSale(request.tier.as_str()).into());
        }
        let usage = self.usage(entity, now).await?;
        if !usage.is_fresh(now) {
            return Err(PurchaseError::MissingData);
        }
        let (book, _) = self.current(entity, now).await?;
        match &book.plan {
            // On a legacy plan, the upgrade is scheduled from its end date.
            Some(plan) if plan.tier == Tier::Legacy && book.next_plan.is_some() => {
                return Err(PlanError::AlreadyScheduledUpgrade.into());
            }
            Some(plan) if plan.tier == Tier::Legacy => {}
            Some(_) => return Err(PlanError::AlreadyHasPlan.into()),
            None => {}
        }
        let billed = usage.billed.unwrap_or(0);
        super::licenses_to_buy(&request, billed)?;
        if live_plan_elsewhere(self.documents.as_ref(), entity, now).await? {
            return Err(PlanError::PlanElsewhere.into());
        }
        let customer = self.ensure_customer(entity, email, now).await?;
        let discount = book.customer.default_discount;
        let pending = PendingUpgrade {
            id: Uuid::new_v4(),
            entity,
            tier: request.tier,
            schedule: request.schedule,
            license_management: request.license_management,
            licenses: match request.license_management {
                LicenseManagement::Manual => request.licenses,
                LicenseManagement::Automatic => None,
            },
            created_at: now,
            billed_count: Some(billed),
            price_per_license: Some(super::discounted(
                self.prices.list_price(request.tier, request.schedule),
                discount,
            )),
            discount_percent: Some(discount),
            state: UpgradeState::AwaitingCard,
        };
        let card_on_file = book.customer.card_last4.is_some();
        if let Err(refused) = self.claim_and_store(&pending, card_on_file, now).await {
            if matches!(refused, PurchaseError::PurchaseInProgress) {
                self.resume_stalled_purchase(entity, now).await;
            }
            return Err(refused);
        }
        // Holding the claim, no other purchase of the server can start a plan: the live plans
        // read now stay true until this one settles.
        let (held, _) = self.current(entity, now).await?;
        let refusal = match &held.plan {
            Some(plan) if plan.tier == Tier::Legacy && held.next_plan.is_some() => {
                Some(PlanError::AlreadyScheduledUpgrade)
            }
            Some(plan) if plan.tier != Tier::Legacy => Some(PlanError::AlreadyHasPlan),
            _ if live_plan_elsewhere(self.documents.as_ref(), entity, now).await? => Some(PlanError::PlanElsewhere),
            _ => None,
        };
        if let Some(refusal) = refusal {
            let (pending, version) = self.pending(entity, pending.id, now).await?;
            let claim_key = self.claim_key(entity, now).await?;
            let claim = match self.documents.get_document(&claim_key, now).await? {
                Some(held) if decode::<PurchaseClaim>(&claim_key, held.body.clone())?.upgrade == pending.id => {
                    Some((claim_key, held.version))
                }
                _ => None,
            };
            let state = UpgradeState::Refused {
                message: refusal.to_string(),
            };
            self.settle(&pending, version, state, None, claim.as_ref(), now).await?;
            return Err(refusal.into());
        }
        if !card_on_file {
            let reference = pending.reference();
            let session = self
                .stripe
                .create_setup_checkout(
                    SetupCheckout {
                        customer: &customer,
                        success_url: &links.success_url,
                        cancel_url: &links.cancel_url,
                        pending_upgrade: &reference,
                    },
                    &idempotency_key("checkout", &pending.id.to_string(), "upgrade"),
                )
                .await?;
            tracing::info!(upgrade = %pending.id, "upgrade waits for a card from Checkout");
            return Ok(UpgradeStart::Checkout { url: session.url });
        }
        let plan = self.complete_upgrade(entity, pending.id, now).await?;
        Ok(UpgradeStart::Started(Box::new(plan)))
    }

    /// The key of the claim `entity`'s purchases take: its server's (a realm no server lists
    /// claims under its own uuid).
    async fn claim_key(&self, entity: Entity, now: DateTime<Utc>) -> Result<String, StoreError> {
        let group = match server_of(self.documents.as_ref(), entity, now).await? {
            Some(server) => server,
            None => entity_parts(entity).1,
        };
        Ok(member_key(PURCHASE_CLAIMS, &group.to_string()))
    }

    /// Writes the pending upgrade with its claim, in one transaction: refused while another
    /// purchase of the server holds the claim, except an older form of the same entity still
    /// waiting for Checkout (the newer form replaces it; its Checkout, if completed, is
    /// refused).
    async fn claim_and_store(
        &self,
        pending: &PendingUpgrade,
        charging: bool,
        now: DateTime<Utc>,
    ) -> Result<(), PurchaseError> {
        let claim_key = self.claim_key(pending.entity, now).await?;
        let body = serde_json::to_value(pending).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let upgrade_key = upgrade_key(pending.entity, pending.id);
        retry_on_conflict(|_| {
            let (claim_key, body, upgrade_key) = (&claim_key, &body, &upgrade_key);
            async move {
                let held = self.documents.get_document(claim_key, now).await?;
                let expected = match &held {
                    None => None,
                    Some(document) => {
                        let claim: PurchaseClaim = decode(claim_key, document.body.clone())?;
                        if claim.charging || claim.entity != pending.entity {
                            tracing::info!(upgrade = %pending.id, held_by = %claim.upgrade, "purchase refused: another is in progress");
                            return Err(PurchaseError::PurchaseInProgress);
                        }
                        Some(document.version)
                    }
                };
                let claim = PurchaseClaim {
                    entity: pending.entity,
                    upgrade: pending.id,
                    charging,
                    claimed_at: now,
                };
                let claim = serde_json::to_value(&claim).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let writes = [
                    DocumentWrite {
                        key: upgrade_key,
                        body,
                        expires_at: Some(now + KEEP_UPGRADES_FOR),
                        expected: None,
                    },
                    DocumentWrite {
                        key: claim_key,
                        body: &claim,
                        expires_at: (!charging).then_some(now + CLAIM_AWAITING_CARD_FOR),
                        expected,
                    },
                ];
                match self.documents.put_documents(&writes, now).await {
                    // Someone claimed between the read and the write: read again and decide.
                    Err(StoreError::AlreadyExists) => Err(StoreError::VersionConflict.into()),
                    other => Ok(other?),
                }
            }
        })
        .await
    }

    /// Completes the entity's own purchase that stalled while being charged (its request
    /// failed after the claim, and nothing has run it since): a form sent again is refused,
    /// and resumes the first one from what the store and Stripe hold. Best effort.
    async fn resume_stalled_purchase(&self, entity: Entity, now: DateTime<Utc>) {
        let Ok(claim_key) = self.claim_key(entity, now).await else {
            return;
        };
        let Ok(Some(held)) = self.documents.get_document(&claim_key, now).await else {
            return;
        };
        let Ok(claim) = decode::<PurchaseClaim>(&claim_key, held.body) else {
            return;
        };
        if claim.charging && claim.entity == entity && now - claim.claimed_at >= STALLED_AFTER {
            match Box::pin(self.complete_upgrade(entity, claim.upgrade, now)).await {
                Ok(plan) => tracing::info!(upgrade = %claim.upgrade, plan = %plan.id, "stalled purchase completed"),
                Err(error) => tracing::warn!(upgrade = %claim.upgrade, %error, "stalled purchase not completed"),
            }
        }
    }

    /// Moves the claim to "charging" for `pending`, taking it again if it had expired. `None`
    /// when another purchase holds it.
    async fn hold_claim_for_charge(
        &self,
        pending: &PendingUpgrade,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, u64)>, PurchaseError> {
        let claim_key = self.claim_key(pending.entity, now).await?;
        retry_on_conflict(|_| {
            let claim_key = &claim_key;
            async move {
                let held = self.documents.get_document(claim_key, now).await?;
                let expected = match &held {
                    None => None,
                    Some(document) => {
                        let claim: PurchaseClaim = decode(claim_key, document.body.clone())?;
                        if claim.upgrade != pending.id {
                            return Ok(None);
                        }
                        if claim.charging {
                            return Ok(Some((claim_key.clone(), document.version)));
                        }
                        Some(document.version)
                    }
                };
                let claim = PurchaseClaim {
                    entity: pending.entity,
                    upgrade: pending.id,
                    charging: true,
                    claimed_at: now,
                };
                let claim = serde_json::to_value(&claim).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let version = match self
                    .documents
                    .put_document(claim_key, &claim, None, expected, now)
                    .await
                {
                    Err(StoreError::AlreadyExists) => return Err(StoreError::VersionConflict.into()),
                    other => other?,
                };
                Ok(Some((claim_key.clone(), version)))
            }
        })
        .await
    }

    /// The entity's Stripe customer, made once: the key names the entity, so two racing
    /// upgrades make one customer.
    async fn ensure_customer(&self, entity: Entity, email: &str, now: DateTime<Utc>) -> Result<String, PurchaseError> {
        retry_on_conflict(|_| async move {
            let stored = stored::load(self.documents.as_ref(), entity, now).await?;
            if let Some(customer) = &stored.book.customer.stripe_customer {
                return Ok(customer.clone());
            }
            let (kind, uuid) = entity_parts(entity);
            let made = self
                .stripe
                .create_entity_customer(
                    entity,
                    email,
                    &idempotency_key("entity_customer", &format!("{kind}/{uuid}"), "v1"),
                )
                .await?;
            let mut after = stored.book.clone();
            after.customer.stripe_customer = Some(made.id.clone());
            stored::save(self.documents.as_ref(), &stored, &after, &Changes::default(), now).await?;
            tracing::info!(customer = %made.id, "Stripe customer made for a self-hosted entity");
            Ok(made.id)
        })
        .await
    }

    async fn pending(
        &self,
        entity: Entity,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(PendingUpgrade, u64), PurchaseError> {
        let key = upgrade_key(entity, id);
        let document = self
            .documents
            .get_document(&key, now)
            .await?
            .ok_or(PurchaseError::UnknownUpgrade)?;
        Ok((decode(&key, document.body)?, document.version))
    }

    /// Starts the upgrade's plan, once: a trial, or the first period charged on an invoice
    /// paid at once. A completed upgrade answers its plan again; a declined one its message.
    /// After a fault at any step, running it again (at once or days later) resumes from what
    /// the store and Stripe hold.
    pub async fn complete_upgrade(&self, entity: Entity, id: Uuid, now: DateTime<Utc>) -> Result<Plan, PurchaseError> {
        let (pending, version) = self.pending(entity, id, now).await?;
        if let Some(done) = self.settled_outcome(&pending, now).await {
            self.release_claim_of(&pending, now).await;
            return done;
        }
        let Some(claim) = self.hold_claim_for_charge(&pending, now).await? else {
            let book = stored::load(self.documents.as_ref(), entity, now).await?.book;
            if self.first_period_paid(&book, id).await? {
                tracing::error!(upgrade = %id, "first period paid, but another purchase holds the claim: needs a person");
                return Err(PurchaseError::Stripe(BillingError::Rejected(format!(
                    "the first period of upgrade {id} is paid, but another purchase holds the server's claim"
                ))));
            }
            let message = PurchaseError::PurchaseInProgress.to_string();
            tracing::info!(upgrade = %id, "upgrade refused: another purchase of the server holds the claim");
            self.settle(
                &pending,
                version,
                UpgradeState::Refused {
                    message: message.clone(),
                },
                None,
                None,
                now,
            )
            .await?;
            return Err(PurchaseError::PurchaseInProgress);
        };
        retry_on_conflict(|_| {
            let claim = &claim;
            async move {
                let (pending, version) = self.pending(entity, id, now).await?;
                if let Some(done) = self.settled_outcome(&pending, now).await {
                    // Settled by a racing completion after this one took the claim again: the
                    // claim must not outlive the purchase (released only if it still names it).
                    self.release_claim_of(&pending, now).await;
                    return done;
                }
                self.charge_and_start(pending, version, claim, now).await
            }
        })
        .await
    }

    /// Releases the server's claim if it still names `pending`, which has settled (a racing
    /// completion took it again after the settlement). Best effort.
    async fn release_claim_of(&self, pending: &PendingUpgrade, now: DateTime<Utc>) {
        let Ok(key) = self.claim_key(pending.entity, now).await else {
            return;
        };
        let Ok(Some(held)) = self.documents.get_document(&key, now).await else {
            return;
        };
        if decode::<PurchaseClaim>(&key, held.body).is_ok_and(|claim| claim.upgrade == pending.id) {
            self.release_claim(&(key, held.version), now).await;
        }
    }

    /// Resumes every purchase whose claim has been charging for [`STALLED_AFTER`]: its request
    /// failed after the claim (a card on file charged, then the plan not written), and no form
    /// or Checkout completion came back to finish it. The hourly invoicing job runs this, so a
    /// customer charged by a request that died has their plan within the hour.
    pub async fn resume_stalled_purchases(&self, now: DateTime<Utc>) -> Result<Vec<ResumedPurchase>, StoreError> {
        let mut resumed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .documents
                .list_documents_range(PURCHASE_CLAIMS, after.as_deref(), "~", 100, now)
                .await?;
            let full = page.len() == 100;
            for (member, document) in page {
                after = Some(member.clone());
                let Ok(claim) = serde_json::from_value::<PurchaseClaim>(document.body) else {
                    continue;
                };
                if !claim.charging || now - claim.claimed_at < STALLED_AFTER {
                    continue;
                }
                let outcome = match self.complete_upgrade(claim.entity, claim.upgrade, now).await {
                    Ok(_) => "started".to_owned(),
                    Err(PurchaseError::UnknownUpgrade) => {
                        // Its upgrade is gone (older than it is kept): nothing can be resumed.
                        // A paid one keeps its claim, for a person; an unpaid one lets go.
                        let book = stored::load(self.documents.as_ref(), claim.entity, now).await?.book;
                        match self.first_period_paid(&book, claim.upgrade).await {
                            Ok(false) => {
                                let key = member_key(PURCHASE_CLAIMS, &member);
                                self.release_claim(&(key, document.version), now).await;
                                "released".to_owned()
                            }
                            Ok(true) => {
                                tracing::error!(upgrade = %claim.upgrade, "a paid purchase lost its upgrade: needs a person");
                                "paid, upgrade gone: needs a person".to_owned()
                            }
                            Err(error) => format!("not started: {error}"),
                        }
                    }
                    Err(error) => format!("not started: {error}"),
                };
                tracing::info!(entity = ?claim.entity, upgrade = %claim.upgrade, %outcome, "stalled purchase resumed");
                resumed.push(ResumedPurchase {
                    entity: claim.entity,
                    upgrade: claim.upgrade,
                    outcome,
                });
            }
            if !full {
                return Ok(resumed);
            }
        }
    }

    /// Releases a claim this purchase holds (best effort: it is released only at the version
    /// it was taken at).
    async fn release_claim(&self, (key, version): &(String, u64), now: DateTime<Utc>) {
        if let Err(error) = self
            .documents
            .put_documents(
                &[DocumentWrite {
                    key,
                    body: &Value::Null,
                    expires_at: Some(now),
                    expected: Some(*version),
                }],
                now,
            )
            .await
        {
            tracing::info!(%error, "purchase claim not released: it changed since");
        }
    }

    /// The answer of an upgrade that has settled already; `None` while it awaits its card.
    async fn settled_outcome(
        &self,
        pending: &PendingUpgrade,
        now: DateTime<Utc>,
    ) -> Option<Result<Plan, PurchaseError>> {
        match &pending.state {
            UpgradeState::AwaitingCard => None,
            UpgradeState::Started => Some(match stored::load(self.documents.as_ref(), pending.entity, now).await {
                Ok(stored) => stored
                    .history
                    .iter()
                    .find(|plan| plan.id == pending.id)
                    .cloned()
                    .ok_or(PurchaseError::UnknownUpgrade),
                Err(error) => Err(error.into()),
            }),
            UpgradeState::Declined { message } => Some(Err(PurchaseError::Declined(message.clone()))),
            UpgradeState::Refused { message } => Some(Err(PlanError::Refused(message.clone()).into())),
        }
    }

    /// The plan the upgrade makes, from what was fixed when its form was accepted, charged when
    /// it starts now; its outcome written with the claim's release.
    async fn charge_and_start(
        &self,
        pending: PendingUpgrade,
        version: u64,
        claim: &(String, u64),
        now: DateTime<Utc>,
    ) -> Result<Plan, PurchaseError> {
        let id = pending.id;
        let entity = pending.entity;
        let stored = stored::load(self.documents.as_ref(), entity, now).await?;
        let billed_count = match pending.billed_count {
            Some(count) => count,
            None => self.usage(entity, now).await?.billed.unwrap_or(0),
        };
        let (book, cycle) = end_of_cycle(&stored.book, now);
        let context = UpgradeContext {
            billed_count,
            trial_days: self.trial_days,
            prices: self.prices,
            now: pending.created_at.min(now),
            plan_id: id,
        };
        let refusal = if live_plan_elsewhere(self.documents.as_ref(), entity, now).await? {
            Some(PlanError::PlanElsewhere)
        } else {
            None
        };
        let (mut after, mut changes) = match refusal
            .map_or_else(|| super::upgrade(&book, &pending.request(), &context), Err)
        {
            Ok(done) => done,
            Err(refusal) if self.first_period_paid(&book, id).await? => {
                // Paid by an earlier attempt whose plan was never written, and something
                // else started since (an administrator's legacy or community plan):
                // refusing now would keep the money without a plan. The claim stays; a
                // person decides.
                tracing::error!(upgrade = %id, %refusal, "first period paid, but the plan can no longer start: needs a person");
                return Err(PurchaseError::Stripe(BillingError::Rejected(format!(
                    "the first period of upgrade {id} is paid, but its plan can no longer start: {refusal}"
                ))));
            }
            Err(refusal) => {
                let state = UpgradeState::Refused {
                    message: refusal.to_string(),
                };
                self.settle(&pending, version, state, None, Some(claim), now).await?;
                return Err(refusal.into());
            }
        };
        // What was fixed at acceptance holds, whatever changed since.
        for plan in [after.plan.as_mut(), after.next_plan.as_mut()].into_iter().flatten() {
            if plan.id == id {
                if let Some(price) = pending.price_per_license {
                    plan.price_per_license = price;
                }
                if let Some(discount) = pending.discount_percent {
                    plan.discount_percent = discount;
                }
            }
        }
        let mut all = cycle;
        all.rows.append(&mut changes.rows);
        all.ended.append(&mut changes.ended);
        // The plan bought: the live one, or (on a legacy plan) the one scheduled after it,
        // which is charged by the invoicing run at its start.
        let plan = [after.plan.as_ref(), after.next_plan.as_ref()]
            .into_iter()
            .flatten()
            .find(|plan| plan.id == id)
            .cloned()
            .expect("an upgrade starts or schedules its plan");
        if plan.status != PlanStatus::Active && self.first_period_paid(&book, id).await? {
            // Paid as an active plan by an earlier attempt, now a trial or a scheduled plan
            // (something changed meanwhile): starting it would charge the period again later.
            tracing::error!(upgrade = %id, status = ?plan.status, "first period paid, but the plan would start unpaid: needs a person");
            return Err(PurchaseError::Stripe(BillingError::Rejected(format!(
                "the first period of upgrade {id} is paid, but its plan would now start as {:?}",
                plan.status
            ))));
        }
        if plan.status == PlanStatus::Active {
            let customer =
                after
                    .customer
                    .stripe_customer
                    .clone()
                    .ok_or(PurchaseError::Stripe(BillingError::Rejected(
                        "the entity has no Stripe customer".into(),
                    )))?;
            let licenses = after.last_row().map_or(0, |row| row.licenses);
            let start = plan.billing_cycle_anchor;
            let item = InvoiceItem {
                idempotency_key: format!("upgrade:{id}:first-period"),
                description: format!(
                    "{} ({}), first period",
                    plan.tier.display_name(),
                    schedule_name(plan.schedule)
                ),
                quantity: licenses,
                unit_amount: plan.price_per_license,
                period: (start, next_period_start(start, plan.schedule, start)),
            };
            let reference = format!("upgrade:{id}");
            let spec = InvoiceSpec {
                customer: &customer,
                reference: &reference,
                description: &item.description,
                lines: std::slice::from_ref(&item),
                auto_advance: false,
            };
            match charge(self.stripe.as_ref(), spec, None).await? {
                Charged::Paid { invoice } => tracing::info!(upgrade = %id, %invoice, "first period paid"),
                Charged::Declined { invoice, message } => {
                    // Nothing is owed for a plan that did not start.
                    void_declined(self.stripe.as_ref(), &reference, &invoice).await?;
                    tracing::info!(upgrade = %id, "card declined; no plan");
                    let state = UpgradeState::Declined {
                        message: message.clone(),
                    };
                    self.settle(&pending, version, state, None, Some(claim), now).await?;
                    return Err(PurchaseError::Declined(message));
                }
                Charged::Voided { .. } => {
                    let message = "Your card was declined.".to_owned();
                    let state = UpgradeState::Declined {
                        message: message.clone(),
                    };
                    self.settle(&pending, version, state, None, Some(claim), now).await?;
                    return Err(PurchaseError::Declined(message));
                }
            }
        }
        // Settled when the store accepts it: a write lost to a concurrent upload is re-read and
        // re-run, and the charge above finds the invoice paid.
        after.ever_had_plan = true;
        let writes = stored::writes_for(&stored, &after, &all, now);
        self.settle(&pending, version, UpgradeState::Started, Some(writes), Some(claim), now)
            .await?;
        tracing::info!(upgrade = %id, plan = %plan.id, status = ?plan.status, "self-hosted plan started");
        Ok(plan)
    }

    /// Whether Stripe holds a paid first-period invoice of the upgrade.
    async fn first_period_paid(&self, book: &Book, id: Uuid) -> Result<bool, PurchaseError> {
        let Some(customer) = &book.customer.stripe_customer else {
            return Ok(false);
        };
        let found = self.stripe.find_invoice(customer, &format!("upgrade:{id}")).await?;
        Ok(found.is_some_and(|invoice| invoice.status == crate::stripe::InvoiceStatus::Paid))
    }

    /// Writes the upgrade's outcome, with the plan's writes when it started and the claim's
    /// release: all or nothing.
    async fn settle(
        &self,
        pending: &PendingUpgrade,
        version: u64,
        state: UpgradeState,
        plan_writes: Option<Vec<PlannedWrite>>,
        claim: Option<&(String, u64)>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let settled = PendingUpgrade {
            state,
            ..pending.clone()
        };
        let key = upgrade_key(pending.entity, pending.id);
        let body = serde_json::to_value(&settled).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut writes: Vec<DocumentWrite<'_>> = vec![DocumentWrite {
            key: &key,
            body: &body,
            expires_at: Some(pending.created_at + KEEP_UPGRADES_FOR),
            expected: Some(version),
        }];
        let plan_writes = plan_writes.unwrap_or_default();
        writes.extend(plan_writes.iter().map(PlannedWrite::as_write));
        let released = Value::Null;
        if let Some((claim_key, claim_version)) = claim {
            writes.push(DocumentWrite {
                key: claim_key,
                body: &released,
                expires_at: Some(now),
                expected: Some(*claim_version),
            });
        }
        self.documents.put_documents(&writes, now).await
    }

    /// `checkout.session.completed` for `reference`: the card the session saved becomes the
    /// customer's default, its last four digits are recorded, and the upgrade completes.
    pub async fn checkout_completed(
        &self,
        reference: &str,
        customer: &str,
        setup_intent: &str,
        now: DateTime<Utc>,
    ) -> Result<Plan, PurchaseError> {
        let (entity, id) = parse_reference(reference).ok_or(PurchaseError::UnknownUpgrade)?;
        let (_, _) = self.pending(entity, id, now).await?;
        let card = self
            .stripe
            .save_checkout_card(
                customer,
                setup_intent,
                &idempotency_key("checkout_card", &id.to_string(), setup_intent),
            )
            .await?;
        retry_on_conflict(|_| {
            let last4 = card.last4.clone();
            async move {
                let stored = stored::load(self.documents.as_ref(), entity, now).await?;
                if stored.book.customer.stripe_customer.as_deref() != Some(customer) {
                    return Err(PurchaseError::UnknownUpgrade);
                }
                let mut after = stored.book.clone();
                after.customer.card_last4 = last4.or_else(|| Some("····".to_owned()));
                stored::save(self.documents.as_ref(), &stored, &after, &Changes::default(), now).await?;
                Ok(())
            }
        })
        .await?;
        self.complete_upgrade(entity, id, now).await
    }

    /// Runs a plan rule on the entity's book and writes what it changed (re-read and re-run
    /// when another writer got there first).
    async fn change<F>(&self, entity: Entity, now: DateTime<Utc>, rule: F) -> Result<Book, PurchaseError>
    where
        F: Fn(&Book, u32) -> Result<(Book, Changes), PlanError> + Sync,
    {
        let rule = &rule;
        retry_on_conflict(|_| async move {
            let stored: StoredBook = stored::load(self.documents.as_ref(), entity, now).await?;
            let usage = self.usage(entity, now).await?;
            let (after, changes) = rule(&stored.book, usage.billed.unwrap_or(0))?;
            stored::save(self.documents.as_ref(), &stored, &after, &changes, now).await?;
            Ok(after)
        })
        .await
    }

    /// The `billing/` form's license change (manual plans).
    pub async fn change_licenses(
        &self,
        entity: Entity,
        change: ManualChange,
        now: DateTime<Utc>,
    ) -> Result<Book, PurchaseError> {
        self.change(entity, now, |book, billed| {
            super::update_licenses(book, change, billed, now)
        })
        .await
    }

    /// Cancels the live plan at the end of its period.
    pub async fn cancel(&self, entity: Entity, now: DateTime<Utc>) -> Result<Book, PurchaseError> {
        self.change(entity, now, |book, _| super::cancel_at_end_of_cycle(book, now))
            .await
    }

    /// Undoes a cancellation.
    pub async fn undo_cancel(&self, entity: Entity, now: DateTime<Utc>) -> Result<Book, PurchaseError> {
        self.change(entity, now, |book, _| super::undo_cancel(book, now)).await
    }
}

/// The schedule's name on invoices and pages.
pub fn schedule_name(schedule: Schedule) -> &'static str {
    match schedule {
        Schedule::Monthly => "monthly",
        Schedule::Annual => "annual",
    }
}
