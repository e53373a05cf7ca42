//! The HTTP conventions every function answers through.
//!
//! One pipeline ([`serve`]) gives every endpoint the same outside: request ids on the response
//! and on every log line, CORS and preflight, content negotiation (406/415), the 64 KiB body
//! limit (413), the `{"subscriptions": [...]}` and `{"errors": [...]}` envelopes, and the one
//! mapping from the errors of every layer to slugs and status codes ([`ApiError`]).

#![warn(missing_docs)]

use std::future::Future;
use std::time::Instant;

use lambda_http::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use tracing::Instrument;
use uuid::Uuid;

use billing::auth::{AuthError, Principal};
use billing::change::ChangeError;
use billing::config::{Environment, optional};
use billing::errors::{FieldError, Slug, ValidationErrors};
use billing::ids::parse_canonical_uuid;
use billing::provisioning::ProvisionError;
use billing::remote::RemoteError;
use billing::store::StoreError;
use billing::stripe::BillingError;
use billing::subscription::{ReadChange, Subscription, SubscriptionChange};

/// Bodies above this many bytes are refused with 413 before anything reads them.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOWED_HEADERS: &str = "authorization, content-type, if-match, idempotency-key";
/// The response headers browsers may read (API.md conventions).
const EXPOSED_HEADERS: &str = "etag, x-request-id, location, retry-after, idempotent-replayed";

/// The HTTP status a slug is answered with: the table of API.md, in one place.
pub fn status_of(slug: Slug) -> StatusCode {
    match slug {
        Slug::InvalidFormat | Slug::Missing | Slug::InvalidValue => StatusCode::BAD_REQUEST,
        Slug::Unauthorized => StatusCode::UNAUTHORIZED,
        Slug::AccessDenied => StatusCode::FORBIDDEN,
        Slug::NotFound => StatusCode::NOT_FOUND,
        Slug::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        Slug::Conflict => StatusCode::CONFLICT,
        Slug::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        Slug::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Slug::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Slug::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
        Slug::ActOfGod => StatusCode::INTERNAL_SERVER_ERROR,
        Slug::RemoteRealmServerMismatch => StatusCode::FORBIDDEN,
        Slug::ServerDeactivated => StatusCode::UNAUTHORIZED,
        Slug::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        Slug::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        Slug::CardDeclined => StatusCode::PAYMENT_REQUIRED,
    }
}

/// A request that failed, as the client will see it: every error found, and one status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {errors:?}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Every error found.
    pub errors: Vec<FieldError>,
    /// Seconds to wait before trying again (`Retry-After`), when the failure says.
    pub retry_after: Option<u64>,
    /// The authentication scheme a 401 asks for (`WWW-Authenticate`), where the client
    /// authenticates to the function itself (HTTP Basic).
    pub challenge: Option<&'static str>,
}

impl ApiError {
    /// Errors of one request may carry different slugs (a non-admin sending a system field and
    /// a malformed email). The status is that of the most fundamental one: refusals (401, 403)
    /// before conflicts before malformed input, so a client is never told "fix the format" by
    /// a request it is not allowed to make at all.
    pub fn from_errors(errors: Vec<FieldError>) -> Self {
        const PRECEDENCE: [Slug; 18] = [
            Slug::ActOfGod,
            Slug::UpstreamUnavailable,
            Slug::Unauthorized,
            Slug::ServerDeactivated,
            Slug::AccessDenied,
            Slug::RemoteRealmServerMismatch,
            Slug::TooManyRequests,
            Slug::NotAcceptable,
            Slug::UnsupportedMediaType,
            Slug::TooLarge,
            Slug::NotFound,
            Slug::PreconditionFailed,
            Slug::Conflict,
            Slug::IdempotencyKeyReused,
            Slug::CardDeclined,
            Slug::InvalidFormat,
            Slug::Missing,
            Slug::InvalidValue,
        ];
        let status = PRECEDENCE
            .iter()
            .find(|slug| errors.iter().any(|e| e.slug == **slug))
            .map_or(StatusCode::INTERNAL_SERVER_ERROR, |slug| status_of(*slug));
        ApiError {
            status,
            errors,
            retry_after: None,
            challenge: None,
        }
    }

    /// A failure with one error.
    pub fn one(error: FieldError) -> Self {
        ApiError::from_errors(vec![error])
    }

    /// An internal failure: the details go to the log, the client gets a generic sentence.
    pub fn act_of_god(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "request failed unexpectedly");
        ApiError::one(FieldError::general(
            Slug::ActOfGod,
            "something went wrong on our side; it has been logged",
        ))
    }

    /// The slugs of the errors, in order.
    pub fn slugs(&self) -> Vec<Slug> {
        self.errors.iter().map(|e| e.slug).collect()
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::from_errors(errors.0)
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let slug = match error {
            AuthError::Unauthenticated(_) => Slug::Unauthorized,
            AuthError::Forbidden(_) => Slug::AccessDenied,
        };
        ApiError::one(FieldError::general(slug, error.to_string()))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::one(FieldError::general(Slug::NotFound, "no such subscription")),
            StoreError::AlreadyExists => ApiError::one(FieldError::field(
                Slug::Conflict,
                "/user_id",
                "this user already has a subscription",
            )),
            StoreError::VersionConflict => ApiError::one(FieldError::general(
                Slug::PreconditionFailed,
                "the subscription changed since the version you sent",
            )),
            error @ StoreError::Unavailable(_) => {
                tracing::error!(error = %billing::errors::chain(&error), "store unavailable");
                ApiError::one(FieldError::general(
                    Slug::UpstreamUnavailable,
                    "storage is unavailable; nothing was changed, try again",
                ))
            }
            StoreError::InvalidCursor => ApiError::one(billing::paging::unreadable_cursor()),
            StoreError::LinkTaken(field) => ApiError::one(FieldError::field(
                Slug::Conflict,
                field,
                "this Stripe id is linked to another subscription",
            )),
            StoreError::Corrupt(detail) => ApiError::act_of_god(&detail),
        }
    }
}

impl From<BillingError> for ApiError {
    fn from(error: BillingError) -> Self {
        match error {
            BillingError::Unavailable(detail) => {
                tracing::error!(error = %detail, "Stripe unavailable");
                ApiError::one(FieldError::general(
                    Slug::UpstreamUnavailable,
                    "Stripe is unavailable; nothing was changed, try again",
                ))
            }
            BillingError::CardDeclined(message) => ApiError::one(FieldError::field(
                Slug::InvalidValue,
                "/stripe_source",
                format!("the card was declined: {message}"),
            )),
            BillingError::PaymentMethodRefused(message) => ApiError::one(FieldError::field(
                Slug::InvalidValue,
                "/stripe_source",
                format!("the payment method cannot be used: {message}"),
            )),
            BillingError::Conflict(detail) => {
                tracing::warn!(error = %detail, "conflicting Stripe request");
                ApiError::one(FieldError::general(
                    Slug::Conflict,
                    "another request is changing this subscription differently; read it again and retry",
                ))
            }
            BillingError::Rejected(detail) => ApiError::act_of_god(&detail),
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(error: ChangeError) -> Self {
        match error {
            ChangeError::NotFound => StoreError::NotFound.into(),
            ChangeError::VersionMismatch { .. } => StoreError::VersionConflict.into(),
            ChangeError::KeptChanging => ApiError::one(FieldError::general(
                Slug::Conflict,
                "the subscription is changing too often to apply this change; try again",
            )),
            ChangeError::NotInStripe => ApiError::one(FieldError::general(
                Slug::Conflict,
                "this subscription has no Stripe subscription yet; it cannot change plan or payment method",
            )),
            ChangeError::Canceled => ApiError::one(FieldError::general(
                Slug::Conflict,
                "the subscription is canceled; send a plan to subscribe again",
            )),
            ChangeError::ChargeDeclined { field, detail } => ApiError::one(FieldError::field(
                Slug::CardDeclined,
                field,
                format!("{detail}; nothing was charged and the subscription is unchanged: use another card and retry"),
            )),
            ChangeError::Billing(error) => error.into(),
            ChangeError::Store(error) => error.into(),
        }
    }
}

impl From<billing::limits::LimitError> for ApiError {
    fn from(error: billing::limits::LimitError) -> Self {
        match error {
            billing::limits::LimitError::Limited { retry_after_seconds } => {
                let mut refused = ApiError::one(FieldError::general(
                    Slug::TooManyRequests,
                    format!("too many requests from this caller; try again in {retry_after_seconds} s"),
                ));
                refused.retry_after = Some(retry_after_seconds);
                refused
            }
            billing::limits::LimitError::Store(error) => error.into(),
        }
    }
}

impl From<billing::lifecycle::LifecycleError> for ApiError {
    fn from(error: billing::lifecycle::LifecycleError) -> Self {
        use billing::lifecycle::LifecycleError;
        match error {
            LifecycleError::NotFound => StoreError::NotFound.into(),
            LifecycleError::NotInStripe(what) => ApiError::one(FieldError::general(
                Slug::Conflict,
                format!("this subscription has nothing in Stripe to {what}; send a plan to subscribe"),
            )),
            LifecycleError::Billing(error) => error.into(),
            LifecycleError::Store(error) => error.into(),
        }
    }
}

impl From<billing::webhook::EventError> for ApiError {
    fn from(error: billing::webhook::EventError) -> Self {
        use billing::webhook::EventError;
        match error {
            EventError::Store(error) => error.into(),
            EventError::KeptChanging => ApiError::one(FieldError::general(
                Slug::Conflict,
                "the subscription kept changing while the event was applied; try again",
            )),
            error @ (EventError::Mail(_) | EventError::Upgrade(_)) => {
                tracing::error!(error = %billing::errors::chain(&error), "event not applied");
                ApiError::one(FieldError::general(
                    Slug::UpstreamUnavailable,
                    "a service the event needs is unavailable; nothing was recorded, try again",
                ))
            }
        }
    }
}

impl From<ProvisionError> for ApiError {
    fn from(error: ProvisionError) -> Self {
        match error {
            ProvisionError::AlreadyExists => StoreError::AlreadyExists.into(),
            ProvisionError::Billing(BillingError::Conflict(detail)) => {
                tracing::warn!(error = %detail, "concurrent create with other details");
                ApiError::one(FieldError::field(
                    Slug::Conflict,
                    "/user_id",
                    "a subscription for this user is being created with other details",
                ))
            }
            ProvisionError::Billing(error) => error.into(),
            ProvisionError::Store(error) => error.into(),
        }
    }
}

/// How a remote-billing failure is answered: its slug and a sentence (see
/// [`RemoteError::public`]), for JSON and for pages alike.
pub fn remote_failure(error: &RemoteError) -> Option<(Slug, String)> {
    error.public()
}

impl From<RemoteError> for ApiError {
    fn from(error: RemoteError) -> Self {
        if let Some((slug, message)) = remote_failure(&error) {
            if let RemoteError::Invalid(errors) = error {
                return errors.into();
            }
            let mut answer = ApiError::one(FieldError::general(slug, message));
            answer.retry_after = error.retry_after();
            return answer;
        }
        match error {
            RemoteError::Store(error) => error.into(),
            RemoteError::Mail(error) => {
                tracing::error!(%error, "mail unavailable");
                ApiError::one(FieldError::general(
                    Slug::UpstreamUnavailable,
                    "mail could not be sent; try again",
                ))
            }
            other => ApiError::act_of_god(&other),
        }
    }
}

/// A successful answer: a status, the subscriptions, and the ETag when there is exactly one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The subscriptions of the envelope.
    pub subscriptions: Vec<Subscription>,
    /// A body other than the subscriptions envelope (the webhook's acknowledgement).
    pub other: Option<serde_json::Value>,
    /// Where what a 201 made lives (`Location`).
    pub location: Option<String>,
}

impl ApiResponse {
    /// 200 with one subscription.
    pub fn ok(subscription: Subscription) -> Self {
        ApiResponse {
            status: StatusCode::OK,
            subscriptions: vec![subscription],
            other: None,
            location: None,
        }
    }

    /// 201 with the subscription created.
    pub fn created(subscription: Subscription) -> Self {
        ApiResponse {
            status: StatusCode::CREATED,
            location: Some(format!("/subscriptions/{}", subscription.id)),
            subscriptions: vec![subscription],
            other: None,
        }
    }

    /// 201 with this body, for what lives at `location`.
    pub fn created_at(location: String, body: serde_json::Value) -> Self {
        ApiResponse {
            status: StatusCode::CREATED,
            subscriptions: Vec::new(),
            other: Some(body),
            location: Some(location),
        }
    }

    /// The same answer with another status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// `200` with a body of its own, for endpoints that are not about subscriptions.
    pub fn json(body: serde_json::Value) -> Self {
        ApiResponse {
            status: StatusCode::OK,
            subscriptions: Vec::new(),
            other: Some(body),
            location: None,
        }
    }
}

#[derive(Serialize)]
struct SuccessBody<'a> {
    subscriptions: &'a [Subscription],
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    errors: &'a [FieldError],
}

/// Which origins may call the API from a browser (`CORS_ALLOWED_ORIGINS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    /// Comma-separated origins; `*` allows any. Empty allows none.
    pub fn parse(list: &str) -> Self {
        let mut cors = Cors::default();
        for origin in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if origin == "*" {
                cors.any = true;
            } else {
                cors.origins.push(origin.trim_end_matches('/').to_owned());
            }
        }
        cors
    }

    /// From `CORS_ALLOWED_ORIGINS` (comma-separated; `*` for any); none when unset.
    pub fn from_env(env: &dyn Environment) -> Self {
        Cors::parse(&optional(env, "CORS_ALLOWED_ORIGINS").unwrap_or_default())
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow_origin(&self, origin: Option<&str>) -> Option<HeaderValue> {
        let origin = origin?;
        if self.any {
            Some(HeaderValue::from_static("*"))
        } else if self.origins.iter().any(|o| o == origin) {
            HeaderValue::from_str(origin).ok()
        } else {
            None
        }
    }
}

/// What a handler gets to work with: the request and its id, body already checked.
pub struct ApiRequest {
    /// API Gateway's request id (or a fresh one).
    pub request_id: String,
    inner: Request,
}

impl ApiRequest {
    /// The caller, from the JWT authorizer's claims in the request context.
    pub fn principal(&self) -> Result<Principal, ApiError> {
        let claims = match self.inner.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context
                .authorizer
                .as_ref()
                .and_then(|a| a.jwt.as_ref())
                .map(|jwt| &jwt.claims),
            _ => None,
        };
        let claims = claims.ok_or(AuthError::Unauthenticated("no bearer token was presented"))?;
        Ok(Principal::from_claims(claims)?)
    }

    /// A path parameter that must be a canonical UUID.
    pub fn path_uuid(&self, name: &str) -> Result<Uuid, ApiError> {
        let parameters = self.inner.path_parameters();
        let Some(text) = parameters.first(name) else {
            return Err(ApiError::one(FieldError::param(
                Slug::Missing,
                name,
                format!("{name} is required"),
            )));
        };
        parse_canonical_uuid(text).ok_or_else(|| {
            ApiError::one(FieldError::param(
                Slug::InvalidFormat,
                name,
                format!("{name} must be a lowercase hyphenated UUID"),
            ))
        })
    }

    /// A path parameter that must be a Stripe id (`evt_...`: letters, digits and underscores,
    /// at most 255).
    pub fn path_stripe_id(&self, name: &str, prefix: &str) -> Result<String, ApiError> {
        let parameters = self.inner.path_parameters();
        let text = parameters.first(name).unwrap_or_default();
        let valid = text.starts_with(prefix)
            && text.len() <= 255
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if valid {
            Ok(text.to_owned())
        } else {
            Err(ApiError::one(FieldError::param(
                Slug::InvalidFormat,
                name,
                format!("{name} must be a Stripe id starting with {prefix}"),
            )))
        }
    }

    /// The version named by `If-Match: "<version>"`, if the header is present.
    pub fn if_match(&self) -> Result<Option<u64>, ApiError> {
        let Some(value) = self.inner.headers().get(header::IF_MATCH) else {
            return Ok(None);
        };
        // `*` matches any existing version: no precondition beyond the subscription existing,
        // which every update requires anyway.
        if value.as_bytes().trim_ascii() == b"*" {
            return Ok(None);
        }
        value
            .to_str()
            .ok()
            .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
            .and_then(|v| v.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::one(FieldError::param(
                    Slug::InvalidFormat,
                    "If-Match",
                    "If-Match must be a version ETag such as \"3\"",
                ))
            })
    }

    /// The raw body.
    pub fn body(&self) -> &[u8] {
        self.inner.body()
    }

    /// The body read as `T`; an empty body is `missing`, anything unreadable `invalid_format`
    /// (or the field errors `T` reports), in the error envelope.
    pub fn json_body<T: JsonBody>(&self) -> Result<T, ApiError> {
        if self.inner.body().is_empty() {
            return Err(ApiError::one(FieldError::general(
                Slug::Missing,
                "a JSON body is required",
            )));
        }
        Ok(T::from_json_body(self.inner.body())?)
    }

    /// The body read by `read` (a use case's own reader); an empty body is `missing`.
    pub fn json_body_with<T>(&self, read: impl FnOnce(&[u8]) -> Result<T, ValidationErrors>) -> Result<T, ApiError> {
        if self.inner.body().is_empty() {
            return Err(ApiError::one(FieldError::general(
                Slug::Missing,
                "a JSON body is required",
            )));
        }
        Ok(read(self.inner.body())?)
    }

    /// The API Gateway route this request came in by (`POST /path/{param}`).
    pub fn route_key(&self) -> Option<&str> {
        route_key_of(&self.inner)
    }

    /// The client's IP address, as API Gateway saw it.
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        client_ip_of(&self.inner)
    }

    /// A query-string parameter (its first value).
    pub fn query(&self, name: &str) -> Option<String> {
        self.inner
            .query_string_parameters_ref()
            .and_then(|q| q.first(name))
            .map(str::to_owned)
    }

    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }
}

/// What a request body can be read as: each type says how its errors are reported.
pub trait JsonBody: Sized {
    /// Reads the body; every problem found, as field errors.
    fn from_json_body(body: &[u8]) -> Result<Self, ValidationErrors>;
}

impl JsonBody for SubscriptionChange {
    fn from_json_body(body: &[u8]) -> Result<Self, ValidationErrors> {
        SubscriptionChange::from_json(body)
    }
}

impl JsonBody for ReadChange {
    fn from_json_body(body: &[u8]) -> Result<Self, ValidationErrors> {
        SubscriptionChange::read(body)
    }
}

impl JsonBody for billing::remote::RegisterRequest {
    fn from_json_body(body: &[u8]) -> Result<Self, ValidationErrors> {
        billing::remote::RegisterRequest::read(body)
    }
}

impl JsonBody for billing::remote::BillingLinkRequest {
    fn from_json_body(body: &[u8]) -> Result<Self, ValidationErrors> {
        billing::remote::BillingLinkRequest::read(body)
    }
}

/// Runs one JSON request through the shared pipeline and `handler`, and always answers.
pub async fn serve<F, Fut>(request: Request, cors: &Cors, handler: F) -> Response<Body>
where
    F: FnOnce(ApiRequest) -> Fut,
    Fut: Future<Output = Result<ApiResponse, ApiError>>,
{
    serve_with_limit(request, cors, MAX_BODY_BYTES, handler).await
}

/// [`serve`] with another body limit: Stripe's events can outgrow the API's 64 KiB.
pub async fn serve_with_limit<F, Fut>(request: Request, cors: &Cors, max_body: usize, handler: F) -> Response<Body>
where
    F: FnOnce(ApiRequest) -> Fut,
    Fut: Future<Output = Result<ApiResponse, ApiError>>,
{
    let started = Instant::now();
    let request_id = request_id_of(&request);
    let span = request_span(&request, &request_id);
    async move {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut response = if request.method() == Method::OPTIONS {
            preflight()
        } else {
            let outcome = match precheck(&request, max_body) {
                Ok(()) => {
                    let deadline = invocation_deadline(&request);
                    let work = handler(ApiRequest {
                        request_id: request_id.clone(),
                        inner: request,
                    });
                    before_deadline(deadline, work)
                        .await
                        .unwrap_or_else(|| Err(out_of_time()))
                }
                Err(error) => Err(error),
            };
            render(outcome)
        };
        decorate(&mut response, &request_id, cors, origin.as_deref());
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

/// The headers every answer carries: its request id, and CORS for an allowed origin.
fn decorate(response: &mut Response<Body>, request_id: &str, cors: &Cors, origin: Option<&str>) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    if let Some(allowed) = cors.allow_origin(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
}

/// The span every log line of one request is written in: its id and its route *template*
/// (`POST /remote-billing-login/{token}`), never its path, whose segments can be access tokens
/// and confirmation keys (API.md: no log line holds a secret).
pub fn request_span(request: &Request, request_id: &str) -> tracing::Span {
    let route = route_key_of(request).unwrap_or("(no route)");
    tracing::info_span!("request", request_id = %request_id, route = %route)
}

/// The deadline of the Lambda invocation a request came in by; none locally, where requests
/// carry no invocation context.
pub fn invocation_deadline(request: &Request) -> Option<std::time::SystemTime> {
    request
        .lambda_context_ref()
        .filter(|context| context.deadline > 0)
        .map(|context| context.deadline())
}

/// Runs `work` within `deadline` (see `billing::deadline`): its upstream calls stop retrying
/// in time, and, as a last guard, the work is abandoned just before the deadline (`None`).
/// Abandoning is safe: every write is one conditional transaction, written whole or not at
/// all, and every Stripe call carries an idempotency key, so the client's retry completes it.
pub async fn before_deadline<F: Future>(deadline: Option<std::time::SystemTime>, work: F) -> Option<F::Output> {
    let Some(at) = deadline else {
        return Some(work.await);
    };
    let guard = billing::deadline::until_deadline(at).saturating_sub(billing::deadline::ANSWER_MARGIN / 2);
    tokio::time::timeout(guard, billing::deadline::within(Some(at), work))
        .await
        .ok()
}

fn out_of_time() -> ApiError {
    tracing::error!("request abandoned at its deadline");
    ApiError::one(FieldError::general(
        Slug::UpstreamUnavailable,
        "the request could not be finished in time; nothing was half-written, and a retry is safe",
    ))
}

/// The `Retry-After` of an answer (API.md: every 429 and 502 carries one): what the failure
/// said, else a short wait for an upstream failure and a minute for a limit.
pub fn retry_after_for(status: StatusCode, said: Option<u64>) -> Option<u64> {
    match status {
        StatusCode::TOO_MANY_REQUESTS => Some(said.unwrap_or(60)),
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => Some(said.unwrap_or(5)),
        _ => None,
    }
}

/// The client's IP address, as API Gateway saw it.
pub fn client_ip_of(request: &Request) -> Option<std::net::IpAddr> {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.as_deref()?.parse().ok(),
        _ => None,
    }
}

/// `https://` and the domain name the request came to, as API Gateway saw it (its own
/// `execute-api` name or a custom domain mapped to the API: never a client's choice).
pub fn origin_of(request: &Request) -> Option<String> {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .domain_name
            .as_deref()
            .filter(|name| !name.is_empty())
            .map(|name| format!("https://{name}")),
        _ => None,
    }
}

/// The route key of API Gateway's request context, without a trailing slash.
pub fn route_key_of(request: &Request) -> Option<&str> {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.route_key.as_deref().map(|k| k.trim_end_matches('/')),
        _ => None,
    }
}

/// Runs a Lambda bootstrap of the API: each request to `handle`, then `after` with the
/// invocation's Lambda request id once it is answered (the bootstraps flush the invocation's
/// metrics there, so a metric line and the invocation's REPORT line share one id).
pub async fn run_api<H, Fut, A>(handle: H, after: A) -> Result<(), lambda_http::Error>
where
    H: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Response<Body>> + Send,
    A: Fn(&str) + Sync,
{
    let (handle, after) = (&handle, &after);
    lambda_http::run(lambda_http::service_fn(move |request: Request| async move {
        let request_id = request
            .lambda_context_ref()
            .map_or_else(|| request_id_of(&request), |context| context.request_id.clone());
        let response = handle(request).await;
        after(&request_id);
        Ok::<_, lambda_http::Error>(response)
    }))
    .await
}

/// The answer to a request that came while the function could not be built (its secrets
/// unreadable, its configuration refused): 502, nothing done. The error is logged, never sent;
/// the next request builds the function again.
pub fn not_started(error: &dyn std::error::Error) -> Response<Body> {
    tracing::error!(%error, "the function could not start");
    render(Err(ApiError::one(FieldError::general(
        Slug::UpstreamUnavailable,
        "the service could not start; nothing was done, try again",
    ))))
}

/// The API Gateway request id, or a fresh UUID where there is none (the local server).
pub fn request_id_of(request: &Request) -> String {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.request_id.clone(),
        _ => None,
    }
    .filter(|id| !id.is_empty())
    .unwrap_or_else(|| Uuid::new_v4().to_string())
}

fn preflight() -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

/// Checks that need no handler: what the client accepts, how big the body is, what it is.
fn precheck(request: &Request, max_body: usize) -> Result<(), ApiError> {
    let headers = request.headers();
    if let Some(accept) = headers.get(header::ACCEPT)
        && !accepts_json(accept.to_str().unwrap_or(""))
    {
        return Err(ApiError::one(FieldError::param(
            Slug::NotAcceptable,
            "Accept",
            "this API answers only in application/json",
        )));
    }
    let body = request.body();
    if body.len() > max_body {
        return Err(ApiError::one(FieldError::general(
            Slug::TooLarge,
            format!("the body is larger than {max_body} bytes"),
        )));
    }
    if !body.is_empty() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json_media_type(content_type) {
            return Err(ApiError::one(FieldError::param(
                Slug::UnsupportedMediaType,
                "Content-Type",
                "send the body as application/json",
            )));
        }
    }
    Ok(())
}

fn render(outcome: Result<ApiResponse, ApiError>) -> Response<Body> {
    let (mut retry_after, mut challenge, mut location) = (None, None, None);
    let (status, body, etag) = match outcome {
        Ok(answer) => {
            let etag = match answer.subscriptions.as_slice() {
                [one] => Some(one.version),
                _ => None,
            };
            let body = match &answer.other {
                Some(other) => serde_json::to_string(other),
                None => serde_json::to_string(&SuccessBody {
                    subscriptions: &answer.subscriptions,
                }),
            };
            location = answer.location;
            (answer.status, body, etag)
        }
        Err(error) => {
            retry_after = error.retry_after;
            challenge = error.challenge.filter(|_| error.status == StatusCode::UNAUTHORIZED);
            if error.status.is_server_error() {
                tracing::warn!(errors = ?error.slugs(), "request failed");
            } else {
                tracing::info!(errors = ?error.slugs(), "request refused");
            }
            (
                error.status,
                serde_json::to_string(&ErrorBody { errors: &error.errors }),
                None,
            )
        }
    };
    // Serialising our own types cannot fail; if it ever does, the client still gets JSON.
    let body = body.unwrap_or_else(|_| r#"{"errors":[{"slug":"act_of_god","message":"serialisation failed"}]}"#.into());
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(version) = etag
        && let Ok(value) = HeaderValue::from_str(&format!("\"{version}\""))
    {
        headers.insert(header::ETAG, value);
    }
    if let Some(seconds) = retry_after_for(status, retry_after) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Some(challenge) = challenge {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    if let Some(location) = location
        && let Ok(value) = HeaderValue::from_str(&location)
    {
        headers.insert(header::LOCATION, value);
    }
    response
}

/// `application/json` with any parameters (`; charset=utf-8`), in any letter case.
fn is_json_media_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether an `Accept` header admits `application/json`: `application/json`, `application/*`
/// or `*/*`, with a non-zero quality. An empty header accepts anything.
fn accepts_json(accept: &str) -> bool {
    if accept.trim().is_empty() {
        return true;
    }
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused && matches!(media.as_str(), "application/json" | "application/*" | "*/*")
    })
}

#[cfg(feature = "pages")]
pub mod html;
/// `Idempotency-Key` around the JSON pipeline.
pub mod idempotent;
#[cfg(feature = "pages")]
pub mod pages;
#[cfg(feature = "pages")]
pub mod plan_html;

#[cfg(test)]
mod tests;
