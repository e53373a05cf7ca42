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
//! Beside them, an index of next invoice dates: `plans_due/<next invoice date, 20-digit Unix
//! seconds>#<realm#uuid | server#uuid>` ([`LiveEntry`]), kept in the same transaction as the
//! plan (the entry under the old date expires at once, a new one is made under the new date).
//! The daily invoicing reads the range up to its time, a page at a time from a cursor: only the
//! plans due, never the others, and never a scan.

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

/// The index of live plans by next invoice date.
pub const PLANS_DUE: &str = "plans_due";

/// An entity's entry in [`PLANS_DUE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEntry {
    /// Whose.
    pub entity: Entity,
    /// The live plan, if any.
    pub plan: Option<Uuid>,
    /// When it is next invoiced.
    pub next_invoice_date: Option<DateTime<Utc>>,
}

/// The member of an entity's plan due at `due` in [`PLANS_DUE`]: members sort by due date.
pub fn due_member(due: DateTime<Utc>, entity: Entity) -> String {
    let entity = match entity {
        Entity::Realm(uuid) => format!("realm#{uuid}"),
        Entity::Server(uuid) => format!("server#{uuid}"),
    };
    format!("{:020}#{entity}", due.timestamp().max(0))
}

/// The last member of [`PLANS_DUE`] due at or before `at`.
pub fn due_through(at: DateTime<Utc>) -> String {
    // `~` sorts after every character of an entity's part.
    format!("{:020}#~", at.timestamp().max(0))
}

fn due_entry(book: &Book) -> Option<(String, LiveEntry)> {
    let plan = book.plan.as_ref()?;
    let due = plan.next_invoice_date?;
    Some((
        due_member(due, book.customer.entity),
        LiveEntry {
            entity: book.customer.entity,
            plan: Some(plan.id),
            next_invoice_date: Some(due),
        },
    ))
}

/// One conditional write of a plan change.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedWrite {
    /// Where.
    pub key: String,
    /// What.
    pub body: Value,
    /// `None`: must be absent; `Some(v)`: must be at version `v`.
    pub expected: Option<u64>,
    /// When it stops counting (an index entry replaced by one under another date).
    pub expires_at: Option<DateTime<Utc>>,
}

impl PlannedWrite {
    /// A record of the entity's billing history (`audit#<time>#<id>`, read by [`history`]),
    /// written with the change it records.
    pub fn audit(entity: Entity, record: Value, now: DateTime<Utc>) -> Self {
        PlannedWrite {
            key: member_key(
                &collection(entity),
                &format!("audit#{}#{}", now.timestamp_micros(), Uuid::new_v4()),
            ),
            body: record,
            expected: None,
            expires_at: None,
        }
    }

    /// As the document store takes it.
    pub fn as_write(&self) -> DocumentWrite<'_> {
        DocumentWrite {
            key: &self.key,
            body: &self.body,
            expires_at: self.expires_at,
            expected: self.expected,
        }
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
    /// The index entry of the live plan as read: its member and version.
    due: Option<(String, u64)>,
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
    let mut due = None;
    if let Some(date) = live.as_ref().and_then(|plan| plan.next_invoice_date) {
        let member = due_member(date, entity);
        if let Some(document) = documents.get_document(&member_key(PLANS_DUE, &member), now).await? {
            due = Some((member, document.version));
        }
    }
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
        due,
    })
}

/// The conditional writes that take `stored` to `after`: the customer and every plan that
/// changed (on the version read; absent when new), each appended ledger row (absent), and the
/// due-date index entry when the next invoice date changed (the old one expired at `now`).
pub fn writes_for(stored: &StoredBook, after: &Book, changes: &Changes, now: DateTime<Utc>) -> Vec<PlannedWrite> {
    let entity = stored.book.customer.entity;
    let key = |member: &str| member_key(&collection(entity), member);
    let write = |key: String, body: Value, expected: Option<u64>| PlannedWrite {
        key,
        body,
        expected,
        expires_at: None,
    };
    let mut writes = Vec::new();
    if after.customer != stored.book.customer {
        writes.push(write(
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
        let member = plan_member(plan);
        if writes.iter().any(|w| w.key == key(&member)) {
            continue;
        }
        writes.push(write(key(&member), encode(plan), stored.versions.get(&member).copied()));
    }
    for row in &changes.rows {
        writes.push(write(key(&ledger_member(row)), encode(row), None));
    }
    let next = due_entry(after);
    let unchanged = match (&stored.due, &next) {
        (Some((member, _)), Some((next_member, _))) => member == next_member,
        (None, None) => true,
        _ => false,
    };
    if !unchanged {
        if let Some((member, version)) = &stored.due {
            writes.push(PlannedWrite {
                key: member_key(PLANS_DUE, member),
                body: Value::Null,
                expected: Some(*version),
                expires_at: Some(now),
            });
        }
        if let Some((member, entry)) = next {
            writes.push(write(member_key(PLANS_DUE, &member), encode(&entry), None));
        }
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
    let writes = writes_for(stored, after, changes, now);
    if writes.is_empty() {
        return Ok(());
    }
    let writes: Vec<DocumentWrite<'_>> = writes.iter().map(PlannedWrite::as_write).collect();
    documents.put_documents(&writes, now).await
}

/// At most `limit` records of an entity's history after the member `after` (from the first
/// without), oldest first, and the member to continue after when more follow.
pub async fn history_page(
    documents: &dyn DocumentStore,
    entity: Entity,
    after: Option<&str>,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<(Vec<Value>, Option<String>), StoreError> {
    // One more than asked tells whether another page follows.
    let mut page = documents
        .list_documents_range(
            &collection(entity),
            Some(after.unwrap_or("audit#")),
            "audit#~",
            limit + 1,
            now,
        )
        .await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next = page.last().filter(|_| more).map(|(member, _)| member.clone());
    Ok((page.into_iter().map(|(_, document)| document.body).collect(), next))
}

/// The recorded history of an entity's billing (`audit#<time>#<id>` members: discount changes,
/// sponsorship decisions, re-homing), oldest first.
pub async fn history(
    documents: &dyn DocumentStore,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<Vec<Value>, StoreError> {
    Ok(documents
        .list_documents_range(&collection(entity), Some("audit#"), "audit#~", 1000, now)
        .await?
        .into_iter()
        .map(|(_, document)| document.body)
        .collect())
}
