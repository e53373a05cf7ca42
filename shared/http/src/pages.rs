//! The HTTP conventions of the remote-billing browser pages: server-rendered HTML, form posts,
//! the session cookie, and the one mapping from remote-billing failures to error pages.
//!
//! Every page is `no-store`, may not be framed, sends no `Referer` (links carry tokens in their
//! paths), and allows no script at all.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::Instant;

use cookie::{Cookie, SameSite};
use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use tracing::Instrument;

use super::{MAX_BODY_BYTES, REQUEST_ID_HEADER, remote_failure, request_id_of, status_of};
use billing::errors::Slug;
use billing::remote::RemoteError;

use crate::html as pages;

/// The name of the billing session cookie.
pub const SESSION_COOKIE: &str = "billing_session";

/// What a page handler answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageResponse {
    /// A page.
    Html {
        /// The HTTP status.
        status: StatusCode,
        /// The HTML.
        body: String,
    },
    /// A page saying to come back later (429, 503), with `Retry-After`.
    Retry {
        /// The HTTP status.
        status: StatusCode,
        /// The HTML.
        body: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// A 302, possibly setting the session cookie.
    Redirect {
        /// Where to.
        location: String,
        /// A session secret to set as the cookie.
        session: Option<String>,
    },
}

impl PageResponse {
    /// 200 with this page.
    pub fn ok(body: String) -> Self {
        PageResponse::Html {
            status: StatusCode::OK,
            body,
        }
    }
}

/// A browser request, body already checked.
pub struct PageRequest {
    /// API Gateway's request id (or a fresh one).
    pub request_id: String,
    inner: Request,
}

impl PageRequest {
    /// The request's method.
    pub fn method(&self) -> &Method {
        self.inner.method()
    }

    /// The API Gateway route this request came in by (`GET /path/{param}`).
    pub fn route_key(&self) -> Option<&str> {
        super::route_key_of(&self.inner)
    }

    /// The path parameter `name`.
    pub fn path_parameter(&self, name: &str) -> Option<String> {
        self.inner.path_parameters().first(name).map(str::to_owned)
    }

    /// The fields of a form post (`application/x-www-form-urlencoded`); the first value of
    /// each name.
    pub fn form(&self) -> HashMap<String, String> {
        let mut fields = HashMap::new();
        for (name, value) in form_urlencoded::parse(self.inner.body()) {
            fields.entry(name.into_owned()).or_insert_with(|| value.into_owned());
        }
        fields
    }

    /// The value of the session cookie, if the browser sent one.
    pub fn session_cookie(&self) -> Option<String> {
        self.inner
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|cookie| cookie.name() == SESSION_COOKIE)
            .map(|cookie| cookie.value().to_owned())
    }

    /// The client's address as API Gateway saw it.
    pub fn client_ip(&self) -> Option<IpAddr> {
        crate::client_ip_of(&self.inner)
    }
}

/// `Set-Cookie` for a session: two hours, never to scripts, only over HTTPS, not sent on
/// cross-site posts.
pub fn session_cookie(secret: &str) -> String {
    Cookie::build((SESSION_COOKIE, secret))
        .path("/")
        .max_age(cookie::time::Duration::hours(2))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .build()
        .to_string()
}

/// The page a failure is answered with.
pub fn error_page(error: RemoteError) -> PageResponse {
    match &error {
        RemoteError::NoSession { way_back } => {
            return PageResponse::Redirect {
                location: way_back.clone(),
                session: None,
            };
        }
        RemoteError::ExpiredToken { way_back } => {
            return PageResponse::Html {
                status: StatusCode::BAD_REQUEST,
                body: pages::error(
                    "Link expired",
                    "Billing access token expired.",
                    Some((way_back, "Go back to your server to log in again")),
                ),
            };
        }
        _ => {}
    }
    let (status, title, message) = match remote_failure(&error) {
        // A server's own calls get 401; a person holding its link is forbidden, not asked to
        // authenticate.
        Some((Slug::ServerDeactivated, message)) => (StatusCode::FORBIDDEN, "Server deactivated", message),
        Some((slug, message)) => (status_of(slug), "Billing", message),
        None => {
            tracing::error!(%error, "page failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Something went wrong on our side; nothing was changed. Try again in a minute.".to_owned(),
            )
        }
    };
    if status.is_client_error() {
        tracing::info!(status = status.as_u16(), %error, "page refused");
    }
    let body = pages::error(title, &message, None);
    match crate::retry_after_for(status, error.retry_after()) {
        Some(retry_after) => PageResponse::Retry {
            status,
            body,
            retry_after,
        },
        None => PageResponse::Html { status, body },
    }
}

/// Runs one browser request through `handler`, and always answers with a page or a redirect.
pub async fn serve_page<F, Fut>(request: Request, handler: F) -> Response<Body>
where
    F: FnOnce(PageRequest) -> Fut,
    Fut: Future<Output = Result<PageResponse, RemoteError>>,
{
    serve_page_posting_to(request, None, handler).await
}

/// [`serve_page`] for pages whose forms may also end on `form_origin` (a form answered with a
/// redirect to Stripe's Checkout: browsers check `form-action` along the redirects too).
pub async fn serve_page_posting_to<F, Fut>(request: Request, form_origin: Option<&str>, handler: F) -> Response<Body>
where
    F: FnOnce(PageRequest) -> Fut,
    Fut: Future<Output = Result<PageResponse, RemoteError>>,
{
    let started = Instant::now();
    let request_id = request_id_of(&request);
    let span = crate::request_span(&request, &request_id);
    async move {
        let outcome = match precheck(&request) {
            Some(refusal) => refusal,
            None => {
                let deadline = crate::invocation_deadline(&request);
                let work = handler(PageRequest {
                    request_id: request_id.clone(),
                    inner: request,
                });
                match crate::before_deadline(deadline, work).await {
                    Some(outcome) => outcome.unwrap_or_else(error_page),
                    None => {
                        tracing::error!("page abandoned at its deadline");
                        PageResponse::Retry {
                            status: StatusCode::SERVICE_UNAVAILABLE,
                            body: pages::error(
                                "Temporarily unavailable",
                                "This took too long on our side; nothing was changed. Try again in a minute.",
                                None,
                            ),
                            retry_after: 5,
                        }
                    }
                }
            }
        };
        let response = render(outcome, &request_id, form_origin);
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "answered"
        );
        response
    }
    .instrument(span)
    .await
}

fn precheck(request: &Request) -> Option<PageResponse> {
    let refuse = |status: StatusCode, message: &str| {
        Some(PageResponse::Html {
            status,
            body: pages::error("Billing", message, None),
        })
    };
    if request.body().len() > MAX_BODY_BYTES {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
    }
    if request.method() == Method::POST {
        let form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !form {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Send the form as application/x-www-form-urlencoded.",
            );
        }
    }
    None
}

fn render(outcome: PageResponse, request_id: &str, form_origin: Option<&str>) -> Response<Body> {
    let html = |status: StatusCode, body: String| {
        let mut response = Response::new(Body::Text(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response
    };
    let mut response = match outcome {
        PageResponse::Html { status, body } => html(status, body),
        PageResponse::Retry {
            status,
            body,
            retry_after,
        } => {
            let mut response = html(status, body);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            response
        }
        PageResponse::Redirect { location, session } => {
            let mut response = Response::new(Body::Empty);
            *response.status_mut() = StatusCode::FOUND;
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            if let Some(secret) = session
                && let Ok(value) = HeaderValue::from_str(&session_cookie(&secret))
            {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let policy = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'{}; frame-ancestors 'none'",
        form_origin.map(|origin| format!(" {origin}")).unwrap_or_default()
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&policy).unwrap_or_else(|_| {
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            )
        }),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    response
}
