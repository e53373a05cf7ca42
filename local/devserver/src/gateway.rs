//! A local stand-in for the HTTP API of `template.yaml`: routes, the JWT authorizer, and the
//! API Gateway v2 (payload 2.0) request each function receives.
//!
//! Routing is axum's router, whose `{param}` paths are written as API Gateway writes them, so
//! the routes are the template's, to the letter. Each request becomes aws_lambda_events'
//! `ApiGatewayV2httpRequest`, filled in as API Gateway fills it in (headers joined with commas,
//! cookies apart, query parameters joined with commas, the authorizer's claims), and reaches
//! the function through lambda_http's own conversion: a handler cannot tell the local server
//! from AWS.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequest,
    ApiGatewayV2httpRequestContext,
};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawPathParams};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter};
use base64::Engine;
use chrono::Utc;
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Request, Response};
use uuid::Uuid;

use crate::tokens::TokenKeys;

/// A function as the gateway sees it: takes the request, always answers.
pub type Handler = Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

/// Wraps an async function as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    Arc::new(move |request| Box::pin(f(request)))
}

/// One route of the HTTP API: `METHOD /path/{param}`, whether the JWT authorizer guards it,
/// and the function behind it.
#[derive(Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub authorized: bool,
    pub function: &'static str,
    pub handler: Handler,
}

impl Route {
    /// `METHOD /path`, as API Gateway names the route.
    pub fn route_key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// API Gateway's payload limit: 10 MB.
const MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

/// The HTTP API: every route on axum's router, behind the JWT authorizer where the template puts
/// one; anything else is API Gateway's `404 {"message": "Not Found"}`.
pub fn router(routes: Vec<Route>, keys: TokenKeys) -> axum::Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter> = BTreeMap::new();
    for route in routes {
        let filter = MethodFilter::try_from(route.method.clone()).expect("a method API Gateway routes");
        let path = route.path;
        let keys = keys.clone();
        let call = move |parameters: RawPathParams,
                         ConnectInfo(client): ConnectInfo<SocketAddr>,
                         request: axum::extract::Request| {
            let (route, keys) = (route.clone(), keys.clone());
            async move { call(&route, &keys, &parameters, client, request).await }
        };
        let methods = by_path.remove(path).unwrap_or_default();
        by_path.insert(path, methods.on(filter, call));
    }
    let mut router = axum::Router::new();
    for (path, methods) in by_path {
        // Pages link to their routes with a trailing slash (`/realm/{uuid}/billing/`, as Zulip
        // does); a trailing slash names the same route.
        router = router.route(path, methods.clone()).route(&format!("{path}/"), methods);
    }
    router
        .fallback(|| async { gateway_answer(StatusCode::NOT_FOUND, "Not Found") })
        .method_not_allowed_fallback(|| async { gateway_answer(StatusCode::NOT_FOUND, "Not Found") })
}

/// One call of `route`: the authorizer, then the function, with the request as API Gateway
/// would have sent it.
async fn call(
    route: &Route,
    keys: &TokenKeys,
    parameters: &RawPathParams,
    client: SocketAddr,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_PAYLOAD_BYTES).await else {
        return gateway_answer(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let claims = if route.authorized {
        let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match keys.verify(authorization) {
            Some(claims) => Some(claims),
            None => {
                let mut refusal = gateway_answer(StatusCode::UNAUTHORIZED, "Unauthorized");
                refusal
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return refusal;
            }
        }
    } else {
        None
    };
    let parameters: HashMap<String, String> = parameters
        .iter()
        .map(|(name, value)| (name.to_owned(), percent_decode(value)))
        .collect();
    let event = api_gateway_request(
        route,
        parameters,
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
        claims,
        client,
    );
    let request: Request = LambdaRequest::ApiGatewayV2(event).into();
    into_axum((route.handler)(request).await)
}

fn into_axum(response: Response<Body>) -> axum::response::Response {
    let (parts, body) = response.into_parts();
    let bytes: Vec<u8> = match body {
        Body::Text(text) => text.into_bytes(),
        Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
}

fn gateway_answer(status: StatusCode, message: &str) -> axum::response::Response {
    let body = serde_json::json!({ "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The request API Gateway (HTTP API, payload 2.0) sends to Lambda for this call.
#[allow(clippy::too_many_arguments)]
fn api_gateway_request(
    route: &Route,
    path_parameters: HashMap<String, String>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    claims: Option<HashMap<String, String>>,
    client: SocketAddr,
) -> ApiGatewayV2httpRequest {
    // API Gateway joins repeated headers with commas and passes cookies apart.
    let mut joined = HeaderMap::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if *name == header::COOKIE {
            cookies.extend(value.split(';').map(|c| c.trim().to_owned()));
            continue;
        }
        let value = match joined.get(name).and_then(|v| v.to_str().ok()) {
            Some(existing) => format!("{existing},{value}"),
            None => value,
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            joined.insert(name.clone(), value);
        }
    }
    // So it does repeated query parameters.
    let query = uri.query().unwrap_or("");
    let mut query_parameters: HashMap<String, String> = HashMap::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        query_parameters
            .entry(name.into_owned())
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let (body, encoded) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (None, false),
        Ok(text) => (Some(text.to_owned()), false),
        Err(_) => (Some(base64::engine::general_purpose::STANDARD.encode(body)), true),
    };
    let header_text = |name: header::HeaderName| joined.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let now = Utc::now();
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some(route.route_key());
    context.account_id = Some("000000000000".into());
    context.stage = Some("$default".into());
    context.request_id = Some(Uuid::new_v4().to_string());
    context.apiid = Some("local".into());
    context.domain_name = Some(header_text(header::HOST).unwrap_or_else(|| "127.0.0.1".into()));
    context.domain_prefix = Some("local".into());
    context.time = Some(now.format("%d/%b/%Y:%H:%M:%S %z").to_string());
    context.time_epoch = now.timestamp_millis();
    context.http.method = method.clone();
    context.http.path = Some(uri.path().to_owned());
    context.http.protocol = Some("HTTP/1.1".into());
    context.http.source_ip = Some(client.ip().to_string());
    context.http.user_agent = Some(header_text(header::USER_AGENT).unwrap_or_default());
    context.authorizer = claims.map(|claims| {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = claims;
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        authorizer
    });
    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".into());
    event.route_key = Some(route.route_key());
    event.raw_path = Some(uri.path().to_owned());
    event.raw_query_string = Some(query.to_owned());
    event.cookies = (!cookies.is_empty()).then_some(cookies);
    event.headers = joined;
    event.query_string_parameters = query_parameters.into();
    event.path_parameters = path_parameters;
    event.request_context = context;
    event.body = body;
    event.is_base64_encoded = encoded;
    event
}

/// Decodes a path segment's `%XX` escapes.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}
