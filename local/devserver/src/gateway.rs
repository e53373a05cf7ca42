//! A local stand-in for the HTTP API of `template.yaml`: routes, the JWT authorizer, and the
//! API Gateway v2 (payload 2.0) event each function receives.
//!
//! Requests are turned into the same JSON event API Gateway sends to Lambda and read back with
//! lambda_http's own deserialiser, so a handler cannot tell the local server from AWS.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use base64::Engine;
use chrono::Utc;
use lambda_http::{Body, Request, Response};
use serde_json::{Map, Value, json};
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
    pub fn route_key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The path parameters when `path` matches this route's pattern.
    fn matches(&self, method: &Method, path: &str) -> Option<HashMap<String, String>> {
        if *method != self.method {
            return None;
        }
        let pattern: Vec<_> = self.path.trim_matches('/').split('/').collect();
        let actual: Vec<_> = path.trim_matches('/').split('/').collect();
        if pattern.len() != actual.len() {
            return None;
        }
        let mut parameters = HashMap::new();
        for (expected, segment) in pattern.iter().zip(&actual) {
            if let Some(name) = expected.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                if segment.is_empty() {
                    return None;
                }
                parameters.insert(name.to_owned(), percent_decode(segment, false));
            } else if expected != segment {
                return None;
            }
        }
        Some(parameters)
    }
}

/// The routes and the authorizer's keys.
pub struct Gateway {
    routes: Vec<Route>,
    keys: TokenKeys,
}

impl Gateway {
    pub fn new(routes: Vec<Route>, keys: TokenKeys) -> Self {
        Gateway { routes, keys }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Routes, authorizes and invokes, answering as API Gateway would when it refuses.
    pub async fn dispatch(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
        client: SocketAddr,
    ) -> Response<Body> {
        let path = uri.path();
        let Some((route, parameters)) = self
            .routes
            .iter()
            .find_map(|route| route.matches(&method, path).map(|p| (route, p)))
        else {
            return gateway_answer(StatusCode::NOT_FOUND, "Not Found");
        };
        let claims = if route.authorized {
            let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
            match self.keys.verify(authorization) {
                Some(claims) => Some(claims),
                None => {
                    let mut refusal = gateway_answer(StatusCode::UNAUTHORIZED, "Unauthorized");
                    refusal
                        .headers_mut()
                        .insert("www-authenticate", "Bearer".parse().expect("static header"));
                    return refusal;
                }
            }
        } else {
            None
        };
        let event = api_gateway_event(route, &parameters, &method, &uri, &headers, &body, claims, client);
        match lambda_http::request::from_str(&event.to_string()) {
            Ok(request) => (route.handler)(request).await,
            Err(error) => {
                tracing::error!(%error, "could not build the API Gateway event");
                gateway_answer(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }
}

/// API Gateway's own answers (unknown route, authorizer refusal) have this body.
fn gateway_answer(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::Text(json!({ "message": message }).to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("static header"));
    response
}

/// The payload-2.0 event API Gateway would send for this request.
#[allow(clippy::too_many_arguments)]
fn api_gateway_event(
    route: &Route,
    parameters: &HashMap<String, String>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    claims: Option<HashMap<String, String>>,
    client: SocketAddr,
) -> Value {
    // Header names are lowercased and repeated headers joined with commas; cookies travel apart.
    let mut header_map: Map<String, Value> = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(value.split(';').map(|c| Value::from(c.trim())));
            continue;
        }
        match header_map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                header_map.insert(name.as_str().to_owned(), Value::from(value));
            }
        }
    }
    let query = uri.query().unwrap_or("");
    let mut query_parameters: Map<String, Value> = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (percent_decode(name, true), percent_decode(value, true));
        match query_parameters.get_mut(&name) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                query_parameters.insert(name, Value::from(value));
            }
        }
    }
    let (body, encoded) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (Value::Null, false),
        Ok(text) => (Value::from(text), false),
        Err(_) => (
            Value::from(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    };
    let now = Utc::now();
    let mut context = json!({
        "accountId": "000000000000",
        "apiId": "local",
        "domainName": header_map.get("host").cloned().unwrap_or(Value::from("127.0.0.1")),
        "domainPrefix": "local",
        "http": {
            "method": method.as_str(),
            "path": uri.path(),
            "protocol": "HTTP/1.1",
            "sourceIp": client.ip().to_string(),
            "userAgent": header_map.get("user-agent").cloned().unwrap_or(Value::from("")),
        },
        "requestId": Uuid::new_v4().to_string(),
        "routeKey": route.route_key(),
        "stage": "$default",
        "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
        "timeEpoch": now.timestamp_millis(),
    });
    if let Some(claims) = claims {
        context["authorizer"] = json!({ "jwt": { "claims": claims, "scopes": null } });
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": route.route_key(),
        "rawPath": uri.path(),
        "rawQueryString": query,
        "headers": header_map,
        "requestContext": context,
        "isBase64Encoded": encoded,
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::from(cookies);
    }
    if !query_parameters.is_empty() {
        event["queryStringParameters"] = Value::from(query_parameters);
    }
    if !parameters.is_empty() {
        event["pathParameters"] = json!(parameters);
    }
    if !body.is_null() {
        event["body"] = body;
    }
    event
}

/// Decodes `%XX` escapes; in query strings (`plus_is_space`) `+` also stands for a space.
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let text = if plus_is_space {
        text.replace('+', " ")
    } else {
        text.to_owned()
    };
    percent_encoding::percent_decode_str(&text)
        .decode_utf8_lossy()
        .into_owned()
}
