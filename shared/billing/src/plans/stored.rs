//! Where a billing entity's plans live: one document collection per entity in the
//! [`DocumentStore`], read whole with one query, written with conditional writes in one
//! transaction per change.
//!
//! | member of `plans#realm#<uuid>` / `plans#server#<uuid>` | document | write |
//! |---|---|---|
//! | `customer` | [`Customer`] | versioned |
//! | `plan#<plan uuid>` | [`Plan`] (every plan, ended ones kept for the record) | versioned |
//! | `ledger#<plan uuid>#<seq, 10 digits>` | [`LedgerRow`] | created once, never changed |
//!
//! A ledger row is written on the condition that it is absent, and every plan on the version
//! that was read: two writers that computed the same next row cannot both append it, and the
//! loser reads again ([`StoreError::VersionConflict`]).
//!
//! Beside them, `plans_live/<realm#uuid | server#uuid>` ([`LiveEntry`]) says which plan of the
//! entity is live and when it is next invoiced, written in the same transaction whenever that
//! changes: the daily invoicing lists that one collection (one query) instead of every entity.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Book, Changes, Customer, Entity, LedgerRow, Plan, PlanStatus};
use crate::store::{DocumentStore, DocumentWrite, StoreError, member_key};
use serde::Deserialize;
use uuid::Uuid;

/// The collection of an entity's plan documents.
pub fn collection(entity: Entity) -> String {
    match entity {
        Entity::Realm(uuid) => format!("plans#realm#{uuid}"),
        Entity::Server(uuid) => format!("plans#server#{uuid}"),
    }
}

const CUSTOMER: &str = "customer";

/// The collection that lists every entity's live plan and its next invoice date.
pub const LIVE_PLANS: &str = "plans_live";

/// An entity's entry in [`LIVE_PLANS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEntry {
    /// Whose.
    pub entity: Entity,
    /// The live plan, if any.
    pub plan: Option<Uuid>,
    /// When it is next invoiced.
    pub next_invoice_date: Option<DateTime<Utc>>,
}

/// The member of an entity in [`LIVE_PLANS`].
pub fn live_member(entity: Entity) -> String {
    match entity {
        Entity::Realm(uuid) => format!("realm#{uuid}"),
        Entity::Server(uuid) => format!("server#{uuid}"),
    }
}

fn live_entry(book: &Book) -> LiveEntry {
    LiveEntry {
        entity: book.customer.entity,
        plan: book.plan.as_ref().map(|p| p.id),
        next_invoice_date: book.plan.as_ref().and_then(|p| p.next_invoice_date),
    }
}

fn plan_member(plan: &Plan) -> String {
    format!("plan#{}", plan.id)
}

fn ledger_member(row: &LedgerRow) -> String {
    format!("ledger#{}#{:010}", row.plan, row.seq)
}

/// A book as read, with the versions its documents had: what a conditional write names.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredBook {
    /// The entity's plans, as the use cases take them.
    pub book: Book,
    /// Every plan of the entity, ended ones included, oldest first.
    pub history: Vec<Plan>,
    versions: HashMap<String, u64>,
    live: Option<(LiveEntry, u64)>,
}

fn decode<T: DeserializeOwned>(member: &str, body: Value) -> Result<T, StoreError> {
    serde_json::from_value(body).map_err(|e| StoreError::Corrupt(format!("{member}: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("plan documents serialize")
}

/// Reads an entity's plans: one query.
pub async fn load(documents: &dyn DocumentStore, entity: Entity, now: DateTime<Utc>) -> Result<StoredBook, StoreError> {
    let mut customer = None;
    let mut plans: Vec<Plan> = Vec::new();
    let mut rows: Vec<LedgerRow> = Vec::new();
    let mut versions = HashMap::new();
    for (member, document) in documents.list_documents(&collection(entity), now).await? {
        versions.insert(member.clone(), document.version);
        if member == CUSTOMER {
            customer = Some(decode::<Customer>(&member, document.body)?);
        } else if member.starts_with("plan#") {
            plans.push(decode(&member, document.body)?);
        } else if member.starts_with("ledger#") {
            rows.push(decode(&member, document.body)?);
        }
    }
    plans.sort_by_key(|p| (p.billing_cycle_anchor, p.id));
    let live = plans.iter().find(|p| p.status.is_live()).cloned();
    let next_plan = plans.iter().find(|p| p.status == PlanStatus::NeverStarted).cloned();
    let mut ledger: Vec<LedgerRow> = match &live {
        Some(plan) => rows.into_iter().filter(|r| r.plan == plan.id).collect(),
        None => Vec::new(),
    };
    ledger.sort_by_key(|r| r.seq);
    let live_key = member_key(LIVE_PLANS, &live_member(entity));
    let listed = match documents.get_document(&live_key, now).await? {
        Some(document) => Some((decode::<LiveEntry>(&live_key, document.body)?, document.version)),
        None => None,
    };
    let book = Book {
        customer: customer.unwrap_or_else(|| Customer::new(entity)),
        ever_had_plan: plans.iter().any(|p| p.status != PlanStatus::NeverStarted),
        plan: live,
        ledger,
        next_plan,
    };
    Ok(StoredBook {
        book,
        history: plans,
        versions,
        live: listed,
    })
}

/// The conditional writes that take `stored` to `after`: the customer and every plan that
/// changed (on the version read; absent when new), and each appended ledger row (absent).
pub fn writes_for(stored: &StoredBook, after: &Book, changes: &Changes) -> Vec<(String, Value, Option<u64>)> {
    let entity = stored.book.customer.entity;
    let key = |member: &str| member_key(&collection(entity), member);
    let mut writes = Vec::new();
    if after.customer != stored.book.customer {
        writes.push((
            key(CUSTOMER),
            encode(&after.customer),
            stored.versions.get(CUSTOMER).copied(),
        ));
    }
    let before: HashMap<_, _> = stored.history.iter().map(|p| (p.id, p)).collect();
    let mut changed: Vec<&Plan> = changes.ended.iter().collect();
    changed.extend(after.plan.iter());
    changed.extend(after.next_plan.iter());
    for plan in changed {
        if before.get(&plan.id).is_some_and(|old| *old == plan) {
            continue;
        }
        if writes.iter().any(|(k, _, _)| *k == key(&plan_member(plan))) {
            continue;
        }
        let member = plan_member(plan);
        writes.push((key(&member), encode(plan), stored.versions.get(&member).copied()));
    }
    for row in &changes.rows {
        writes.push((key(&ledger_member(row)), encode(row), None));
    }
    let entry = live_entry(after);
    let unchanged = match &stored.live {
        Some((current, _)) => *current == entry,
        None => entry.plan.is_none(),
    };
    if !unchanged {
        writes.push((
            member_key(LIVE_PLANS, &live_member(entity)),
            encode(&entry),
            stored.live.as_ref().map(|(_, version)| *version),
        ));
    }
    writes
}

/// Writes what a use case changed, all or nothing: [`StoreError::VersionConflict`] when another
/// writer got there first (nothing written; read again and re-run the use case).
pub async fn save(
    documents: &dyn DocumentStore,
    stored: &StoredBook,
    after: &Book,
    changes: &Changes,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let writes = writes_for(stored, after, changes);
    if writes.is_empty() {
        return Ok(());
    }
    let writes: Vec<DocumentWrite<'_>> = writes
        .iter()
        .map(|(key, body, expected)| DocumentWrite {
            key,
            body,
            expires_at: None,
            expected: *expected,
        })
        .collect();
    documents.put_documents(&writes, now).await
}
