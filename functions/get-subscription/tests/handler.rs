//! GET /subscriptions/{id} in-process, against the embedded store.

use std::sync::Arc;

use billing::store::{AuditEntry, Store};
use billing::subscription::{Subscription, SubscriptionChange};
use billing_http::Cors;
use billing_testing::{ApiEvent, embedded_store};
use chrono::Utc;
use get_subscription::GetSubscription;
use serde_json::Value;
use uuid::Uuid;

async fn stored_subscription(store: &dyn Store, user: Uuid) -> Subscription {
    billing_testing::store_pending_subscription(store, serde_json::json!({"user_id": user, "email": "ada@example.com"}))
        .await
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

/// `GET /subscriptions/{id}/audit` with these query parameters, by `caller`.
fn audit_request(caller: Uuid, scope: &str, target: Uuid, query: &[(&str, &str)]) -> lambda_http::Request {
    ApiEvent::sample("apigw-subscription-audit.json")
        .caller(caller, scope)
        .path_id(&target.to_string())
        .query(query)
        .build()
}

/// A subscription changed by its owner and then by an administrator: versions 1 to 3.
async fn subscription_with_history(store: &dyn Store, user: Uuid) -> Subscription {
    let mut current = stored_subscription(store, user).await;
    for (actor, change) in [
        (format!("user:{user}"), r#"{"plan": "basic_monthly"}"#),
        ("admin:someone".to_owned(), r#"{"licenses": 4}"#),
    ] {
        let next = SubscriptionChange::from_json(change.as_bytes())
            .unwrap()
            .apply(&current, Utc::now())
            .unwrap();
        let audit = AuditEntry::between(Some(&current), &next, actor, "patch");
        store.update_subscription(&next, current.version, &audit).await.unwrap();
        current = next;
    }
    current
}

#[tokio::test]
async fn owner_reads_who_changed_each_field_before_and_after_oldest_first() {
    // Given a subscription created, then changed by its owner and by an administrator
    let store = embedded_store();
    let user = Uuid::new_v4();
    subscription_with_history(store.as_ref(), user).await;
    // When its owner reads the audit trail
    let response = function(store)
        .handle(audit_request(user, "subscriptions", user, &[]))
        .await;
    // Then every version is there, oldest first, with its actor and each field before and after
    assert_eq!(response.status(), 200);
    let answer = body(&response);
    let audit = answer["audit"].as_array().unwrap();
    let versions: Vec<_> = audit.iter().map(|entry| entry["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, vec![1, 2, 3]);
    assert_eq!(audit[0]["action"], "create");
    assert_eq!(audit[1]["actor"], format!("user:{user}"));
    assert_eq!(
        audit[1]["changes"],
        serde_json::json!([{"field": "/plan", "before": "pending", "after": "basic_monthly"}])
    );
    assert_eq!(audit[2]["actor"], "admin:someone");
    assert_eq!(
        audit[2]["changes"],
        serde_json::json!([{"field": "/licenses", "before": null, "after": 4}])
    );
    assert!(audit[2]["at"].is_string());
    assert_eq!(answer["next_cursor"], Value::Null);
}

#[tokio::test]
async fn audit_pages_follow_their_cursor_to_the_end() {
    // Given a subscription at version 3
    let store = embedded_store();
    let user = Uuid::new_v4();
    subscription_with_history(store.as_ref(), user).await;
    let admin = Uuid::new_v4();
    // When an administrator reads it two records at a time
    let first = body(
        &function(store.clone())
            .handle(audit_request(admin, "subscriptions_admin", user, &[("limit", "2")]))
            .await,
    );
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a cursor to the next page")
        .to_owned();
    let second = body(
        &function(store)
            .handle(audit_request(
                admin,
                "subscriptions_admin",
                user,
                &[("limit", "2"), ("cursor", &cursor)],
            ))
            .await,
    );
    // Then the pages hold versions 1-2 and 3, and the last has no cursor
    let versions = |page: &Value| -> Vec<u64> {
        page["audit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(versions(&first), vec![1, 2]);
    assert_eq!(versions(&second), vec![3]);
    assert_eq!(second["next_cursor"], Value::Null);
}

#[tokio::test]
async fn audit_of_someone_elses_subscription_is_forbidden_and_of_none_not_found() {
    let store = embedded_store();
    let (owner, intruder) = (Uuid::new_v4(), Uuid::new_v4());
    subscription_with_history(store.as_ref(), owner).await;
    let refused = function(store.clone())
        .handle(audit_request(intruder, "subscriptions", owner, &[]))
        .await;
    assert_eq!(refused.status(), 403);
    let missing = function(store)
        .handle(audit_request(intruder, "subscriptions", intruder, &[]))
        .await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn audit_with_a_bad_limit_or_an_edited_cursor_is_refused_naming_each() {
    let store = embedded_store();
    let user = Uuid::new_v4();
    subscription_with_history(store.as_ref(), user).await;
    let response = function(store)
        .handle(audit_request(
            user,
            "subscriptions",
            user,
            &[("limit", "0"), ("cursor", "eyJ4Ijox")],
        ))
        .await;
    assert_eq!(response.status(), 400);
    let params: Vec<_> = body(&response)["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["param"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(params, vec!["limit", "cursor"]);
}

/// `GET /subscriptions` with these query parameters, by `caller` with `scope`.
fn list_request(caller: Uuid, scope: &str, query: &[(&str, &str)]) -> lambda_http::Request {
    ApiEvent::sample("apigw-list-subscriptions.json")
        .caller(caller, scope)
        .query(query)
        .build()
}

#[tokio::test]
async fn admin_lists_subscriptions_by_status_a_page_at_a_time() {
    // Given three trialing subscriptions and an active one
    let store = embedded_store();
    let mut trialing = Vec::new();
    for _ in 0..3 {
        trialing.push(stored_subscription(store.as_ref(), Uuid::new_v4()).await.id);
    }
    let trial = stored_subscription(store.as_ref(), Uuid::new_v4()).await;
    let active = SubscriptionChange::from_json(br#"{"status": "active"}"#)
        .unwrap()
        .apply(&trial, Utc::now())
        .unwrap();
    store
        .update_subscription(
            &active,
            1,
            &AuditEntry::between(Some(&trial), &active, "system:test", "patch"),
        )
        .await
        .unwrap();
    let admin = Uuid::new_v4();
    // When an administrator lists the trialing ones two at a time
    let first = body(
        &function(store.clone())
            .handle(list_request(
                admin,
                "subscriptions_admin",
                &[("status", "trialing"), ("limit", "2")],
            ))
            .await,
    );
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let second = body(
        &function(store)
            .handle(list_request(
                admin,
                "subscriptions_admin",
                &[("status", "trialing"), ("limit", "2"), ("cursor", &cursor)],
            ))
            .await,
    );
    // Then the two pages hold the three trialing ones once each, and not the active one
    let ids = |page: &Value| -> Vec<Uuid> {
        page["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let mut listed = [ids(&first), ids(&second)].concat();
    assert_eq!((ids(&first).len(), ids(&second).len()), (2, 1));
    listed.sort();
    trialing.sort();
    assert_eq!(listed, trialing);
    assert!(!listed.contains(&active.id));
    assert_eq!(second["next_cursor"], Value::Null);
    assert_eq!(first["subscriptions"][0]["status"], "trialing");
}

#[tokio::test]
async fn the_list_is_for_administrators_only() {
    let response = function(embedded_store())
        .handle(list_request(Uuid::new_v4(), "subscriptions", &[]))
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(body(&response)["errors"][0]["slug"], "access_denied");
}

#[tokio::test]
async fn list_filters_that_cannot_match_and_a_cursor_of_other_filters_are_refused() {
    let store = embedded_store();
    for _ in 0..2 {
        stored_subscription(store.as_ref(), Uuid::new_v4()).await;
    }
    let admin = Uuid::new_v4();
    let refused = function(store.clone())
        .handle(list_request(
            admin,
            "subscriptions_admin",
            &[("status", "asleep"), ("plan", "gold")],
        ))
        .await;
    assert_eq!(refused.status(), 400);
    let params: Vec<_> = body(&refused)["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["param"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(params, vec!["status", "plan"]);
    // A cursor of the trialing list, sent with another filter
    let first = body(
        &function(store.clone())
            .handle(list_request(
                admin,
                "subscriptions_admin",
                &[("status", "trialing"), ("limit", "1")],
            ))
            .await,
    );
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let mismatched = function(store)
        .handle(list_request(
            admin,
            "subscriptions_admin",
            &[("status", "active"), ("cursor", &cursor)],
        ))
        .await;
    assert_eq!(mismatched.status(), 400);
    assert_eq!(body(&mismatched)["errors"][0]["param"], "cursor");
}

#[tokio::test]
async fn admin_finds_a_subscription_by_its_email_whatever_the_case() {
    let store = embedded_store();
    let user = Uuid::new_v4();
    stored_subscription(store.as_ref(), user).await;
    let found = body(
        &function(store)
            .handle(list_request(
                Uuid::new_v4(),
                "subscriptions_admin",
                &[("email", "ADA@example.com")],
            ))
            .await,
    );
    assert_eq!(found["subscriptions"][0]["id"], user.to_string());
    assert_eq!(found["subscriptions"].as_array().unwrap().len(), 1);
}
