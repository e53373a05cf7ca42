//! The remote-billing API: self-hosted servers register (`POST /api/v1/remotes/server/register`),
//! ask for their users' billing access links (`POST /api/v1/remotes/server/billing`) and upload
//! their usage (`POST /api/v1/remotes/server/analytics`, `GET .../analytics/status`), with HTTP
//! Basic `server_uuid:server_key`; administrators have a deactivation link mailed to a server's
//! contact (`POST /remote-servers/{server_uuid}/deactivation-link`, JWT) and read an entity's
//! self-hosted billing (`GET /remote-realms/{realm_uuid}/billing`,
//! `GET /remote-servers/{server_uuid}/billing`, JWT) and change it: a legacy plan
//! (`POST /{entity}/legacy-plan`), a sponsorship request (`POST /{entity}/sponsorship`), the
//! customer's discount (`POST /{entity}/discount`), and the
//! server a realm lives on (`PUT /remote-realms/{realm_uuid}/server`).

use billing::access::Operation;
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment};
use billing::errors::{FieldError, Slug};
use billing::plans::Entity;
use billing::remote::usage::Upload;
use billing::remote::{BillingLinkRequest, RegisterRequest, RemoteBilling};
use billing_http::idempotent::{Idempotency, serve_idempotent_with_limit};
use billing_http::{ApiError, ApiResponse, Cors};
use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde_json::json;

/// What a 401 to a server's HTTP Basic credentials asks for.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"billing\"";

pub const REGISTER_ROUTE: &str = "POST /api/v1/remotes/server/register";
pub const BILLING_ROUTE: &str = "POST /api/v1/remotes/server/billing";
pub const DEACTIVATION_LINK_ROUTE: &str = "POST /remote-servers/{server_uuid}/deactivation-link";
/// Administrators read a realm's self-hosted billing.
pub const REALM_BILLING_ROUTE: &str = "GET /remote-realms/{realm_uuid}/billing";
/// Administrators read a server's self-hosted billing.
pub const SERVER_BILLING_ROUTE: &str = "GET /remote-servers/{server_uuid}/billing";
/// Administrators read a realm's billing history.
pub const REALM_AUDIT_ROUTE: &str = "GET /remote-realms/{realm_uuid}/audit";
/// Administrators read a server's billing history.
pub const SERVER_AUDIT_ROUTE: &str = "GET /remote-servers/{server_uuid}/audit";
/// Administrators put a realm on a legacy plan.
pub const REALM_LEGACY_ROUTE: &str = "POST /remote-realms/{realm_uuid}/legacy-plan";
/// Administrators put a server on a legacy plan.
pub const SERVER_LEGACY_ROUTE: &str = "POST /remote-servers/{server_uuid}/legacy-plan";
/// Administrators set a realm's discount.
pub const REALM_DISCOUNT_ROUTE: &str = "POST /remote-realms/{realm_uuid}/discount";
/// Administrators set a server's discount.
pub const SERVER_DISCOUNT_ROUTE: &str = "POST /remote-servers/{server_uuid}/discount";
/// Administrators decide a realm's sponsorship request.
pub const REALM_SPONSORSHIP_ROUTE: &str = "POST /remote-realms/{realm_uuid}/sponsorship";
/// Administrators decide a server's sponsorship request.
pub const SERVER_SPONSORSHIP_ROUTE: &str = "POST /remote-servers/{server_uuid}/sponsorship";
/// Administrators move a realm to the server it was imported into.
pub const REHOME_ROUTE: &str = "PUT /remote-realms/{realm_uuid}/server";
/// A server's usage upload: its realms and realm audit-log rows.
pub const ANALYTICS_ROUTE: &str = "POST /api/v1/remotes/server/analytics";

/// The body limit of a usage upload: 10,000 rows and 10,000 realms of a few hundred bytes each,
/// under Lambda's 6 MB request payload (API.md, "Usage upload limits").
pub const UPLOAD_MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
/// The last audit-log row id received from the server.
pub const ANALYTICS_STATUS_ROUTE: &str = "GET /api/v1/remotes/server/analytics/status";

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "remote-billing-server";

/// What this function does with the store and the mail service; its IAM policy grants exactly
/// these.
pub const OPERATIONS: &[Operation] = &[
    Operation::GetDocument,
    Operation::PutDocument,
    Operation::PutDocuments,
    Operation::ListDocuments,
    Operation::SendMail,
    Operation::ReadSecrets,
];

pub struct RemoteServerApi {
    pub remote: RemoteBilling,
    pub cors: Cors,
    pub clock: SharedClock,
}

/// Remote billing on DynamoDB (`BILLING_TABLE`) and SES (`MAIL_FROM`), the AWS clients built
/// from one configuration.
async fn remote_billing_on_aws(env: &dyn Environment) -> Result<RemoteBilling, ConfigError> {
    let aws = billing_adapters::aws::load_sdk_config().await;
    let store = billing_adapters::DynamoStore::with_config(&aws, billing::config::billing_table(env)?);
    let mailer = billing_adapters::SesMailer::from_env_with_config(env, &aws)?;
    RemoteBilling::from_env(env, std::sync::Arc::new(store), std::sync::Arc::new(mailer))
}

impl RemoteServerApi {
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        Ok(RemoteServerApi {
            remote: remote_billing_on_aws(env).await?,
            cors: Cors::from_env(env),
            clock: std::sync::Arc::new(billing_adapters::SystemClock),
        }
        .declared())
    }

    /// The same function, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        RemoteServerApi {
            remote: self.remote.restricted_to(FUNCTION, OPERATIONS),
            ..self
        }
    }

    /// The server calling with HTTP Basic credentials; a 401 asks for them.
    async fn server_calling(
        &self,
        request: &billing_http::ApiRequest,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<billing::remote::RemoteServer, ApiError> {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.remote.authenticate(authorization, now).await.map_err(|error| {
            let mut answer = ApiError::from(error);
            answer.challenge = Some(BASIC_CHALLENGE);
            answer
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        // Administrators' calls (bearer tokens) take `Idempotency-Key`; servers' calls (HTTP
        // Basic) are idempotent by their own keys, and have no token subject to key by.
        let idempotency = Idempotency {
            documents: self.remote.records.documents().clone(),
            clock: self.clock.clone(),
        };
        let origin = billing_http::origin_of(&request);
        // A usage upload of 10,000 rows is larger than the API's 64 KiB: its route has its own.
        let max_body = if billing_http::route_key_of(&request) == Some(ANALYTICS_ROUTE) {
            UPLOAD_MAX_BODY_BYTES
        } else {
            billing_http::MAX_BODY_BYTES
        };
        let work = serve_idempotent_with_limit(request, &self.cors, &idempotency, max_body, |request| async move {
            let now = self.clock.now();
            match request.route_key() {
                Some(REGISTER_ROUTE) => {
                    let body: RegisterRequest = request.json_body()?;
                    let uuid = body.server_uuid.clone();
                    let created = self.remote.register_server(body, request.client_ip(), now).await?;
                    let body = json!({"server_uuid": uuid, "created": created});
                    Ok(if created {
                        ApiResponse::created_at(format!("/remote-servers/{uuid}"), body)
                    } else {
                        ApiResponse::json(body)
                    })
                }
                Some(BILLING_ROUTE) => {
                    let server = self.server_calling(&request, now).await?;
                    let body: BillingLinkRequest = request.json_body()?;
                    let url = self.remote.billing_link(&server, body, now).await?;
                    Ok(ApiResponse::json(json!({"billing_access_url": url})))
                }
                Some(ANALYTICS_ROUTE) => {
                    let server = self.server_calling(&request, now).await?;
                    let upload = request.json_body_with(Upload::read)?;
                    let outcome = self.remote.record_upload(&server, &upload, now).await?;
                    Ok(ApiResponse::json(json!({
                        "stored_rows": outcome.stored_rows,
                        "ledger_rows": outcome.ledger_rows,
                    })))
                }
                Some(ANALYTICS_STATUS_ROUTE) => {
                    let server = self.server_calling(&request, now).await?;
                    let marker = self.remote.upload_status(&server, now).await?;
                    Ok(ApiResponse::json(
                        json!({"last_realm_audit_log_id": marker.last_audit_log_id}),
                    ))
                }
                Some(route @ (REALM_BILLING_ROUTE | SERVER_BILLING_ROUTE)) => {
                    request.principal()?.require_admin()?;
                    let entity = if route == REALM_BILLING_ROUTE {
                        Entity::Realm(request.path_uuid("realm_uuid")?)
                    } else {
                        Entity::Server(request.path_uuid("server_uuid")?)
                    };
                    let view = self.remote.billing_view(entity, now).await?;
                    Ok(ApiResponse::json(json!({"billing": [view]})))
                }
                Some(route @ (REALM_AUDIT_ROUTE | SERVER_AUDIT_ROUTE)) => {
                    request.principal()?.require_admin()?;
                    let entity = entity_of(&request, route == REALM_AUDIT_ROUTE)?;
                    let query = billing::paging::PageQuery::read(
                        request.query("limit").as_deref(),
                        request.query("cursor").as_deref(),
                        billing::audit::DEFAULT_LIMIT,
                    )?;
                    Ok(ApiResponse::json(self.remote.history_page(entity, &query, now).await?))
                }
                Some(route @ (REALM_LEGACY_ROUTE | SERVER_LEGACY_ROUTE)) => {
                    let principal = request.principal()?;
                    principal.require_admin()?;
                    let entity = entity_of(&request, route == REALM_LEGACY_ROUTE)?;
                    let body: LegacyPlanRequest = request.json_body_with(read_json)?;
                    let end_date = chrono::DateTime::from_timestamp(body.end_date, 0).ok_or_else(|| {
                        ApiError::one(FieldError::field(
                            Slug::InvalidValue,
                            "/end_date",
                            "must be Unix seconds",
                        ))
                    })?;
                    let actor = format!("admin:{}", principal.user_id);
                    let view = self.remote.start_legacy_plan(entity, end_date, &actor, now).await?;
                    Ok(ApiResponse::json(json!({"billing": [view]})))
                }
                Some(route @ (REALM_DISCOUNT_ROUTE | SERVER_DISCOUNT_ROUTE)) => {
                    let principal = request.principal()?;
                    principal.require_admin()?;
                    let entity = entity_of(&request, route == REALM_DISCOUNT_ROUTE)?;
                    let body: DiscountRequest = request.json_body_with(read_json)?;
                    let actor = format!("admin:{}", principal.user_id);
                    let view = self
                        .remote
                        .set_entity_discount(entity, body.percent, &actor, now)
                        .await?;
                    Ok(ApiResponse::json(json!({"billing": [view]})))
                }
                Some(route @ (REALM_SPONSORSHIP_ROUTE | SERVER_SPONSORSHIP_ROUTE)) => {
                    let principal = request.principal()?;
                    principal.require_admin()?;
                    let entity = entity_of(&request, route == REALM_SPONSORSHIP_ROUTE)?;
                    let body: SponsorshipDecision = request.json_body_with(read_json)?;
                    let actor = format!("admin:{}", principal.user_id);
                    let view = self
                        .remote
                        .decide_sponsorship(entity, body.approve, &actor, now)
                        .await?;
                    Ok(ApiResponse::json(json!({"billing": [view]})))
                }
                Some(REHOME_ROUTE) => {
                    let principal = request.principal()?;
                    principal.require_admin()?;
                    let realm = request.path_uuid("realm_uuid")?;
                    let body: RehomeRequest = request.json_body_with(read_json)?;
                    let server = billing::ids::parse_canonical_uuid(&body.server_uuid).ok_or_else(|| {
                        ApiError::one(FieldError::field(
                            Slug::InvalidFormat,
                            "/server_uuid",
                            "must be a lowercase hyphenated UUID",
                        ))
                    })?;
                    let actor = format!("admin:{}", principal.user_id);
                    let view = self.remote.rehome_realm(realm, server, &actor, now).await?;
                    Ok(ApiResponse::json(json!({"billing": [view]})))
                }
                Some(DEACTIVATION_LINK_ROUTE) => {
                    request.principal()?.require_admin()?;
                    let server = request.path_uuid("server_uuid")?;
                    let sent_to = self.remote.send_deactivation_link(server, now).await?;
                    Ok(ApiResponse::json(json!({"sent_to": sent_to})).with_status(StatusCode::ACCEPTED))
                }
                _ => Err(ApiError::one(FieldError::general(Slug::NotFound, "no such route"))),
            }
        });
        billing::remote::service::serving_origin(origin, work).await
    }
}

/// `POST /{entity}/legacy-plan`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyPlanRequest {
    /// When the complimentary plan ends, Unix seconds.
    end_date: i64,
}

/// `POST /{entity}/sponsorship`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SponsorshipDecision {
    /// Approve (community) or decline.
    approve: bool,
}

/// `PUT /remote-realms/{uuid}/server`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RehomeRequest {
    /// The server the realm now lives on.
    server_uuid: String,
}

/// `POST /{entity}/discount`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscountRequest {
    /// 0 to 99.
    percent: u8,
}

/// A body of one of the administrators' small requests; anything unreadable is
/// `invalid_format` with serde's account of where.
fn read_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, billing::errors::ValidationErrors> {
    serde_json::from_slice(body)
        .map_err(|e| FieldError::general(Slug::InvalidFormat, format!("the body is not readable: {e}")).into())
}

/// The realm or server a route's path names.
fn entity_of(request: &billing_http::ApiRequest, realm: bool) -> Result<Entity, ApiError> {
    Ok(if realm {
        Entity::Realm(request.path_uuid("realm_uuid")?)
    } else {
        Entity::Server(request.path_uuid("server_uuid")?)
    })
}
