//! The `Store` port: the persistence operations the billing domain needs, and its adapters.
//!
//! The port speaks in domain terms (create a subscription if absent, update it from an expected
//! version, find it by a Stripe id, record an id once), not in keys and items, so that each
//! adapter can use its backend's own means to keep the same promises:
//!
//! - every mutation is conditional: a create never overwrites, an update only applies to the
//!   version the caller read, so concurrent writers never lose one another's changes;
//! - a mutation and its audit record are written together or not at all;
//! - expiring records count as absent once expired, even where the backend deletes them late.
//!
//! Adapters (in `billing-adapters`): `DynamoStore` (AWS, and moto in tests) and `EmbeddedStore`
//! (one redb file, or memory, for the local server and fast tests). Both pass the same
//! conformance suite (`shared/adapters/tests/store_conformance.rs`).
//!
//! # Access patterns (DynamoDB, one table, generic keys `pk`/`sk`)
//!
//! | access pattern | key |
//! |---|---|
//! | subscription by id | `pk = SUBSCRIPTION#<uuid>`, `sk = STATE` |
//! | audit trail of a subscription, oldest first | `pk = SUBSCRIPTION#<uuid>`, `sk` begins with `AUDIT#` (`AUDIT#<version, 20 digits>`) |
//! | subscription by Stripe subscription id | GSI `by_stripe_subscription`: `gsi1pk = STRIPE_SUBSCRIPTION#<sub_...>` |
//! | subscription by Stripe customer id | GSI `by_stripe_customer`: `gsi2pk = STRIPE_CUSTOMER#<cus_...>` |
//! | subscriptions by status, then plan, then creation (the operators' list) | GSI `listings` on the subscription's own item: `gsi3pk = SUBSCRIPTIONS#STATUS#<status>`, `gsi3sk = <plan>#<created_at>#<uuid>` (the plan filter is a key prefix) |
//! | subscriptions of one email, by creation | GSI `listings` on a copy written with every version: `pk = SUBSCRIPTION#<uuid>`, `sk = EMAIL`, `gsi3pk = SUBSCRIPTIONS#EMAIL#<lowercased email>`, `gsi3sk = <created_at>#<uuid>` |
//! | the one subscription a Stripe id belongs to (written with every subscription write, on the condition that it is unclaimed or this subscription's) | `pk = STRIPE_LINK#<cus_... or sub_...>`, `sk = LINK`, `owner` |
//! | an id recorded once, with expiry | `pk = ONCE#<key>`, `sk = ONCE`, TTL attribute `expires_at` (epoch seconds), `outcome` for review |
//! | a Stripe event kept 400 days, by id | `pk = KEPT_EVENT#<evt_...>`, `sk = EVENT` (`type`, `created`, `outcome`, `subscription_id`, `body` bytes, `body_encoding`), TTL `expires_at` |
//! | kept Stripe events by outcome, newest first | GSI `listings`: `gsi3pk = STRIPE_EVENTS#<outcome>`, `gsi3sk = <created, 12 digits>#<evt_...>` |
//! | the last Stripe snapshot event applied to a subscription | `pk = SUBSCRIPTION#<uuid>`, `sk = STRIPE_EVENT` (`created`, `event_id`) |
//! | the last Stripe invoice event applied to a subscription | `pk = SUBSCRIPTION#<uuid>`, `sk = STRIPE_INVOICE_EVENT` (`created`, `event_id`) |
//! | the last Stripe customer event applied to a subscription | `pk = SUBSCRIPTION#<uuid>`, `sk = STRIPE_CUSTOMER_EVENT` (`created`, `event_id`) |
//! | a versioned document ([`DocumentStore`]: remote servers, realm owners, billing users, confirmations, sessions, rate counters) | `pk = DOC#<key>`, `sk = DOC` (`body` JSON text, `version`, TTL `expires_at`) |
//! | a member of a document collection (a server's realms), read whole with one query | `pk = DOC#<collection>`, `sk = MEMBER#<member>` (as above) |
//!
//! Index key attributes are written only when the subscription has the Stripe id (sparse
//! indexes), never as NULL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::subscription::Subscription;

mod documents;
mod kept;
mod retry;

pub use documents::{Document, DocumentStore, DocumentWrite, member_key};
pub use kept::{EVENT_OUTCOMES, KEEP_EVENTS_FOR, KeptEvent, KeptEventPage, pack, unpack};
pub use retry::{AsConflict, WRITE_ATTEMPTS, retry_on_conflict};

/// Why a store operation did not happen. Nothing was written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No item has this key.
    #[error("no such item")]
    NotFound,
    /// An item with this key exists.
    #[error("the item already exists")]
    AlreadyExists,
    /// The stored version is not the one the caller expected: someone else wrote first.
    #[error("the item was changed by someone else")]
    VersionConflict,
    /// The backend could not be reached or refused for reasons of its own; safe to retry.
    #[error("the store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A list's cursor is not one this store gave for that list (edited, or of other filters).
    #[error("the cursor does not belong to this list")]
    InvalidCursor,
    /// A Stripe id of the write (`/stripe_customer`, `/stripe_subscription`, the field's
    /// pointer) is linked to another subscription.
    #[error("{0} is linked to another subscription")]
    LinkTaken(&'static str),
    /// What the backend holds cannot be read as the domain's types.
    #[error("the store holds an unreadable item: {0}")]
    Corrupt(String),
}

/// Who changed a subscription, how, and what each field was before and after, kept with every
/// version: an operator answers "who changed this and when" from these alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The subscription changed.
    pub subscription_id: Uuid,
    /// The version this change produced.
    pub version: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// `user:<uuid>`, `admin:<uuid>`, `system:signup`, or `stripe:<event id>`.
    pub actor: String,
    /// `create`, `patch`, `cancel`, or the Stripe event's type.
    pub action: String,
    /// `[{"field": "/plan", "before": ..., "after": ...}]`, one per field the write changed
    /// (`before` is `null` on a create). Records written before fields were compared hold the
    /// fields a change set, as an object; [`AuditEntry::field_changes`] reads both.
    pub changes: serde_json::Value,
    /// The Stripe event that made the change, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

/// Fields every write changes, which say nothing about what the write did.
const UNAUDITED_FIELDS: [&str; 2] = ["version", "updated_at"];

impl AuditEntry {
    /// The audit record of `after` having just been written at its version, over `before` (the
    /// version it replaced; `None` for a create): every field whose value differs, before and
    /// after, as JSON pointers, in the order of their names.
    pub fn between(
        before: Option<&Subscription>,
        after: &Subscription,
        actor: impl Into<String>,
        action: impl Into<String>,
    ) -> Self {
        let fields = |subscription: Option<&Subscription>| match subscription.map(serde_json::to_value) {
            Some(Ok(serde_json::Value::Object(fields))) => fields,
            _ => serde_json::Map::new(),
        };
        let (old, new) = (fields(before), fields(Some(after)));
        let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
        names.sort();
        names.dedup();
        let changes = names
            .into_iter()
            .filter(|name| !UNAUDITED_FIELDS.contains(&name.as_str()))
            .filter_map(|name| {
                let before = old.get(name).cloned().unwrap_or(serde_json::Value::Null);
                let after = new.get(name).cloned().unwrap_or(serde_json::Value::Null);
                (before != after)
                    .then(|| serde_json::json!({"field": format!("/{name}"), "before": before, "after": after}))
            })
            .collect();
        AuditEntry {
            subscription_id: after.id,
            version: after.version,
            at: after.updated_at,
            actor: actor.into(),
            action: action.into(),
            changes: serde_json::Value::Array(changes),
            event: None,
        }
    }

    /// The same record, made by the Stripe event `id`.
    pub fn by_event(self, id: &str) -> Self {
        AuditEntry {
            event: Some(id.to_owned()),
            ..self
        }
    }

    /// The changes as `[{"field", "before", "after"}]`; a record of the older form (an object
    /// of the fields a change set) gives each field with its `after` and a `before` unknown
    /// (`null`).
    pub fn field_changes(&self) -> serde_json::Value {
        match &self.changes {
            serde_json::Value::Object(fields) => fields
                .iter()
                .filter(|(name, _)| name.as_str() != "event")
                .map(|(name, after)| serde_json::json!({"field": format!("/{name}"), "before": null, "after": after}))
                .collect(),
            serde_json::Value::Array(_) => self.changes.clone(),
            _ => serde_json::Value::Array(Vec::new()),
        }
    }
}

/// Which subscriptions a list holds: each filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionFilter {
    /// The subscriber's address, compared without regard to case.
    pub email: Option<String>,
    /// Where it stands.
    pub status: Option<crate::subscription::Status>,
    /// The plan's id.
    pub plan: Option<String>,
}

/// One page of a list of subscriptions.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionPage {
    /// At most the limit asked.
    pub subscriptions: Vec<Subscription>,
    /// Where the next page starts, when one may follow: the store's own position, opaque to
    /// callers, given back as `cursor`.
    pub next: Option<serde_json::Value>,
}

/// Where a Stripe event stands in the order of the events of one subscription: by `created`
/// (Stripe's seconds), then by id, so that two events of the same second are still ordered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventMark {
    /// Stripe's `created`, in seconds.
    pub created: i64,
    /// The event's id.
    pub id: String,
}

/// What a Stripe event is ordered against (API.md: ordering is per kind of state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOrder {
    /// A full snapshot of the subscription (`customer.subscription.*`): applied only when newer
    /// than every snapshot applied before it; it moves the snapshot mark.
    Snapshot,
    /// A status change from an invoice (`invoice.*`): applied only when newer than the last
    /// snapshot (so it never rolls a newer snapshot back) and than the last invoice event; it
    /// moves only the invoice mark, so an older snapshot not applied yet still applies.
    Invoice,
    /// A change of the customer (`customer.updated`: its default payment method), which no
    /// subscription snapshot carries: ordered only against earlier customer events.
    Customer,
}

/// A subscription write that goes with a recorded Stripe event.
#[derive(Clone, Copy, Debug)]
pub struct SubscriptionWrite<'a> {
    /// The new state at `expected_version + 1`; or, at `expected_version` itself, "unchanged":
    /// then only the event's mark is written, still on the condition that the subscription is
    /// at that version.
    pub next: &'a Subscription,
    /// The version the writer read.
    pub expected_version: u64,
    /// The audit record of the new version.
    pub audit: &'a AuditEntry,
    /// The event that produced it: written only if it is newer than the last one applied.
    pub mark: &'a EventMark,
    /// Which earlier events it is ordered against.
    pub order: EventOrder,
}

/// What became of [`Store::record_event`]. Nothing was written unless `Recorded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventWrite {
    /// The event (and its write) was recorded.
    Recorded,
    /// The event was recorded before (and has not expired).
    Duplicate,
    /// A newer event was already applied to the subscription.
    Stale,
    /// The subscription is no longer at the expected version: read it again and retry.
    VersionConflict,
}

/// The persistence the billing domain needs.
#[async_trait]
pub trait Store: Send + Sync {
    /// Stores a new subscription (at version 1) and its audit record, unless one with the same
    /// id exists: then [`StoreError::AlreadyExists`] and nothing is written. A Stripe id linked
    /// to another subscription is [`StoreError::LinkTaken`], and nothing is written.
    async fn create_subscription(&self, subscription: &Subscription, audit: &AuditEntry) -> Result<(), StoreError>;

    /// The subscription `id`, or [`StoreError::NotFound`].
    async fn get_subscription(&self, id: Uuid) -> Result<Subscription, StoreError>;

    /// Replaces the subscription with `next` (whose version must be `expected_version + 1`)
    /// only if the stored one is at `expected_version`; otherwise
    /// [`StoreError::VersionConflict`] (or [`StoreError::NotFound`]) and nothing is written. A
    /// Stripe id linked to another subscription is [`StoreError::LinkTaken`].
    async fn update_subscription(
        &self,
        next: &Subscription,
        expected_version: u64,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// The subscription linked to this Stripe subscription (an eventually consistent index).
    async fn find_by_stripe_subscription(&self, stripe_subscription: &str) -> Result<Subscription, StoreError>;

    /// The subscription linked to this Stripe customer (an eventually consistent index).
    async fn find_by_stripe_customer(&self, stripe_customer: &str) -> Result<Subscription, StoreError>;

    /// A subscription's audit records of the versions after `after` (0: from the first), oldest
    /// first, at most `limit`: one bounded query of the subscription's own records.
    async fn audit_page(&self, id: Uuid, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// Subscriptions matching `filter`, at most `limit`, from `cursor` (a page's `next`): by
    /// status, then plan, then creation; those of one email by creation. Served by an index per
    /// query, never by reading the whole table; a page may hold fewer than `limit` and still
    /// have a `next`. A cursor this store did not give for the same filter is
    /// [`StoreError::InvalidCursor`].
    async fn list_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        limit: usize,
        cursor: Option<&serde_json::Value>,
    ) -> Result<SubscriptionPage, StoreError>;

    /// Every audit record of a subscription, oldest first.
    async fn audit_trail(&self, id: Uuid) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_page(id, 0, usize::MAX).await
    }

    /// Records `key` until `expires_at` with its `outcome` (kept for review) and, in the same
    /// transaction, the subscription write the event causes, if any: all of it or none.
    async fn record_event(
        &self,
        key: &str,
        expires_at: DateTime<Utc>,
        outcome: &str,
        write: Option<SubscriptionWrite<'_>>,
    ) -> Result<EventWrite, StoreError>;

    /// Whether `key` is recorded and not expired. A record whose outcome is
    /// `unknown_subscription` counts as absent, here and for [`Store::record_event`]: the event
    /// applies once its subscription exists (a replay, a redelivery).
    async fn is_recorded(&self, key: &str) -> Result<bool, StoreError>;

    /// Keeps a received Stripe event with its outcome. With `replace`, an event kept before is
    /// replaced (a new outcome); without, it stays as it is (a duplicate delivery never hides
    /// the first outcome).
    async fn keep_event(&self, event: &KeptEvent, replace: bool) -> Result<(), StoreError>;

    /// The kept event `id`, or [`StoreError::NotFound`].
    async fn kept_event(&self, id: &str) -> Result<KeptEvent, StoreError>;

    /// Kept events with this outcome (any, when `None`), newest first, at most `limit`, from a
    /// page's `next`; one index query per outcome, never a read of the whole table.
    async fn list_kept_events(
        &self,
        outcome: Option<&str>,
        limit: usize,
        cursor: Option<&serde_json::Value>,
    ) -> Result<KeptEventPage, StoreError>;
}

impl StoreError {
    /// The store is unavailable for a reason given as text (no error value to keep).
    pub fn unavailable(reason: impl Into<String>) -> Self {
        StoreError::Unavailable(reason.into().into())
    }
}

impl SubscriptionWrite<'_> {
    /// Whether the write makes a new version (or only moves the event mark).
    pub fn changes_subscription(&self) -> bool {
        self.next.version != self.expected_version
    }

    /// Refuses a write whose versions do not line up, before it reaches a backend.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.changes_subscription() {
            check_next_version(self.next, self.expected_version, self.audit)
        } else {
            Ok(())
        }
    }
}

/// Refuses an update whose versions do not line up before it reaches a backend: every adapter
/// calls it first, so a defect in a use case never reaches the table.
pub fn check_next_version(next: &Subscription, expected_version: u64, audit: &AuditEntry) -> Result<(), StoreError> {
    if next.version != expected_version + 1 || audit.version != next.version || audit.subscription_id != next.id {
        return Err(StoreError::Corrupt(format!(
            "update of {} to version {} from expected version {expected_version} (audit version {})",
            next.id, next.version, audit.version
        )));
    }
    Ok(())
}
