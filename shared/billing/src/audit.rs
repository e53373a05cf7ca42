//! A subscription's audit trail as operators and owners read it (`GET
//! /subscriptions/{id}/audit`): who changed what and when, a page at a time, oldest first.
//!
//! The records are written by the store with every version ([`crate::store::AuditEntry`]); this
//! module only pages and presents them.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::errors::ValidationErrors;
use crate::paging::{self, PageQuery};
use crate::store::{AuditEntry, Store, StoreError};

/// How many records a page holds when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;

/// Where a page of the trail starts: after this version (0: from the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// At most this many records.
    pub limit: usize,
    /// The records of versions after this one.
    pub after_version: u64,
}

impl AuditQuery {
    /// Reads `limit` and `cursor`; every bad one is reported.
    pub fn read(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, ValidationErrors> {
        let page = PageQuery::read(limit, cursor, DEFAULT_LIMIT)?;
        Ok(AuditQuery {
            limit: page.limit,
            after_version: page.cursor_number("after")?.unwrap_or(0),
        })
    }
}

/// One page of the trail, as the API answers it: `{"audit": [...], "next_cursor"}`.
pub async fn audit_page(store: &dyn Store, id: Uuid, query: AuditQuery) -> Result<Value, StoreError> {
    // One more than asked tells whether another page follows, without a second query.
    let mut entries = store.audit_page(id, query.after_version, query.limit + 1).await?;
    // Every subscription has the record of its creation: none at all means no subscription.
    if entries.is_empty() && query.after_version == 0 {
        return Err(StoreError::NotFound);
    }
    let more = entries.len() > query.limit;
    entries.truncate(query.limit);
    let next_cursor = entries
        .last()
        .filter(|_| more)
        .map(|last| paging::encode(&json!({"after": last.version})));
    Ok(json!({
        "audit": entries.iter().map(entry_view).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    }))
}

/// A record as API.md shows it: `at`, `actor`, `action`, `version`, `changes` and the Stripe
/// `event` when one made the change.
pub fn entry_view(entry: &AuditEntry) -> Value {
    let mut view = json!({
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "version": entry.version,
        "changes": entry.field_changes(),
    });
    // Older records named the event inside their changes.
    let event = entry
        .event
        .clone()
        .or_else(|| entry.changes["event"].as_str().map(str::to_owned));
    if let Some(event) = event {
        view["event"] = Value::from(event);
    }
    view
}
