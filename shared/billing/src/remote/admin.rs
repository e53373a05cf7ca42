//! What administrators see of a billing entity's self-hosted billing (API.md, "Administrators'
//! API"): `GET /remote-realms/{uuid}/billing` and `GET /remote-servers/{uuid}/billing` — the
//! customer record, the live and the scheduled plan, the live plan's ledger, the billed count
//! and the server's last upload — and what they change: a legacy (complimentary) plan until an
//! end date, and the customer's discount.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::records::{RealmOwner, RemoteServer, realm_owner_key, server_key};
use super::service::{RemoteBilling, RemoteError};
use super::usage::{LatestCounts, UploadMarker, usage_collection};
use crate::errors::Slug;
use crate::plans::stored::PlannedWrite;
use crate::plans::{self, Entity, LedgerRow, Plan};
use crate::store::{member_key, retry_on_conflict};

/// A plan as administrators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanView {
    /// Its id.
    pub id: Uuid,
    /// `basic`, `business`, `legacy`, `community`.
    pub tier: plans::Tier,
    /// Where it is in its life.
    pub status: plans::PlanStatus,
    /// `monthly` or `annual`.
    pub schedule: plans::Schedule,
    /// `automatic` or `manual`.
    pub license_management: plans::LicenseManagement,
    /// Cents per license, discount applied.
    pub price_per_license: u64,
    /// Periods start here.
    pub billing_cycle_anchor: DateTime<Utc>,
    /// When it is next invoiced.
    pub next_invoice_date: Option<DateTime<Utc>>,
    /// When it ends.
    pub end_date: Option<DateTime<Utc>>,
    /// Licenses paid for this period (a scheduled plan: the count chosen for it).
    pub licenses: Option<u32>,
    /// Licenses the next period starts with.
    pub licenses_at_next_renewal: Option<u32>,
}

impl PlanView {
    fn of(plan: &Plan, last: Option<&LedgerRow>) -> Self {
        PlanView {
            id: plan.id,
            tier: plan.tier,
            status: plan.status,
            schedule: plan.schedule,
            license_management: plan.license_management,
            price_per_license: plan.price_per_license,
            billing_cycle_anchor: plan.billing_cycle_anchor,
            next_invoice_date: plan.next_invoice_date,
            end_date: plan.end_date,
            licenses: last.map(|r| r.licenses).or(plan.scheduled_licenses),
            licenses_at_next_renewal: last.map(|r| r.licenses_at_next_renewal),
        }
    }
}

/// The customer record as administrators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CustomerView {
    /// The Stripe customer, once made.
    pub stripe_customer: Option<String>,
    /// The discount of every plan, in percent.
    pub default_discount: u8,
    /// Whether a sponsorship request awaits review.
    pub sponsorship_pending: bool,
}

/// One ledger row as administrators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LedgerView {
    /// When it took effect.
    pub event_time: DateTime<Utc>,
    /// Whether it starts a period.
    pub is_renewal: bool,
    /// Licenses paid for.
    pub licenses: u32,
    /// Licenses the next period starts with.
    pub licenses_at_next_renewal: u32,
}

/// `GET /{entity}/billing`'s element.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BillingView {
    /// The customer record.
    pub customer: CustomerView,
    /// The live plan.
    pub plan: Option<PlanView>,
    /// The scheduled next plan.
    pub next_plan: Option<PlanView>,
    /// The live plan's ledger, oldest first.
    pub ledger: Vec<LedgerView>,
    /// The users the entity's server last reported (a server: across its realms).
    pub billed_licenses: Option<u32>,
    /// When the entity's server last uploaded.
    pub last_upload_at: Option<DateTime<Utc>>,
    /// Invoicing that waits: an open run, or an invoice waiting for an upload for over a week.
    pub invoicing: Option<InvoicingView>,
}

/// Where an entity's invoicing waits, for administrators (API.md, "Invoicing").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InvoicingView {
    /// A run is open and resumed by the hourly job.
    InProgress {
        /// The due date it invoices.
        due: DateTime<Utc>,
        /// Failed attempts so far.
        tries: u32,
        /// Why the last one failed.
        last_error: Option<String>,
    },
    /// A run failed three times or stayed open six hours: a person looks.
    NeedsManualResolution {
        /// The due date it invoices.
        due: DateTime<Utc>,
        /// Failed attempts so far.
        tries: u32,
        /// Why the last one failed.
        last_error: Option<String>,
    },
    /// Due for over [`WAITING_FOR_UPLOAD_AFTER`] and deferred since: the server has not uploaded.
    WaitingForUpload {
        /// When it fell due.
        since: DateTime<Utc>,
    },
}

/// How long an invoice may wait for an upload before administrators see it.
pub const WAITING_FOR_UPLOAD_AFTER: chrono::Duration = chrono::Duration::days(7);

/// What waits in an entity's invoicing at `now`.
pub async fn invoicing_view(
    documents: &dyn crate::store::DocumentStore,
    entity: Entity,
    plan: Option<&Plan>,
    last_upload: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<InvoicingView>, crate::store::StoreError> {
    let runs = plans::invoicing::runs(documents, entity, now).await?;
    if let Some((run, _)) = runs
        .into_iter()
        .find(|(run, _)| run.state == plans::invoicing::RunState::Open)
    {
        let (due, tries, last_error) = (run.due, run.failures, run.last_failure);
        return Ok(Some(if run.needs_attention {
            InvoicingView::NeedsManualResolution { due, tries, last_error }
        } else {
            InvoicingView::InProgress { due, tries, last_error }
        }));
    }
    let waiting = plan
        .and_then(|plan| plan.next_invoice_date)
        .filter(|due| now - *due > WAITING_FOR_UPLOAD_AFTER && last_upload.is_none_or(|at| at < *due));
    Ok(waiting.map(|since| InvoicingView::WaitingForUpload { since }))
}

impl RemoteBilling {
    /// The server an entity belongs to (a server its own): [`RemoteError::UnknownRealm`] or
    /// [`RemoteError::UnknownServer`] when it was never registered.
    async fn server_of_entity(&self, entity: Entity, now: DateTime<Utc>) -> Result<Uuid, RemoteError> {
        match entity {
            Entity::Realm(realm) => Ok(self
                .records
                .get::<RealmOwner>(&realm_owner_key(realm), now)
                .await?
                .ok_or(RemoteError::UnknownRealm)?
                .0
                .server_uuid),
            Entity::Server(server) => {
                self.records
                    .get::<RemoteServer>(&server_key(server), now)
                    .await?
                    .ok_or(RemoteError::UnknownServer)?;
                Ok(server)
            }
        }
    }

    /// One page of an entity's billing history for administrators (`GET
    /// /remote-realms/{uuid}/audit`, `/remote-servers/{uuid}/audit`): the records written with
    /// each change (discounts, legacy plans, sponsorship decisions, re-homing), oldest first, as
    /// `{"audit": [...], "next_cursor"}`.
    pub async fn history_page(
        &self,
        entity: Entity,
        query: &crate::paging::PageQuery,
        now: DateTime<Utc>,
    ) -> Result<serde_json::Value, RemoteError> {
        self.server_of_entity(entity, now).await?;
        let after = match &query.cursor {
            None => None,
            Some(cursor) => Some(
                cursor["after"]
                    .as_str()
                    .filter(|key| key.starts_with("audit#"))
                    .ok_or_else(|| {
                        RemoteError::Invalid(crate::errors::ValidationErrors(
                            vec![crate::paging::unreadable_cursor()],
                        ))
                    })?
                    .to_owned(),
            ),
        };
        let (records, next) = plans::stored::history_page(
            self.records.documents().as_ref(),
            entity,
            after.as_deref(),
            query.limit,
            now,
        )
        .await?;
        Ok(serde_json::json!({
            "audit": records,
            "next_cursor": next.map(|after| crate::paging::encode(&serde_json::json!({"after": after}))),
        }))
    }

    /// The billing of a realm or a server, for administrators. An entity never registered is
    /// [`RemoteError::UnknownRealm`] or [`RemoteError::UnknownServer`].
    pub async fn billing_view(&self, entity: Entity, now: DateTime<Utc>) -> Result<BillingView, RemoteError> {
        let server = self.server_of_entity(entity, now).await?;
        let stored = plans::stored::load(self.records.documents().as_ref(), entity, now).await?;
        let collection = usage_collection(server);
        let marker = self
            .records
            .get::<UploadMarker>(&member_key(&collection, "marker"), now)
            .await?
            .map(|(marker, _)| marker)
            .unwrap_or_default();
        let latest = self
            .records
            .get::<LatestCounts>(&member_key(&collection, "latest"), now)
            .await?
            .map(|(latest, _)| latest);
        let billed_licenses = latest.and_then(|latest| match entity {
            Entity::Realm(realm) => latest.realms.get(&realm).map(|(_, count)| *count),
            Entity::Server(_) => Some(latest.total()),
        });
        let book = stored.book;
        let invoicing = invoicing_view(
            self.records.documents().as_ref(),
            entity,
            book.plan.as_ref(),
            marker.last_upload_at,
            now,
        )
        .await?;
        Ok(BillingView {
            customer: CustomerView {
                stripe_customer: book.customer.stripe_customer.clone(),
                default_discount: book.customer.default_discount,
                sponsorship_pending: book.customer.sponsorship_pending,
            },
            plan: book.plan.as_ref().map(|plan| PlanView::of(plan, book.ledger.last())),
            next_plan: book.next_plan.as_ref().map(|plan| PlanView::of(plan, None)),
            ledger: book
                .ledger
                .iter()
                .map(|row| LedgerView {
                    event_time: row.event_time,
                    is_renewal: row.is_renewal,
                    licenses: row.licenses,
                    licenses_at_next_renewal: row.licenses_at_next_renewal,
                })
                .collect(),
            billed_licenses,
            last_upload_at: marker.last_upload_at,
            invoicing,
        })
    }
}

/// Who an administrator's change is recorded as.
pub const ADMIN_ACTOR: &str = "admin";

impl RemoteBilling {
    /// `POST /{entity}/legacy-plan`: a complimentary plan until `end_date`; refused (conflict)
    /// while the entity, its server or any of its realms has a live plan.
    /// Recorded in the entity's history as `legacy_plan_started` by `actor`.
    pub async fn start_legacy_plan(
        &self,
        entity: Entity,
        end_date: DateTime<Utc>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<BillingView, RemoteError> {
        self.billing_view(entity, now).await?;
        let documents = self.records.documents().clone();
        retry_on_conflict(|_| {
            let documents = documents.clone();
            async move {
                // The claim first, then the plans: a purchase that settles in between changes
                // the claim, and this attempt's write fails its condition.
                let claim = admin_claim(documents.as_ref(), entity, now).await?;
                refuse_beside_a_live_plan(documents.as_ref(), entity, now).await?;
                let stored = plans::stored::load(documents.as_ref(), entity, now).await?;
                let usage = plans::purchase::usage_of(documents.as_ref(), entity, now).await?;
                let (after, changes) =
                    plans::start_legacy(&stored.book, end_date, usage.billed.unwrap_or(0), now, Uuid::new_v4())
                        .map_err(plan_refusal)?;
                let mut writes = plans::stored::writes_for(&stored, &after, &changes, now);
                writes.push(claim);
                writes.push(PlannedWrite::audit(
                    entity,
                    serde_json::json!({"event": "legacy_plan_started", "end_date": end_date,
                                       "actor": actor, "at": now}),
                    now,
                ));
                let writes: Vec<_> = writes.iter().map(PlannedWrite::as_write).collect();
                documents.put_documents(&writes, now).await?;
                tracing::info!(?entity, %end_date, "legacy plan started");
                Ok::<_, RemoteError>(())
            }
        })
        .await?;
        self.billing_view(entity, now).await
    }

    /// `POST /{entity}/discount`: the customer's default discount, applied to the live plan and
    /// a scheduled one at once; recorded as `discount_changed {old, new}` in the same write.
    pub async fn set_entity_discount(
        &self,
        entity: Entity,
        percent: u8,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<BillingView, RemoteError> {
        self.billing_view(entity, now).await?;
        let documents = self.records.documents().clone();
        retry_on_conflict(|_| {
            let documents = documents.clone();
            async move {
                let stored = plans::stored::load(documents.as_ref(), entity, now).await?;
                let (current, cycle) = plans::end_of_cycle(&stored.book, now);
                let (after, old) =
                    plans::set_discount(&current, percent, &plans::Prices::default()).map_err(plan_refusal)?;
                if old == percent {
                    return Ok(());
                }
                let mut writes = plans::stored::writes_for(&stored, &after, &cycle, now);
                let audit = serde_json::json!({
                    "event": "discount_changed", "old": old, "new": percent,
                    "actor": actor, "at": now,
                });
                writes.push(plans::stored::PlannedWrite::audit(entity, audit, now));
                let writes: Vec<_> = writes.iter().map(plans::stored::PlannedWrite::as_write).collect();
                documents.put_documents(&writes, now).await?;
                tracing::info!(?entity, old, new = percent, "discount changed");
                Ok::<_, RemoteError>(())
            }
        })
        .await?;
        self.billing_view(entity, now).await
    }
}

impl RemoteBilling {
    /// `PUT /remote-realms/{uuid}/server`: the realm moves to the server it was imported into
    /// (the fix for `remote_realm_server_mismatch`). In one transaction: the realm's owner, its
    /// record under the new server (its old one expired), its count dropped from the old
    /// server's latest counts (the old server's uploads no longer count for it, and are refused
    /// for it), and `realm_rehomed` recorded in the realm's history.
    pub async fn rehome_realm(
        &self,
        realm: Uuid,
        new_server: Uuid,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<BillingView, RemoteError> {
        self.active_server(new_server, RemoteError::UnknownServer, now).await?;
        let documents = self.records.documents().clone();
        // A server and its realms never both have a live plan: a realm with one cannot join a
        // server with one.
        let live = |entity| {
            let documents = documents.clone();
            async move {
                let stored = plans::stored::load(documents.as_ref(), entity, now).await?;
                Ok::<_, RemoteError>(plans::end_of_cycle(&stored.book, now).0.plan.is_some())
            }
        };
        if live(Entity::Realm(realm)).await? && live(Entity::Server(new_server)).await? {
            return Err(RemoteError::PlanConflict(
                "The realm has a plan and the server it would move to has one: a server and its organizations cannot both have one.".into(),
            ));
        }
        retry_on_conflict(|_| {
            let documents = documents.clone();
            async move {
                let owner_key = realm_owner_key(realm);
                let (owner, owner_version) = self
                    .records
                    .get::<RealmOwner>(&owner_key, now)
                    .await?
                    .ok_or(RemoteError::UnknownRealm)?;
                let old_server = owner.server_uuid;
                if old_server == new_server {
                    return Ok(());
                }
                let old_key = super::records::realm_key(old_server, realm);
                let (record, record_version) = self
                    .records
                    .get::<super::records::RemoteRealm>(&old_key, now)
                    .await?
                    .ok_or(RemoteError::UnknownRealm)?;
                let moved = super::records::RemoteRealm {
                    server_uuid: new_server,
                    ..record
                };
                let write = |key: String, body: serde_json::Value, expected: Option<u64>| PlannedWrite {
                    key,
                    body,
                    expected,
                    expires_at: None,
                };
                let mut writes = vec![
                    write(
                        owner_key.clone(),
                        serde_json::to_value(RealmOwner {
                            server_uuid: new_server,
                        })
                        .expect("serializes"),
                        Some(owner_version),
                    ),
                    PlannedWrite {
                        expires_at: Some(now),
                        ..write(old_key, serde_json::Value::Null, Some(record_version))
                    },
                    write(
                        super::records::realm_key(new_server, realm),
                        serde_json::to_value(&moved).expect("serializes"),
                        None,
                    ),
                ];
                let latest_key = member_key(&usage_collection(old_server), "latest");
                if let Some((mut latest, version)) = self.records.get::<LatestCounts>(&latest_key, now).await?
                    && latest.realms.remove(&realm).is_some()
                {
                    writes.push(write(
                        latest_key,
                        serde_json::to_value(&latest).expect("serializes"),
                        Some(version),
                    ));
                }
                writes.push(PlannedWrite::audit(
                    Entity::Realm(realm),
                    serde_json::json!({"event": "realm_rehomed", "old_server": old_server,
                                       "new_server": new_server, "actor": actor, "at": now}),
                    now,
                ));
                let writes: Vec<_> = writes.iter().map(PlannedWrite::as_write).collect();
                documents.put_documents(&writes, now).await?;
                tracing::info!(%realm, %old_server, %new_server, "realm moved to another server");
                Ok::<_, RemoteError>(())
            }
        })
        .await?;
        self.billing_view(Entity::Realm(realm), now).await
    }
}

impl RemoteBilling {
    /// `POST /{entity}/sponsorship {"approve"}`: decides the pending request. Approving moves
    /// the entity to `community` (at once, or when its live plan's period ends) after checking
    /// that neither its server nor its realms have a plan, records `sponsorship_approved`, then
    /// mails whoever asked; declining clears the request and records `sponsorship_declined`.
    /// The decision is stored before the mail: a mail service failure is logged, not undone.
    pub async fn decide_sponsorship(
        &self,
        entity: Entity,
        approve: bool,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<BillingView, RemoteError> {
        self.billing_view(entity, now).await?;
        let documents = self.records.documents().clone();
        retry_on_conflict(|_| {
            let documents = documents.clone();
            async move {
                let claim = if approve {
                    let claim = admin_claim(documents.as_ref(), entity, now).await?;
                    refuse_beside_a_live_plan(documents.as_ref(), entity, now).await?;
                    Some(claim)
                } else {
                    None
                };
                let stored = plans::stored::load(documents.as_ref(), entity, now).await?;
                if !stored.book.customer.sponsorship_pending {
                    return Err(RemoteError::PlanConflict(
                        plans::PlanError::NoSponsorshipRequest.to_string(),
                    ));
                }
                let billed = plans::purchase::usage_of(documents.as_ref(), entity, now).await?.billed;
                let (after, changes) = if approve {
                    plans::approve_sponsorship(&stored.book, billed.unwrap_or(0), now, Uuid::new_v4())
                        .map_err(plan_refusal)?
                } else {
                    let (mut after, cycle) = plans::end_of_cycle(&stored.book, now);
                    after.customer.sponsorship_pending = false;
                    (after, cycle)
                };
                let mut writes = plans::stored::writes_for(&stored, &after, &changes, now);
                writes.extend(claim);
                writes.push(PlannedWrite::audit(
                    entity,
                    serde_json::json!({
                        "event": if approve { "sponsorship_approved" } else { "sponsorship_declined" },
                        "actor": actor, "at": now,
                    }),
                    now,
                ));
                let writes: Vec<_> = writes.iter().map(PlannedWrite::as_write).collect();
                documents.put_documents(&writes, now).await?;
                tracing::info!(?entity, approve, "sponsorship decided");
                Ok::<_, RemoteError>(())
            }
        })
        .await?;
        if approve {
            let requests = plans::purchase::sponsorship_requests(documents.as_ref(), entity, now).await?;
            let name = match entity {
                Entity::Realm(realm) => self
                    .records
                    .realm(realm, now)
                    .await?
                    .map_or_else(|| realm.to_string(), |(realm, _)| realm.name),
                Entity::Server(server) => self
                    .records
                    .get::<RemoteServer>(&server_key(server), now)
                    .await?
                    .map_or_else(|| server.to_string(), |(server, _)| server.hostname),
            };
            if let Some(request) = requests.last()
                && let Err(error) = self
                    .mailer
                    .deliver(&crate::mail::texts::sponsorship_approved(&request.requested_by, &name))
                    .await
            {
                tracing::error!(%error, ?entity, "the sponsorship approval mail was not sent");
            }
        }
        self.billing_view(entity, now).await
    }
}

/// Refuses a plan start while the entity's server or one of its realms has a live plan.
async fn refuse_beside_a_live_plan(
    documents: &dyn crate::store::DocumentStore,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<(), RemoteError> {
    if plans::purchase::live_plan_elsewhere(documents, entity, now).await? {
        return Err(RemoteError::PlanConflict(
            "The server or one of its organizations has a plan; a server and its organizations never both have one."
                .into(),
        ));
    }
    Ok(())
}

/// The server's purchase claim, taken by an administrator's plan start
/// ([`plans::purchase::admin_claim_write`]); a purchase being charged refuses the start.
async fn admin_claim(
    documents: &dyn crate::store::DocumentStore,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<PlannedWrite, RemoteError> {
    plans::purchase::admin_claim_write(documents, entity, now)
        .await
        .map_err(|error| match error {
            plans::purchase::PurchaseError::PurchaseInProgress => RemoteError::PlanConflict(
                "A purchase for this server is being charged; try again once it has finished.".into(),
            ),
            plans::purchase::PurchaseError::Store(store) => store.into(),
            other => RemoteError::PlanConflict(other.to_string()),
        })
}

/// A plan rule's refusal as the administrators' API answers it.
fn plan_refusal(error: plans::PlanError) -> RemoteError {
    match error {
        plans::PlanError::AlreadyHasPlan => RemoteError::PlanConflict("It already has a live plan.".into()),
        other => RemoteError::field(Slug::InvalidValue, "", &other.to_string()),
    }
}
