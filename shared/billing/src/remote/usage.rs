//! Usage uploads (API.md, "Usage upload"): a server sends its realms and its realm audit-log
//! rows; the rows are kept per server with the billed count each carries, the upload time is
//! recorded, and the license ledgers of the automatic plans the rows touch are synced.
//!
//! | record | key | write |
//! |---|---|---|
//! | upload marker | `usage#<server>/marker`: last row id received, last upload time | versioned |
//! | latest counts | `usage#<server>/latest`: each realm's latest count, for the server's total | versioned |
//! | audit row | `usage#<server>/row#<id, 20 digits>` | created once |
//!
//! Rows are taken in id order, in chunks: each chunk's rows, the marker, the latest counts and
//! the ledger rows and plans its counts change are written in one transaction (at most 100
//! items, DynamoDB's limit), so a chunk is stored and synced whole or not at all. A failure
//! between chunks leaves the marker at the last stored chunk; the server re-sends the upload,
//! the rows already received are dropped, and the rest go on from there. A re-sent upload
//! changes nothing but the upload time.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::records::{RealmOwner, RemoteRealm, RemoteServer, realm_owner_key};
use super::service::{RemoteBilling, RemoteError};
use crate::errors::{FieldError, Slug, ValidationErrors};
use crate::plans::stored::PlannedWrite;
use crate::plans::{self, CountAt, Entity, LicenseManagement, PlanStatus};
use crate::store::{DocumentWrite, StoreError, member_key};

/// The most rows (and realms) one upload may carry.
pub const MAX_ROWS: usize = 10_000;

/// How far ahead of the service's clock a row's `event_time` may be.
pub const FUTURE_ALLOWANCE: chrono::Duration = chrono::Duration::hours(1);

/// The audit-log event types whose rows carry counts: users created, activated, deactivated,
/// reactivated, role changed; realm deactivated, reactivated.
pub const SYNCED_EVENT_TYPES: [u16; 7] = [101, 102, 103, 104, 105, 201, 202];

/// Rows of one transaction, before halving when their writes would not fit.
const CHUNK_ROWS: usize = 40;
/// DynamoDB's limit on the items of one transaction.
const MAX_TRANSACTION_ITEMS: usize = 100;

/// A realm as the server reports it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadedRealm {
    /// The realm's id.
    pub uuid: Uuid,
    /// Its host name.
    pub host: String,
    /// Its name.
    pub name: String,
    /// Zulip's organization type.
    #[serde(default)]
    pub org_type: Option<i64>,
    /// When it was created (Unix seconds).
    #[serde(default)]
    pub date_created: Option<f64>,
    /// Whether the realm is deactivated.
    #[serde(default)]
    pub deactivated: bool,
    /// Whether it is the server's internal bot realm (never billed).
    #[serde(default)]
    pub is_system_bot_realm: bool,
}

/// One realm audit-log row.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadedRow {
    /// Its id on the server: strictly increasing.
    pub id: u64,
    /// The realm.
    pub realm: Uuid,
    /// What happened.
    pub event_type: u16,
    /// When (Unix seconds).
    pub event_time: f64,
    /// Whether the server made it up afterwards.
    #[serde(default)]
    pub backfilled: bool,
    /// The realm's counts after the event.
    #[serde(default)]
    pub extra_data: Option<Value>,
}

/// `POST /api/v1/remotes/server/analytics`'s body.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// The server's realms; when present, realms it leaves out are marked locally deleted.
    #[serde(default)]
    pub realms: Option<Vec<UploadedRealm>>,
    /// Audit-log rows since the last upload.
    #[serde(default)]
    pub realm_audit_logs: Vec<UploadedRow>,
    /// The server's version.
    #[serde(default)]
    pub version: Option<String>,
}

impl Upload {
    /// Reads the body; anything unreadable is `invalid_format` with serde's account of where.
    pub fn read(body: &[u8]) -> Result<Self, ValidationErrors> {
        serde_json::from_slice(body).map_err(|e| {
            FieldError::general(Slug::InvalidFormat, format!("the body is not a usage upload: {e}")).into()
        })
    }
}

/// The billed count a row's `extra_data` carries: every human role, guests included
/// (`{"10": {"11": {"100": owners, ..., "600": guests}, "12": bots}}`). `None` when it has none.
pub fn billed_count(extra_data: Option<&Value>) -> Option<u32> {
    let roles = extra_data?.get("10")?.get("11")?.as_object()?;
    let total: u64 = roles.values().filter_map(Value::as_u64).sum();
    u32::try_from(total).ok()
}

/// Where the uploads of a server stand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMarker {
    /// The greatest row id received.
    pub last_audit_log_id: Option<u64>,
    /// When the server last uploaded (with or without new rows).
    pub last_upload_at: Option<DateTime<Utc>>,
}

/// One stored audit row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRow {
    /// The server's id of it.
    pub id: u64,
    /// The realm.
    pub realm: Uuid,
    /// What happened.
    pub event_type: u16,
    /// When.
    pub event_time: DateTime<Utc>,
    /// The realm's billed count after it, when the row carries one.
    pub count: Option<u32>,
}

/// Each realm's latest count: the server's billed count is their sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestCounts {
    /// Realm → (when, count).
    pub realms: BTreeMap<Uuid, (DateTime<Utc>, u32)>,
}

impl LatestCounts {
    /// The server's billed count.
    pub fn total(&self) -> u32 {
        self.realms.values().map(|(_, count)| *count).sum()
    }
}

/// The collection of a server's usage records.
pub fn usage_collection(server: Uuid) -> String {
    format!("usage#{server}")
}

fn row_member(id: u64) -> String {
    format!("row#{id:020}")
}

/// What an upload stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOutcome {
    /// Rows new to the service.
    pub stored_rows: usize,
    /// Ledger rows appended across the entities synced.
    pub ledger_rows: usize,
}

/// Checks the rows new to the service (those after `last_received`), every error at once:
/// ids strictly increasing, known event types, realms listed or known.
fn check_rows<'a>(
    upload: &'a Upload,
    last_received: Option<u64>,
    known_realms: &BTreeSet<Uuid>,
    received: &BTreeSet<u64>,
    now: DateTime<Utc>,
) -> Result<Vec<(usize, &'a UploadedRow)>, ValidationErrors> {
    // A row from the future would move the end of cycle forward: a server's clock may run a
    // little ahead, not more.
    let latest = (now + FUTURE_ALLOWANCE).timestamp() as f64;
    let mut errors = Vec::new();
    if upload.realm_audit_logs.len() > MAX_ROWS {
        errors.push(FieldError::field(
            Slug::InvalidValue,
            "/realm_audit_logs",
            format!("at most {MAX_ROWS} rows per upload"),
        ));
    }
    if upload.realms.as_ref().is_some_and(|realms| realms.len() > MAX_ROWS) {
        errors.push(FieldError::field(
            Slug::InvalidValue,
            "/realms",
            format!("at most {MAX_ROWS} realms per upload"),
        ));
    }
    let mut previous = last_received;
    let mut fresh = Vec::new();
    for (index, row) in upload.realm_audit_logs.iter().enumerate() {
        // Rows already received are dropped: an upload can be re-sent whole. A row at or
        // below the last received that never was is out of order: its count would be lost.
        if last_received.is_some_and(|last| row.id <= last) {
            if !received.contains(&row.id) {
                errors.push(FieldError::field(
                    Slug::InvalidValue,
                    format!("/realm_audit_logs/{index}/id"),
                    format!(
                        "out of order: at or below the last id received ({}) and never received",
                        last_received.unwrap_or_default()
                    ),
                ));
            }
            continue;
        }
        if previous.is_some_and(|p| row.id <= p) {
            errors.push(FieldError::field(
                Slug::InvalidValue,
                format!("/realm_audit_logs/{index}/id"),
                format!(
                    "ids must be strictly increasing and greater than any received ({})",
                    previous.unwrap_or_default()
                ),
            ));
        }
        previous = Some(previous.map_or(row.id, |p| p.max(row.id)));
        if !SYNCED_EVENT_TYPES.contains(&row.event_type) {
            errors.push(FieldError::field(
                Slug::InvalidValue,
                format!("/realm_audit_logs/{index}/event_type"),
                "unknown event type; one of 101-105, 201, 202",
            ));
        }
        if !known_realms.contains(&row.realm) {
            errors.push(FieldError::field(
                Slug::InvalidValue,
                format!("/realm_audit_logs/{index}/realm"),
                "a realm of this server that is not listed in realms and was never registered",
            ));
        }
        if !(row.event_time.is_finite() && row.event_time >= 0.0) {
            errors.push(FieldError::field(
                Slug::InvalidValue,
                format!("/realm_audit_logs/{index}/event_time"),
                "a Unix time in seconds",
            ));
        } else if row.event_time > latest {
            errors.push(FieldError::field(
                Slug::InvalidValue,
                format!("/realm_audit_logs/{index}/event_time"),
                "more than an hour ahead of the service's clock",
            ));
        }
        fresh.push((index, row));
    }
    if errors.is_empty() {
        Ok(fresh)
    } else {
        Err(ValidationErrors(crate::body::one_per_field(errors)))
    }
}

fn time_of(seconds: f64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds.floor() as i64, 0)
        .single()
        .unwrap_or_default()
}

impl RemoteBilling {
    /// The ids among the upload's rows at or below the last one received that were received:
    /// those are dropped; any other row there is out of order. One range read of the stored
    /// rows between the lowest such id and the last received.
    async fn received_ids(
        &self,
        collection: &str,
        upload: &Upload,
        last_received: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<BTreeSet<u64>, RemoteError> {
        let Some(last) = last_received else {
            return Ok(BTreeSet::new());
        };
        let Some(lowest) = upload
            .realm_audit_logs
            .iter()
            .map(|row| row.id)
            .filter(|id| *id <= last)
            .min()
        else {
            return Ok(BTreeSet::new());
        };
        let mut received = BTreeSet::new();
        // Members after the one just before the lowest id's: the range starts at the lowest.
        let mut after = match lowest.checked_sub(1) {
            Some(before) => row_member(before),
            None => "row#".to_owned(),
        };
        let through = row_member(last);
        loop {
            let page = self
                .records
                .documents()
                .list_documents_range(collection, Some(&after), &through, 1000, now)
                .await?;
            let full = page.len() == 1000;
            for (member, _) in page {
                if let Some(id) = member.strip_prefix("row#").and_then(|id| id.parse::<u64>().ok()) {
                    received.insert(id);
                }
                after = member;
            }
            if !full {
                return Ok(received);
            }
        }
    }

    /// `GET /api/v1/remotes/server/analytics/status`: the last row id received.
    pub async fn upload_status(&self, server: &RemoteServer, now: DateTime<Utc>) -> Result<UploadMarker, RemoteError> {
        Ok(self
            .records
            .get::<UploadMarker>(&member_key(&usage_collection(server.uuid), "marker"), now)
            .await?
            .map(|(marker, _)| marker)
            .unwrap_or_default())
    }

    /// `POST /api/v1/remotes/server/analytics`: stores the new rows, records the upload time,
    /// and syncs the ledgers the rows touch (see the module's documentation). Nothing is stored
    /// when the upload is refused: a realm registered to another server (403), or rows out of
    /// order, of an unknown type or realm (400).
    pub async fn record_upload(
        &self,
        server: &RemoteServer,
        upload: &Upload,
        now: DateTime<Utc>,
    ) -> Result<UploadOutcome, RemoteError> {
        // Every realm named, listed or in a row, must be this server's or nobody's yet.
        let listed: &[UploadedRealm] = upload.realms.as_deref().unwrap_or_default();
        let mut named: BTreeSet<Uuid> = listed.iter().map(|r| r.uuid).collect();
        named.extend(upload.realm_audit_logs.iter().map(|r| r.realm));
        let mut known = BTreeSet::new();
        for realm in &named {
            if let Some((owner, _)) = self.records.get::<RealmOwner>(&realm_owner_key(*realm), now).await? {
                if owner.server_uuid != server.uuid {
                    tracing::warn!(%realm, server = %server.uuid, owner = %owner.server_uuid, "usage upload names another server's realm");
                    return Err(RemoteError::RealmServerMismatch);
                }
                known.insert(*realm);
            }
        }
        known.extend(listed.iter().map(|r| r.uuid));
        let collection = usage_collection(server.uuid);
        let marker_key = member_key(&collection, "marker");
        let (marker, _) = self
            .records
            .get::<UploadMarker>(&marker_key, now)
            .await?
            .unwrap_or_default();
        let received = self
            .received_ids(&collection, upload, marker.last_audit_log_id, now)
            .await?;
        let fresh =
            check_rows(upload, marker.last_audit_log_id, &known, &received, now).map_err(RemoteError::Invalid)?;
        for realm in listed {
            if realm.is_system_bot_realm {
                continue;
            }
            let record = RemoteRealm {
                uuid: realm.uuid,
                server_uuid: server.uuid,
                host: realm.host.clone(),
                name: realm.name.clone(),
                uri_scheme: server.scheme().to_owned(),
                plan: Default::default(),
                licenses: None,
                registered_at: now,
                locally_deleted: false,
            };
            self.claim_realm(server, record, now).await?;
        }
        if upload.realms.is_some() {
            self.mark_missing_realms(server, listed, now).await?;
        }
        let rows: Vec<StoredRow> = fresh
            .iter()
            .map(|(_, row)| StoredRow {
                id: row.id,
                realm: row.realm,
                event_type: row.event_type,
                event_time: time_of(row.event_time),
                count: billed_count(row.extra_data.as_ref()),
            })
            .collect();
        let mut outcome = UploadOutcome {
            stored_rows: 0,
            ledger_rows: 0,
        };
        let mut start = 0;
        loop {
            let mut size = CHUNK_ROWS.min(rows.len() - start);
            loop {
                match self.store_chunk(server, &rows[start..start + size], now).await {
                    Ok(appended) => {
                        outcome.stored_rows += size;
                        outcome.ledger_rows += appended;
                        break;
                    }
                    Err(ChunkError::TooLarge) if size > 1 => size /= 2,
                    Err(ChunkError::TooLarge) => {
                        return Err(RemoteError::from(StoreError::Corrupt(
                            "one audit row makes more writes than a transaction holds".into(),
                        )));
                    }
                    Err(ChunkError::Store(StoreError::VersionConflict)) => {
                        // Another upload of the same server, or a page changing a plan, went
                        // first: read again; rows it stored are dropped as received.
                        return Err(RemoteError::from(StoreError::VersionConflict));
                    }
                    Err(ChunkError::Store(other)) => return Err(other.into()),
                }
            }
            start += size;
            if start >= rows.len() {
                break;
            }
        }
        tracing::info!(server = %server.uuid, rows = outcome.stored_rows, ledger_rows = outcome.ledger_rows, "usage upload recorded");
        Ok(outcome)
    }

    /// Marks the server's realms that `listed` leaves out as locally deleted, and restores the
    /// listed ones that were.
    async fn mark_missing_realms(
        &self,
        server: &RemoteServer,
        listed: &[UploadedRealm],
        now: DateTime<Utc>,
    ) -> Result<(), RemoteError> {
        let listed: BTreeSet<Uuid> = listed.iter().map(|r| r.uuid).collect();
        for realm in self.records.realms_of(server.uuid, now).await? {
            let deleted = !listed.contains(&realm.uuid);
            if realm.locally_deleted == deleted {
                continue;
            }
            let key = super::records::realm_key(server.uuid, realm.uuid);
            crate::store::retry_on_conflict(|_| async {
                let Some((mut current, version)) = self.records.get::<RemoteRealm>(&key, now).await? else {
                    return Ok(());
                };
                current.locally_deleted = deleted;
                self.records.replace(&key, &current, version, None, now).await?;
                Ok::<_, RemoteError>(())
            })
            .await?;
            tracing::info!(realm = %realm.uuid, deleted, "realm's presence on its server changed");
        }
        Ok(())
    }

    /// Stores `rows` (possibly none: the upload time alone) with the marker, the latest counts
    /// and the ledger syncs they cause, in one transaction. Returns the ledger rows appended.
    async fn store_chunk(
        &self,
        server: &RemoteServer,
        rows: &[StoredRow],
        now: DateTime<Utc>,
    ) -> Result<usize, ChunkError> {
        let documents = self.records.documents().as_ref();
        let collection = usage_collection(server.uuid);
        let marker_key = member_key(&collection, "marker");
        let latest_key = member_key(&collection, "latest");
        let (mut marker, marker_version) = match self.records.get::<UploadMarker>(&marker_key, now).await? {
            Some((marker, version)) => (marker, Some(version)),
            None => (UploadMarker::default(), None),
        };
        // A concurrent upload stored some of these: leave them to it.
        let rows: Vec<&StoredRow> = rows
            .iter()
            .filter(|r| marker.last_audit_log_id.is_none_or(|last| r.id > last))
            .collect();
        let (mut latest, latest_version) = match self.records.get::<LatestCounts>(&latest_key, now).await? {
            Some((latest, version)) => (latest, Some(version)),
            None => (LatestCounts::default(), None),
        };
        let mut writes: Vec<PlannedWrite> = Vec::new();
        let write = |key: String, body: Value, expected: Option<u64>| PlannedWrite {
            key,
            body,
            expected,
            expires_at: None,
        };
        let mut realm_counts: BTreeMap<Uuid, Vec<CountAt>> = BTreeMap::new();
        let mut server_counts: Vec<CountAt> = Vec::new();
        let mut by_time: Vec<&StoredRow> = rows.clone();
        by_time.sort_by_key(|r| (r.event_time, r.id));
        for row in by_time {
            if let Some(count) = row.count {
                let newer = latest
                    .realms
                    .get(&row.realm)
                    .is_none_or(|(time, _)| *time <= row.event_time);
                if newer {
                    latest.realms.insert(row.realm, (row.event_time, count));
                }
                realm_counts.entry(row.realm).or_default().push(CountAt {
                    event_time: row.event_time,
                    count,
                });
                server_counts.push(CountAt {
                    event_time: row.event_time,
                    count: latest.total(),
                });
            }
        }
        for row in &rows {
            writes.push(write(
                member_key(&collection, &row_member(row.id)),
                serde_json::to_value(row).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                None,
            ));
        }
        let mut ledger_rows = 0;
        let mut synced = Vec::new();
        let entities = realm_counts
            .into_iter()
            .map(|(realm, counts)| (Entity::Realm(realm), counts))
            .chain((!server_counts.is_empty()).then_some((Entity::Server(server.uuid), server_counts)));
        for (entity, counts) in entities {
            let stored = plans::stored::load(documents, entity, now).await?;
            let follows_users = stored.book.plan.as_ref().is_some_and(|plan| {
                plan.license_management == LicenseManagement::Automatic && plan.status != PlanStatus::Ended
            });
            if !follows_users {
                continue;
            }
            let (after, changes) = plans::sync_ledger(&stored.book, &counts);
            ledger_rows += changes.rows.len();
            synced.push(changes.rows.len());
            writes.extend(plans::stored::writes_for(&stored, &after, &changes, now));
        }
        if let Some(last) = rows.iter().map(|r| r.id).max() {
            marker.last_audit_log_id = Some(marker.last_audit_log_id.map_or(last, |l| l.max(last)));
        }
        marker.last_upload_at = Some(now);
        writes.push(write(
            marker_key,
            serde_json::to_value(&marker).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            marker_version,
        ));
        if !rows.is_empty() {
            writes.push(write(
                latest_key,
                serde_json::to_value(&latest).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                latest_version,
            ));
        }
        if writes.len() > MAX_TRANSACTION_ITEMS {
            return Err(ChunkError::TooLarge);
        }
        let writes: Vec<DocumentWrite<'_>> = writes.iter().map(PlannedWrite::as_write).collect();
        documents.put_documents(&writes, now).await?;
        // Counted once written: a chunk that loses a race is read and synced again.
        for rows in synced {
            crate::metrics::ledger_synced(rows);
        }
        Ok(ledger_rows)
    }
}

enum ChunkError {
    TooLarge,
    Store(StoreError),
}

impl From<StoreError> for ChunkError {
    fn from(error: StoreError) -> Self {
        ChunkError::Store(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_billed_count_is_every_human_role_guests_included() {
        let extra = serde_json::json!({"10": {"11": {"100": 1, "200": 2, "300": 0, "400": 17, "600": 3}, "12": 4}});
        assert_eq!(billed_count(Some(&extra)), Some(23));
        assert_eq!(billed_count(Some(&serde_json::json!({}))), None);
        assert_eq!(billed_count(None), None);
    }

    fn row(id: u64, event_type: u16, realm: Uuid) -> UploadedRow {
        UploadedRow {
            id,
            realm,
            event_type,
            event_time: 1_780_000_000.0,
            backfilled: false,
            extra_data: None,
        }
    }

    #[test]
    fn rows_already_received_are_dropped_and_the_rest_checked_together() {
        let realm = Uuid::from_u128(1);
        let known = BTreeSet::from([realm]);
        let upload = Upload {
            realms: None,
            realm_audit_logs: vec![row(3, 101, realm), row(5, 101, realm), row(7, 101, realm)],
            version: None,
        };
        // a re-sent upload: everything up to 5 was received, 7 is new
        let now = Utc.timestamp_opt(1_780_000_000, 0).unwrap();
        let received = BTreeSet::from([3, 5]);
        let fresh = check_rows(&upload, Some(5), &known, &received, now).unwrap();
        assert_eq!(fresh.iter().map(|(_, r)| r.id).collect::<Vec<_>>(), [7]);
        // out of order, unknown type and unknown realm are all reported
        let upload = Upload {
            realms: None,
            realm_audit_logs: vec![row(9, 101, realm), row(8, 999, realm), row(10, 102, Uuid::from_u128(2))],
            version: None,
        };
        let errors = check_rows(&upload, Some(5), &known, &received, now).unwrap_err().0;
        let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(
            fields,
            [
                "/realm_audit_logs/1/id",
                "/realm_audit_logs/1/event_type",
                "/realm_audit_logs/2/realm"
            ]
        );
    }

    #[test]
    fn a_row_more_than_an_hour_ahead_of_the_clock_is_refused_on_its_pointer() {
        // Given a server whose clock is an hour and a minute ahead for one row
        let realm = Uuid::from_u128(1);
        let known = BTreeSet::from([realm]);
        let now = Utc.timestamp_opt(1_780_000_000, 0).unwrap();
        let mut ahead = row(2, 101, realm);
        ahead.event_time = 1_780_000_000.0 + 3_660.0;
        let mut a_little_ahead = row(1, 101, realm);
        a_little_ahead.event_time = 1_780_000_000.0 + 3_540.0;
        let upload = Upload {
            realms: None,
            realm_audit_logs: vec![a_little_ahead, ahead],
            version: None,
        };
        // When its rows are checked
        let errors = check_rows(&upload, None, &known, &BTreeSet::new(), now).unwrap_err().0;
        // Then only the row past the hour is refused, on its own pointer
        let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, ["/realm_audit_logs/1/event_time"]);
    }

    #[test]
    fn a_row_below_the_last_received_that_never_was_is_out_of_order() {
        // Given rows 3 and 5 received, the last being 5
        let realm = Uuid::from_u128(1);
        let known = BTreeSet::from([realm]);
        let now = Utc.timestamp_opt(1_780_000_000, 0).unwrap();
        let received = BTreeSet::from([3, 5]);
        // When an upload re-sends 3 and 5 and brings 4, never received, and 6
        let upload = Upload {
            realms: None,
            realm_audit_logs: vec![
                row(3, 101, realm),
                row(4, 101, realm),
                row(5, 101, realm),
                row(6, 101, realm),
            ],
            version: None,
        };
        // Then 4 is refused on its pointer (its count would be lost), and nothing else
        let errors = check_rows(&upload, Some(5), &known, &received, now).unwrap_err().0;
        let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, ["/realm_audit_logs/1/id"]);
    }
}
