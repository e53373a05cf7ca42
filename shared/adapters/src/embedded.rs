//! `EmbeddedStore`: the store in one redb file, for the local server and fast tests.
//!
//! redb runs one write transaction at a time, so a conditional write is a read and a write in
//! the same transaction: nothing can slip in between the check and the write. The indexes by
//! Stripe id are tables of their own, maintained in the same transaction as the subscription.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use uuid::Uuid;

use billing::store::{
    AuditEntry, Document, DocumentStore, DocumentWrite, EventMark, EventOrder, EventWrite, KeptEvent, KeptEventPage,
    Store, StoreError, SubscriptionFilter, SubscriptionPage, SubscriptionWrite, check_next_version, pack, unpack,
};
use billing::subscription::{Status, Subscription};

const SUBSCRIPTIONS: TableDefinition<&str, &str> = TableDefinition::new("subscriptions");
const BY_STRIPE_SUBSCRIPTION: TableDefinition<&str, &str> = TableDefinition::new("by_stripe_subscription");
const BY_STRIPE_CUSTOMER: TableDefinition<&str, &str> = TableDefinition::new("by_stripe_customer");
/// Key → `{"expires_at": <epoch seconds>, "outcome": ...}`.
const ONCE: TableDefinition<&str, &str> = TableDefinition::new("once_records");
/// Subscription id → the last Stripe event applied to it (`EventMark` as JSON).
const MARKS: TableDefinition<&str, &str> = TableDefinition::new("stripe_event_marks");
const AUDIT: TableDefinition<(&str, u64), &str> = TableDefinition::new("audit");
/// Stripe event id → the kept event (`KeptEvent` as JSON, its body in base64).
const KEPT_EVENTS: TableDefinition<&str, &str> = TableDefinition::new("kept_stripe_events");
/// Key → `{"version": n, "expires_at": <epoch seconds>|null, "body": ...}`.
const DOCUMENTS: TableDefinition<&str, &str> = TableDefinition::new("documents");

/// The `Store` and `DocumentStore` ports on one redb database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens the store file at `path`, creating it (and its tables) when missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        EmbeddedStore::with_tables(Database::create(path.as_ref()).map_err(unavailable)?)
    }

    /// A store held in memory only: the same transactions without the file and its fsyncs, so
    /// a measurement of a handler is not a measurement of the disk.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(unavailable)?;
        EmbeddedStore::with_tables(db)
    }

    fn with_tables(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write().map_err(unavailable)?;
        {
            txn.open_table(SUBSCRIPTIONS).map_err(unavailable)?;
            txn.open_table(BY_STRIPE_SUBSCRIPTION).map_err(unavailable)?;
            txn.open_table(BY_STRIPE_CUSTOMER).map_err(unavailable)?;
            txn.open_table(ONCE).map_err(unavailable)?;
            txn.open_table(MARKS).map_err(unavailable)?;
            txn.open_table(KEPT_EVENTS).map_err(unavailable)?;
            txn.open_table(AUDIT).map_err(unavailable)?;
            txn.open_table(DOCUMENTS).map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    /// Runs blocking redb work off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?
    }

    async fn find_by_index(
        &self,
        index: TableDefinition<'static, &'static str, &'static str>,
        key: &str,
    ) -> Result<Subscription, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(index).map_err(unavailable)?;
            let id = index
                .get(key.as_str())
                .map_err(unavailable)?
                .ok_or(StoreError::NotFound)?
                .value()
                .to_owned();
            let table = txn.open_table(SUBSCRIPTIONS).map_err(unavailable)?;
            let json = table
                .get(id.as_str())
                .map_err(unavailable)?
                .ok_or(StoreError::NotFound)?;
            decode(json.value())
        })
        .await
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create_subscription(&self, subscription: &Subscription, audit: &AuditEntry) -> Result<(), StoreError> {
        let subscription = subscription.clone();
        let audit = audit.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let id = subscription.id.to_string();
                let mut table = txn.open_table(SUBSCRIPTIONS).map_err(unavailable)?;
                if table.get(id.as_str()).map_err(unavailable)?.is_some() {
                    return Err(StoreError::AlreadyExists);
                }
                table
                    .insert(id.as_str(), encode(&subscription)?.as_str())
                    .map_err(unavailable)?;
                reindex(&txn, &id, None, &subscription)?;
                append_audit(&txn, &audit)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn get_subscription(&self, id: Uuid) -> Result<Subscription, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(SUBSCRIPTIONS).map_err(unavailable)?;
            let json = table
                .get(id.to_string().as_str())
                .map_err(unavailable)?
                .ok_or(StoreError::NotFound)?;
            decode(json.value())
        })
        .await
    }

    async fn update_subscription(
        &self,
        next: &Subscription,
        expected_version: u64,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        check_next_version(next, expected_version, audit)?;
        let next = next.clone();
        let audit = audit.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let id = next.id.to_string();
                let mut table = txn.open_table(SUBSCRIPTIONS).map_err(unavailable)?;
                let current = {
                    let json = table
                        .get(id.as_str())
                        .map_err(unavailable)?
                        .ok_or(StoreError::NotFound)?;
                    decode(json.value())?
                };
                if current.version != expected_version {
                    return Err(StoreError::VersionConflict);
                }
                table
                    .insert(id.as_str(), encode(&next)?.as_str())
                    .map_err(unavailable)?;
                reindex(&txn, &id, Some(&current), &next)?;
                append_audit(&txn, &audit)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn find_by_stripe_subscription(&self, stripe_subscription: &str) -> Result<Subscription, StoreError> {
        self.find_by_index(BY_STRIPE_SUBSCRIPTION, stripe_subscription).await
    }

    async fn find_by_stripe_customer(&self, stripe_customer: &str) -> Result<Subscription, StoreError> {
        self.find_by_index(BY_STRIPE_CUSTOMER, stripe_customer).await
    }

    /// Reads every subscription and sorts the matches: the embedded store serves the local server
    /// and tests, where the table is small; DynamoDB reads an index instead.
    async fn list_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        limit: usize,
        cursor: Option<&serde_json::Value>,
    ) -> Result<SubscriptionPage, StoreError> {
        let after = match cursor {
            None => None,
            Some(cursor) => Some(cursor["after"].as_str().ok_or(StoreError::InvalidCursor)?.to_owned()),
        };
        let filter = filter.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(SUBSCRIPTIONS).map_err(unavailable)?;
            let mut matching = Vec::new();
            for entry in table.iter().map_err(unavailable)? {
                let (_, json) = entry.map_err(unavailable)?;
                let subscription = decode(json.value())?;
                let matches = filter
                    .email
                    .as_ref()
                    .is_none_or(|email| email.to_lowercase() == subscription.email.to_lowercase())
                    && filter.status.is_none_or(|status| status == subscription.status)
                    && filter.plan.as_ref().is_none_or(|plan| *plan == subscription.plan);
                if matches {
                    matching.push((listing_key(&filter, &subscription), subscription));
                }
            }
            let (subscriptions, next) = page_after(matching, after.as_deref(), limit);
            Ok(SubscriptionPage { subscriptions, next })
        })
        .await
    }

    async fn audit_page(&self, id: Uuid, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(AUDIT).map_err(unavailable)?;
            let id = id.to_string();
            table
                .range((id.as_str(), after.saturating_add(1))..=(id.as_str(), u64::MAX))
                .map_err(unavailable)?
                .take(limit)
                .map(|entry| {
                    let (_, json) = entry.map_err(unavailable)?;
                    serde_json::from_str(json.value()).map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .collect()
        })
        .await
    }

    async fn record_event(
        &self,
        key: &str,
        expires_at: DateTime<Utc>,
        outcome: &str,
        write: Option<SubscriptionWrite<'_>>,
    ) -> Result<EventWrite, StoreError> {
        if let Some(write) = &write {
            write.check()?;
        }
        let key = key.to_owned();
        let record = serde_json::json!({"expires_at": expires_at.timestamp(), "outcome": outcome}).to_string();
        let write = write.map(|w| {
            (
                w.next.clone(),
                w.expected_version,
                w.audit.clone(),
                w.mark.clone(),
                w.order,
            )
        });
        self.blocking(move |db| {
            let now = Utc::now().timestamp();
            let txn = db.begin_write().map_err(unavailable)?;
            let outcome = {
                let mut once = txn.open_table(ONCE).map_err(unavailable)?;
                let live = once
                    .get(key.as_str())
                    .map_err(unavailable)?
                    .and_then(|v| serde_json::from_str::<serde_json::Value>(v.value()).ok())
                    .is_some_and(|record| counts_as_handled(&record, now));
                if live {
                    return Ok(EventWrite::Duplicate);
                }
                if let Some((next, expected, audit, mark, order)) = &write {
                    let id = next.id.to_string();
                    let invoice_id = format!("{id}#invoice");
                    let mut marks = txn.open_table(MARKS).map_err(unavailable)?;
                    let last = |key: &str| -> Result<Option<EventMark>, StoreError> {
                        marks
                            .get(key)
                            .map_err(unavailable)?
                            .map(|v| serde_json::from_str(v.value()))
                            .transpose()
                            .map_err(|e| StoreError::Corrupt(e.to_string()))
                    };
                    // Snapshots are ordered against snapshots; invoice events against both.
                    let (fences, mark_key) = match order {
                        EventOrder::Snapshot => (vec![last(&id)?], id.clone()),
                        EventOrder::Invoice => (vec![last(&id)?, last(&invoice_id)?], invoice_id),
                        EventOrder::Customer => {
                            let customer_id = format!("{id}#customer");
                            (vec![last(&customer_id)?], customer_id)
                        }
                    };
                    if fences.into_iter().flatten().any(|last| last >= *mark) {
                        return Ok(EventWrite::Stale);
                    }
                    let mut table = txn.open_table(SUBSCRIPTIONS).map_err(unavailable)?;
                    let current = {
                        let json = table
                            .get(id.as_str())
                            .map_err(unavailable)?
                            .ok_or(StoreError::NotFound)?;
                        decode(json.value())?
                    };
                    if current.version != *expected {
                        return Ok(EventWrite::VersionConflict);
                    }
                    if next.version != *expected {
                        table.insert(id.as_str(), encode(next)?.as_str()).map_err(unavailable)?;
                        reindex(&txn, &id, Some(&current), next)?;
                        append_audit(&txn, audit)?;
                    }
                    let mark = serde_json::to_string(mark).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    marks.insert(mark_key.as_str(), mark.as_str()).map_err(unavailable)?;
                }
                once.insert(key.as_str(), record.as_str()).map_err(unavailable)?;
                EventWrite::Recorded
            };
            txn.commit().map_err(unavailable)?;
            Ok(outcome)
        })
        .await
    }

    async fn is_recorded(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let once = txn.open_table(ONCE).map_err(unavailable)?;
            let now = Utc::now().timestamp();
            Ok(once
                .get(key.as_str())
                .map_err(unavailable)?
                .and_then(|v| serde_json::from_str::<serde_json::Value>(v.value()).ok())
                .is_some_and(|record| counts_as_handled(&record, now)))
        })
        .await
    }

    async fn keep_event(&self, event: &KeptEvent, replace: bool) -> Result<(), StoreError> {
        let (encoding, stored) = pack(&event.body);
        let id = event.id.clone();
        let record = serde_json::json!({
            "type": event.kind,
            "created": event.created,
            "outcome": event.outcome,
            "subscription_id": event.subscription_id,
            "body_encoding": encoding,
            "body": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, stored),
            "kept_until": event.kept_until.timestamp(),
        })
        .to_string();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut kept = txn.open_table(KEPT_EVENTS).map_err(unavailable)?;
                let present = kept.get(id.as_str()).map_err(unavailable)?.is_some();
                if replace || !present {
                    kept.insert(id.as_str(), record.as_str()).map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn kept_event(&self, id: &str) -> Result<KeptEvent, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let kept = txn.open_table(KEPT_EVENTS).map_err(unavailable)?;
            let json = kept
                .get(id.as_str())
                .map_err(unavailable)?
                .ok_or(StoreError::NotFound)?;
            decode_kept_event(&id, json.value())
        })
        .await
    }

    /// Reads every kept event: the embedded store serves the local server and tests.
    async fn list_kept_events(
        &self,
        outcome: Option<&str>,
        limit: usize,
        cursor: Option<&serde_json::Value>,
    ) -> Result<KeptEventPage, StoreError> {
        let after = match cursor {
            None => None,
            Some(cursor) => Some(cursor["after"].as_str().ok_or(StoreError::InvalidCursor)?.to_owned()),
        };
        let outcome = outcome.map(str::to_owned);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let kept = txn.open_table(KEPT_EVENTS).map_err(unavailable)?;
            let mut matching = Vec::new();
            for entry in kept.iter().map_err(unavailable)? {
                let (id, json) = entry.map_err(unavailable)?;
                let event = decode_kept_event(id.value(), json.value())?;
                if outcome.as_ref().is_none_or(|outcome| *outcome == event.outcome) {
                    // Newest first: the key sorts descending by creation through its complement.
                    let key = format!("{:012}#{}", i64::MAX - event.created.max(0), event.id);
                    matching.push((key, event));
                }
            }
            let (events, next) = page_after(matching, after.as_deref(), limit);
            Ok(KeptEventPage { events, next })
        })
        .await
    }
}

/// One page of a list the embedded store sorts itself: the items whose sort key comes after
/// `after`, at most `limit`, and the cursor of the next page when more follow.
fn page_after<T>(
    mut keyed: Vec<(String, T)>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<T>, Option<serde_json::Value>) {
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rest = keyed
        .into_iter()
        .filter(|(key, _)| after.is_none_or(|after| key.as_str() > after));
    let page: Vec<_> = rest.by_ref().take(limit).collect();
    let next = page
        .last()
        .filter(|_| rest.next().is_some())
        .map(|(key, _)| serde_json::json!({"after": key}));
    (page.into_iter().map(|(_, item)| item).collect(), next)
}

/// Whether a record of an event stands for "handled": not expired, and not an outcome that
/// applies again once its subscription exists.
fn counts_as_handled(record: &serde_json::Value, now: i64) -> bool {
    record["outcome"] != "unknown_subscription" && record["expires_at"].as_i64().is_some_and(|expiry| expiry > now)
}

fn decode_kept_event(id: &str, json: &str) -> Result<KeptEvent, StoreError> {
    use base64::Engine;
    let record: serde_json::Value = serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("kept event {id} without its {what}"));
    let stored = base64::engine::general_purpose::STANDARD
        .decode(record["body"].as_str().ok_or_else(|| corrupt("body"))?)
        .map_err(|_| corrupt("body"))?;
    Ok(KeptEvent {
        id: id.to_owned(),
        kind: record["type"].as_str().ok_or_else(|| corrupt("type"))?.to_owned(),
        created: record["created"].as_i64().ok_or_else(|| corrupt("created"))?,
        outcome: record["outcome"].as_str().ok_or_else(|| corrupt("outcome"))?.to_owned(),
        subscription_id: record["subscription_id"].as_str().and_then(|text| text.parse().ok()),
        body: unpack(
            record["body_encoding"].as_str().ok_or_else(|| corrupt("encoding"))?,
            &stored,
        )?,
        kept_until: DateTime::from_timestamp(record["kept_until"].as_i64().unwrap_or_default(), 0).unwrap_or_default(),
    })
}

/// Points the Stripe-id indexes at `next`, dropping entries `previous` had that it lost.
fn reindex(
    txn: &redb::WriteTransaction,
    id: &str,
    previous: Option<&Subscription>,
    next: &Subscription,
) -> Result<(), StoreError> {
    let pairs = [
        (
            BY_STRIPE_SUBSCRIPTION,
            "/stripe_subscription",
            previous.and_then(|p| p.stripe_subscription.as_deref()),
            next.stripe_subscription.as_deref(),
        ),
        (
            BY_STRIPE_CUSTOMER,
            "/stripe_customer",
            previous.and_then(|p| p.stripe_customer.as_deref()),
            next.stripe_customer.as_deref(),
        ),
    ];
    for (definition, field, old, new) in pairs {
        if old == new {
            continue;
        }
        let mut index = txn.open_table(definition).map_err(unavailable)?;
        // A Stripe id belongs to one subscription: never re-point it (the caller's transaction
        // is dropped, so nothing is written).
        if let Some(new) = new
            && index
                .get(new)
                .map_err(unavailable)?
                .is_some_and(|owner| owner.value() != id)
        {
            return Err(StoreError::LinkTaken(field));
        }
        if let Some(old) = old {
            let points_here = index.get(old).map_err(unavailable)?.is_some_and(|v| v.value() == id);
            if points_here {
                index.remove(old).map_err(unavailable)?;
            }
        }
        if let Some(new) = new {
            index.insert(new, id).map_err(unavailable)?;
        }
    }
    Ok(())
}

fn append_audit(txn: &redb::WriteTransaction, audit: &AuditEntry) -> Result<(), StoreError> {
    let mut table = txn.open_table(AUDIT).map_err(unavailable)?;
    let json = serde_json::to_string(audit).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let id = audit.subscription_id.to_string();
    table
        .insert((id.as_str(), audit.version), json.as_str())
        .map_err(unavailable)?;
    Ok(())
}

fn encode(subscription: &Subscription) -> Result<String, StoreError> {
    serde_json::to_string(subscription).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode(json: &str) -> Result<Subscription, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredDocument {
    version: u64,
    expires_at: Option<i64>,
    body: serde_json::Value,
}

impl StoredDocument {
    fn live_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|expiry| expiry > now.timestamp())
    }
}

fn read_document(json: &str) -> Result<StoredDocument, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl DocumentStore for EmbeddedStore {
    async fn get_document(&self, key: &str, now: DateTime<Utc>) -> Result<Option<Document>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(DOCUMENTS).map_err(unavailable)?;
            let Some(json) = table.get(key.as_str()).map_err(unavailable)? else {
                return Ok(None);
            };
            let stored = read_document(json.value())?;
            if !stored.live_at(now) {
                return Ok(None);
            }
            Ok(Some(Document {
                expires_at: stored.expires_at.and_then(|s| DateTime::from_timestamp(s, 0)),
                version: stored.version,
                body: stored.body,
            }))
        })
        .await
    }

    async fn put_document(
        &self,
        key: &str,
        body: &serde_json::Value,
        expires_at: Option<DateTime<Utc>>,
        expected: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let key = key.to_owned();
        let body = body.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let version = {
                let mut table = txn.open_table(DOCUMENTS).map_err(unavailable)?;
                let current = match table.get(key.as_str()).map_err(unavailable)? {
                    Some(json) => Some(read_document(json.value())?),
                    None => None,
                };
                let version = match (expected, current) {
                    (None, Some(current)) if current.live_at(now) => return Err(StoreError::AlreadyExists),
                    (None, _) => 1,
                    (Some(expected), Some(current)) if current.version == expected => expected + 1,
                    (Some(_), _) => return Err(StoreError::VersionConflict),
                };
                let stored = StoredDocument {
                    version,
                    expires_at: expires_at.map(|e| e.timestamp()),
                    body,
                };
                let json = serde_json::to_string(&stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                table.insert(key.as_str(), json.as_str()).map_err(unavailable)?;
                version
            };
            txn.commit().map_err(unavailable)?;
            Ok(version)
        })
        .await
    }

    async fn put_documents(&self, writes: &[DocumentWrite<'_>], now: DateTime<Utc>) -> Result<(), StoreError> {
        let writes: Vec<(String, serde_json::Value, Option<i64>, Option<u64>)> = writes
            .iter()
            .map(|w| {
                (
                    w.key.to_owned(),
                    w.body.clone(),
                    w.expires_at.map(|e| e.timestamp()),
                    w.expected,
                )
            })
            .collect();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut table = txn.open_table(DOCUMENTS).map_err(unavailable)?;
                let mut stored = Vec::new();
                for (key, body, expires_at, expected) in writes {
                    let current = match table.get(key.as_str()).map_err(unavailable)? {
                        Some(json) => Some(read_document(json.value())?),
                        None => None,
                    };
                    let version = match (expected, current) {
                        (None, Some(current)) if current.live_at(now) => return Err(StoreError::VersionConflict),
                        (None, _) => 1,
                        (Some(expected), Some(current)) if current.version == expected => expected + 1,
                        (Some(_), _) => return Err(StoreError::VersionConflict),
                    };
                    let document = StoredDocument {
                        version,
                        expires_at,
                        body,
                    };
                    stored.push((
                        key,
                        serde_json::to_string(&document).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    ));
                }
                for (key, json) in stored {
                    table.insert(key.as_str(), json.as_str()).map_err(unavailable)?;
                }
            }
            // Returning before the commit drops the transaction: nothing is written.
            txn.commit().map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn list_documents(
        &self,
        collection: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Document)>, StoreError> {
        // Members are keyed `<collection>/<member>`: the range from `<collection>/` up to
        // `<collection>0` (the character after `/`) holds exactly them.
        let (from, to) = (format!("{collection}/"), format!("{collection}0"));
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(DOCUMENTS).map_err(unavailable)?;
            let mut members = Vec::new();
            for entry in table.range(from.as_str()..to.as_str()).map_err(unavailable)? {
                let (key, json) = entry.map_err(unavailable)?;
                let stored = read_document(json.value())?;
                if !stored.live_at(now) {
                    continue;
                }
                let member = key.value()[from.len()..].to_owned();
                members.push((
                    member,
                    Document {
                        expires_at: stored.expires_at.and_then(|s| DateTime::from_timestamp(s, 0)),
                        version: stored.version,
                        body: stored.body,
                    },
                ));
            }
            Ok(members)
        })
        .await
    }

    async fn list_documents_range(
        &self,
        collection: &str,
        after: Option<&str>,
        through: &str,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Document)>, StoreError> {
        let prefix = format!("{collection}/");
        let from = format!("{prefix}{}", after.unwrap_or(""));
        let to = format!("{prefix}{through}");
        let after = after.map(|a| format!("{prefix}{a}"));
        if to < from {
            return Ok(Vec::new());
        }
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(DOCUMENTS).map_err(unavailable)?;
            let mut members = Vec::new();
            for entry in table.range(from.as_str()..=to.as_str()).map_err(unavailable)? {
                let (key, json) = entry.map_err(unavailable)?;
                if after.as_deref() == Some(key.value()) {
                    continue;
                }
                let stored = read_document(json.value())?;
                if !stored.live_at(now) {
                    continue;
                }
                members.push((
                    key.value()[prefix.len()..].to_owned(),
                    Document {
                        expires_at: stored.expires_at.and_then(|s| DateTime::from_timestamp(s, 0)),
                        version: stored.version,
                        body: stored.body,
                    },
                ));
                if members.len() == limit {
                    break;
                }
            }
            Ok(members)
        })
        .await
    }
}

/// Where a subscription stands in a list: by status (in `Status::ALL` order), plan and creation,
/// or, in the list of one email, by creation: the order DynamoDB's index gives.
fn listing_key(filter: &SubscriptionFilter, subscription: &Subscription) -> String {
    let created = format!(
        "{}#{}",
        subscription.created_at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
        subscription.id
    );
    if filter.email.is_some() {
        return created;
    }
    let status = Status::ALL
        .iter()
        .position(|status| *status == subscription.status)
        .unwrap_or(Status::ALL.len());
    format!("{status:02}#{}#{created}", subscription.plan)
}
