//! Secrets read through the Parameters and Secrets extension's local endpoint: a stand-in for
//! the extension on 127.0.0.1 answers as the real one does (`GET /secretsmanager/get?secretId=`,
//! admitting only the session token's holder).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::RawQuery;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use billing::config::{ConfigError, Environment};
use billing_adapters::secrets::with_secrets;

const SESSION_TOKEN: &str = "session-token-of-this-function";

/// The extension's stand-in holding `secrets` (id → value); its port.
async fn extension(secrets: HashMap<&'static str, &'static str>) -> u16 {
    slow_extension(secrets, Duration::ZERO).await
}

/// [`extension`] answering each call after `delay`, as the real one does on a cache miss (a
/// Secrets Manager call of its own).
async fn slow_extension(secrets: HashMap<&'static str, &'static str>, delay: Duration) -> u16 {
    let app = axum::Router::new().route(
        "/secretsmanager/get",
        get(move |RawQuery(query): RawQuery, headers: HeaderMap| async move {
            tokio::time::sleep(delay).await;
            let query: HashMap<String, String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
            if headers
                .get("x-aws-parameters-secrets-token")
                .and_then(|v| v.to_str().ok())
                != Some(SESSION_TOKEN)
            {
                return (StatusCode::UNAUTHORIZED, String::new());
            }
            match query.get("secretId").and_then(|id| secrets.get(id.as_str())) {
                Some(value) => (
                    StatusCode::OK,
                    serde_json::json!({"Name": query["secretId"], "SecretString": value}).to_string(),
                ),
                None => (StatusCode::BAD_REQUEST, "ResourceNotFoundException".to_owned()),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn env(port: u16, pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.insert("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT".into(), port.to_string());
    env.insert("AWS_SESSION_TOKEN".into(), SESSION_TOKEN.into());
    env
}

#[tokio::test]
async fn secrets_named_by_id_are_read_once_and_exposed_under_their_plain_names() {
    // Given an extension holding the Stripe key and the webhook secret
    let port = extension(HashMap::from([
        ("billing/stripe/secret-key", "sk_test_from_secrets_manager"),
        ("billing/stripe/webhook-secret", "whsec_from_secrets_manager"),
    ]))
    .await;
    // When a function configured with their ids (and a plain token key) starts
    let resolved = with_secrets(env(
        port,
        &[
            ("STRIPE_SECRET_KEY_SECRET_ID", "billing/stripe/secret-key"),
            ("STRIPE_WEBHOOK_SECRET_SECRET_ID", "billing/stripe/webhook-secret"),
            ("BILLING_TOKEN_KEY", "a-plain-key"),
            ("BILLING_TABLE", "billing"),
        ],
    ))
    .await
    .unwrap();
    // Then it reads them under their plain names, and everything else as it was
    assert_eq!(
        resolved.var("STRIPE_SECRET_KEY").as_deref(),
        Some("sk_test_from_secrets_manager")
    );
    assert_eq!(
        resolved.var("STRIPE_WEBHOOK_SECRET").as_deref(),
        Some("whsec_from_secrets_manager")
    );
    assert_eq!(resolved.var("BILLING_TOKEN_KEY").as_deref(), Some("a-plain-key"));
    assert_eq!(resolved.var("BILLING_TABLE").as_deref(), Some("billing"));
}

#[tokio::test]
async fn the_secrets_of_a_cold_start_are_fetched_at_once_not_one_after_another() {
    // Given an extension that takes 400 ms per secret (each a miss of its cache)
    let port = slow_extension(
        HashMap::from([("k", "sk_test_k"), ("w", "whsec_w"), ("t", "token-key")]),
        Duration::from_millis(400),
    )
    .await;
    // When a function naming all three starts
    let started = Instant::now();
    let resolved = with_secrets(env(
        port,
        &[
            ("STRIPE_SECRET_KEY_SECRET_ID", "k"),
            ("STRIPE_WEBHOOK_SECRET_SECRET_ID", "w"),
            ("BILLING_TOKEN_KEY_SECRET_ID", "t"),
        ],
    ))
    .await
    .unwrap();
    // Then it waits about one call, not three
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(1000), "{waited:?}");
    assert_eq!(resolved.var("BILLING_TOKEN_KEY").as_deref(), Some("token-key"));
}

#[tokio::test]
async fn a_plain_variable_wins_over_a_secret_id_and_nothing_is_fetched() {
    // No extension listens on this port: a fetch would fail
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let resolved = with_secrets(env(
        unused,
        &[
            ("STRIPE_SECRET_KEY", "sk_test_local"),
            ("STRIPE_SECRET_KEY_SECRET_ID", "billing/stripe/secret-key"),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(resolved.var("STRIPE_SECRET_KEY").as_deref(), Some("sk_test_local"));
}

#[tokio::test]
async fn an_unknown_secret_stops_the_start_naming_the_variable_and_no_value() {
    let port = extension(HashMap::from([("billing/stripe/secret-key", "sk_test_hidden")])).await;
    let refused = with_secrets(env(port, &[("BILLING_TOKEN_KEY_SECRET_ID", "billing/no-such-secret")])).await;
    let Err(ConfigError::Invalid { name, reason }) = refused else {
        panic!("an unknown secret must stop the start");
    };
    assert_eq!(name, "BILLING_TOKEN_KEY_SECRET_ID");
    assert!(reason.contains("400"), "{reason}");
    assert!(!reason.contains("sk_test_hidden"));
}

#[tokio::test]
async fn without_the_session_token_or_an_extension_the_start_fails_clearly() {
    let port = extension(HashMap::from([("id", "value")])).await;
    let mut without_token = env(port, &[("STRIPE_SECRET_KEY_SECRET_ID", "id")]);
    without_token.remove("AWS_SESSION_TOKEN");
    assert!(with_secrets(without_token).await.is_err());
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Err(ConfigError::Invalid { reason, .. }) =
        with_secrets(env(unused, &[("STRIPE_SECRET_KEY_SECRET_ID", "id")])).await
    else {
        panic!("no extension must stop the start");
    };
    assert!(reason.contains("could not be read"), "{reason}");
}

/// An extension that answers 400 "not ready to serve traffic" for its first `starting`, as the
/// real one may while Lambda's INIT phase runs, then holds `secrets`.
async fn starting_extension(secrets: HashMap<&'static str, &'static str>, starting: Duration) -> u16 {
    let ready_at = Instant::now() + starting;
    let app = axum::Router::new().route(
        "/secretsmanager/get",
        get(move |RawQuery(query): RawQuery| async move {
            if Instant::now() < ready_at {
                return (
                    StatusCode::BAD_REQUEST,
                    "not ready to serve traffic, please wait".to_owned(),
                );
            }
            let query: HashMap<String, String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
            match query.get("secretId").and_then(|id| secrets.get(id.as_str())) {
                Some(value) => (StatusCode::OK, serde_json::json!({"SecretString": value}).to_string()),
                None => (StatusCode::BAD_REQUEST, "ResourceNotFoundException".to_owned()),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test]
async fn an_extension_not_ready_for_its_first_half_second_is_asked_again_until_it_is() {
    // Given an extension that answers "not ready" for its first 500 ms
    let port = starting_extension(HashMap::from([("k", "sk_test_k")]), Duration::from_millis(500)).await;
    // When a function's first invocation reads its secret
    let resolved = with_secrets(env(port, &[("STRIPE_SECRET_KEY_SECRET_ID", "k")]))
        .await
        .unwrap();
    // Then it has it
    assert_eq!(resolved.var("STRIPE_SECRET_KEY").as_deref(), Some("sk_test_k"));
}

#[tokio::test]
async fn a_build_that_fails_fails_its_invocation_and_the_next_invocation_builds_again() {
    use billing_adapters::secrets::OnFirstInvocation;
    // Given an extension that is not ready for longer than a function waits (3 s)
    let port = starting_extension(HashMap::from([("k", "sk_test_k")]), Duration::from_secs(3)).await;
    let function: OnFirstInvocation<String> = OnFirstInvocation::default();
    let build = || async {
        let env = with_secrets(env(port, &[("STRIPE_SECRET_KEY_SECRET_ID", "k")])).await?;
        Ok(env.var("STRIPE_SECRET_KEY").unwrap_or_default())
    };
    // When the first invocation builds it, then that invocation fails, saying why
    let Err(ConfigError::Invalid { reason, .. }) = function.get(build).await else {
        panic!("an extension not ready after the wait fails the invocation");
    };
    assert!(reason.contains("400"), "{reason}");
    // When a later invocation comes once the extension is ready, then it builds and keeps it
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(function.get(build).await.unwrap(), "sk_test_k");
    assert_eq!(
        function
            .get(|| async { Err(ConfigError::Missing("never built again".into())) })
            .await
            .unwrap(),
        "sk_test_k"
    );
}
