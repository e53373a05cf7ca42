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
//! | mail counter | `mail_rate#<kind>#<who>#<hour>` (kind `ip` or `server`) | 2 h |
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
    /// The server's own id.
    pub uuid: Uuid,
    /// SHA-256 of salt and key, hex; the key itself is never stored.
    pub key_hash: String,
    /// The salt of `key_hash`.
    pub key_salt: String,
    /// The server's host name, as it registered.
    pub hostname: String,
    /// Who is mailed about the server (deactivation links).
    pub contact_email: String,
    /// Who the contact is as a billing user: logins of the contact are keyed by it.
    pub contact_user_uuid: Uuid,
    /// When the server first registered.
    pub registered_at: DateTime<Utc>,
    /// When the server was deactivated from billing, if it was.
    pub deactivated_at: Option<DateTime<Utc>>,
    /// The scheme of the server's latest billing link (`https://` until it sends one).
    #[serde(default)]
    pub uri_scheme: Option<String>,
}

impl RemoteServer {
    /// The scheme the server's pages are reached with, from its latest billing link.
    pub fn scheme(&self) -> &str {
        self.uri_scheme.as_deref().unwrap_or("https://")
    }
}

/// A realm's plan. Realms start on the free plan; paid plans block deactivation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RealmPlan {
    /// No plan: the free tier.
    #[default]
    Free,
    /// The paid Basic plan.
    Basic,
    /// The paid Business plan.
    Business,
}

impl RealmPlan {
    /// Whether the plan is paid (and so blocks deactivation).
    pub fn is_paid(self) -> bool {
        self != RealmPlan::Free
    }

    /// The plan's name, for pages.
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
    /// The realm's id on its server.
    pub uuid: Uuid,
    /// The server the realm belongs to.
    pub server_uuid: Uuid,
    /// The realm's host name.
    pub host: String,
    /// The organization's name.
    pub name: String,
    /// `https://` or `http://`: how the way back to the server is written.
    pub uri_scheme: String,
    /// The realm's plan.
    #[serde(default)]
    pub plan: RealmPlan,
    /// Licenses bought for the realm; `None` until a plan with licenses is bought.
    pub licenses: Option<u32>,
    /// When the realm was first seen.
    pub registered_at: DateTime<Utc>,
    /// Whether the server's latest usage upload left it out (deleted on the server, or moved
    /// away); a later upload that lists it again restores it.
    #[serde(default)]
    pub locally_deleted: bool,
}

impl RemoteRealm {
    /// The realm's own billing page on its server, where a user gets a fresh link.
    pub fn way_back(&self) -> String {
        format!("{}{}/self-hosted-billing/", self.uri_scheme, self.host)
    }
}

/// A person who has confirmed an email address for billing a realm (or a server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingUser {
    /// The billing user's id.
    pub id: Uuid,
    /// The server the user came from.
    pub server_uuid: Uuid,
    /// The realm, or none for a server's own billing user.
    pub realm_uuid: Option<Uuid>,
    /// The user's id on the remote server.
    pub user_uuid: Uuid,
    /// The confirmed email address.
    pub email: String,
    /// The user's name.
    pub full_name: String,
    /// The major version of the Terms of Service last accepted.
    pub tos_version: Option<u32>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When the user last logged in.
    pub last_login_at: Option<DateTime<Utc>>,
}

/// A pending email confirmation: single use, valid for 24 hours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The access token's claims the confirmation was asked with.
    pub claims: AccessClaims,
    /// The address to confirm.
    pub email: String,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// After this, the link is refused as expired.
    pub valid_until: DateTime<Utc>,
    /// When the link was used; it works once.
    pub used_at: Option<DateTime<Utc>>,
}

/// A logged-in billing user, for one realm (or, for a server's contact, the server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The server the session is for.
    pub server_uuid: Uuid,
    /// The realm, or none for a session on the server's own pages.
    pub realm_uuid: Option<Uuid>,
    /// The billing user logged in.
    pub billing_user_id: Uuid,
    /// The remote user's id: with server and realm, the billing user's key.
    pub user_uuid: Uuid,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
}

/// A fixed-window counter of confirmation mails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailCount {
    /// Mails sent in the window.
    pub sent: u32,
}

/// The key of a remote server's record.
pub fn server_key(uuid: Uuid) -> String {
    format!("remote_server#{uuid}")
}

/// The key of the record saying which server a realm belongs to (its claim): written once,
/// conditionally, so two servers can never both own a realm.
pub fn realm_owner_key(uuid: Uuid) -> String {
    format!("remote_realm#{uuid}")
}

/// The collection of a server's realms: listed whole with one query, whatever their number.
pub fn server_realms(server_uuid: Uuid) -> String {
    format!("remote_server_realms#{server_uuid}")
}

/// The key of a realm's record, in its server's collection.
pub fn realm_key(server_uuid: Uuid, uuid: Uuid) -> String {
    crate::store::member_key(&server_realms(server_uuid), &uuid.to_string())
}

/// Which server a realm belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealmOwner {
    /// The owning server.
    pub server_uuid: Uuid,
}

/// Billing users are found by the remote server's user id, within a realm or a server.
pub fn billing_user_key(server_uuid: Uuid, realm_uuid: Option<Uuid>, user_uuid: Uuid) -> String {
    match realm_uuid {
        Some(realm) => format!("billing_user#realm#{realm}#{user_uuid}"),
        None => format!("billing_user#server#{server_uuid}#{user_uuid}"),
    }
}

/// The key of a confirmation: the hash of its secret, never the secret.
pub fn confirmation_key(secret: &str) -> String {
    format!("confirmation#{}", sha256_hex(secret.as_bytes()))
}

/// The key of a session: the hash of its secret, never the secret.
pub fn session_key(secret: &str) -> String {
    format!("session#{}", sha256_hex(secret.as_bytes()))
}

/// The key of a rate counter: per kind (`mail`, `registration`), per who (`ip:<address>`,
/// `server:<uuid>`, an address), per clock hour.
pub fn rate_key(kind: &str, who: &str, hour: i64) -> String {
    format!("rate#{kind}#{who}#{hour}")
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

/// Typed reads and conditional writes of the records above.
#[derive(Clone)]
pub struct Records {
    documents: Arc<dyn DocumentStore>,
}

impl Records {
    /// Records kept in `documents`.
    pub fn new(documents: Arc<dyn DocumentStore>) -> Self {
        Records { documents }
    }

    /// A realm's record and its version, through its owner record.
    pub async fn realm(&self, uuid: Uuid, now: DateTime<Utc>) -> Result<Option<(RemoteRealm, u64)>, StoreError> {
        let Some((owner, _)) = self.get::<RealmOwner>(&realm_owner_key(uuid), now).await? else {
            return Ok(None);
        };
        self.get::<RemoteRealm>(&realm_key(owner.server_uuid, uuid), now).await
    }

    /// Every realm of a server, with one query.
    pub async fn realms_of(&self, server_uuid: Uuid, now: DateTime<Utc>) -> Result<Vec<RemoteRealm>, StoreError> {
        self.documents
            .list_documents(&server_realms(server_uuid), now)
            .await?
            .into_iter()
            .map(|(_, document)| serde_json::from_value(document.body).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }

    /// The document store the records live in.
    pub fn documents(&self) -> &Arc<dyn DocumentStore> {
        &self.documents
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
