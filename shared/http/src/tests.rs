//! Tests of the shared HTTP pipeline, driven by the API Gateway samples in `events/`.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::*;
use billing::subscription::{PlanCatalog, SubscriptionChange};

const USER: &str = "0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b";

fn event(name: &str) -> Request {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&text).unwrap()
}

fn cors() -> Cors {
    Cors::parse("https://app.example.com, https://admin.example.com/")
}

fn subscription() -> Subscription {
    let catalog = PlanCatalog::standard(|id| Ok::<_, ()>(format!("price_{id}"))).unwrap();
    let create =
        SubscriptionChange::from_json(format!(r#"{{"user_id": "{USER}", "email": "ada@example.com"}}"#).as_bytes())
            .unwrap();
    create
        .new_subscription(catalog.get("pending").unwrap(), chrono::Utc::now(), chrono::Utc::now())
        .unwrap()
}

fn json_body(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body()).unwrap()
}

async fn answer_ok(request: Request) -> Response<Body> {
    serve(request, &cors(), |_| async { Ok(ApiResponse::ok(subscription())) }).await
}

#[tokio::test]
async fn success_is_wrapped_in_the_subscriptions_envelope_with_etag() {
    let response = answer_ok(event("apigw-get-subscription.json")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(response.headers()[header::ETAG], "\"1\"");
    let body = json_body(&response);
    assert_eq!(body["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(body["subscriptions"][0]["id"], USER);
}

#[tokio::test]
async fn response_carries_the_api_gateway_request_id() {
    let response = answer_ok(event("apigw-get-subscription.json")).await;
    assert_eq!(response.headers()[REQUEST_ID_HEADER], "Jx1bGhXdoAMEVxQ=");
}

#[tokio::test]
async fn response_without_api_gateway_context_gets_a_fresh_request_id() {
    let request = lambda_http::http::Request::builder()
        .uri("/subscriptions")
        .body(Body::Empty)
        .unwrap();
    let response = answer_ok(request).await;
    let id = response.headers()[REQUEST_ID_HEADER].to_str().unwrap();
    assert!(billing::ids::parse_canonical_uuid(id).is_some(), "{id}");
}

#[tokio::test]
async fn errors_are_wrapped_in_the_errors_envelope_all_at_once() {
    let response = serve(event("apigw-get-subscription.json"), &cors(), |_| async {
        Err(ApiError::from(ValidationErrors(vec![
            FieldError::field(Slug::InvalidValue, "/plan", "unknown plan"),
            FieldError::field(Slug::InvalidValue, "/email", "not an email address"),
        ])))
    })
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_body(&response),
        json!({"errors": [
            {"slug": "invalid_value", "field": "/plan", "message": "unknown plan"},
            {"slug": "invalid_value", "field": "/email", "message": "not an email address"}
        ]})
    );
}

#[test]
fn every_slug_has_the_status_of_the_contract() {
    let table = [
        (Slug::InvalidFormat, 400),
        (Slug::Missing, 400),
        (Slug::InvalidValue, 400),
        (Slug::Unauthorized, 401),
        (Slug::AccessDenied, 403),
        (Slug::NotFound, 404),
        (Slug::NotAcceptable, 406),
        (Slug::Conflict, 409),
        (Slug::PreconditionFailed, 412),
        (Slug::TooLarge, 413),
        (Slug::UnsupportedMediaType, 415),
        (Slug::UpstreamUnavailable, 502),
        (Slug::ActOfGod, 500),
    ];
    for (slug, status) in table {
        assert_eq!(status_of(slug).as_u16(), status, "{}", slug.as_str());
        assert_eq!(serde_json::to_value(slug).unwrap(), slug.as_str());
    }
}

#[test]
fn access_denied_outranks_invalid_value_in_a_mixed_answer() {
    let error = ApiError::from_errors(vec![
        FieldError::field(Slug::InvalidValue, "/email", "not an email address"),
        FieldError::field(Slug::AccessDenied, "/status", "admin only"),
    ]);
    assert_eq!(error.status, StatusCode::FORBIDDEN);
}

#[test]
fn store_errors_map_to_their_slugs_without_leaking_details() {
    let unavailable = ApiError::from(StoreError::Unavailable(
        "dynamodb: connection refused at 10.0.0.1".into(),
    ));
    assert_eq!(unavailable.status, StatusCode::BAD_GATEWAY);
    assert!(!unavailable.errors[0].message.contains("10.0.0.1"));
    let conflict = ApiError::from(StoreError::AlreadyExists);
    assert_eq!(
        (conflict.status, conflict.errors[0].field.as_deref()),
        (StatusCode::CONFLICT, Some("/user_id"))
    );
    assert_eq!(ApiError::from(StoreError::NotFound).status, StatusCode::NOT_FOUND);
    assert_eq!(
        ApiError::from(StoreError::VersionConflict).status,
        StatusCode::PRECONDITION_FAILED
    );
    let corrupt = ApiError::from(StoreError::Corrupt("secret internals".into()));
    assert_eq!(corrupt.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!corrupt.errors[0].message.contains("secret"));
}

#[tokio::test]
async fn preflight_answers_204_with_the_allowed_methods_and_headers() {
    let response = answer_ok(event("apigw-options-preflight.json")).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let headers = response.headers();
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_HEADERS],
        "authorization, content-type, if-match, idempotency-key"
    );
    assert!(
        headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("PATCH")
    );
}

#[tokio::test]
async fn disallowed_origin_gets_no_allow_origin_header() {
    let mut request = event("apigw-get-subscription.json");
    request
        .headers_mut()
        .insert(header::ORIGIN, HeaderValue::from_static("https://evil.example.net"));
    let response = answer_ok(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn wildcard_origin_allows_any_origin() {
    let response = serve(event("apigw-get-subscription.json"), &Cors::parse("*"), |_| async {
        Ok(ApiResponse::ok(subscription()))
    })
    .await;
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}

#[tokio::test]
async fn origin_listed_with_a_trailing_slash_still_matches() {
    let mut request = event("apigw-get-subscription.json");
    request
        .headers_mut()
        .insert(header::ORIGIN, HeaderValue::from_static("https://admin.example.com"));
    let response = answer_ok(request).await;
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://admin.example.com"
    );
}

#[tokio::test]
async fn accept_excluding_json_is_not_acceptable_and_the_handler_never_runs() {
    for accept in ["text/html", "application/xml, text/*", "application/json;q=0"] {
        let mut request = event("apigw-get-subscription.json");
        request
            .headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static(accept));
        let response = serve(request, &cors(), |_| async {
            panic!("handler ran for Accept: {accept}")
        })
        .await;
        assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE, "{accept}");
        assert_eq!(json_body(&response)["errors"][0]["slug"], "not_acceptable");
    }
}

#[tokio::test]
async fn accept_admitting_json_is_served() {
    for accept in [
        "*/*",
        "application/*",
        "text/html, application/json;q=0.5",
        "APPLICATION/JSON",
    ] {
        let mut request = event("apigw-get-subscription.json");
        request
            .headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static(accept));
        assert_eq!(answer_ok(request).await.status(), StatusCode::OK, "{accept}");
    }
}

#[tokio::test]
async fn body_with_another_content_type_is_unsupported_media_type() {
    let mut request = event("apigw-patch-subscription.json");
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let response = serve(request, &cors(), |_| async { panic!("handler ran") }).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(json_body(&response)["errors"][0]["slug"], "unsupported_media_type");
}

#[tokio::test]
async fn json_content_type_with_charset_is_accepted() {
    let mut request = event("apigw-patch-subscription.json");
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("Application/JSON; charset=utf-8"),
    );
    assert_eq!(answer_ok(request).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn body_over_64_kib_is_too_large() {
    let mut request = event("apigw-patch-subscription.json");
    *request.body_mut() = Body::Text(format!(r#"{{"email": "{}"}}"#, "a".repeat(MAX_BODY_BYTES)));
    let response = serve(request, &cors(), |_| async { panic!("handler ran") }).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_body(&response)["errors"][0]["slug"], "too_large");
}

#[tokio::test]
async fn body_of_exactly_64_kib_is_let_through() {
    let mut request = event("apigw-patch-subscription.json");
    *request.body_mut() = Body::Text("x".repeat(MAX_BODY_BYTES));
    assert_eq!(answer_ok(request).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn handler_reads_principal_path_id_if_match_and_body() {
    let response = serve(event("apigw-patch-subscription.json"), &cors(), |request| async move {
        let principal = request.principal()?;
        assert_eq!(principal.user_id.to_string(), USER);
        assert!(principal.has(billing::auth::Scope::SUBSCRIPTION));
        assert_eq!(request.path_uuid("id")?.to_string(), USER);
        assert_eq!(request.if_match()?, Some(1));
        let change = SubscriptionChange::from_json(request.body())?;
        assert_eq!(change.plan.as_deref(), Some("basic_monthly"));
        Ok(ApiResponse::ok(subscription()))
    })
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn request_without_authorizer_claims_is_unauthorized() {
    // The preflight sample carries no authorizer; sent as a GET it reaches the handler.
    let mut request = event("apigw-options-preflight.json");
    *request.method_mut() = lambda_http::http::Method::GET;
    let response = serve(request, &cors(), |request| async move {
        request.principal()?;
        Ok(ApiResponse::ok(subscription()))
    })
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(&response)["errors"][0]["slug"], "unauthorized");
}

#[tokio::test]
async fn malformed_path_id_is_invalid_format_naming_the_param() {
    let mut request = event("apigw-get-subscription.json");
    request = lambda_http::RequestExt::with_path_parameters(
        request,
        std::collections::HashMap::from([("id".to_string(), "not-a-uuid".to_string())]),
    );
    let response = serve(request, &cors(), |request| async move {
        request.path_uuid("id")?;
        Ok(ApiResponse::ok(subscription()))
    })
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_body(&response)["errors"][0],
        json!({"slug": "invalid_format", "param": "id", "message": "id must be a lowercase hyphenated UUID"})
    );
}

#[tokio::test]
async fn malformed_if_match_is_invalid_format() {
    let mut request = event("apigw-patch-subscription.json");
    request
        .headers_mut()
        .insert(header::IF_MATCH, HeaderValue::from_static("\"three\""));
    let response = serve(request, &cors(), |request| async move {
        request.if_match()?;
        Ok(ApiResponse::ok(subscription()))
    })
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(&response)["errors"][0]["param"], "If-Match");
}

#[tokio::test]
async fn if_match_star_matches_any_existing_version() {
    let mut request = event("apigw-patch-subscription.json");
    request
        .headers_mut()
        .insert(header::IF_MATCH, HeaderValue::from_static("*"));
    let response = serve(request, &cors(), |request| async move {
        assert_eq!(request.if_match()?, None, "no precondition beyond existing");
        Ok(ApiResponse::ok(subscription()))
    })
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_allowed_origin_may_read_the_headers_the_api_sends() {
    let mut request = event("apigw-get-subscription.json");
    request
        .headers_mut()
        .insert(header::ORIGIN, HeaderValue::from_static("https://app.example.com"));
    let response = answer_ok(request).await;
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS],
        "etag, x-request-id, location, retry-after, idempotent-replayed"
    );
}

#[tokio::test]
async fn a_created_subscription_answers_201_with_its_location() {
    let response = serve(event("apigw-create-subscription.json"), &cors(), |_| async {
        Ok(ApiResponse::created(subscription()))
    })
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[header::LOCATION], format!("/subscriptions/{USER}"));
}

#[tokio::test]
async fn an_upstream_failure_says_when_to_retry() {
    let response = serve(event("apigw-get-subscription.json"), &cors(), |_| async {
        Err(ApiError::from(BillingError::Unavailable("Stripe is down".into())))
    })
    .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()[header::RETRY_AFTER], "5");
}
