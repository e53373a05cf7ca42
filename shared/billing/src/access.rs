//! What each function may do with the ports, declared once and enforced.
//!
//! A function's cloud permissions (its IAM policy in `template.yaml`) must grant exactly what its
//! code calls. Tests against local stand-ins cannot show a missing permission, because moto
//! grants everything; so every function declares the port [`Operation`]s it uses, the adapters
//! say which cloud actions each operation needs (`billing_adapters::iam`), and a test compares
//! the two with every policy of the template.
//!
//! The declaration is kept true by [`Declared`]: every function wraps its ports in it, in its
//! composition root, its handler tests and the local server alike, so a call the declaration
//! does not name fails in every test that reaches it, with a message naming the operation, long
//! before AWS would refuse it.

use crate::plans::invoicing::{InvoiceEntityMessage, InvoicingQueue, QueueError};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::mail::{Mail, MailError, Mailer};
use crate::store::{
    AuditEntry, Document, DocumentStore, DocumentWrite, EventWrite, KeptEvent, KeptEventPage, Store, StoreError,
    SubscriptionFilter, SubscriptionPage, SubscriptionWrite,
};
use crate::subscription::Subscription;

/// One operation of a port, as a function declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// [`Store::create_subscription`].
    CreateSubscription,
    /// [`Store::get_subscription`].
    GetSubscription,
    /// [`Store::update_subscription`].
    UpdateSubscription,
    /// [`Store::find_by_stripe_subscription`].
    FindByStripeSubscription,
    /// [`Store::find_by_stripe_customer`].
    FindByStripeCustomer,
    /// [`Store::audit_page`] (and [`Store::audit_trail`], every page).
    AuditTrail,
    /// [`Store::list_subscriptions`].
    ListSubscriptions,
    /// [`Store::record_event`] without a subscription write: only the event's id and outcome.
    RecordEvent,
    /// [`Store::record_event`] with the subscription write the event causes (a new version, or
    /// "unchanged", checked on the subscription's version).
    RecordEventWithWrite,
    /// [`Store::is_recorded`].
    IsRecorded,
    /// [`Store::keep_event`].
    KeepEvent,
    /// [`Store::kept_event`].
    GetKeptEvent,
    /// [`Store::list_kept_events`].
    ListKeptEvents,
    /// [`DocumentStore::get_document`].
    GetDocument,
    /// [`DocumentStore::put_document`].
    PutDocument,
    /// [`DocumentStore::put_documents`].
    PutDocuments,
    /// [`DocumentStore::list_documents`].
    ListDocuments,
    /// [`Mailer::send`].
    SendMail,
    /// Reading the function's secrets from Secrets Manager at start (`billing_adapters::secrets`,
    /// outside the ports: the declaration is the IAM policy's).
    ReadSecrets,
    /// [`crate::plans::invoicing::InvoicingQueue::enqueue`]: messages on the invoicing queue.
    EnqueueInvoicing,
}

impl Operation {
    /// Every operation, in declaration order.
    pub const ALL: [Operation; 20] = [
        Operation::CreateSubscription,
        Operation::GetSubscription,
        Operation::UpdateSubscription,
        Operation::FindByStripeSubscription,
        Operation::FindByStripeCustomer,
        Operation::AuditTrail,
        Operation::ListSubscriptions,
        Operation::RecordEvent,
        Operation::RecordEventWithWrite,
        Operation::IsRecorded,
        Operation::KeepEvent,
        Operation::GetKeptEvent,
        Operation::ListKeptEvents,
        Operation::GetDocument,
        Operation::PutDocument,
        Operation::PutDocuments,
        Operation::ListDocuments,
        Operation::SendMail,
        Operation::ReadSecrets,
        Operation::EnqueueInvoicing,
    ];
}

/// A port that refuses every operation its function did not declare.
///
/// A refused call is logged at error level and fails as the backend's own refusal would
/// ([`StoreError::Unavailable`], [`MailError::Refused`]), so the function answers as it would
/// to a missing permission, and the tests that reach the call fail.
pub struct Declared<P: ?Sized> {
    inner: Arc<P>,
    function: &'static str,
    operations: &'static [Operation],
}

impl<P: ?Sized> Declared<P> {
    /// `inner`, restricted to `operations`, on behalf of `function` (named in refusals).
    pub fn new(inner: Arc<P>, function: &'static str, operations: &'static [Operation]) -> Self {
        Declared {
            inner,
            function,
            operations,
        }
    }

    fn allow(&self, operation: Operation) -> Result<(), String> {
        if self.operations.contains(&operation) {
            return Ok(());
        }
        let refusal = format!(
            "{} called {operation:?}, which it does not declare; declare it and grant its permissions in template.yaml",
            self.function
        );
        tracing::error!(function = self.function, ?operation, "undeclared operation refused");
        Err(refusal)
    }

    fn store(&self, operation: Operation) -> Result<(), StoreError> {
        self.allow(operation).map_err(StoreError::unavailable)
    }
}

/// A store restricted to the operations a function declared.
pub fn declared_store(
    store: Arc<dyn Store>,
    function: &'static str,
    operations: &'static [Operation],
) -> Arc<dyn Store> {
    Arc::new(Declared::new(store, function, operations))
}

/// A document store restricted to the operations a function declared.
pub fn declared_documents(
    documents: Arc<dyn DocumentStore>,
    function: &'static str,
    operations: &'static [Operation],
) -> Arc<dyn DocumentStore> {
    Arc::new(Declared::new(documents, function, operations))
}

/// A mailer restricted to the operations a function declared.
pub fn declared_mailer(
    mailer: Arc<dyn Mailer>,
    function: &'static str,
    operations: &'static [Operation],
) -> Arc<dyn Mailer> {
    Arc::new(Declared::new(mailer, function, operations))
}

#[async_trait]
impl Store for Declared<dyn Store> {
    async fn create_subscription(&self, subscription: &Subscription, audit: &AuditEntry) -> Result<(), StoreError> {
        self.store(Operation::CreateSubscription)?;
        self.inner.create_subscription(subscription, audit).await
    }

    async fn get_subscription(&self, id: Uuid) -> Result<Subscription, StoreError> {
        self.store(Operation::GetSubscription)?;
        self.inner.get_subscription(id).await
    }

    async fn update_subscription(
        &self,
        next: &Subscription,
        expected_version: u64,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.store(Operation::UpdateSubscription)?;
        self.inner.update_subscription(next, expected_version, audit).await
    }

    async fn find_by_stripe_subscription(&self, stripe_subscription: &str) -> Result<Subscription, StoreError> {
        self.store(Operation::FindByStripeSubscription)?;
        self.inner.find_by_stripe_subscription(stripe_subscription).await
    }

    async fn find_by_stripe_customer(&self, stripe_customer: &str) -> Result<Subscription, StoreError> {
        self.store(Operation::FindByStripeCustomer)?;
        self.inner.find_by_stripe_customer(stripe_customer).await
    }

    async fn audit_page(&self, id: Uuid, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.store(Operation::AuditTrail)?;
        self.inner.audit_page(id, after, limit).await
    }

    async fn list_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        limit: usize,
        cursor: Option<&Value>,
    ) -> Result<SubscriptionPage, StoreError> {
        self.store(Operation::ListSubscriptions)?;
        self.inner.list_subscriptions(filter, limit, cursor).await
    }

    async fn record_event(
        &self,
        key: &str,
        expires_at: DateTime<Utc>,
        outcome: &str,
        write: Option<SubscriptionWrite<'_>>,
    ) -> Result<EventWrite, StoreError> {
        self.store(match write {
            Some(_) => Operation::RecordEventWithWrite,
            None => Operation::RecordEvent,
        })?;
        self.inner.record_event(key, expires_at, outcome, write).await
    }

    async fn is_recorded(&self, key: &str) -> Result<bool, StoreError> {
        self.store(Operation::IsRecorded)?;
        self.inner.is_recorded(key).await
    }

    async fn keep_event(&self, event: &KeptEvent, replace: bool) -> Result<(), StoreError> {
        self.store(Operation::KeepEvent)?;
        self.inner.keep_event(event, replace).await
    }

    async fn kept_event(&self, id: &str) -> Result<KeptEvent, StoreError> {
        self.store(Operation::GetKeptEvent)?;
        self.inner.kept_event(id).await
    }

    async fn list_kept_events(
        &self,
        outcome: Option<&str>,
        limit: usize,
        cursor: Option<&Value>,
    ) -> Result<KeptEventPage, StoreError> {
        self.store(Operation::ListKeptEvents)?;
        self.inner.list_kept_events(outcome, limit, cursor).await
    }
}

#[async_trait]
impl DocumentStore for Declared<dyn DocumentStore> {
    async fn get_document(&self, key: &str, now: DateTime<Utc>) -> Result<Option<Document>, StoreError> {
        self.store(Operation::GetDocument)?;
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
        self.store(Operation::PutDocument)?;
        self.inner.put_document(key, body, expires_at, expected, now).await
    }

    async fn put_documents(&self, writes: &[DocumentWrite<'_>], now: DateTime<Utc>) -> Result<(), StoreError> {
        self.store(Operation::PutDocuments)?;
        self.inner.put_documents(writes, now).await
    }

    async fn list_documents(
        &self,
        collection: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Document)>, StoreError> {
        self.store(Operation::ListDocuments)?;
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
        self.store(Operation::ListDocuments)?;
        self.inner
            .list_documents_range(collection, after, through, limit, now)
            .await
    }
}

#[async_trait]
impl Mailer for Declared<dyn Mailer> {
    async fn send(&self, mail: &Mail) -> Result<String, MailError> {
        self.allow(Operation::SendMail)
            .map_err(|refusal| MailError::Refused(refusal.into()))?;
        self.inner.send(mail).await
    }
}

/// An invoicing queue restricted to the operations a function declared.
pub fn declared_queue(
    queue: Arc<dyn InvoicingQueue>,
    function: &'static str,
    operations: &'static [Operation],
) -> Arc<dyn InvoicingQueue> {
    Arc::new(Declared::new(queue, function, operations))
}

#[async_trait]
impl InvoicingQueue for Declared<dyn InvoicingQueue> {
    async fn enqueue(&self, messages: &[InvoiceEntityMessage]) -> Result<(), QueueError> {
        self.allow(Operation::EnqueueInvoicing)
            .map_err(QueueError::Unavailable)?;
        self.inner.enqueue(messages).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    struct Nothing;

    #[async_trait]
    impl DocumentStore for Nothing {
        async fn get_document(&self, _: &str, _: DateTime<Utc>) -> Result<Option<Document>, StoreError> {
            Ok(None)
        }

        async fn put_document(
            &self,
            _: &str,
            _: &Value,
            _: Option<DateTime<Utc>>,
            _: Option<u64>,
            _: DateTime<Utc>,
        ) -> Result<u64, StoreError> {
            Ok(1)
        }

        async fn put_documents(&self, _: &[DocumentWrite<'_>], _: DateTime<Utc>) -> Result<(), StoreError> {
            Ok(())
        }

        async fn list_documents(&self, _: &str, _: DateTime<Utc>) -> Result<Vec<(String, Document)>, StoreError> {
            Ok(Vec::new())
        }

        async fn list_documents_range(
            &self,
            _: &str,
            _: Option<&str>,
            _: &str,
            _: usize,
            _: DateTime<Utc>,
        ) -> Result<Vec<(String, Document)>, StoreError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn declared_operations_pass_through_and_others_are_refused_by_name() {
        // Given a document store on which a function declared reads only
        let documents = declared_documents(Arc::new(Nothing), "reader", &[Operation::GetDocument]);
        // When it reads and then writes
        let read = documents.get_document("k", Utc::now()).await;
        let write = documents.put_document("k", &Value::Null, None, None, Utc::now()).await;
        // Then the read reaches the store and the write is refused, naming what to declare
        assert!(matches!(read, Ok(None)));
        let error = write.expect_err("an undeclared write must be refused");
        let reason = std::error::Error::source(&error).unwrap().to_string();
        assert!(reason.contains("reader called PutDocument"), "{reason}");
    }
}
