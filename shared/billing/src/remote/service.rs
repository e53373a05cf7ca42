//! The remote-billing flows: registering servers, handing out access links, confirming email
//! addresses, logging billing users in, and deactivating servers. Every rule of API.md's
//! "Remote billing" section is here; the functions only translate HTTP to these calls.

use crate::access::{Operation, declared_documents, declared_mailer};
use crate::body::{Member, ShapedBody, one_per_field};
use std::net::IpAddr;
use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::records::{
    BillingUser, Confirmation, MailCount, RealmOwner, Records, RemoteRealm, RemoteServer, Session, billing_user_key,
    confirmation_key, rate_key, realm_key, realm_owner_key, server_key, session_key, sha256_hex,
};
use super::token::{AccessClaims, NextPage, TokenError, TokenSealer};
use crate::config::{ConfigError, Environment, optional};
use crate::errors::{FieldError, Slug, ValidationErrors};
use crate::mail::{MailError, Mailer, texts};
use crate::store::{AsConflict, DocumentWrite, StoreError, retry_on_conflict};
use crate::subscription::is_plausible_email;

/// The major version of the Terms of Service a billing user must have accepted.
pub const TERMS_OF_SERVICE_MAJOR: u32 = 1;
/// How long a confirmation link works.
pub const CONFIRMATION_LIFETIME: Duration = Duration::hours(24);
/// How long a used or expired confirmation is remembered, to say so rather than "unknown".
const CONFIRMATION_KEPT: Duration = Duration::hours(48);
/// How long a billing session lasts.
pub const SESSION_LIFETIME: Duration = Duration::hours(2);
/// Server keys are random secrets the server generates; shorter ones are refused.
const MIN_SERVER_KEY_LENGTH: usize = 32;
const MAX_SERVER_KEY_LENGTH: usize = 256;
const MAX_NAME_LENGTH: usize = 100;

/// The rate limits of remote billing, each counted per hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimit {
    /// Confirmation mails, per client IP and per server.
    ConfirmationMails,
    /// Server registrations, per client IP.
    Registrations,
}

/// Why a remote-billing step did not happen. Nothing was changed in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Not a token, altered, or sealed with another key.
    #[error("invalid billing access token")]
    InvalidToken,
    /// Genuine, but older than two hours.
    #[error("billing access token expired")]
    ExpiredToken {
        /// The server's page where the user can get a fresh link.
        way_back: String,
    },
    /// The server's Basic credentials are missing or wrong.
    #[error("missing or wrong server credentials")]
    BadCredentials,
    /// The server was deactivated from billing.
    #[error("this server has been deactivated")]
    ServerDeactivated,
    /// The server id is registered with another key.
    #[error("a different key is registered for this server")]
    ServerKeyMismatch,
    /// The realm belongs to another server.
    #[error("the realm is registered to another server")]
    RealmServerMismatch,
    /// No server has this id.
    #[error("no such server")]
    UnknownServer,
    /// No realm has this id.
    #[error("no such realm")]
    UnknownRealm,
    /// The request's fields are invalid; every error found.
    #[error("invalid request: {0:?}")]
    Invalid(ValidationErrors),
    /// No confirmation has this key.
    #[error("unknown confirmation link")]
    UnknownConfirmation,
    /// The confirmation link was used before.
    #[error("confirmation link already used")]
    ConfirmationUsed,
    /// The confirmation link is older than a day.
    #[error("confirmation link expired")]
    ConfirmationExpired,
    /// The billing user has not confirmed an address yet.
    #[error("the email address has not been confirmed")]
    EmailNotConfirmed,
    /// The current Terms of Service were not accepted.
    #[error("the Terms of Service were not accepted")]
    TermsNotAccepted,
    /// The form's CSRF token is missing or not this page's.
    #[error("the form's CSRF token is missing or wrong")]
    CsrfRejected,
    /// A rate limit was reached: the hour's confirmation mails for this address or server, or
    /// registrations from this address.
    #[error("rate limit reached: {limit:?}")]
    RateLimited {
        /// Which limit.
        limit: RateLimit,
        /// Seconds until the limit's window ends.
        retry_after: u64,
    },
    /// The page needs a session and there is none.
    #[error("no billing session for this page")]
    NoSession {
        /// The server's page where the user can log in again.
        way_back: String,
    },
    /// The server was deactivated before: there is nothing left to deactivate.
    #[error("the server is already deactivated")]
    AlreadyDeactivated,
    /// A realm of the server has a paid plan.
    #[error("a realm of this server has a paid plan")]
    PaidPlan,
    /// The deactivation box was not ticked.
    #[error("deactivation was not confirmed")]
    NotConfirmed,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The mail could not be sent.
    #[error(transparent)]
    Mail(#[from] MailError),
    /// The change conflicts with the plans of the entity, its server or its realms.
    #[error("conflicting plan: {0}")]
    PlanConflict(String),
    /// Stripe could not be reached or refused our request; nothing was charged.
    #[error(transparent)]
    Stripe(#[from] crate::stripe::BillingError),
}

impl AsConflict for RemoteError {
    /// A record changed or appeared between this step's read and its write.
    fn is_conflict(&self) -> bool {
        matches!(
            self,
            RemoteError::Store(StoreError::VersionConflict | StoreError::AlreadyExists)
        )
    }
}

impl RemoteError {
    /// What the caller is told: a slug and a sentence, the same for JSON and for pages. `None`
    /// for failures of the layers below (store, mail service), which map as they always do.
    pub fn public(&self) -> Option<(Slug, String)> {
        let (slug, message) = match self {
            RemoteError::InvalidToken => (Slug::InvalidValue, "Invalid billing access token."),
            RemoteError::ExpiredToken { .. } => (Slug::InvalidValue, "Billing access token expired."),
            RemoteError::BadCredentials => (Slug::Unauthorized, "Missing or wrong server credentials."),
            RemoteError::ServerDeactivated => (
                Slug::ServerDeactivated,
                "This server has been deactivated from billing.",
            ),
            RemoteError::ServerKeyMismatch => (
                Slug::AccessDenied,
                "This server UUID is registered with a different key.",
            ),
            RemoteError::RealmServerMismatch => (
                Slug::RemoteRealmServerMismatch,
                "This organization is registered for billing to a different server. Contact support to move it.",
            ),
            RemoteError::UnknownServer => (Slug::NotFound, "No such server."),
            RemoteError::UnknownRealm => (Slug::NotFound, "No such organization."),
            RemoteError::Invalid(errors) => {
                let message = errors
                    .0
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                let slug = errors.0.first().map_or(Slug::InvalidValue, |e| e.slug);
                return Some((slug, message));
            }
            RemoteError::UnknownConfirmation => (Slug::NotFound, "This confirmation link is not valid."),
            RemoteError::ConfirmationUsed => (Slug::InvalidValue, "This confirmation link has already been used."),
            RemoteError::ConfirmationExpired => (Slug::InvalidValue, "This confirmation link has expired."),
            RemoteError::EmailNotConfirmed => (
                Slug::InvalidValue,
                "Confirm your email address first, through the link we mailed you.",
            ),
            RemoteError::TermsNotAccepted => (Slug::InvalidValue, "You must accept the Terms of Service to proceed."),
            RemoteError::CsrfRejected => (
                Slug::AccessDenied,
                "This form was not sent from the page we showed you. Reload the page and try again.",
            ),
            RemoteError::RateLimited {
                limit: RateLimit::ConfirmationMails,
                ..
            } => (
                Slug::TooManyRequests,
                "Too many confirmation emails were requested. Try again in an hour.",
            ),
            RemoteError::RateLimited {
                limit: RateLimit::Registrations,
                ..
            } => (
                Slug::TooManyRequests,
                "Too many server registrations from this address. Try again in an hour.",
            ),
            RemoteError::NoSession { .. } => (Slug::Unauthorized, "Log in to billing from your server first."),
            RemoteError::AlreadyDeactivated => (Slug::Conflict, "This server is already deactivated."),
            RemoteError::PaidPlan => (
                Slug::Conflict,
                "This server or an organization on it has a paid plan; cancel it before deactivating the server.",
            ),
            RemoteError::NotConfirmed => (Slug::Missing, "Tick the box to confirm the deactivation."),
            RemoteError::PlanConflict(message) => return Some((Slug::Conflict, message.clone())),
            RemoteError::Mail(MailError::Refused(_)) => (Slug::InvalidValue, "Mail to that address was refused."),
            RemoteError::Store(_) | RemoteError::Mail(MailError::Unavailable(_)) | RemoteError::Stripe(_) => {
                return None;
            }
        };
        Some((slug, message.to_owned()))
    }

    /// Seconds the client should wait before trying again, for a rate limit.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            RemoteError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    pub(crate) fn field(slug: Slug, pointer: &str, message: &str) -> Self {
        RemoteError::Invalid(ValidationErrors(vec![FieldError::field(slug, pointer, message)]))
    }
}

tokio::task_local! {
    static REQUEST_ORIGIN: String;
}

/// Runs `work` for a request that came to `origin` (`https://<API Gateway's domain name>`): the
/// base of the links it hands out when `PUBLIC_BASE_URL` is not set.
pub async fn serving_origin<F: std::future::Future>(origin: Option<String>, work: F) -> F::Output {
    match origin {
        Some(origin) => REQUEST_ORIGIN.scope(origin, work).await,
        None => work.await,
    }
}

/// Settings of remote billing, from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSettings {
    /// `PUBLIC_BASE_URL`, without a trailing slash: the base of every link we hand out. Empty:
    /// the address each request came to ([`RemoteSettings::base_url`]).
    pub public_base_url: String,
    /// `REMOTE_BILLING_MAILS_PER_IP_HOUR` (default 5).
    pub mails_per_ip_hour: u32,
    /// `REMOTE_BILLING_MAILS_PER_SERVER_HOUR` (default 20).
    pub mails_per_server_hour: u32,
    /// `REMOTE_REGISTRATIONS_PER_IP_HOUR` (default 10).
    pub registrations_per_ip_hour: u32,
}

impl RemoteSettings {
    /// The base of the links handed out: `PUBLIC_BASE_URL` when set, else the address the
    /// request being served came to (set by [`serving_origin`]; API Gateway's domain name, which
    /// a client cannot choose), so a stack without a custom domain needs no URL of its own
    /// before it exists.
    pub fn base_url(&self) -> String {
        if !self.public_base_url.is_empty() {
            return self.public_base_url.clone();
        }
        REQUEST_ORIGIN.try_with(Clone::clone).unwrap_or_else(|_| {
            tracing::error!("no PUBLIC_BASE_URL and no request origin: links are relative");
            String::new()
        })
    }

    /// From `PUBLIC_BASE_URL` (optional) and the mail limits' variables.
    pub fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let number = |name: &str, default: u32| -> Result<u32, ConfigError> {
            match optional(env, name) {
                None => Ok(default),
                Some(text) => text.trim().parse().map_err(|_| ConfigError::Invalid {
                    name: name.into(),
                    reason: "must be a whole number".into(),
                }),
            }
        };
        Ok(RemoteSettings {
            public_base_url: optional(env, "PUBLIC_BASE_URL")
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned(),
            mails_per_ip_hour: number("REMOTE_BILLING_MAILS_PER_IP_HOUR", 5)?,
            mails_per_server_hour: number("REMOTE_BILLING_MAILS_PER_SERVER_HOUR", 20)?,
            registrations_per_ip_hour: number("REMOTE_REGISTRATIONS_PER_IP_HOUR", 10)?,
        })
    }
}

/// `POST /api/v1/remotes/server/register`.
#[derive(Clone, Debug, Deserialize)]
pub struct RegisterRequest {
    /// The server's id, as sent (validated by the service).
    pub server_uuid: String,
    /// The server's secret key.
    pub server_key: String,
    /// The server's host name.
    pub hostname: String,
    /// Who is mailed about the server.
    pub contact_email: String,
    /// What reading the request body found wrong (unknown, absent or mistyped members),
    /// reported together with the value errors.
    #[serde(skip)]
    pub read_errors: Vec<FieldError>,
}

impl RegisterRequest {
    const SHAPE: &'static [(&'static str, Member)] = &[
        ("server_uuid", Member::Text),
        ("server_key", Member::Text),
        ("hostname", Member::Text),
        ("contact_email", Member::Text),
    ];

    /// Reads a request body as far as it can be read (see [`crate::body`]).
    pub fn read(body: &[u8]) -> Result<Self, ValidationErrors> {
        let body = ShapedBody::read(body, Self::SHAPE)?;
        Ok(RegisterRequest {
            server_uuid: body.text("/server_uuid"),
            server_key: body.text("/server_key"),
            hostname: body.text("/hostname"),
            contact_email: body.text("/contact_email"),
            read_errors: body.errors,
        })
    }
}

/// `POST /api/v1/remotes/server/billing`.
#[derive(Clone, Debug, Deserialize)]
pub struct BillingLinkRequest {
    /// The user the link is for.
    pub user: RemoteUser,
    /// The realm the user administers; none for a server-level link (servers too old to upload
    /// realms), whose login confirms only the server's contact address.
    pub realm: Option<RealmDescription>,
    /// `https://` or `http://`: how the realm is reached.
    pub uri_scheme: String,
    /// Where the login should land (`billing`, `plans`, ...).
    pub next_page: Option<String>,
    /// What reading the request body found wrong (unknown, absent or mistyped members),
    /// reported together with the value errors.
    #[serde(skip)]
    pub read_errors: Vec<FieldError>,
}

impl BillingLinkRequest {
    const SHAPE: &'static [(&'static str, Member)] = &[
        (
            "user",
            Member::Object(&[
                ("uuid", Member::Text),
                ("email", Member::Text),
                ("full_name", Member::Text),
            ]),
        ),
        (
            "realm",
            Member::OptionalObject(&[("uuid", Member::Text), ("host", Member::Text), ("name", Member::Text)]),
        ),
        ("uri_scheme", Member::Text),
        ("next_page", Member::OptionalText),
    ];

    /// Reads a request body as far as it can be read (see [`crate::body`]).
    pub fn read(body: &[u8]) -> Result<Self, ValidationErrors> {
        let body = ShapedBody::read(body, Self::SHAPE)?;
        Ok(BillingLinkRequest {
            user: RemoteUser {
                uuid: body.text("/user/uuid"),
                email: body.text("/user/email"),
                full_name: body.text("/user/full_name"),
            },
            realm: body
                .value
                .get("realm")
                .filter(|realm| realm.is_object())
                .map(|_| RealmDescription {
                    uuid: body.text("/realm/uuid"),
                    host: body.text("/realm/host"),
                    name: body.text("/realm/name"),
                }),
            uri_scheme: body.text("/uri_scheme"),
            next_page: body.optional_text("/next_page"),
            read_errors: body.errors,
        })
    }
}

/// A user of a remote server, as the server describes them.
#[derive(Clone, Debug, Deserialize)]
pub struct RemoteUser {
    /// The id on the remote server.
    pub uuid: String,
    /// The address on the remote server.
    pub email: String,
    /// The name on the remote server.
    pub full_name: String,
}

/// A realm (organization) of a remote server, as the server describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct RealmDescription {
    /// The realm's id on the server.
    pub uuid: String,
    /// The realm's host name.
    pub host: String,
    /// The organization's name.
    pub name: String,
}

/// What the login page shows for an access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginView {
    /// First login of this user for this realm: ask for the email address to confirm.
    EmailForm {
        /// The access token's claims.
        claims: AccessClaims,
        /// The form's CSRF token.
        csrf: String,
    },
    /// A confirmed billing user: confirm name and, when needed, the Terms of Service.
    ConfirmLogin {
        /// The access token's claims.
        claims: AccessClaims,
        /// The billing user logging in.
        user: BillingUser,
        /// Whether the current Terms of Service still need accepting.
        tos_required: bool,
        /// The form's CSRF token.
        csrf: String,
    },
}

/// The confirm-login form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginForm {
    /// The name to keep, when changed.
    pub full_name: Option<String>,
    /// Whether the Terms of Service box was ticked.
    pub tos_consent: bool,
    /// The form's CSRF token.
    pub csrf: Option<String>,
}

/// A completed login: the session secret for the cookie and where to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedIn {
    /// The session's secret, for the cookie.
    pub session_secret: String,
    /// Where to go next.
    pub location: String,
}

/// What a realm page shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmView {
    /// The realm.
    pub realm: RemoteRealm,
    /// The logged-in billing user.
    pub user: BillingUser,
    /// Which page.
    pub page: NextPage,
    /// The page's forms' CSRF token.
    pub csrf: String,
}

/// What the server deactivation page shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerView {
    /// The server.
    pub server: RemoteServer,
    /// Its realms with a paid plan (which block deactivation).
    pub paid_realms: Vec<RemoteRealm>,
    /// Whether the server itself has a paid plan not scheduled to end (which blocks it too).
    pub server_plan_renews: bool,
    /// The page's forms' CSRF token.
    pub csrf: String,
}

/// The remote-billing service: its records, the token key, mail and settings.
#[derive(Clone)]
pub struct RemoteBilling {
    /// Where the records live.
    pub records: Records,
    /// Seals access tokens and makes CSRF tokens.
    pub sealer: Arc<TokenSealer>,
    /// Confirmation and deactivation mail.
    pub mailer: Arc<dyn Mailer>,
    /// Links' base and mail limits.
    pub settings: RemoteSettings,
}

impl RemoteBilling {
    /// Reads `BILLING_TOKEN_KEY`, `PUBLIC_BASE_URL` and the mail limits; keeps its records in
    /// `store` and sends mail through `mailer`.
    pub fn from_env(
        env: &dyn Environment,
        store: Arc<dyn crate::store::DocumentStore>,
        mailer: Arc<dyn Mailer>,
    ) -> Result<Self, ConfigError> {
        Ok(RemoteBilling {
            records: Records::new(store),
            sealer: Arc::new(TokenSealer::from_env(env)?),
            mailer,
            settings: RemoteSettings::from_env(env)?,
        })
    }

    /// The same service, its records and mail restricted to the operations `function`
    /// declared (see [`crate::access`]).
    pub fn restricted_to(&self, function: &'static str, operations: &'static [Operation]) -> RemoteBilling {
        RemoteBilling {
            records: Records::new(declared_documents(
                self.records.documents().clone(),
                function,
                operations,
            )),
            sealer: self.sealer.clone(),
            mailer: declared_mailer(self.mailer.clone(), function, operations),
            settings: self.settings.clone(),
        }
    }

    /// Registers a server, or with the same key updates its hostname and contact email.
    /// Returns whether it was new.
    ///
    /// Registrations are limited per client IP (`REMOTE_REGISTRATIONS_PER_IP_HOUR`); a valid
    /// request counts whether it registers or updates.
    pub async fn register_server(
        &self,
        request: RegisterRequest,
        client_ip: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Result<bool, RemoteError> {
        let mut errors = request.read_errors.clone();
        let uuid = uuid_field(&request.server_uuid, "/server_uuid", &mut errors);
        let key = request.server_key.as_str();
        if key.len() < MIN_SERVER_KEY_LENGTH
            || key.len() > MAX_SERVER_KEY_LENGTH
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            errors.push(FieldError::field(
                Slug::InvalidValue,
                "/server_key",
                "server_key must be 32 to 256 printable ASCII characters, generated at random",
            ));
        }
        let hostname = host_field(&request.hostname, "/hostname", &mut errors);
        if !is_plausible_email(&request.contact_email) {
            errors.push(FieldError::field(
                Slug::InvalidValue,
                "/contact_email",
                "not an email address",
            ));
        }
        let Some(uuid) = uuid.filter(|_| errors.is_empty()) else {
            return Err(RemoteError::Invalid(ValidationErrors(one_per_field(errors))));
        };
        self.count_in_hour(
            RateLimit::Registrations,
            &ip_text(client_ip),
            self.settings.registrations_per_ip_hour,
            now,
        )
        .await?;
        let (hostname, request) = (&hostname, &request);
        retry_on_conflict(|_| async move {
            match self.records.get::<RemoteServer>(&server_key(uuid), now).await? {
                None => {
                    let salt = self.sealer.random_secret();
                    let server = RemoteServer {
                        uuid,
                        key_hash: hash_server_key(&salt, key),
                        key_salt: salt,
                        hostname: hostname.clone(),
                        contact_email: request.contact_email.clone(),
                        contact_user_uuid: Uuid::new_v4(),
                        registered_at: now,
                        deactivated_at: None,
                        uri_scheme: None,
                    };
                    self.records.insert(&server_key(uuid), &server, None, now).await?;
                    tracing::info!(server = %uuid, "remote server registered");
                    Ok(true)
                }
                Some((mut server, version)) => {
                    if !server_key_matches(&server, key) {
                        tracing::warn!(server = %uuid, "registration with a different key refused");
                        return Err(RemoteError::ServerKeyMismatch);
                    }
                    if server.deactivated_at.is_some() {
                        return Err(RemoteError::ServerDeactivated);
                    }
                    server.hostname = hostname.clone();
                    server.contact_email = request.contact_email.clone();
                    self.records
                        .replace(&server_key(uuid), &server, version, None, now)
                        .await?;
                    Ok(false)
                }
            }
        })
        .await
    }

    /// The server calling with HTTP Basic `server_uuid:server_key`.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<RemoteServer, RemoteError> {
        let (uuid, key) = parse_basic(authorization).ok_or(RemoteError::BadCredentials)?;
        let Some((server, _)) = self.records.get::<RemoteServer>(&server_key(uuid), now).await? else {
            // The same work as for a known server, so that timing does not tell which exist.
            let _ = hash_server_key("unknown-server", &key);
            return Err(RemoteError::BadCredentials);
        };
        if !server_key_matches(&server, &key) {
            return Err(RemoteError::BadCredentials);
        }
        if server.deactivated_at.is_some() {
            return Err(RemoteError::ServerDeactivated);
        }
        Ok(server)
    }

    /// The billing access link for a user of one of `server`'s realms, registering the realm
    /// to the server when it is unknown.
    pub async fn billing_link(
        &self,
        server: &RemoteServer,
        request: BillingLinkRequest,
        now: DateTime<Utc>,
    ) -> Result<String, RemoteError> {
        let mut errors = request.read_errors.clone();
        let user_uuid = uuid_field(&request.user.uuid, "/user/uuid", &mut errors);
        if !is_plausible_email(&request.user.email) {
            errors.push(FieldError::field(
                Slug::InvalidValue,
                "/user/email",
                "not an email address",
            ));
        }
        let full_name = text_field(&request.user.full_name, "/user/full_name", MAX_NAME_LENGTH, &mut errors);
        let realm_fields = request.realm.as_ref().map(|realm| {
            (
                uuid_field(&realm.uuid, "/realm/uuid", &mut errors),
                host_field(&realm.host, "/realm/host", &mut errors),
                text_field(&realm.name, "/realm/name", MAX_NAME_LENGTH, &mut errors),
            )
        });
        if !matches!(request.uri_scheme.as_str(), "https://" | "http://") {
            errors.push(FieldError::field(
                Slug::InvalidValue,
                "/uri_scheme",
                "uri_scheme must be \"https://\" or \"http://\"",
            ));
        }
        let next_page = match request.next_page.as_deref() {
            None => None,
            Some(text) => {
                let page = NextPage::parse(text);
                if page.is_none() {
                    errors.push(FieldError::field(
                        Slug::InvalidValue,
                        "/next_page",
                        "next_page must be one of billing, plans, upgrade, sponsorship, deactivate",
                    ));
                }
                page
            }
        };
        let realm_ok = realm_fields.as_ref().is_none_or(|(uuid, _, _)| uuid.is_some());
        let (Some(user_uuid), true, true) = (user_uuid, realm_ok, errors.is_empty()) else {
            return Err(RemoteError::Invalid(ValidationErrors(one_per_field(errors))));
        };
        if server.uri_scheme.as_deref() != Some(request.uri_scheme.as_str()) {
            self.remember_scheme(server.uuid, &request.uri_scheme, now).await?;
        }
        let Some((Some(realm_uuid), host, name)) = realm_fields else {
            // A server-level link: its login confirms only the server's contact address, and
            // its session opens the server's own pages.
            let claims = AccessClaims {
                user_uuid,
                user_email: request.user.email,
                user_full_name: full_name,
                server_uuid: server.uuid,
                realm_uuid: None,
                realm_host: server.hostname.clone(),
                billing_user_id: None,
                issued_at: now,
                uri_scheme: request.uri_scheme,
                next_page: Some(next_page.unwrap_or(NextPage::Billing)),
            };
            return Ok(self.login_url(&claims));
        };
        let realm = RemoteRealm {
            uuid: realm_uuid,
            server_uuid: server.uuid,
            host: host.clone(),
            name,
            uri_scheme: request.uri_scheme.clone(),
            plan: Default::default(),
            licenses: None,
            registered_at: now,
            locally_deleted: false,
        };
        self.claim_realm(server, realm, now).await?;
        let claims = AccessClaims {
            user_uuid,
            user_email: request.user.email,
            user_full_name: full_name,
            server_uuid: server.uuid,
            realm_uuid: Some(realm_uuid),
            realm_host: host,
            billing_user_id: None,
            issued_at: now,
            uri_scheme: request.uri_scheme,
            next_page,
        };
        Ok(self.login_url(&claims))
    }

    /// Registers `realm` to `server` unless it is registered already: to the same server,
    /// fine (its host, name and scheme follow the request); to another, refused (the
    /// organisation moved without its billing).
    ///
    /// The owner record is the claim, written once on the condition that none exists; the
    /// realm's record then goes into its server's collection. A failure between the two leaves
    /// a claim without a record, which the next billing link completes.
    pub(crate) async fn claim_realm(
        &self,
        server: &RemoteServer,
        realm: RemoteRealm,
        now: DateTime<Utc>,
    ) -> Result<(), RemoteError> {
        let owner_key = realm_owner_key(realm.uuid);
        let owner = match self.records.get::<RealmOwner>(&owner_key, now).await? {
            Some((owner, _)) => owner,
            None => {
                let claim = RealmOwner {
                    server_uuid: server.uuid,
                };
                match self.records.insert(&owner_key, &claim, None, now).await {
                    Ok(()) => claim,
                    Err(StoreError::AlreadyExists) => {
                        self.records
                            .get::<RealmOwner>(&owner_key, now)
                            .await?
                            .ok_or(StoreError::VersionConflict)?
                            .0
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        self.check_realm_owner(realm.uuid, owner.server_uuid, server)?;
        let key = realm_key(server.uuid, realm.uuid);
        match self.records.get::<RemoteRealm>(&key, now).await? {
            Some((existing, _)) => self.update_realm_details(&existing, &realm, now).await,
            None => match self.records.insert(&key, &realm, None, now).await {
                Ok(()) => {
                    tracing::info!(server = %server.uuid, realm = %realm.uuid, "remote realm registered");
                    Ok(())
                }
                // Registered by a concurrent request of the same server.
                Err(StoreError::AlreadyExists) => Ok(()),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Takes a known realm's host, name and scheme from the server's latest request: the
    /// organisation may have been renamed or moved to another host since it registered.
    async fn update_realm_details(
        &self,
        existing: &RemoteRealm,
        latest: &RemoteRealm,
        now: DateTime<Utc>,
    ) -> Result<(), RemoteError> {
        let same = |realm: &RemoteRealm| {
            (&realm.host, &realm.name, &realm.uri_scheme) == (&latest.host, &latest.name, &latest.uri_scheme)
        };
        if same(existing) {
            return Ok(());
        }
        let key = &realm_key(latest.server_uuid, latest.uuid);
        retry_on_conflict(|_| async move {
            let (mut realm, version) = self
                .records
                .get::<RemoteRealm>(key, now)
                .await?
                .ok_or(RemoteError::UnknownRealm)?;
            if same(&realm) {
                return Ok(());
            }
            realm.host.clone_from(&latest.host);
            realm.name.clone_from(&latest.name);
            realm.uri_scheme.clone_from(&latest.uri_scheme);
            self.records.replace(key, &realm, version, None, now).await?;
            tracing::info!(realm = %realm.uuid, "remote realm's host and name updated");
            Ok(())
        })
        .await
    }

    /// Keeps the scheme of a server's latest billing link, for its own pages' links.
    async fn remember_scheme(&self, server_uuid: Uuid, scheme: &str, now: DateTime<Utc>) -> Result<(), RemoteError> {
        let key = &server_key(server_uuid);
        retry_on_conflict(|_| async move {
            let (mut server, version) = self
                .records
                .get::<RemoteServer>(key, now)
                .await?
                .ok_or(RemoteError::UnknownServer)?;
            if server.scheme() == scheme && server.uri_scheme.is_some() {
                return Ok(());
            }
            server.uri_scheme = Some(scheme.to_owned());
            self.records.replace(key, &server, version, None, now).await?;
            Ok(())
        })
        .await
    }

    fn check_realm_owner(&self, realm: Uuid, owner: Uuid, server: &RemoteServer) -> Result<(), RemoteError> {
        if owner == server.uuid {
            return Ok(());
        }
        tracing::warn!(
            %realm,
            registered_to = %owner,
            asked_by = %server.uuid,
            "billing link refused: the realm is registered to another server (exported and imported elsewhere?)"
        );
        Err(RemoteError::RealmServerMismatch)
    }

    /// Mails the server's contact a login link that leads to the deactivation page.
    /// Returns the address it was sent to.
    pub async fn send_deactivation_link(&self, server_uuid: Uuid, now: DateTime<Utc>) -> Result<String, RemoteError> {
        let server = match self.active_server(server_uuid, RemoteError::UnknownServer, now).await {
            Err(RemoteError::ServerDeactivated) => return Err(RemoteError::AlreadyDeactivated),
            other => other?,
        };
        let claims = AccessClaims {
            user_uuid: server.contact_user_uuid,
            user_email: server.contact_email.clone(),
            user_full_name: String::new(),
            server_uuid,
            realm_uuid: None,
            realm_host: server.hostname.clone(),
            billing_user_id: None,
            issued_at: now,
            uri_scheme: server.scheme().to_owned(),
            next_page: Some(NextPage::Deactivate),
        };
        let link = self.login_url(&claims);
        self.mailer
            .deliver(&texts::deactivation_link(
                &server.contact_email,
                &server.hostname,
                server_uuid,
                &link,
            ))
            .await?;
        tracing::info!(server = %server_uuid, "deactivation link sent to the server's contact");
        Ok(server.contact_email)
    }

    /// Opens an access token: invalid and expired tokens and deactivated servers are refused.
    pub async fn open_token(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, RemoteError> {
        let claims = self.sealer.open(token, now).map_err(|error| match error {
            TokenError::Invalid => RemoteError::InvalidToken,
            TokenError::Expired(claims) => RemoteError::ExpiredToken {
                way_back: claims.way_back(),
            },
        })?;
        self.active_server(claims.server_uuid, RemoteError::InvalidToken, now)
            .await?;
        Ok(claims)
    }

    /// The server `uuid`, refusing a deactivated one; `missing` when there is none.
    pub(crate) async fn active_server(
        &self,
        uuid: Uuid,
        missing: RemoteError,
        now: DateTime<Utc>,
    ) -> Result<RemoteServer, RemoteError> {
        let (server, _) = self
            .records
            .get::<RemoteServer>(&server_key(uuid), now)
            .await?
            .ok_or(missing)?;
        if server.deactivated_at.is_some() {
            return Err(RemoteError::ServerDeactivated);
        }
        Ok(server)
    }

    /// Step 1: what `GET /remote-billing-login/{token}` shows.
    pub async fn login_page(&self, token: &str, now: DateTime<Utc>) -> Result<LoginView, RemoteError> {
        let claims = self.open_token(token, now).await?;
        let csrf = self.sealer.csrf_token(token);
        Ok(match self.billing_user(&claims, now).await? {
            None => LoginView::EmailForm { claims, csrf },
            Some((user, _)) => LoginView::ConfirmLogin {
                tos_required: user.tos_version.is_none_or(|v| v < TERMS_OF_SERVICE_MAJOR),
                claims,
                user,
                csrf,
            },
        })
    }

    /// Step 2: creates a pending confirmation for `email` and mails its link.
    pub async fn request_confirmation(
        &self,
        token: &str,
        email: &str,
        csrf: Option<&str>,
        client_ip: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Result<String, RemoteError> {
        let claims = self.open_token(token, now).await?;
        self.check_csrf(token, csrf)?;
        // A deactivation login is the server's contact's alone: whatever address the form
        // posts, the confirmation goes to the contact the server registered.
        let contact;
        let email = if claims.realm_uuid.is_none() {
            contact = self
                .active_server(claims.server_uuid, RemoteError::InvalidToken, now)
                .await?
                .contact_email;
            contact.as_str()
        } else {
            email.trim()
        };
        if !is_plausible_email(email) {
            return Err(RemoteError::field(Slug::InvalidValue, "email", "not an email address"));
        }
        self.count_in_hour(
            RateLimit::ConfirmationMails,
            &format!("ip:{}", ip_text(client_ip)),
            self.settings.mails_per_ip_hour,
            now,
        )
        .await?;
        self.count_in_hour(
            RateLimit::ConfirmationMails,
            &format!("server:{}", claims.server_uuid),
            self.settings.mails_per_server_hour,
            now,
        )
        .await?;
        let secret = self.sealer.random_secret();
        let confirmation = Confirmation {
            claims: claims.clone(),
            email: email.to_owned(),
            created_at: now,
            valid_until: now + CONFIRMATION_LIFETIME,
            used_at: None,
        };
        self.records
            .insert(
                &confirmation_key(&secret),
                &confirmation,
                Some(now + CONFIRMATION_KEPT),
                now,
            )
            .await?;
        let link = format!("{}/remote-billing-login/do_confirm/{secret}", self.settings.base_url());
        self.mailer
            .deliver(&texts::login_confirmation(email, &claims.realm_host, &link))
            .await?;
        tracing::info!(server = %claims.server_uuid, "confirmation mail sent");
        Ok(email.to_owned())
    }

    /// Counts one request against `rate` in this hour's window of `who`, refusing past `limit`.
    async fn count_in_hour(
        &self,
        rate: RateLimit,
        who: &str,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<(), RemoteError> {
        let hour = now.timestamp() / 3600;
        let retry_after = ((hour + 1) * 3600 - now.timestamp()).max(1) as u64;
        let limited = || RemoteError::RateLimited {
            limit: rate,
            retry_after,
        };
        let kind = match rate {
            RateLimit::ConfirmationMails => "mail",
            RateLimit::Registrations => "registration",
        };
        let key = rate_key(kind, who, hour);
        let expires = DateTime::from_timestamp((hour + 2) * 3600, 0).unwrap_or(now + Duration::hours(2));
        let key = &key;
        retry_on_conflict(|_| async move {
            match self.records.get::<MailCount>(key, now).await? {
                None => {
                    self.records
                        .insert(key, &MailCount { sent: 1 }, Some(expires), now)
                        .await?;
                }
                Some((count, _)) if count.sent >= limit => {
                    tracing::warn!(kind, limit, "rate limit reached");
                    return Err(limited());
                }
                Some((count, version)) => {
                    self.records
                        .replace(key, &MailCount { sent: count.sent + 1 }, version, Some(expires), now)
                        .await?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|error| if error.is_conflict() { limited() } else { error })
    }

    /// Step 3: uses a confirmation key, creating the billing user, and returns a fresh access
    /// token that names the billing user.
    pub async fn confirm_email(&self, secret: &str, now: DateTime<Utc>) -> Result<String, RemoteError> {
        let key = &confirmation_key(secret);
        // The key is marked used and the billing user written in one transaction: a failure
        // in between can neither burn the key without a user nor leave it usable twice. A
        // concurrent use of the same key makes this one's write fail; the retry then finds
        // the key used.
        let (user, confirmation) = retry_on_conflict(|_| async move {
            let (mut confirmation, version) = self
                .records
                .get::<Confirmation>(key, now)
                .await?
                .ok_or(RemoteError::UnknownConfirmation)?;
            if confirmation.used_at.is_some() {
                return Err(RemoteError::ConfirmationUsed);
            }
            if now >= confirmation.valid_until {
                return Err(RemoteError::ConfirmationExpired);
            }
            self.active_server(confirmation.claims.server_uuid, RemoteError::UnknownServer, now)
                .await?;
            confirmation.used_at = Some(now);
            let claims = &confirmation.claims;
            let user_key = billing_user_key(claims.server_uuid, claims.realm_uuid, claims.user_uuid);
            let (user, user_version) = match self.records.get::<BillingUser>(&user_key, now).await? {
                // Confirmed before (two confirmation mails): the existing user, with the
                // address confirmed last.
                Some((mut existing, version)) => {
                    existing.email = confirmation.email.clone();
                    (existing, Some(version))
                }
                None => (
                    BillingUser {
                        id: Uuid::new_v4(),
                        server_uuid: claims.server_uuid,
                        realm_uuid: claims.realm_uuid,
                        user_uuid: claims.user_uuid,
                        email: confirmation.email.clone(),
                        full_name: claims.user_full_name.clone(),
                        tos_version: None,
                        created_at: now,
                        last_login_at: None,
                    },
                    None,
                ),
            };
            let expiry = Some(confirmation.created_at + CONFIRMATION_KEPT);
            let (confirmation_body, user_body) = (to_body(&confirmation)?, to_body(&user)?);
            let writes = [
                DocumentWrite {
                    key,
                    body: &confirmation_body,
                    expires_at: expiry,
                    expected: Some(version),
                },
                DocumentWrite {
                    key: &user_key,
                    body: &user_body,
                    expires_at: None,
                    expected: user_version,
                },
            ];
            self.records.documents().put_documents(&writes, now).await?;
            Ok((user, confirmation))
        })
        .await?;
        tracing::info!(billing_user = %user.id, "email confirmed");
        let fresh = AccessClaims {
            billing_user_id: Some(user.id),
            issued_at: now,
            ..confirmation.claims
        };
        Ok(self.sealer.seal(&fresh))
    }

    /// Step 4: the confirm-login form. Records name, Terms of Service and login time, and
    /// opens a session.
    pub async fn complete_login(
        &self,
        token: &str,
        form: LoginForm,
        now: DateTime<Utc>,
    ) -> Result<LoggedIn, RemoteError> {
        let claims = self.open_token(token, now).await?;
        self.check_csrf(token, form.csrf.as_deref())?;
        let user_key = billing_user_key(claims.server_uuid, claims.realm_uuid, claims.user_uuid);
        let (claims, form, user_key) = (&claims, &form, &user_key);
        retry_on_conflict(|_| async move {
            let (mut user, version) = self
                .billing_user(claims, now)
                .await?
                .ok_or(RemoteError::EmailNotConfirmed)?;
            let tos_required = user.tos_version.is_none_or(|v| v < TERMS_OF_SERVICE_MAJOR);
            if tos_required && !form.tos_consent {
                return Err(RemoteError::TermsNotAccepted);
            }
            if let Some(name) = &form.full_name {
                let mut errors = Vec::new();
                user.full_name = text_field(name, "full_name", MAX_NAME_LENGTH, &mut errors);
                if !errors.is_empty() {
                    return Err(RemoteError::Invalid(ValidationErrors(errors)));
                }
            }
            if form.tos_consent {
                user.tos_version = Some(TERMS_OF_SERVICE_MAJOR);
            }
            user.last_login_at = Some(now);
            self.records.replace(user_key, &user, version, None, now).await?;
            let secret = self.sealer.random_secret();
            let session = Session {
                server_uuid: claims.server_uuid,
                realm_uuid: claims.realm_uuid,
                billing_user_id: user.id,
                user_uuid: user.user_uuid,
                expires_at: now + SESSION_LIFETIME,
            };
            self.records
                .insert(&session_key(&secret), &session, Some(session.expires_at), now)
                .await?;
            tracing::info!(billing_user = %user.id, "billing session opened");
            let page = claims.next_page.unwrap_or(NextPage::Billing);
            let location = match claims.realm_uuid {
                Some(realm) => format!("/realm/{realm}/{}/", page.as_str()),
                None => format!(
                    "/server/{}/{}/",
                    claims.server_uuid,
                    claims.next_page.unwrap_or(NextPage::Deactivate).as_str()
                ),
            };
            Ok(LoggedIn {
                session_secret: secret,
                location,
            })
        })
        .await
    }

    /// The billing user the claims name: by the id a confirmation put in them, or by the
    /// remote user's id for a returning user.
    async fn billing_user(
        &self,
        claims: &AccessClaims,
        now: DateTime<Utc>,
    ) -> Result<Option<(BillingUser, u64)>, RemoteError> {
        let key = billing_user_key(claims.server_uuid, claims.realm_uuid, claims.user_uuid);
        let found = self.records.get::<BillingUser>(&key, now).await?;
        match (&found, claims.billing_user_id) {
            (Some((user, _)), Some(id)) if user.id != id => Err(RemoteError::InvalidToken),
            _ => Ok(found),
        }
    }

    /// Refuses a form whose CSRF token is not the one issued for `binding` (a token or a
    /// session secret).
    pub fn check_csrf(&self, binding: &str, csrf: Option<&str>) -> Result<(), RemoteError> {
        match csrf {
            Some(token) if self.sealer.csrf_token_is_valid(binding, token) => Ok(()),
            _ => {
                tracing::warn!("form with a missing or forged CSRF token refused");
                Err(RemoteError::CsrfRejected)
            }
        }
    }

    /// The live session behind a cookie's secret.
    pub(crate) async fn session(
        &self,
        secret: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, RemoteError> {
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        Ok(self
            .records
            .get::<Session>(&session_key(secret), now)
            .await?
            .map(|(session, _)| session)
            .filter(|session| session.expires_at > now))
    }

    /// Step 5: a realm page, for a session of that realm.
    pub async fn realm_page(
        &self,
        session_secret: Option<&str>,
        realm_uuid: Uuid,
        page: NextPage,
        now: DateTime<Utc>,
    ) -> Result<RealmView, RemoteError> {
        let (realm, _) = self
            .records
            .realm(realm_uuid, now)
            .await?
            .ok_or(RemoteError::UnknownRealm)?;
        let session = self
            .session(session_secret, now)
            .await?
            .filter(|s| s.realm_uuid == Some(realm_uuid) && s.server_uuid == realm.server_uuid)
            .ok_or_else(|| RemoteError::NoSession {
                way_back: realm.way_back(),
            })?;
        self.active_server(realm.server_uuid, RemoteError::UnknownServer, now)
            .await?;
        let user = self
            .session_user(&session, now)
            .await?
            .ok_or_else(|| RemoteError::NoSession {
                way_back: realm.way_back(),
            })?;
        Ok(RealmView {
            csrf: self.sealer.csrf_token(session_secret.unwrap_or_default()),
            realm,
            user,
            page,
        })
    }

    /// The session's billing user, unless it is gone or is another one now.
    pub(crate) async fn session_user(
        &self,
        session: &Session,
        now: DateTime<Utc>,
    ) -> Result<Option<BillingUser>, RemoteError> {
        let key = billing_user_key(session.server_uuid, session.realm_uuid, session.user_uuid);
        Ok(self
            .records
            .get::<BillingUser>(&key, now)
            .await?
            .map(|(user, _)| user)
            .filter(|user| user.id == session.billing_user_id))
    }

    /// The server deactivation page, for a session of the server's contact.
    pub async fn server_page(
        &self,
        session_secret: Option<&str>,
        server_uuid: Uuid,
        now: DateTime<Utc>,
    ) -> Result<ServerView, RemoteError> {
        let (server, _) = self
            .records
            .get::<RemoteServer>(&server_key(server_uuid), now)
            .await?
            .ok_or(RemoteError::UnknownServer)?;
        self.session(session_secret, now)
            .await?
            .filter(|s| s.server_uuid == server_uuid && s.realm_uuid.is_none())
            .ok_or_else(|| RemoteError::NoSession {
                way_back: format!("{}{}/self-hosted-billing/", server.scheme(), server.hostname),
            })?;
        if server.deactivated_at.is_some() {
            return Err(RemoteError::ServerDeactivated);
        }
        let paid_realms = self.paid_realms(&server, now).await?;
        let server_plan_renews = self.server_plan_renews(server_uuid, now).await?;
        Ok(ServerView {
            server,
            paid_realms,
            server_plan_renews,
            csrf: self.sealer.csrf_token(session_secret.unwrap_or_default()),
        })
    }

    /// The server's realms on a paid plan not scheduled to end: one query of its realms, then
    /// each realm's plans.
    async fn paid_realms(&self, server: &RemoteServer, now: DateTime<Utc>) -> Result<Vec<RemoteRealm>, RemoteError> {
        let documents = self.records.documents().clone();
        let mut paid = Vec::new();
        for realm in self.records.realms_of(server.uuid, now).await? {
            let entity = crate::plans::Entity::Realm(realm.uuid);
            if realm.plan.is_paid()
                || crate::plans::purchase::has_renewing_paid_plan(documents.as_ref(), entity, now).await?
            {
                paid.push(realm);
            }
        }
        Ok(paid)
    }

    /// Whether the server itself has a paid plan not scheduled to end.
    async fn server_plan_renews(&self, server: Uuid, now: DateTime<Utc>) -> Result<bool, RemoteError> {
        let entity = crate::plans::Entity::Server(server);
        Ok(crate::plans::purchase::has_renewing_paid_plan(self.records.documents().as_ref(), entity, now).await?)
    }

    /// Deactivates a server, on the confirmed form of its contact's session; refused while a
    /// realm of it has a paid plan.
    pub async fn deactivate_server(
        &self,
        session_secret: Option<&str>,
        server_uuid: Uuid,
        confirmed: bool,
        csrf: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<RemoteServer, RemoteError> {
        let view = self.server_page(session_secret, server_uuid, now).await?;
        self.check_csrf(session_secret.unwrap_or_default(), csrf)?;
        if !confirmed {
            return Err(RemoteError::NotConfirmed);
        }
        if !view.paid_realms.is_empty() || view.server_plan_renews {
            return Err(RemoteError::PaidPlan);
        }
        retry_on_conflict(|_| async move {
            let (mut server, version) = self
                .records
                .get::<RemoteServer>(&server_key(server_uuid), now)
                .await?
                .ok_or(RemoteError::UnknownServer)?;
            // The realms are read again just before the write: a plan bought since the page
            // was read is seen.
            if !self.paid_realms(&server, now).await?.is_empty() || self.server_plan_renews(server_uuid, now).await? {
                return Err(RemoteError::PaidPlan);
            }
            server.deactivated_at = Some(now);
            self.records
                .replace(&server_key(server_uuid), &server, version, None, now)
                .await?;
            tracing::info!(server = %server_uuid, "remote server deactivated");
            Ok(server)
        })
        .await
    }

    fn login_url(&self, claims: &AccessClaims) -> String {
        format!(
            "{}/remote-billing-login/{}",
            self.settings.base_url(),
            self.sealer.seal(claims)
        )
    }
}

fn hash_server_key(salt: &str, key: &str) -> String {
    sha256_hex(format!("{salt}:{key}").as_bytes())
}

fn server_key_matches(server: &RemoteServer, key: &str) -> bool {
    let presented = hash_server_key(&server.key_salt, key);
    verify_slices_are_equal(presented.as_bytes(), server.key_hash.as_bytes()).is_ok()
}

/// `Basic base64(uuid:key)`.
fn parse_basic(authorization: Option<&str>) -> Option<(Uuid, String)> {
    let encoded = authorization?.trim().strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (uuid, key) = decoded.split_once(':')?;
    Some((crate::ids::parse_canonical_uuid(uuid)?, key.to_owned()))
}

fn uuid_field(text: &str, pointer: &str, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    let parsed = crate::ids::parse_canonical_uuid(text);
    if parsed.is_none() {
        errors.push(FieldError::field(
            Slug::InvalidFormat,
            pointer,
            "must be a lowercase hyphenated UUID",
        ));
    }
    parsed
}

/// A host name as API.md defines it, else `invalid_value` (or `missing`) on `pointer`: links,
/// redirects and mails are built from it, so it can name no other place and carry no text.
fn host_field(text: &str, pointer: &str, errors: &mut Vec<FieldError>) -> String {
    let host = text.trim();
    if host.is_empty() {
        errors.push(FieldError::field(Slug::Missing, pointer, "must not be empty"));
    } else if !is_host_name(host) {
        errors.push(FieldError::field(
            Slug::InvalidValue,
            pointer,
            "must be a DNS host name (letters, digits, hyphens and dots) with an optional :port",
        ));
    }
    host.to_ascii_lowercase()
}

/// Whether `text` is a DNS name (labels of 1 to 63 letters, digits and hyphens, not starting or
/// ending with a hyphen, separated by dots, 253 characters in all) with an optional `:port`
/// (1 to 65535).
pub fn is_host_name(text: &str) -> bool {
    let (name, port) = match text.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (text, None),
    };
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65_535).contains(&p))
    });
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    port_ok && !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// A client IP as rate limits count it.
fn ip_text(client_ip: Option<IpAddr>) -> String {
    client_ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// A record as the JSON body of its document.
fn to_body<T: serde::Serialize>(record: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(record).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn text_field(text: &str, pointer: &str, max: usize, errors: &mut Vec<FieldError>) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        errors.push(FieldError::field(Slug::Missing, pointer, "must not be empty"));
    } else if trimmed.chars().count() > max {
        errors.push(FieldError::field(
            Slug::InvalidValue,
            pointer,
            format!("must be at most {max} characters"),
        ));
    } else if trimmed.chars().any(char::is_control) {
        errors.push(FieldError::field(
            Slug::InvalidValue,
            pointer,
            "must not contain control characters",
        ));
    }
    trimmed.to_owned()
}

#[cfg(test)]
mod tests {
    use super::is_host_name;

    #[test]
    fn host_names_are_dns_names_with_an_optional_port() {
        for good in [
            "chat.example.org",
            "localhost",
            "zulip-1.example.co.uk",
            "chat.example.org:8443",
            "127.0.0.1",
            "xn--bcher-kva.example",
        ] {
            assert!(is_host_name(good), "{good} is a host name");
        }
        for bad in [
            "evil.example/x?",
            "evil.example#",
            "ACME: your card was declined, pay at https://evil.example",
            "user@evil.example",
            "chat.example.org:0",
            "chat.example.org:99999",
            "chat.example.org:",
            "a..b",
            "-chat.example.org",
            "chat-.example.org",
            "chat example.org",
            "https://chat.example.org",
            &"a".repeat(64),
            &format!("{}.example", ["abcdefghij"; 25].join(".")),
        ] {
            assert!(!is_host_name(bad), "{bad} is not a host name");
        }
    }
}
