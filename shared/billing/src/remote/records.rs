//! What remote billing keeps, and where: each record is one document of the
//! [`DocumentStore`], under a key made here and nowhere else.
//!
//! | record | key | expiry |
//! |---|---|---|
//! | remote server | `remote_server#<uuid>` | none |
//! | remote realm | `remote_realm#<uuid>` | none |
//! | billing user | `billing_user#realm#<realm>#<user>` or `billing_user#server#<server>#<user>` | none |
//! | email confirmation | `confirmation#<sha256 of the key>` | 48 h (valid for 24 h; kept a day longer so a reused link is told apart from an unknown one) |
//! | session | `session#<sha256 of the session id>` | 2 h |
//! | mail counter | `mail_rate#<ip|server>#<who>#<hour>` | 2 h |
//!
//! Confirmation keys and session ids are stored hashed: whoever reads the table cannot use
//! them.

use std::sync::Arc;

use aws_lc_rs::digest;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::token::AccessClaims;
use crate::store::{DocumentStore, StoreError};

/// A self-hosted installation that bills through this service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteServer {
    pub uuid: Uuid,
    /// SHA-256 of salt and key, hex; the key itself is never stored.
    pub key_hash: String,
    pub key_salt: String,
    pub hostname: String,
    pub contact_email: String,
    /// Who the contact is as a billing user: logins of the contact are keyed by it.
    pub contact_user_uuid: Uuid,
    /// Every realm this server has registered (a realm's own record says which server owns it).
    #[serde(default)]
    pub realms: Vec<Uuid>,
    pub registered_at: DateTime<Utc>,
    pub deactivated_at: Option<DateTime<Utc>>,
}

/// A realm's plan. Realms start on the free plan; paid plans block deactivation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RealmPlan {
    #[default]
    Free,
    Basic,
    Business,
}

impl RealmPlan {
    pub fn is_paid(self) -> bool {
        self != RealmPlan::Free
    }

    pub fn name(self) -> &'static str {
        match self {
            RealmPlan::Free => "Free",
            RealmPlan::Basic => "Basic",
            RealmPlan::Business => "Business",
        }
    }
}

/// An organisation hosted on a remote server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRealm {
    pub uuid: Uuid,
    pub server_uuid: Uuid,
    pub host: String,
    pub name: String,
    /// `https://` or `http://`: how the way back to the server is written.
    pub uri_scheme: String,
    #[serde(default)]
    pub plan: RealmPlan,
    /// Licenses bought for the realm; `None` until a plan with licenses is bought.
    pub licenses: Option<u32>,
    pub registered_at: DateTime<Utc>,
}

impl RemoteRealm {
    pub fn way_back(&self) -> String {
        format!("{}{}/self-hosted-billing/", self.uri_scheme, self.host)
    }
}

/// A person who has confirmed an email address for billing a realm (or a server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingUser {
    pub id: Uuid,
    pub server_uuid: Uuid,
    pub realm_uuid: Option<Uuid>,
    /// The user's id on the remote server.
    pub user_uuid: Uuid,
    pub email: String,
    pub full_name: String,
    /// The major version of the Terms of Service last accepted.
    pub tos_version: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

/// A pending email confirmation: single use, valid for 24 hours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub claims: AccessClaims,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// A logged-in billing user, for one realm (or, for a server's contact, the server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub server_uuid: Uuid,
    pub realm_uuid: Option<Uuid>,
    pub billing_user_id: Uuid,
    /// The remote user's id: with server and realm, the billing user's key.
    pub user_uuid: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// A fixed-window counter of confirmation mails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailCount {
    pub sent: u32,
}

pub fn server_key(uuid: Uuid) -> String {
    format!("remote_server#{uuid}")
}

pub fn realm_key(uuid: Uuid) -> String {
    format!("remote_realm#{uuid}")
}

/// Billing users are found by the remote server's user id, within a realm or a server.
pub fn billing_user_key(server_uuid: Uuid, realm_uuid: Option<Uuid>, user_uuid: Uuid) -> String {
    match realm_uuid {
        Some(realm) => format!("billing_user#realm#{realm}#{user_uuid}"),
        None => format!("billing_user#server#{server_uuid}#{user_uuid}"),
    }
}

pub fn confirmation_key(secret: &str) -> String {
    format!("confirmation#{}", sha256_hex(secret.as_bytes()))
}

pub fn session_key(secret: &str) -> String {
    format!("session#{}", sha256_hex(secret.as_bytes()))
}

pub fn mail_rate_key(kind: &str, who: &str, hour: i64) -> String {
    format!("mail_rate#{kind}#{who}#{hour}")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

/// Typed reads and conditional writes of the records above.
#[derive(Clone)]
pub struct Records {
    documents: Arc<dyn DocumentStore>,
}

impl Records {
    pub fn new(documents: Arc<dyn DocumentStore>) -> Self {
        Records { documents }
    }

    /// The record and its version, if present and not expired.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(T, u64)>, StoreError> {
        match self.documents.get_document(key, now).await? {
            None => Ok(None),
            Some(document) => {
                let record =
                    serde_json::from_value(document.body).map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
                Ok(Some((record, document.version)))
            }
        }
    }

    /// Writes a new record; [`StoreError::AlreadyExists`] if one lives under `key`.
    pub async fn insert<T: Serialize>(
        &self,
        key: &str,
        record: &T,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_value(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.documents.put_document(key, &body, expires_at, None, now).await?;
        Ok(())
    }

    /// Replaces the record read at `version`; [`StoreError::VersionConflict`] if it changed.
    pub async fn replace<T: Serialize>(
        &self,
        key: &str,
        record: &T,
        version: u64,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let body = serde_json::to_value(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.documents
            .put_document(key, &body, expires_at, Some(version), now)
            .await
    }
}
