//! GET /subscriptions/{id} in-process, against the embedded store.

use std::sync::Arc;

use billing::store::{AuditEntry, Store};
use billing::subscription::{Subscription, SubscriptionChange};
use billing_http::Cors;
use billing_testing::{ApiEvent, catalog, embedded_store};
use chrono::Utc;
use get_subscription::GetSubscription;
use serde_json::Value;
use uuid::Uuid;

async fn stored_subscription(store: &dyn Store, user: Uuid) -> Subscription {
    let change =
        SubscriptionChange::from_json(format!(r#"{{"user_id": "{user}", "email": "ada@example.com"}}"#).as_bytes())
            .unwrap();
    let subscription = change
        .new_subscription(catalog().get("pending").unwrap(), Utc::now(), Utc::now())
        .unwrap();
    store
        .create_subscription(
            &subscription,
            &AuditEntry::of(&subscription, "system:test", "create", Value::Null),
        )
        .await
        .unwrap();
    subscription
}

fn function(store: Arc<dyn Store>) -> GetSubscription {
    GetSubscription {
        store,
        cors: Cors::parse("https://app.example.com"),
    }
    .declared()
}

fn body(response: &lambda_http::Response<lambda_http::Body>) -> Value {
    serde_json::from_slice(response.body()).unwrap()
}

#[tokio::test]
async fn owner_reads_own_subscription_with_its_etag() {
    let store = embedded_store();
    let user = Uuid::new_v4();
    let stored = stored_subscription(store.as_ref(), user).await;
    let request = ApiEvent::sample("apigw-get-subscription.json")
        .caller(user, "subscriptions")
        .path_id(&user.to_string())
        .build();
    let response = function(store).handle(request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert_eq!(
        body(&response)["subscriptions"][0],
        serde_json::to_value(&stored).unwrap()
    );
}

#[tokio::test]
async fn admin_reads_anyones_subscription() {
    let store = embedded_store();
    let user = Uuid::new_v4();
    stored_subscription(store.as_ref(), user).await;
    let request = ApiEvent::sample("apigw-get-subscription.json")
        .caller(Uuid::new_v4(), "subscriptions_admin")
        .path_id(&user.to_string())
        .build();
    assert_eq!(function(store).handle(request).await.status(), 200);
}

#[tokio::test]
async fn someone_elses_subscription_is_forbidden_whether_or_not_it_exists() {
    let store = embedded_store();
    let (owner, intruder) = (Uuid::new_v4(), Uuid::new_v4());
    stored_subscription(store.as_ref(), owner).await;
    for target in [owner, Uuid::new_v4()] {
        let request = ApiEvent::sample("apigw-get-subscription.json")
            .caller(intruder, "subscriptions")
            .path_id(&target.to_string())
            .build();
        let response = function(store.clone()).handle(request).await;
        assert_eq!(response.status(), 403);
        assert_eq!(body(&response)["errors"][0]["slug"], "access_denied");
    }
}

#[tokio::test]
async fn missing_subscription_is_not_found_for_its_owner() {
    let user = Uuid::new_v4();
    let request = ApiEvent::sample("apigw-get-subscription.json")
        .caller(user, "subscriptions")
        .path_id(&user.to_string())
        .build();
    let response = function(embedded_store()).handle(request).await;
    assert_eq!(response.status(), 404);
    assert_eq!(body(&response)["errors"][0]["slug"], "not_found");
}

#[tokio::test]
async fn malformed_id_is_invalid_format_naming_the_param() {
    let request = ApiEvent::sample("apigw-get-subscription.json")
        .caller(Uuid::new_v4(), "subscriptions_admin")
        .path_id("42")
        .build();
    let response = function(embedded_store()).handle(request).await;
    assert_eq!(response.status(), 400);
    assert_eq!(body(&response)["errors"][0]["param"], "id");
}

#[tokio::test]
async fn token_without_a_scope_of_this_service_is_forbidden() {
    let user = Uuid::new_v4();
    let request = ApiEvent::sample("apigw-get-subscription.json")
        .caller(user, "openid profile")
        .path_id(&user.to_string())
        .build();
    assert_eq!(function(embedded_store()).handle(request).await.status(), 403);
}

#[tokio::test]
async fn request_without_claims_is_unauthorized() {
    let request = ApiEvent::sample("apigw-get-subscription.json").anonymous().build();
    let response = function(embedded_store()).handle(request).await;
    assert_eq!(response.status(), 401);
    assert_eq!(body(&response)["errors"][0]["slug"], "unauthorized");
}
