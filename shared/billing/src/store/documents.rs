//! The `DocumentStore` port: small JSON documents under string keys, each with a version and an
//! optional expiry, written only on a condition (absent, or at the version the writer read).
//!
//! The remote-billing records (servers, realms, billing users, confirmations, sessions, rate
//! counters) are read and written whole by key, so one versioned document primitive carries all
//! of them; what each document means lives in `remote`. A key of the form
//! `<collection>/<member>` puts a document in a collection, which is read whole with one query
//! ([`DocumentStore::list_documents`]): the realms of a server, however many, without a record
//! that grows with them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::StoreError;

/// A stored document and the version a conditional write must name to replace it.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The document.
    pub body: Value,
    /// Its version, 1 when first written.
    pub version: u64,
    /// When it stops counting as present.
    pub expires_at: Option<DateTime<Utc>>,
}

/// One write of [`DocumentStore::put_documents`]: `body` under `key`, on the condition
/// [`DocumentStore::put_document`] describes for `expected`.
#[derive(Clone, Copy, Debug)]
pub struct DocumentWrite<'a> {
    /// Where.
    pub key: &'a str,
    /// What.
    pub body: &'a Value,
    /// When it stops counting as present.
    pub expires_at: Option<DateTime<Utc>>,
    /// `None`: must be absent; `Some(v)`: must be at version `v`.
    pub expected: Option<u64>,
}

/// Versioned JSON documents by key, written on a condition.
#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// The document under `key`, unless there is none or it had expired at `now` (backends
    /// delete expired items late; an expired document counts as absent at once).
    async fn get_document(&self, key: &str, now: DateTime<Utc>) -> Result<Option<Document>, StoreError>;

    /// Writes `body` under `key` and returns its new version.
    ///
    /// With `expected: None` the document must be absent (or expired at `now`): it is written
    /// at version 1, otherwise [`StoreError::AlreadyExists`]. With `expected: Some(v)` the
    /// stored document must be at version `v`: it is written at `v + 1`, otherwise
    /// [`StoreError::VersionConflict`]. Nothing is written when the condition fails.
    async fn put_document(
        &self,
        key: &str,
        body: &Value,
        expires_at: Option<DateTime<Utc>>,
        expected: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Writes every one of `writes` (at most 100, distinct keys: DynamoDB's transaction limit) or none: when any condition
    /// fails, nothing is written and the answer is [`StoreError::VersionConflict`] (read again
    /// and retry).
    async fn put_documents(&self, writes: &[DocumentWrite<'_>], now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Every document of `collection` (those keyed `<collection>/<member>`) not expired at
    /// `now`, with its member name, in member order: one query, paged by the backend, never a
    /// read per member.
    async fn list_documents(&self, collection: &str, now: DateTime<Utc>)
    -> Result<Vec<(String, Document)>, StoreError>;

    /// At most `limit` documents of `collection` whose member sorts after `after` (from the
    /// first when `None`) and not after `through`, not expired at `now`, in member order: one
    /// query that reads only that range, however large the collection (a sorted index, read a
    /// page at a time from a cursor).
    async fn list_documents_range(
        &self,
        collection: &str,
        after: Option<&str>,
        through: &str,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Document)>, StoreError>;
}

/// The key of `member` in `collection`.
pub fn member_key(collection: &str, member: &str) -> String {
    format!("{collection}/{member}")
}
