//! Faults for the money paths' fault matrices: a document store that fails one chosen write,
//! before it is done (nothing written) or after (written, and the answer lost, as when a
//! Lambda times out after DynamoDB applied the transaction).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use billing::store::{Document, DocumentStore, DocumentWrite, StoreError};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// When a write fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// Nothing is written.
    Before,
    /// It is written; the caller is told it failed.
    After,
}

/// A [`DocumentStore`] over another one whose `nth` write (counted from [`FaultyDocuments::fail_write`]) fails.
pub struct FaultyDocuments {
    inner: Arc<dyn DocumentStore>,
    armed: Mutex<Option<(usize, WriteFault)>>,
}

impl FaultyDocuments {
    /// `inner`, failing nothing yet.
    pub fn new(inner: Arc<dyn DocumentStore>) -> Self {
        FaultyDocuments {
            inner,
            armed: Mutex::new(None),
        }
    }

    /// Fails the `nth` write from now on (1: the next one), as `fault` says.
    pub fn fail_write(&self, nth: usize, fault: WriteFault) {
        *self.lock() = Some((nth, fault));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(usize, WriteFault)>> {
        self.armed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a write; the fault it meets, if it is the chosen one.
    fn next_write(&self) -> Option<WriteFault> {
        let mut armed = self.lock();
        match armed.as_mut() {
            Some((1, fault)) => {
                let fault = *fault;
                *armed = None;
                Some(fault)
            }
            Some((nth, _)) => {
                *nth -= 1;
                None
            }
            None => None,
        }
    }
}

fn injected() -> StoreError {
    StoreError::Unavailable("a write failed on purpose".into())
}

#[async_trait]
impl DocumentStore for FaultyDocuments {
    async fn get_document(&self, key: &str, now: DateTime<Utc>) -> Result<Option<Document>, StoreError> {
        self.inner.get_document(key, now).await
    }

    async fn put_document(
        &self,
        key: &str,
        body: &Value,
        expires_at: Option<DateTime<Utc>>,
        expected: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        match self.next_write() {
            Some(WriteFault::Before) => Err(injected()),
            Some(WriteFault::After) => {
                self.inner.put_document(key, body, expires_at, expected, now).await?;
                Err(injected())
            }
            None => self.inner.put_document(key, body, expires_at, expected, now).await,
        }
    }

    async fn put_documents(&self, writes: &[DocumentWrite<'_>], now: DateTime<Utc>) -> Result<(), StoreError> {
        match self.next_write() {
            Some(WriteFault::Before) => Err(injected()),
            Some(WriteFault::After) => {
                self.inner.put_documents(writes, now).await?;
                Err(injected())
            }
            None => self.inner.put_documents(writes, now).await,
        }
    }

    async fn list_documents(
        &self,
        collection: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Document)>, StoreError> {
        self.inner.list_documents(collection, now).await
    }

    async fn list_documents_range(
        &self,
        collection: &str,
        after: Option<&str>,
        through: &str,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Document)>, StoreError> {
        self.inner
            .list_documents_range(collection, after, through, limit, now)
            .await
    }
}
