//! The remote-billing API: self-hosted servers register (`POST /api/v1/remotes/server/register`)
//! and ask for their users' billing access links (`POST /api/v1/remotes/server/billing`, HTTP
//! Basic `server_uuid:server_key`); administrators have a deactivation link mailed to a
//! server's contact (`POST /remote-servers/{server_uuid}/deactivation-link`, JWT).

use billing::config::{ConfigError, Environment};
use billing::errors::{FieldError, Slug};
use billing::http::{ApiError, ApiRequest, ApiResponse, Cors, serve};
use billing::remote::{BillingLinkRequest, Clock, RegisterRequest, RemoteBilling, system_clock};
use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde_json::json;

pub const REGISTER_ROUTE: &str = "POST /api/v1/remotes/server/register";
pub const BILLING_ROUTE: &str = "POST /api/v1/remotes/server/billing";
pub const DEACTIVATION_LINK_ROUTE: &str = "POST /remote-servers/{server_uuid}/deactivation-link";

pub struct RemoteServerApi {
    pub remote: RemoteBilling,
    pub cors: Cors,
    pub clock: Clock,
}

impl RemoteServerApi {
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        Ok(RemoteServerApi {
            remote: RemoteBilling::from_env(env).await?,
            cors: Cors::from_env(env),
            clock: system_clock(),
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        serve(request, &self.cors, |request| async move {
            let now = (self.clock)();
            match request.route_key() {
                Some(REGISTER_ROUTE) => {
                    let body: RegisterRequest = json_body(&request)?;
                    let uuid = body.server_uuid.clone();
                    let created = self.remote.register_server(body, now).await?;
                    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
                    Ok(ApiResponse::json(json!({"server_uuid": uuid, "created": created})).with_status(status))
                }
                Some(BILLING_ROUTE) => {
                    let authorization = request
                        .headers()
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    let server = self.remote.authenticate(authorization, now).await?;
                    let body: BillingLinkRequest = json_body(&request)?;
                    let url = self.remote.billing_link(&server, body, now).await?;
                    Ok(ApiResponse::json(json!({"billing_access_url": url})))
                }
                Some(DEACTIVATION_LINK_ROUTE) => {
                    request.principal()?.require_admin()?;
                    let server = request.path_uuid("server_uuid")?;
                    let sent_to = self.remote.send_deactivation_link(server, now).await?;
                    Ok(ApiResponse::json(json!({"sent_to": sent_to})).with_status(StatusCode::ACCEPTED))
                }
                _ => Err(ApiError::one(FieldError::general(Slug::NotFound, "no such route"))),
            }
        })
        .await
    }
}

fn json_body<T: serde::de::DeserializeOwned>(request: &ApiRequest) -> Result<T, ApiError> {
    serde_json::from_slice(request.body()).map_err(|e| {
        ApiError::one(FieldError::general(
            Slug::InvalidFormat,
            format!("the body is not the expected JSON: {e}"),
        ))
    })
}
