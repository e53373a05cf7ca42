//! The remote-billing server API in-process, against the embedded store and a file outbox.

use base64::Engine;
use billing::remote::NextPage;
use billing_testing::{ApiEvent, RemoteFixture, TestClock};
use lambda_http::http::StatusCode;
use remote_billing_server::*;
use serde_json::{Value, json};
use uuid::Uuid;

const KEY: &str = "kq3v9X2mR7tLw8ZpN4bY6cH1dF5gJ0sA";

struct Fixture {
    remote: RemoteFixture,
    clock: TestClock,
    api: RemoteServerApi,
}

fn fixture() -> Fixture {
    let remote = RemoteFixture::new(5, 20);
    let clock = TestClock::default();
    let api = RemoteServerApi {
        remote: remote.remote.clone(),
        cors: Default::default(),
        clock: clock.clock(),
    }
    .declared();
    Fixture { remote, clock, api }
}

fn basic(server: Uuid, key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{server}:{key}"))
    )
}

fn billing_body(realm: Uuid, next_page: Option<&str>) -> Value {
    json!({
        "user": {"uuid": Uuid::new_v4(), "email": "owner@example.org", "full_name": "Ada Owner"},
        "realm": {"uuid": realm, "host": "chat.example.org", "name": "Example Org"},
        "uri_scheme": "https://",
        "next_page": next_page,
    })
}

impl Fixture {
    async fn call(&self, event: ApiEvent) -> (StatusCode, Value) {
        let response = self.api.handle(event.build()).await;
        let status = response.status();
        (status, serde_json::from_slice(response.body()).unwrap())
    }

    async fn register(&self, server: Uuid, key: &str, contact: &str) -> (StatusCode, Value) {
        let body =
            json!({"server_uuid": server, "server_key": key, "hostname": "chat.example.org", "contact_email": contact});
        self.call(ApiEvent::sample("apigw-remote-server-register.json").body(&body))
            .await
    }

    async fn billing_link(&self, server: Uuid, key: &str, body: &Value) -> (StatusCode, Value) {
        self.call(
            ApiEvent::sample("apigw-remote-server-billing.json")
                .header("authorization", &basic(server, key))
                .body(body),
        )
        .await
    }

    async fn registered(&self) -> Uuid {
        let server = Uuid::new_v4();
        assert_eq!(
            self.register(server, KEY, "admin@example.org").await.0,
            StatusCode::CREATED
        );
        server
    }

    /// Marks `server` deactivated, as its contact's confirmed form does.
    async fn deactivate(&self, server: Uuid) {
        let records = &self.remote.remote.records;
        let key = billing::remote::records::server_key(server);
        let (mut record, version) = records
            .get::<billing::remote::RemoteServer>(&key, self.clock.now())
            .await
            .unwrap()
            .unwrap();
        record.deactivated_at = Some(self.clock.now());
        records
            .replace(&key, &record, version, None, self.clock.now())
            .await
            .unwrap();
    }

    async fn deactivation_link(&self, server: Uuid, scope: &str) -> (StatusCode, Value) {
        let path = format!("/remote-servers/{server}/deactivation-link");
        self.call(
            ApiEvent::sample("apigw-remote-server-register.json")
                .route(DEACTIVATION_LINK_ROUTE, &path, &[("server_uuid", &server.to_string())])
                .caller(Uuid::new_v4(), scope),
        )
        .await
    }
}

fn slugs(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| errors.iter().map(|e| e["slug"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_server_registers_and_with_the_same_key_updates_its_contact() {
    let f = fixture();
    let server = Uuid::new_v4();
    let (status, body) = f.register(server, KEY, "admin@example.org").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["created"], true);
    let (status, body) = f.register(server, KEY, "new-admin@example.org").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["created"], false);
    let sent_to = f
        .remote
        .remote
        .send_deactivation_link(server, f.clock.now())
        .await
        .unwrap();
    assert_eq!(sent_to, "new-admin@example.org");
}

#[tokio::test]
async fn registering_a_known_server_with_another_key_is_forbidden_and_changes_nothing() {
    let f = fixture();
    let server = f.registered().await;
    let (status, body) = f
        .register(server, "another-key-of-thirty-two-characters", "evil@example.org")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = f.billing_link(server, KEY, &billing_body(Uuid::new_v4(), None)).await;
    assert_eq!(status, StatusCode::OK, "the original key still works");
}

#[tokio::test]
async fn registration_reports_every_invalid_field() {
    let f = fixture();
    let body = json!({"server_uuid": "not-a-uuid", "server_key": "short", "hostname": "", "contact_email": "nobody"});
    let (status, body) = f
        .call(ApiEvent::sample("apigw-remote-server-register.json").body(&body))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["/server_uuid", "/server_key", "/hostname", "/contact_email"]);
}

#[tokio::test]
async fn the_sample_events_register_and_get_a_link() {
    let f = fixture();
    let (status, body) = f.call(ApiEvent::sample("apigw-remote-server-register.json")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = f.call(ApiEvent::sample("apigw-remote-server-billing.json")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_billing_link_carries_a_sealed_two_hour_token_under_the_public_base_url() {
    // Given a registered server
    let f = fixture();
    let server = f.registered().await;
    let realm = Uuid::new_v4();

    // When it asks for a link to the plans page
    let (status, body) = f.billing_link(server, KEY, &billing_body(realm, Some("plans"))).await;

    // Then the link's token opens to the claims, and hides them
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["billing_access_url"].as_str().unwrap();
    let token = url
        .strip_prefix("https://billing.example.com/remote-billing-login/")
        .unwrap();
    assert!(!token.contains("owner") && !url.contains("Ada"));
    let claims = f.remote.remote.sealer.open(token, f.clock.now()).unwrap();
    assert_eq!(claims.server_uuid, server);
    assert_eq!(claims.realm_uuid, Some(realm));
    assert_eq!(claims.user_email, "owner@example.org");
    assert_eq!(claims.next_page, Some(NextPage::Plans));
}

#[tokio::test]
async fn without_a_public_base_url_a_billing_link_is_under_the_address_the_request_came_to() {
    // Given a deployment with no PUBLIC_BASE_URL (no custom domain, nothing set)
    let mut remote = RemoteFixture::new(5, 20);
    remote.remote.settings.public_base_url = String::new();
    let clock = TestClock::default();
    let api = RemoteServerApi {
        remote: remote.remote.clone(),
        cors: Default::default(),
        clock: clock.clock(),
    }
    .declared();
    let f = Fixture { remote, clock, api };
    let server = f.registered().await;
    // When a server asks for a billing link through the API's own address
    let (status, body) = f
        .call(
            ApiEvent::sample("apigw-remote-server-billing.json")
                .header("authorization", &basic(server, KEY))
                .body(&billing_body(Uuid::new_v4(), None))
                .domain_name("a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"),
        )
        .await;
    // Then the link is under that address
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["billing_access_url"].as_str().unwrap();
    assert!(
        url.starts_with("https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/remote-billing-login/"),
        "{url}"
    );
}

#[tokio::test]
async fn a_realm_registered_to_another_server_is_refused() {
    // Given a realm registered by one server
    let f = fixture();
    let first = f.registered().await;
    let second = f.registered().await;
    let realm = Uuid::new_v4();
    assert_eq!(
        f.billing_link(first, KEY, &billing_body(realm, None)).await.0,
        StatusCode::OK
    );

    // When another server asks for a link to it
    let (status, body) = f.billing_link(second, KEY, &billing_body(realm, None)).await;

    // Then it is refused; the first server still gets links
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(slugs(&body), ["remote_realm_server_mismatch"]);
    assert_eq!(
        f.billing_link(first, KEY, &billing_body(realm, None)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_next_page_outside_the_allowlist_is_refused() {
    let f = fixture();
    let server = f.registered().await;
    for page in ["https://evil.example.com/", "../admin", "Billing", ""] {
        let (status, body) = f
            .billing_link(server, KEY, &billing_body(Uuid::new_v4(), Some(page)))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{page}: {body}");
        assert_eq!(body["errors"][0]["field"], "/next_page");
    }
}

#[tokio::test]
async fn wrong_or_missing_server_credentials_are_unauthorized() {
    let f = fixture();
    let server = f.registered().await;
    let body = billing_body(Uuid::new_v4(), None);
    let (wrong_key, _) = f
        .billing_link(server, "wrong-key-wrong-key-wrong-key-wrong", &body)
        .await;
    let (unknown, _) = f.billing_link(Uuid::new_v4(), KEY, &body).await;
    let (missing, _) = f
        .call(
            ApiEvent::sample("apigw-remote-server-billing.json")
                .header("authorization", "")
                .body(&body),
        )
        .await;
    assert_eq!([wrong_key, unknown, missing], [StatusCode::UNAUTHORIZED; 3]);
}

#[tokio::test]
async fn a_deactivated_server_is_refused_with_server_deactivated() {
    // Given a deactivated server
    let f = fixture();
    let server = f.registered().await;
    f.deactivate(server).await;

    // When it asks for a link, or registers again
    let (status, body) = f.billing_link(server, KEY, &billing_body(Uuid::new_v4(), None)).await;
    let (again, _) = f.register(server, KEY, "admin@example.org").await;

    // Then it is refused
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(slugs(&body), ["server_deactivated"]);
    assert_eq!(again, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn only_administrators_send_deactivation_links() {
    let f = fixture();
    let server = f.registered().await;
    let (refused, _) = f.deactivation_link(server, "subscriptions").await;
    assert_eq!(refused, StatusCode::FORBIDDEN);
    assert!(f.remote.outbox.mails().is_empty());
    let (status, body) = f.deactivation_link(server, "subscriptions subscriptions_admin").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["sent_to"], "admin@example.org");
    let mails = f.remote.outbox.mails();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]
            .text
            .contains("https://billing.example.com/remote-billing-login/")
    );
    let (unknown, _) = f
        .deactivation_link(Uuid::new_v4(), "subscriptions subscriptions_admin")
        .await;
    assert_eq!(unknown, StatusCode::NOT_FOUND);
}

fn register_body(server: Uuid, hostname: &str) -> Value {
    json!({"server_uuid": server, "server_key": KEY, "hostname": hostname, "contact_email": "admin@example.org"})
}

#[tokio::test]
async fn host_names_and_schemes_that_could_point_elsewhere_are_refused_and_nothing_is_stored() {
    // Given a server that registers with a host name that is a URL fragment
    let f = fixture();
    let server = Uuid::new_v4();
    let event = ApiEvent::sample("apigw-remote-server-register.json").body(&register_body(server, "evil.example/x?"));
    let (status, body) = f.call(event).await;
    // Then it is refused on that field, and nothing was stored under its id
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["field"], "/hostname");
    assert_eq!(slugs(&body), ["invalid_value"]);
    assert_eq!(
        f.register(server, KEY, "admin@example.org").await.0,
        StatusCode::CREATED
    );

    // When it asks for a link for a realm whose host is a sentence and whose scheme is a script
    let mut body = billing_body(Uuid::new_v4(), None);
    body["realm"]["host"] = json!("ACME: your card was declined, pay at https://evil.example");
    body["uri_scheme"] = json!("javascript:");
    let (status, answer) = f.billing_link(server, KEY, &body).await;
    // Then both fields are refused at once and no realm is registered
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let fields: Vec<&str> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["/realm/host", "/uri_scheme"]);
    let realm = body["realm"]["uuid"].as_str().unwrap().parse().unwrap();
    let stored = f.remote.remote.records.realm(realm, f.clock.now()).await.unwrap();
    assert!(stored.is_none());
}

#[tokio::test]
async fn registrations_past_the_hourly_limit_of_an_address_are_too_many_requests() {
    // Given ten registrations from one address within an hour
    let f = fixture();
    let from = |ip: &str| {
        ApiEvent::sample("apigw-remote-server-register.json")
            .body(&register_body(Uuid::new_v4(), "chat.example.org"))
            .source_ip(ip)
    };
    for _ in 0..10 {
        assert_eq!(f.call(from("203.0.113.7")).await.0, StatusCode::CREATED);
    }
    // When the same address registers an eleventh server
    let refused = f.api.handle(from("203.0.113.7").build()).await;
    // Then it is refused with a Retry-After up to the end of the hour, and others still register
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let body: Value = serde_json::from_slice(refused.body()).unwrap();
    assert_eq!(slugs(&body), ["too_many_requests"]);
    assert_eq!(f.call(from("203.0.113.8")).await.0, StatusCode::CREATED);
    // and an hour later the address may register again
    f.clock.advance(chrono::Duration::hours(1));
    assert_eq!(f.call(from("203.0.113.7")).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_registration_answers_201_with_the_location_of_the_server() {
    let f = fixture();
    let server = Uuid::new_v4();
    let response = f
        .api
        .handle(
            ApiEvent::sample("apigw-remote-server-register.json")
                .body(&register_body(server, "chat.example.org"))
                .build(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], format!("/remote-servers/{server}"));
}

#[tokio::test]
async fn refused_server_credentials_ask_for_basic_authentication() {
    let f = fixture();
    let server = f.registered().await;
    let response = f
        .api
        .handle(
            ApiEvent::sample("apigw-remote-server-billing.json")
                .header("authorization", &basic(server, "not-the-key-not-the-key-not-the-key"))
                .body(&billing_body(Uuid::new_v4(), None))
                .build(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Basic realm=\"billing\"");
}

#[tokio::test]
async fn a_deactivation_link_for_a_deactivated_server_is_a_conflict() {
    // Given a server deactivated by its contact
    let f = fixture();
    let server = f.registered().await;
    f.deactivate(server).await;
    // When an administrator asks for its deactivation link
    let (status, body) = f.deactivation_link(server, "subscriptions subscriptions_admin").await;
    // Then there is nothing to deactivate, and no mail is sent
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(slugs(&body), ["conflict"]);
    assert!(f.remote.outbox.mails().is_empty());
}

#[tokio::test]
async fn a_known_realms_host_name_and_scheme_follow_the_servers_latest_request() {
    // Given a realm registered as chat.example.org, "Example Org", over https
    let f = fixture();
    let server = f.registered().await;
    let realm = Uuid::new_v4();
    assert_eq!(
        f.billing_link(server, KEY, &billing_body(realm, None)).await.0,
        StatusCode::OK
    );
    // When the server asks again after the organisation was renamed and moved
    let mut body = billing_body(realm, None);
    body["realm"]["host"] = json!("Chat.Example.COM:8443");
    body["realm"]["name"] = json!("Renamed Org");
    body["uri_scheme"] = json!("http://");
    let (status, answer) = f.billing_link(server, KEY, &body).await;
    // Then the realm's record carries the new host (lowercased), name and scheme
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (stored, _) = f
        .remote
        .remote
        .records
        .realm(realm, f.clock.now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.host.as_str(), stored.name.as_str(), stored.uri_scheme.as_str()),
        ("chat.example.com:8443", "Renamed Org", "http://")
    );
}

#[tokio::test]
async fn a_billing_link_request_reports_unknown_absent_and_invalid_fields_together() {
    // Given a registered server
    let f = fixture();
    let server = f.registered().await;
    // When its request has an unknown member, lacks the realm's name, and has a bad scheme
    let body = json!({
        "user": {"uuid": Uuid::new_v4(), "email": "owner@example.org", "full_name": "Ada Owner"},
        "realm": {"uuid": Uuid::new_v4(), "host": "chat.example.org"},
        "uri_scheme": "ftp://",
        "colour": "blue",
    });
    let (status, answer) = f.billing_link(server, KEY, &body).await;
    // Then every error is reported on its pointer, one per field
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let mut found: Vec<(String, String)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["slug"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("/colour".to_owned(), "invalid_format".to_owned()),
            ("/realm/name".to_owned(), "missing".to_owned()),
            ("/uri_scheme".to_owned(), "invalid_value".to_owned()),
        ]
    );
}

/// A realm audit-log row with the realm's counts after it: `members` members and one owner.
fn audit_row(id: u64, realm: Uuid, at: chrono::DateTime<chrono::Utc>, members: u32) -> Value {
    json!({"id": id, "realm": realm, "event_type": 101, "event_time": at.timestamp(), "backfilled": false,
           "extra_data": {"10": {"11": {"100": 1, "200": 0, "300": 0, "400": members, "600": 0}, "12": 2}}})
}

fn realm_listing(realm: Uuid) -> Value {
    json!({"uuid": realm, "host": "chat.example.org", "name": "Example Org", "org_type": 0,
           "date_created": 1_764_000_000.0, "deactivated": false, "is_system_bot_realm": false})
}

impl Fixture {
    async fn upload(&self, server: Uuid, body: &Value) -> (StatusCode, Value) {
        self.call(
            ApiEvent::sample("apigw-remote-server-analytics.json")
                .header("authorization", &basic(server, KEY))
                .body(body),
        )
        .await
    }

    async fn last_received(&self, server: Uuid) -> Value {
        let (status, body) = self
            .call(
                ApiEvent::sample("apigw-remote-server-analytics.json")
                    .route(ANALYTICS_STATUS_ROUTE, "/api/v1/remotes/server/analytics/status", &[])
                    .header("authorization", &basic(server, KEY)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["last_realm_audit_log_id"].clone()
    }
}

#[tokio::test]
async fn an_upload_stores_its_rows_once_and_a_resent_upload_changes_nothing() {
    let f = fixture();
    let server = f.registered().await;
    let realm = Uuid::new_v4();
    assert_eq!(f.last_received(server).await, Value::Null);
    let now = f.clock.now();
    let body = json!({"realms": [realm_listing(realm)], "realm_audit_logs": [
        audit_row(11, realm, now, 5), audit_row(12, realm, now, 6), audit_row(15, realm, now, 7)], "version": "11.0"});
    // When the server uploads three rows, then they are stored and the status says 15
    let (status, answer) = f.upload(server, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["stored_rows"], 3);
    assert_eq!(f.last_received(server).await, 15);
    // When it sends the same upload again, then nothing more is stored
    let (status, answer) = f.upload(server, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["stored_rows"], 0);
    assert_eq!(f.last_received(server).await, 15);
    // and the listed realm is now the server's
    let realms = f.remote.remote.records.realms_of(server, now).await.unwrap();
    assert_eq!(realms.iter().map(|r| r.uuid).collect::<Vec<_>>(), [realm]);
}

#[tokio::test]
async fn a_first_upload_of_ten_thousand_rows_is_taken_whole() {
    // Given a server whose first upload carries the contract's 10,000 rows (about 2 MB)
    let f = fixture();
    let server = f.registered().await;
    let realm = Uuid::new_v4();
    let now = f.clock.now();
    let rows: Vec<Value> = (1..=10_000)
        .map(|id| audit_row(id, realm, now - chrono::Duration::seconds(10_000 - id as i64), 5))
        .collect();
    let body = json!({"realms": [realm_listing(realm)], "realm_audit_logs": rows, "version": "11.0"});
    assert!(body.to_string().len() > 64 * 1024);
    // When it uploads them
    let (status, answer) = f.upload(server, &body).await;
    // Then every row is stored
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["stored_rows"], 10_000);
    assert_eq!(f.last_received(server).await, 10_000);
}

#[tokio::test]
async fn an_upload_past_its_body_limit_is_too_large_and_stores_nothing() {
    let f = fixture();
    let server = f.registered().await;
    let realm = Uuid::new_v4();
    let body = json!({"realms": [realm_listing(realm)], "realm_audit_logs": [],
                      "version": "x".repeat(remote_billing_server::UPLOAD_MAX_BODY_BYTES)});
    let (status, answer) = f.upload(server, &body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["errors"][0]["slug"], "too_large");
    assert_eq!(f.last_received(server).await, Value::Null);
}

#[tokio::test]
async fn a_row_dated_more_than_an_hour_ahead_is_refused_and_nothing_is_stored() {
    let f = fixture();
    let server = f.registered().await;
    let realm = Uuid::new_v4();
    let now = f.clock.now();
    let body = json!({"realms": [realm_listing(realm)], "realm_audit_logs": [
        audit_row(1, realm, now, 5), audit_row(2, realm, now + chrono::Duration::days(400), 6)]});
    let (status, answer) = f.upload(server, &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        answer["errors"][0]["field"], "/realm_audit_logs/1/event_time",
        "{answer}"
    );
    assert_eq!(f.last_received(server).await, Value::Null);
}

#[tokio::test]
async fn rows_out_of_order_or_of_an_unknown_type_are_refused_and_nothing_is_stored() {
    let f = fixture();
    let server = f.registered().await;
    let realm = Uuid::new_v4();
    let now = f.clock.now();
    let mut unknown_type = audit_row(22, realm, now, 4);
    unknown_type["event_type"] = json!(999);
    let body = json!({"realms": [realm_listing(realm)],
                      "realm_audit_logs": [audit_row(21, realm, now, 3), audit_row(20, realm, now, 3), unknown_type]});
    let (status, answer) = f.upload(server, &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let fields: Vec<&str> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["/realm_audit_logs/1/id", "/realm_audit_logs/2/event_type"]);
    assert_eq!(f.last_received(server).await, Value::Null);
    // and a body that is not an upload is invalid_format
    let (status, answer) = f.upload(server, &json!({"realms": "none"})).await;
    assert_eq!(
        (status, slugs(&answer)),
        (StatusCode::BAD_REQUEST, vec!["invalid_format".to_owned()])
    );
}

#[tokio::test]
async fn an_upload_naming_another_servers_realm_is_refused_whole() {
    let f = fixture();
    let (first, second) = (f.registered().await, f.registered().await);
    let realm = Uuid::new_v4();
    // Given the realm registered to the first server
    assert_eq!(
        f.billing_link(first, KEY, &billing_body(realm, None)).await.0,
        StatusCode::OK
    );
    // When the second uploads rows for it, then 403 and nothing is stored
    let now = f.clock.now();
    let body = json!({"realms": [], "realm_audit_logs": [audit_row(1, realm, now, 3)]});
    let (status, answer) = f.upload(second, &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(slugs(&answer), ["remote_realm_server_mismatch"]);
    assert_eq!(f.last_received(second).await, Value::Null);
}

#[tokio::test]
async fn wrong_credentials_get_401_with_a_basic_challenge() {
    let f = fixture();
    let server = f.registered().await;
    let response = f
        .api
        .handle(
            ApiEvent::sample("apigw-remote-server-analytics.json")
                .header("authorization", &basic(server, "not-the-key-not-the-key-not-the-key"))
                .build(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], BASIC_CHALLENGE);
}

#[tokio::test]
async fn uploaded_counts_sync_the_ledger_of_a_realms_automatic_plan() {
    use billing::metrics::{LEDGER_ROWS, LEDGER_SYNCS};
    use billing::plans::{self, Entity};
    let counts = billing_testing::Counts::default();
    let _counting = counts.count_here();
    let f = fixture();
    let server = f.registered().await;
    let realm = Uuid::new_v4();
    assert_eq!(
        f.billing_link(server, KEY, &billing_body(realm, None)).await.0,
        StatusCode::OK
    );
    // Given the realm on a basic plan bought for 6 licenses that follow its users
    let documents = f.remote.remote.records.documents().clone();
    let start = f.clock.now();
    billing_testing::store_automatic_basic_plan(documents.as_ref(), Entity::Realm(realm), 6, None, start).await;
    // When the server uploads counts of 23, 20 and 21 (one owner plus members) in the period
    let hour = chrono::Duration::hours(1);
    let body = json!({"realms": [], "realm_audit_logs": [
        audit_row(1, realm, start + hour, 22), audit_row(2, realm, start + hour * 2, 19), audit_row(3, realm, start + hour * 3, 20)]});
    // (sent three hours later: rows from the future are refused)
    f.clock.advance(hour * 3);
    let (status, answer) = f.upload(server, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["ledger_rows"], 3);
    assert_eq!(
        (counts.get(LEDGER_SYNCS, &[]), counts.get(LEDGER_ROWS, &[])),
        (1, 3),
        "{:?}",
        counts.summary()
    );
    // Then the ledger is API.md's worked example
    let book = plans::stored::load(documents.as_ref(), Entity::Realm(realm), start)
        .await
        .unwrap()
        .book;
    let rows: Vec<_> = book
        .ledger
        .iter()
        .map(|r| (r.is_renewal, r.licenses, r.licenses_at_next_renewal))
        .collect();
    assert_eq!(rows, [(true, 6, 6), (false, 23, 23), (false, 23, 20), (false, 23, 21)]);
}

impl Fixture {
    async fn billing_of(&self, route: &str, path: &str, parameter: (&str, Uuid), scope: &str) -> (StatusCode, Value) {
        self.call(
            ApiEvent::sample("apigw-remote-server-register.json")
                .route(route, path, &[(parameter.0, &parameter.1.to_string())])
                .caller(Uuid::new_v4(), scope),
        )
        .await
    }
}

#[tokio::test]
async fn administrators_read_a_realms_plan_ledger_and_last_upload() {
    use billing::plans::Entity;
    let f = fixture();
    let server = f.registered().await;
    let realm = Uuid::new_v4();
    assert_eq!(
        f.billing_link(server, KEY, &billing_body(realm, None)).await.0,
        StatusCode::OK
    );
    let path = format!("/remote-realms/{realm}/billing");
    let admin = "subscriptions subscriptions_admin";
    // Given no plan yet: the view says so
    let (status, body) = f
        .billing_of(REALM_BILLING_ROUTE, &path, ("realm_uuid", realm), admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = &body["billing"][0];
    assert_eq!(
        (&view["plan"], &view["ledger"], &view["last_upload_at"]),
        (&Value::Null, &json!([]), &Value::Null)
    );
    // Given a basic plan and an upload of 13 users
    let documents = f.remote.remote.records.documents().clone();
    let now = f.clock.now();
    billing_testing::store_automatic_basic_plan(documents.as_ref(), Entity::Realm(realm), 6, None, now).await;
    let upload = json!({"realms": [], "realm_audit_logs": [audit_row(1, realm, now + chrono::Duration::hours(1), 12)]});
    assert_eq!(f.upload(server, &upload).await.0, StatusCode::OK);
    // Then the view has the plan, its two rows, the billed count and the upload time
    let (status, body) = f
        .billing_of(REALM_BILLING_ROUTE, &path, ("realm_uuid", realm), admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = &body["billing"][0];
    assert_eq!(view["plan"]["tier"], "basic");
    assert_eq!(view["plan"]["status"], "active");
    assert_eq!(
        (&view["plan"]["licenses"], &view["plan"]["licenses_at_next_renewal"]),
        (&json!(13), &json!(13))
    );
    assert_eq!(view["plan"]["price_per_license"], 350);
    assert_eq!(view["ledger"].as_array().unwrap().len(), 2);
    assert_eq!(view["billed_licenses"], 13);
    assert!(view["last_upload_at"].is_string());
    // And the server's view counts the same users, without a plan of its own
    let (status, body) = f
        .billing_of(
            SERVER_BILLING_ROUTE,
            &format!("/remote-servers/{server}/billing"),
            ("server_uuid", server),
            admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["billing"][0]["plan"], &body["billing"][0]["billed_licenses"]),
        (&Value::Null, &json!(13))
    );
}

#[tokio::test]
async fn the_billing_view_is_for_administrators_and_known_entities_only() {
    let f = fixture();
    let realm = Uuid::new_v4();
    let path = format!("/remote-realms/{realm}/billing");
    let (status, body) = f
        .billing_of(REALM_BILLING_ROUTE, &path, ("realm_uuid", realm), "subscriptions")
        .await;
    assert_eq!(
        (status, slugs(&body)),
        (StatusCode::FORBIDDEN, vec!["access_denied".to_owned()])
    );
    let (status, body) = f
        .billing_of(
            REALM_BILLING_ROUTE,
            &path,
            ("realm_uuid", realm),
            "subscriptions subscriptions_admin",
        )
        .await;
    assert_eq!(
        (status, slugs(&body)),
        (StatusCode::NOT_FOUND, vec!["not_found".to_owned()])
    );
}

#[tokio::test]
async fn realms_left_out_of_an_upload_are_marked_locally_deleted_and_restored_when_listed_again() {
    let f = fixture();
    let server = f.registered().await;
    let (kept, dropped) = (Uuid::new_v4(), Uuid::new_v4());
    let deleted = |realms: Vec<billing::remote::RemoteRealm>| {
        let mut flags: Vec<(Uuid, bool)> = realms.into_iter().map(|r| (r.uuid, r.locally_deleted)).collect();
        flags.sort();
        flags
    };
    let both = json!({"realms": [realm_listing(kept), realm_listing(dropped)]});
    assert_eq!(f.upload(server, &both).await.0, StatusCode::OK);
    // When an upload lists only one of them, then the other is marked deleted
    assert_eq!(
        f.upload(server, &json!({"realms": [realm_listing(kept)]})).await.0,
        StatusCode::OK
    );
    let now = f.clock.now();
    let mut expected = vec![(kept, false), (dropped, true)];
    expected.sort();
    assert_eq!(
        deleted(f.remote.remote.records.realms_of(server, now).await.unwrap()),
        expected
    );
    // An upload without a realms list changes nothing; one that lists it again restores it
    assert_eq!(
        f.upload(server, &json!({"realm_audit_logs": []})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        deleted(f.remote.remote.records.realms_of(server, now).await.unwrap()),
        expected
    );
    assert_eq!(f.upload(server, &both).await.0, StatusCode::OK);
    let mut restored = vec![(kept, false), (dropped, false)];
    restored.sort();
    assert_eq!(
        deleted(f.remote.remote.records.realms_of(server, now).await.unwrap()),
        restored
    );
}

impl Fixture {
    async fn admin_post(
        &self,
        route: &str,
        path: &str,
        parameter: (&str, Uuid),
        scope: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        self.call(
            ApiEvent::sample("apigw-remote-server-register.json")
                .route(route, path, &[(parameter.0, &parameter.1.to_string())])
                .caller(Uuid::new_v4(), scope)
                .body(body),
        )
        .await
    }

    /// A registered server with one realm of 30 users; the server and realm ids.
    async fn server_with_a_realm(&self) -> (Uuid, Uuid) {
        let server = self.registered().await;
        let realm = Uuid::new_v4();
        let upload = json!({"realms": [realm_listing(realm)],
                            "realm_audit_logs": [audit_row(1, realm, self.clock.now(), 29)]});
        assert_eq!(self.upload(server, &upload).await.0, StatusCode::OK);
        (server, realm)
    }
}

const ADMIN: &str = "subscriptions subscriptions_admin";

#[tokio::test]
async fn administrators_put_an_entity_on_a_legacy_plan_once_and_never_beside_a_related_plan() {
    // Given a server with a realm
    let f = fixture();
    let (server, realm) = f.server_with_a_realm().await;
    let end = (f.clock.now() + chrono::Duration::days(90)).timestamp();
    let realm_path = format!("/remote-realms/{realm}/legacy-plan");
    // When a user (not an administrator) asks, then it is forbidden
    let (status, _) = f
        .admin_post(
            REALM_LEGACY_ROUTE,
            &realm_path,
            ("realm_uuid", realm),
            "subscriptions",
            &json!({"end_date": end}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // When an administrator puts the realm on a legacy plan, then the view shows it
    let (status, body) = f
        .admin_post(
            REALM_LEGACY_ROUTE,
            &realm_path,
            ("realm_uuid", realm),
            ADMIN,
            &json!({"end_date": end}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let plan = &body["billing"][0]["plan"];
    assert_eq!(
        (plan["tier"].as_str(), plan["status"].as_str()),
        (Some("legacy"), Some("active"))
    );
    assert_eq!(
        (plan["licenses"].as_u64(), plan["price_per_license"].as_u64()),
        (Some(30), Some(0))
    );
    // And a second one for the realm, or one for its server, is a conflict
    let (status, body) = f
        .admin_post(
            REALM_LEGACY_ROUTE,
            &realm_path,
            ("realm_uuid", realm),
            ADMIN,
            &json!({"end_date": end}),
        )
        .await;
    assert_eq!(
        (status, slugs(&body)),
        (StatusCode::CONFLICT, vec!["conflict".to_owned()])
    );
    let (status, body) = f
        .admin_post(
            SERVER_LEGACY_ROUTE,
            &format!("/remote-servers/{server}/legacy-plan"),
            ("server_uuid", server),
            ADMIN,
            &json!({"end_date": end}),
        )
        .await;
    assert_eq!(
        (status, slugs(&body)),
        (StatusCode::CONFLICT, vec!["conflict".to_owned()])
    );
    // And an end date in the past or an unreadable body is refused
    let other = Uuid::new_v4();
    let (status, _) = f
        .admin_post(
            REALM_LEGACY_ROUTE,
            &format!("/remote-realms/{other}/legacy-plan"),
            ("realm_uuid", other),
            ADMIN,
            &json!({"end_date": end}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = f
        .admin_post(
            SERVER_LEGACY_ROUTE,
            &format!("/remote-servers/{server}/legacy-plan"),
            ("server_uuid", server),
            ADMIN,
            &json!({"end": end}),
        )
        .await;
    assert_eq!(
        (status, slugs(&body)),
        (StatusCode::BAD_REQUEST, vec!["invalid_format".to_owned()])
    );
}

#[tokio::test]
async fn a_discount_reprices_the_plan_and_is_audited_and_out_of_range_is_refused() {
    // Given a realm on basic
    let f = fixture();
    let (_, realm) = f.server_with_a_realm().await;
    let documents = f.remote.remote.records.documents().clone();
    billing_testing::store_automatic_basic_plan(
        documents.as_ref(),
        billing::plans::Entity::Realm(realm),
        30,
        None,
        f.clock.now(),
    )
    .await;
    let path = format!("/remote-realms/{realm}/discount");
    // When an administrator gives it 25% off
    let (status, body) = f
        .admin_post(
            REALM_DISCOUNT_ROUTE,
            &path,
            ("realm_uuid", realm),
            ADMIN,
            &json!({"percent": 25}),
        )
        .await;
    // Then the plan costs floor(350 × 0.75) and the change is recorded with the old and new values
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["billing"][0]["customer"]["default_discount"], 25);
    assert_eq!(body["billing"][0]["plan"]["price_per_license"], 262);
    let audit =
        billing::plans::stored::history(documents.as_ref(), billing::plans::Entity::Realm(realm), f.clock.now())
            .await
            .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (&audit[0]["event"], &audit[0]["old"], &audit[0]["new"]),
        (&json!("discount_changed"), &json!(0), &json!(25))
    );
    // When 100% is asked, then it is refused and nothing changes
    let (status, body) = f
        .admin_post(
            REALM_DISCOUNT_ROUTE,
            &path,
            ("realm_uuid", realm),
            ADMIN,
            &json!({"percent": 100}),
        )
        .await;
    assert_eq!(
        (status, slugs(&body)),
        (StatusCode::BAD_REQUEST, vec!["invalid_value".to_owned()])
    );
    let (_, body) = f
        .admin_post(
            REALM_DISCOUNT_ROUTE,
            &path,
            ("realm_uuid", realm),
            ADMIN,
            &json!({"percent": 25}),
        )
        .await;
    assert_eq!(body["billing"][0]["plan"]["price_per_license"], 262);
}

#[tokio::test]
async fn a_realm_moved_to_its_new_server_no_longer_counts_for_the_old_one() {
    // Given a realm of 30 users on server A, and server B it was imported into
    let f = fixture();
    let (old, realm) = f.server_with_a_realm().await;
    let new = f.registered().await;
    let path = format!("/remote-realms/{realm}/server");
    let rehome = |scope: &'static str, body: Value| {
        let path = path.clone();
        let f = &f;
        async move {
            f.call(
                ApiEvent::sample("apigw-remote-server-register.json")
                    .route(REHOME_ROUTE, &path, &[("realm_uuid", &realm.to_string())])
                    .caller(Uuid::new_v4(), scope)
                    .body(&body),
            )
            .await
        }
    };
    // When a user (not an administrator) asks, or names an unknown server, nothing moves
    assert_eq!(
        rehome("subscriptions", json!({"server_uuid": new})).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        rehome(ADMIN, json!({"server_uuid": Uuid::new_v4()})).await.0,
        StatusCode::NOT_FOUND
    );
    // When an administrator moves it to B
    let (status, body) = rehome(ADMIN, json!({"server_uuid": new})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Then A's uploads naming it are refused and A no longer counts its users; B's are taken
    let (status, body) = f
        .upload(
            old,
            &json!({"realm_audit_logs": [audit_row(2, realm, f.clock.now(), 40)]}),
        )
        .await;
    assert_eq!(
        (status, slugs(&body)),
        (StatusCode::FORBIDDEN, vec!["remote_realm_server_mismatch".to_owned()])
    );
    let (_, body) = f
        .billing_of(
            SERVER_BILLING_ROUTE,
            &format!("/remote-servers/{old}/billing"),
            ("server_uuid", old),
            ADMIN,
        )
        .await;
    assert_eq!(body["billing"][0]["billed_licenses"], 0, "{body}");
    let upload =
        json!({"realms": [realm_listing(realm)], "realm_audit_logs": [audit_row(1, realm, f.clock.now(), 12)]});
    assert_eq!(f.upload(new, &upload).await.0, StatusCode::OK);
    let (_, body) = f
        .billing_of(
            REALM_BILLING_ROUTE,
            &format!("/remote-realms/{realm}/billing"),
            ("realm_uuid", realm),
            ADMIN,
        )
        .await;
    assert_eq!(body["billing"][0]["billed_licenses"], 13, "{body}");
    // And the move is in the realm's history
    let documents = f.remote.remote.records.documents().clone();
    let history =
        billing::plans::stored::history(documents.as_ref(), billing::plans::Entity::Realm(realm), f.clock.now())
            .await
            .unwrap();
    assert_eq!(history[0]["event"], "realm_rehomed");
    assert_eq!(
        (&history[0]["old_server"], &history[0]["new_server"]),
        (&json!(old), &json!(new))
    );
}

#[tokio::test]
async fn a_realm_with_a_plan_is_not_moved_to_a_server_with_one() {
    // Given a realm on a plan, and a server on a plan of its own
    let f = fixture();
    let (_, realm) = f.server_with_a_realm().await;
    let new = f.registered().await;
    let documents = f.remote.remote.records.documents().clone();
    let now = f.clock.now();
    for entity in [
        billing::plans::Entity::Realm(realm),
        billing::plans::Entity::Server(new),
    ] {
        billing_testing::store_automatic_basic_plan(documents.as_ref(), entity, 6, None, now).await;
    }
    // When an administrator moves the realm there
    let path = format!("/remote-realms/{realm}/server");
    let (status, body) = f
        .call(
            ApiEvent::sample("apigw-remote-server-register.json")
                .route(REHOME_ROUTE, &path, &[("realm_uuid", &realm.to_string())])
                .caller(Uuid::new_v4(), ADMIN)
                .body(&json!({"server_uuid": new})),
        )
        .await;
    // Then it is a conflict and the realm stays where it was
    assert_eq!(
        (status, slugs(&body)),
        (StatusCode::CONFLICT, vec!["conflict".to_owned()]),
        "{body}"
    );
    let owner = documents
        .get_document(&billing::remote::records::realm_owner_key(realm), now)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(owner.body["server_uuid"], json!(new));
}

#[tokio::test]
async fn an_administrators_keyed_discount_repeated_is_answered_again_and_recorded_once() {
    // Given a realm on basic and an administrator's discount sent with an idempotency key
    let f = fixture();
    let (_, realm) = f.server_with_a_realm().await;
    let documents = f.remote.remote.records.documents().clone();
    billing_testing::store_automatic_basic_plan(
        documents.as_ref(),
        billing::plans::Entity::Realm(realm),
        30,
        None,
        f.clock.now(),
    )
    .await;
    let admin = Uuid::new_v4();
    let path = format!("/remote-realms/{realm}/discount");
    let keyed = || {
        ApiEvent::sample("apigw-remote-server-register.json")
            .route(REALM_DISCOUNT_ROUTE, &path, &[("realm_uuid", &realm.to_string())])
            .caller(admin, ADMIN)
            .header("idempotency-key", "discount-25")
            .body(&json!({"percent": 25}))
            .build()
    };
    let first = f.api.handle(keyed()).await;
    assert_eq!(first.status(), StatusCode::OK);
    // When it is sent again with the same key
    let again = f.api.handle(keyed()).await;
    // Then the first answer comes back, marked, and the change is recorded once
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.body(), first.body());
    let history =
        billing::plans::stored::history(documents.as_ref(), billing::plans::Entity::Realm(realm), f.clock.now())
            .await
            .unwrap();
    assert_eq!(history.len(), 1);
}

impl Fixture {
    async fn history(&self, realm: Uuid, scope: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let path = format!("/remote-realms/{realm}/audit");
        self.call(
            ApiEvent::sample("apigw-remote-server-register.json")
                .route(REALM_AUDIT_ROUTE, &path, &[("realm_uuid", &realm.to_string())])
                .caller(Uuid::new_v4(), scope)
                .query(query),
        )
        .await
    }
}

#[tokio::test]
async fn administrators_read_an_entitys_billing_history_oldest_first_a_page_at_a_time() {
    // Given a realm given a legacy plan, then a discount twice, by administrators
    let f = fixture();
    let (_, realm) = f.server_with_a_realm().await;
    let legacy = format!("/remote-realms/{realm}/legacy-plan");
    let end = (f.clock.now() + chrono::Duration::days(90)).timestamp();
    let started = f
        .admin_post(
            REALM_LEGACY_ROUTE,
            &legacy,
            ("realm_uuid", realm),
            ADMIN,
            &json!({"end_date": end}),
        )
        .await;
    assert_eq!(started.0, StatusCode::OK, "{}", started.1);
    let discount = format!("/remote-realms/{realm}/discount");
    for percent in [10, 20] {
        f.clock.advance(chrono::Duration::seconds(1));
        let set = f
            .admin_post(
                REALM_DISCOUNT_ROUTE,
                &discount,
                ("realm_uuid", realm),
                ADMIN,
                &json!({"percent": percent}),
            )
            .await;
        assert_eq!(set.0, StatusCode::OK, "{}", set.1);
    }
    // When an administrator reads the history two records at a time
    let (status, first) = f.history(realm, ADMIN, &[("limit", "2")]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let (status, second) = f.history(realm, ADMIN, &[("limit", "2"), ("cursor", &cursor)]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    // Then every change is there once, oldest first, with who made it
    let events: Vec<(Value, Value)> = first["audit"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["audit"].as_array().unwrap())
        .map(|record| (record["event"].clone(), record["new"].clone()))
        .collect();
    assert_eq!(
        events,
        [
            (json!("legacy_plan_started"), Value::Null),
            (json!("discount_changed"), json!(10)),
            (json!("discount_changed"), json!(20)),
        ]
    );
    assert!(first["audit"][0]["actor"].as_str().unwrap().starts_with("admin:"));
    assert_eq!(second["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_billing_history_is_for_administrators_of_known_entities_with_readable_cursors() {
    let f = fixture();
    let (_, realm) = f.server_with_a_realm().await;
    // A user is refused, an unknown realm is not found, a forged cursor is a clear 400
    assert_eq!(f.history(realm, "subscriptions", &[]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(f.history(Uuid::new_v4(), ADMIN, &[]).await.0, StatusCode::NOT_FOUND);
    let (status, body) = f.history(realm, ADMIN, &[("cursor", "eyJhZnRlciI6InBsYW4jMSJ9")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // And a realm with no recorded change has an empty history
    let (status, body) = f.history(realm, ADMIN, &[]).await;
    assert_eq!((status, &body["audit"]), (StatusCode::OK, &json!([])), "{body}");
}

#[tokio::test]
async fn a_legacy_plan_is_refused_while_a_purchase_of_the_server_is_being_charged() {
    // Given a server with a realm, and a purchase of the realm being charged (its claim held)
    let f = fixture();
    let (server, realm) = f.server_with_a_realm().await;
    let documents = f.remote.remote.records.documents().clone();
    let now = f.clock.now();
    let claim = billing::plans::purchase::PurchaseClaim {
        entity: billing::plans::Entity::Realm(realm),
        upgrade: Uuid::new_v4(),
        charging: true,
        claimed_at: now,
    };
    let key = billing::store::member_key(billing::plans::purchase::PURCHASE_CLAIMS, &server.to_string());
    documents
        .put_document(&key, &serde_json::to_value(&claim).unwrap(), None, None, now)
        .await
        .unwrap();
    // When an administrator starts a legacy plan for the server, then it is a conflict and no
    // plan is written
    let end = (now + chrono::Duration::days(90)).timestamp();
    let (status, body) = f
        .admin_post(
            SERVER_LEGACY_ROUTE,
            &format!("/remote-servers/{server}/legacy-plan"),
            ("server_uuid", server),
            ADMIN,
            &json!({"end_date": end}),
        )
        .await;
    assert_eq!(
        (status, slugs(&body)),
        (StatusCode::CONFLICT, vec!["conflict".to_owned()]),
        "{body}"
    );
    let book = billing::plans::stored::load(documents.as_ref(), billing::plans::Entity::Server(server), now)
        .await
        .unwrap();
    assert!(book.book.plan.is_none(), "{:?}", book.book.plan);
    // When the purchase only waits for Checkout (its claim not charging), then the start goes
    // through and displaces it: the claim names no upgrade for as long as that Checkout lives,
    // so the Checkout, if completed, can never take it again to buy behind the legacy plan
    let held = documents.get_document(&key, now).await.unwrap().unwrap();
    let mut waiting = claim.clone();
    waiting.charging = false;
    documents
        .put_document(
            &key,
            &serde_json::to_value(&waiting).unwrap(),
            None,
            Some(held.version),
            now,
        )
        .await
        .unwrap();
    let (status, body) = f
        .admin_post(
            SERVER_LEGACY_ROUTE,
            &format!("/remote-servers/{server}/legacy-plan"),
            ("server_uuid", server),
            ADMIN,
            &json!({"end_date": end}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let later = now + chrono::Duration::hours(23);
    let displaced: billing::plans::purchase::PurchaseClaim =
        serde_json::from_value(documents.get_document(&key, later).await.unwrap().unwrap().body).unwrap();
    assert_eq!(
        (displaced.entity, displaced.upgrade, displaced.charging),
        (billing::plans::Entity::Realm(realm), Uuid::nil(), false)
    );
}
