//! `Idempotency-Key` on `POST` and `PATCH` (API.md): the JSON pipeline of [`crate::serve`],
//! with the first answer to a (caller, key) kept and sent again to a repeat of the same request
//! (`Idempotent-Replayed: true`). The rules are `billing::idempotency`'s; this module only
//! reads the request and writes the answer.
//!
//! The caller is the bearer token's subject: keys of different callers never meet. A request
//! without a key, or of another method, is served as it is.

use std::future::Future;
use std::sync::Arc;

use billing::clock::SharedClock;
use billing::idempotency::{self, Begin, KeptAnswer};
use billing::store::DocumentStore;
use lambda_http::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

use tracing::Instrument;

use crate::{ApiError, ApiRequest, ApiResponse, Cors, decorate, request_id_of, request_span};

/// The header a replayed answer carries.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Where kept answers live, and the time.
#[derive(Clone)]
pub struct Idempotency {
    /// Kept answers, as documents with an expiry.
    pub documents: Arc<dyn DocumentStore>,
    /// What time it is.
    pub clock: SharedClock,
}

/// [`crate::serve`], honouring `Idempotency-Key` on `POST` and `PATCH`.
pub async fn serve_idempotent<F, Fut>(
    request: Request,
    cors: &Cors,
    idempotency: &Idempotency,
    handler: F,
) -> Response<Body>
where
    F: FnOnce(ApiRequest) -> Fut,
    Fut: Future<Output = Result<ApiResponse, ApiError>>,
{
    serve_idempotent_with_limit(request, cors, idempotency, crate::MAX_BODY_BYTES, handler).await
}

/// [`serve_idempotent`] with another body limit (a server's usage upload of up to 10,000 rows).
pub async fn serve_idempotent_with_limit<F, Fut>(
    request: Request,
    cors: &Cors,
    idempotency: &Idempotency,
    max_body: usize,
    handler: F,
) -> Response<Body>
where
    F: FnOnce(ApiRequest) -> Fut,
    Fut: Future<Output = Result<ApiResponse, ApiError>>,
{
    let keyed = matches!(*request.method(), Method::POST | Method::PATCH);
    let Some(key) = request.headers().get(idempotency::HEADER).filter(|_| keyed).cloned() else {
        return crate::serve_with_limit(request, cors, max_body, handler).await;
    };
    let key = match key.to_str().map_err(|_| ()).and_then(|key| {
        idempotency::check_key(key).map_err(|_| ())?;
        Ok(key.to_owned())
    }) {
        Ok(key) => key,
        Err(()) => {
            let error = idempotency::check_key("").unwrap_err();
            return crate::serve_with_limit(request, cors, max_body, |_| async move { Err(ApiError::one(error)) })
                .await;
        }
    };
    // Without a caller there is nothing to key by: the pipeline refuses the request (401).
    let Some(caller) = subject_of(&request) else {
        return crate::serve_with_limit(request, cors, max_body, handler).await;
    };
    let fingerprint = idempotency::fingerprint(request.method().as_str(), request.uri().path(), request.body());
    let now = idempotency.clock.now();
    let span = request_span(&request, &request_id_of(&request));
    let begun = idempotency::begin(idempotency.documents.as_ref(), &caller, &key, &fingerprint, now)
        .instrument(span.clone())
        .await;
    match begun {
        Ok(Begin::Run(version)) => {
            let response = crate::serve_with_limit(request, cors, max_body, handler).await;
            let answer = answer_of(&response);
            let kept = idempotency::finish(
                idempotency.documents.as_ref(),
                &caller,
                &key,
                &fingerprint,
                version,
                &answer,
                idempotency.clock.now(),
            )
            .instrument(span.clone())
            .await;
            if let Err(error) = kept {
                // The answer stands; a repeat finds the claim and waits until it is abandoned.
                span.in_scope(|| {
                    tracing::warn!(error = %billing::errors::chain(&error), "the answer could not be kept for its idempotency key");
                });
            }
            response
        }
        Ok(Begin::Replay(kept)) => span.in_scope(|| replay(&request, cors, &kept)),
        Ok(Begin::Refuse(error)) => {
            crate::serve_with_limit(request, cors, max_body, |_| async move { Err(ApiError::one(error)) }).await
        }
        Err(error) => {
            crate::serve_with_limit(request, cors, max_body, |_| async move { Err(ApiError::from(error)) }).await
        }
    }
}

/// The bearer token's subject, as the authorizer passed it.
fn subject_of(request: &Request) -> Option<String> {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .and_then(|jwt| jwt.claims.get("sub").cloned()),
        _ => None,
    }
}

/// What is kept of an answer: its status, body and the headers a client reads.
fn answer_of(response: &Response<Body>) -> KeptAnswer {
    let body = match response.body() {
        Body::Text(text) => text.clone(),
        Body::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    };
    let headers = [header::ETAG, header::LOCATION, header::CONTENT_TYPE]
        .iter()
        .filter_map(|name| {
            let value = response.headers().get(name)?.to_str().ok()?;
            Some((name.as_str().to_owned(), value.to_owned()))
        })
        .collect();
    KeptAnswer {
        status: response.status().as_u16(),
        body,
        headers,
    }
}

fn replay(request: &Request, cors: &Cors, kept: &KeptAnswer) -> Response<Body> {
    let mut response = Response::new(Body::Text(kept.body.clone()));
    *response.status_mut() = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    for (name, value) in &kept.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    decorate(&mut response, &request_id_of(request), cors, origin);
    tracing::info!(status = kept.status, "answered again for an idempotency key");
    response
}
