//! The browser side of remote billing (API.md "Remote billing", steps 1 to 5, and server
//! deactivation): server-rendered pages and form posts, one function behind all their routes.

use billing::access::Operation;
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment};
use billing::ids::parse_canonical_uuid;
use billing::remote::{LoginForm, NextPage, RemoteBilling, RemoteError};
use billing_http::html as pages;
use billing_http::pages::{PageRequest, PageResponse, serve_page};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};

pub const LOGIN_ROUTE: &str = "GET /remote-billing-login/{token}";
pub const COMPLETE_LOGIN_ROUTE: &str = "POST /remote-billing-login/{token}";
pub const REQUEST_CONFIRMATION_ROUTE: &str = "POST /remote-billing-login/{token}/confirm";
pub const CONFIRM_EMAIL_ROUTE: &str = "GET /remote-billing-login/do_confirm/{key}";
pub const REALM_PAGE_ROUTE: &str = "GET /realm/{realm_uuid}/{page}";
pub const SERVER_PAGE_ROUTE: &str = "GET /server/{server_uuid}/deactivate";
pub const DEACTIVATE_ROUTE: &str = "POST /server/{server_uuid}/deactivate";

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "remote-billing-pages";

/// What this function does with the store and the mail service; its IAM policy grants exactly
/// these.
pub const OPERATIONS: &[Operation] = &[
    Operation::GetDocument,
    Operation::PutDocument,
    Operation::PutDocuments,
    Operation::ListDocuments,
    Operation::SendMail,
];

pub struct RemoteBillingPages {
    pub remote: RemoteBilling,
    pub clock: SharedClock,
}

/// A checkbox counts as ticked when the browser sends it at all (`on`, or our `true`).
fn ticked(value: Option<&String>) -> bool {
    value.is_some_and(|v| matches!(v.as_str(), "true" | "on" | "1"))
}

fn not_found() -> PageResponse {
    PageResponse::Html {
        status: StatusCode::NOT_FOUND,
        body: pages::error("Not found", "There is no such page.", None),
    }
}

/// Remote billing on DynamoDB (`BILLING_TABLE`) and SES (`MAIL_FROM`), the AWS clients built
/// from one configuration.
async fn remote_billing_on_aws(env: &dyn Environment) -> Result<RemoteBilling, ConfigError> {
    let aws = billing_adapters::aws::load_sdk_config().await;
    let store = billing_adapters::DynamoStore::with_config(&aws, billing::config::billing_table(env)?);
    let mailer = billing_adapters::SesMailer::from_env_with_config(env, &aws)?;
    RemoteBilling::from_env(env, std::sync::Arc::new(store), std::sync::Arc::new(mailer))
}

impl RemoteBillingPages {
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        Ok(RemoteBillingPages {
            remote: remote_billing_on_aws(env).await?,
            clock: std::sync::Arc::new(billing_adapters::SystemClock),
        }
        .declared())
    }

    /// The same function, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        RemoteBillingPages {
            remote: self.remote.restricted_to(FUNCTION, OPERATIONS),
            ..self
        }
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        serve_page(request, |request| self.route(request)).await
    }

    async fn route(&self, request: PageRequest) -> Result<PageResponse, RemoteError> {
        let now = self.clock.now();
        let remote = &self.remote;
        let param = |name: &str| request.path_parameter(name).unwrap_or_default();
        match request.route_key() {
            Some(LOGIN_ROUTE) => {
                let token = param("token");
                let view = remote.login_page(&token, now).await?;
                Ok(PageResponse::ok(pages::login(&token, &view)))
            }
            Some(REQUEST_CONFIRMATION_ROUTE) => {
                let form = request.form();
                let email = form.get("email").map_or("", String::as_str);
                let sent_to = remote
                    .request_confirmation(
                        &param("token"),
                        email,
                        form.get("csrf_token").map(String::as_str),
                        request.client_ip(),
                        now,
                    )
                    .await?;
                Ok(PageResponse::ok(pages::check_email(&sent_to)))
            }
            Some(CONFIRM_EMAIL_ROUTE) => {
                let fresh = remote.confirm_email(&param("key"), now).await?;
                Ok(PageResponse::Redirect {
                    location: format!("/remote-billing-login/{fresh}"),
                    session: None,
                })
            }
            Some(COMPLETE_LOGIN_ROUTE) => {
                let form = request.form();
                let login = LoginForm {
                    full_name: form.get("full_name").cloned(),
                    tos_consent: ticked(form.get("tos_consent")),
                    csrf: form.get("csrf_token").cloned(),
                };
                let logged_in = remote.complete_login(&param("token"), login, now).await?;
                Ok(PageResponse::Redirect {
                    location: logged_in.location,
                    session: Some(logged_in.session_secret),
                })
            }
            Some(REALM_PAGE_ROUTE) => {
                let (Some(realm), Some(page)) = (
                    parse_canonical_uuid(&param("realm_uuid")),
                    NextPage::parse(&param("page")),
                ) else {
                    return Ok(not_found());
                };
                let view = remote
                    .realm_page(request.session_cookie().as_deref(), realm, page, now)
                    .await?;
                Ok(PageResponse::ok(pages::realm(&view)))
            }
            Some(SERVER_PAGE_ROUTE) => {
                let Some(server) = parse_canonical_uuid(&param("server_uuid")) else {
                    return Ok(not_found());
                };
                let view = remote
                    .server_page(request.session_cookie().as_deref(), server, now)
                    .await?;
                Ok(PageResponse::ok(pages::server(&view)))
            }
            Some(DEACTIVATE_ROUTE) => {
                let Some(server) = parse_canonical_uuid(&param("server_uuid")) else {
                    return Ok(not_found());
                };
                let form = request.form();
                let deactivated = remote
                    .deactivate_server(
                        request.session_cookie().as_deref(),
                        server,
                        ticked(form.get("confirmed")),
                        form.get("csrf_token").map(String::as_str),
                        now,
                    )
                    .await?;
                Ok(PageResponse::ok(pages::deactivated(&deactivated.hostname)))
            }
            _ => Ok(not_found()),
        }
    }
}
