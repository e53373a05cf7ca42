//! The session behind a billing entity's pages: who may open `/realm/{uuid}/...` (a session
//! of that realm) and `/server/{uuid}/...` (a session of the server's contact), and what the
//! pages show about them.

use chrono::{DateTime, Utc};

use super::records::{BillingUser, RemoteServer, server_key};
use super::service::{RemoteBilling, RemoteError};
use super::token::NextPage;
use crate::plans::Entity;

/// A logged-in page of a billing entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntitySession {
    /// Whose pages.
    pub entity: Entity,
    /// The organisation's (or server's) name.
    pub name: String,
    /// Its host name.
    pub host: String,
    /// Who is logged in.
    pub user: BillingUser,
    /// The token every form of the page carries.
    pub csrf: String,
    /// The path the entity's pages live under (`/realm/{uuid}` or `/server/{uuid}`).
    pub base_path: String,
}

impl RemoteBilling {
    /// The entity's page for the session behind `session_secret`; no session (or one of
    /// another entity) is [`RemoteError::NoSession`] with the way back to the server.
    pub async fn entity_session(
        &self,
        session_secret: Option<&str>,
        entity: Entity,
        now: DateTime<Utc>,
    ) -> Result<EntitySession, RemoteError> {
        let csrf = self.sealer.csrf_token(session_secret.unwrap_or_default());
        match entity {
            Entity::Realm(realm) => {
                let view = self.realm_page(session_secret, realm, NextPage::Billing, now).await?;
                Ok(EntitySession {
                    entity,
                    name: view.realm.name,
                    host: view.realm.host,
                    user: view.user,
                    csrf,
                    base_path: format!("/realm/{realm}"),
                })
            }
            Entity::Server(uuid) => {
                let (server, _) = self
                    .records
                    .get::<RemoteServer>(&server_key(uuid), now)
                    .await?
                    .ok_or(RemoteError::UnknownServer)?;
                let way_back = || RemoteError::NoSession {
                    way_back: format!("{}{}/self-hosted-billing/", server.scheme(), server.hostname),
                };
                let session = self
                    .session(session_secret, now)
                    .await?
                    .filter(|s| s.server_uuid == uuid && s.realm_uuid.is_none())
                    .ok_or_else(way_back)?;
                if server.deactivated_at.is_some() {
                    return Err(RemoteError::ServerDeactivated);
                }
                let user = self.session_user(&session, now).await?.ok_or_else(way_back)?;
                Ok(EntitySession {
                    entity,
                    name: server.hostname.clone(),
                    host: server.hostname.clone(),
                    user,
                    csrf,
                    base_path: format!("/server/{uuid}"),
                })
            }
        }
    }

    /// [`RemoteBilling::entity_session`] for a form post: the form's CSRF token must be the
    /// session's.
    pub async fn entity_form(
        &self,
        session_secret: Option<&str>,
        entity: Entity,
        csrf: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<EntitySession, RemoteError> {
        let session = self.entity_session(session_secret, entity, now).await?;
        self.check_csrf(session_secret.unwrap_or_default(), csrf)?;
        Ok(session)
    }
}
