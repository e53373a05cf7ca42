//! The remote-billing pages in-process, against the embedded store and a file outbox, with a
//! clock the tests move: every browser step, and every way it is refused.

use std::sync::Arc;

use billing::mail::Mail;
use billing::remote::records::realm_key;
use billing::remote::{BillingLinkRequest, RealmPlan, RegisterRequest, RemoteServer};
use billing::store::DocumentStore;
use billing_testing::{ApiEvent, RemoteFixture, TestClock};
use chrono::Duration;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use remote_billing_pages::*;
use serde_json::json;
use uuid::Uuid;

const SERVER_KEY: &str = "kq3v9X2mR7tLw8ZpN4bY6cH1dF5gJ0sA";

struct World {
    fixture: RemoteFixture,
    clock: TestClock,
    pages: RemoteBillingPages,
    server: RemoteServer,
    realm: Uuid,
    user: Uuid,
}

struct Answer {
    status: StatusCode,
    body: String,
    location: Option<String>,
    set_cookie: Option<String>,
}

impl Answer {
    fn from(response: Response<Body>) -> Self {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Answer {
            status: response.status(),
            location: header("location"),
            set_cookie: header("set-cookie"),
            body: String::from_utf8_lossy(response.body()).into_owned(),
        }
    }

    /// The CSRF token of the page's form.
    fn csrf(&self) -> String {
        billing_testing::csrf_field(&self.body)
    }

    /// `billing_session=<secret>` from `Set-Cookie`.
    fn session(&self) -> String {
        self.set_cookie
            .as_deref()
            .expect("a session cookie")
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    }
}

async fn world_with_limits(per_ip: u32, per_server: u32) -> World {
    world_on(RemoteFixture::new(per_ip, per_server)).await
}

async fn world_on(fixture: RemoteFixture) -> World {
    let clock = TestClock::default();
    let server_uuid = Uuid::new_v4();
    fixture
        .remote
        .register_server(
            RegisterRequest {
                server_uuid: server_uuid.to_string(),
                server_key: SERVER_KEY.into(),
                hostname: "chat.example.org".into(),
                contact_email: "admin@example.org".into(),
                read_errors: Vec::new(),
            },
            None,
            clock.now(),
        )
        .await
        .unwrap();
    let server = fixture
        .remote
        .authenticate(Some(&basic(server_uuid, SERVER_KEY)), clock.now())
        .await
        .unwrap();
    let pages = RemoteBillingPages {
        remote: fixture.remote.clone(),
        purchases: billing::plans::purchase::Purchases {
            documents: fixture.remote.records.documents().clone(),
            stripe: std::sync::Arc::new(billing_testing::FakeBilling::new(clock.now())),
            trial_days: 0,
            prices: billing::plans::Prices::default(),
        },
        checkout_origin: "https://checkout.stripe.com".into(),
        clock: clock.clock(),
    }
    .declared();
    World {
        fixture,
        clock,
        pages,
        server,
        realm: Uuid::new_v4(),
        user: Uuid::new_v4(),
    }
}

async fn world() -> World {
    world_with_limits(5, 20).await
}

fn basic(server: Uuid, key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{server}:{key}"))
    )
}

impl World {
    /// The access token the server's billing link carries for the world's user and realm.
    async fn access_token(&self, next_page: Option<&str>) -> String {
        let request: BillingLinkRequest = serde_json::from_value(json!({
            "user": {"uuid": self.user, "email": "owner@example.org", "full_name": "Ada Owner"},
            "realm": {"uuid": self.realm, "host": "chat.example.org", "name": "Example Org"},
            "uri_scheme": "https://",
            "next_page": next_page,
        }))
        .unwrap();
        let url = self
            .fixture
            .remote
            .billing_link(&self.server, request, self.clock.now())
            .await
            .unwrap();
        token_of(&url)
    }

    async fn get(&self, route: &str, path: &str, parameters: &[(&str, &str)], cookie: Option<&str>) -> Answer {
        let mut event = ApiEvent::sample("apigw-remote-billing-login.json").route(route, path, parameters);
        if let Some(cookie) = cookie {
            event = event.cookies(&[cookie]);
        }
        Answer::from(self.pages.handle(event.build()).await)
    }

    async fn post(
        &self,
        route: &str,
        path: &str,
        parameters: &[(&str, &str)],
        form: &[(&str, &str)],
        cookie: Option<&str>,
        ip: &str,
    ) -> Answer {
        let mut event = ApiEvent::sample("apigw-remote-billing-confirm.json")
            .route(route, path, parameters)
            .form(form)
            .source_ip(ip);
        if let Some(cookie) = cookie {
            event = event.cookies(&[cookie]);
        }
        Answer::from(self.pages.handle(event.build()).await)
    }

    async fn login_page(&self, token: &str) -> Answer {
        self.get(
            LOGIN_ROUTE,
            &format!("/remote-billing-login/{token}"),
            &[("token", token)],
            None,
        )
        .await
    }

    async fn request_confirmation(&self, token: &str, email: &str, csrf: &str, ip: &str) -> Answer {
        self.post(
            REQUEST_CONFIRMATION_ROUTE,
            &format!("/remote-billing-login/{token}/confirm"),
            &[("token", token)],
            &[("csrf_token", csrf), ("email", email)],
            None,
            ip,
        )
        .await
    }

    async fn follow_confirmation(&self, key: &str) -> Answer {
        self.get(
            CONFIRM_EMAIL_ROUTE,
            &format!("/remote-billing-login/do_confirm/{key}"),
            &[("key", key)],
            None,
        )
        .await
    }

    async fn complete_login(&self, token: &str, form: &[(&str, &str)]) -> Answer {
        self.post(
            COMPLETE_LOGIN_ROUTE,
            &format!("/remote-billing-login/{token}"),
            &[("token", token)],
            form,
            None,
            "203.0.113.7",
        )
        .await
    }

    async fn realm_page(&self, realm: Uuid, page: &str, cookie: Option<&str>) -> Answer {
        self.get(
            REALM_PAGE_ROUTE,
            &format!("/realm/{realm}/{page}/"),
            &[("realm_uuid", &realm.to_string()), ("page", page)],
            cookie,
        )
        .await
    }

    fn mails(&self) -> Vec<Mail> {
        self.fixture.outbox.mails()
    }

    /// The confirmation key of the last mail to `to`.
    fn confirmation_key(&self, to: &str) -> String {
        let mail = self
            .mails()
            .into_iter()
            .rev()
            .find(|m| m.to == to)
            .unwrap_or_else(|| panic!("no mail to {to}"));
        let marker = "/remote-billing-login/do_confirm/";
        let start = mail.text.find(marker).expect("a confirmation link") + marker.len();
        mail.text[start..].split_whitespace().next().unwrap().to_owned()
    }

    /// The first-login steps up to the confirm-login page: email form, mail, confirmation.
    async fn confirm_email(&self, token: &str, email: &str) -> String {
        let form = self.login_page(token).await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let sent = self
            .request_confirmation(token, email, &form.csrf(), "203.0.113.7")
            .await;
        assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
        let confirmed = self.follow_confirmation(&self.confirmation_key(email)).await;
        assert_eq!(confirmed.status, StatusCode::FOUND, "{}", confirmed.body);
        token_of(confirmed.location.as_deref().unwrap())
    }

    /// A whole first login; returns the session cookie and where the login went.
    async fn log_in(&self, next_page: Option<&str>) -> (String, String) {
        let token = self.access_token(next_page).await;
        let fresh = self.confirm_email(&token, "owner@example.org").await;
        let page = self.login_page(&fresh).await;
        let done = self
            .complete_login(
                &fresh,
                &[
                    ("csrf_token", &page.csrf()),
                    ("full_name", "Ada Owner"),
                    ("tos_consent", "true"),
                ],
            )
            .await;
        assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
        (done.session(), done.location.unwrap())
    }

    async fn set_realm_plan(&self, plan: RealmPlan) {
        let records = &self.fixture.remote.records;
        let now = self.clock.now();
        let (mut realm, version) = records.realm(self.realm, now).await.unwrap().unwrap();
        realm.plan = plan;
        realm.licenses = Some(25);
        records
            .replace(&realm_key(realm.server_uuid, self.realm), &realm, version, None, now)
            .await
            .unwrap();
    }
}

fn token_of(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn without_a_public_base_url_the_confirmation_link_is_under_the_address_the_page_was_served_at() {
    // Given a deployment with no PUBLIC_BASE_URL: links follow the request's domain name
    // (billing.example.com in the page samples)
    let mut fixture = RemoteFixture::new(5, 20);
    fixture.remote.settings.public_base_url = String::new();
    let world = world_on(fixture).await;
    let token = world.access_token(None).await;
    // When the user asks for the confirmation mail
    let form = world.login_page(&token).await;
    let sent = world
        .request_confirmation(&token, "owner@example.org", &form.csrf(), "203.0.113.7")
        .await;
    // Then the mailed link is absolute, under that address
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let mails = world.mails();
    assert!(
        mails[0]
            .text
            .contains("https://billing.example.com/remote-billing-login/do_confirm/"),
        "{}",
        mails[0].text
    );
}

#[tokio::test]
async fn first_login_confirms_the_email_accepts_the_terms_and_lands_on_the_billing_page() {
    // Given a server's billing link for a user who never logged in
    let world = world().await;
    let token = world.access_token(None).await;

    // When the user asks for the confirmation mail at another address than the prefilled one
    let form = world.login_page(&token).await;
    assert!(form.body.contains(r#"value="owner@example.org""#), "{}", form.body);
    let sent = world
        .request_confirmation(&token, "billing@example.org", &form.csrf(), "203.0.113.7")
        .await;
    assert_eq!(sent.status, StatusCode::OK);
    assert!(sent.body.contains("Check your email"));
    let mails = world.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, "billing@example.org");
    assert!(
        mails[0]
            .text
            .contains("https://billing.example.com/remote-billing-login/do_confirm/")
    );

    // and follows the link, confirms the login with the Terms of Service
    let confirmed = world
        .follow_confirmation(&world.confirmation_key("billing@example.org"))
        .await;
    assert_eq!(confirmed.status, StatusCode::FOUND);
    let fresh = token_of(confirmed.location.as_deref().unwrap());
    let page = world.login_page(&fresh).await;
    assert!(page.body.contains("billing@example.org"), "{}", page.body);
    assert!(page.body.contains(r#"name="tos_consent""#), "{}", page.body);
    let done = world
        .complete_login(
            &fresh,
            &[
                ("csrf_token", &page.csrf()),
                ("full_name", "Ada Lovelace"),
                ("tos_consent", "true"),
            ],
        )
        .await;

    // Then a two-hour session cookie is set and the billing page shows the realm's plan
    assert_eq!(done.status, StatusCode::FOUND);
    assert_eq!(
        done.location.as_deref(),
        Some(format!("/realm/{}/billing/", world.realm).as_str())
    );
    let cookie = done.set_cookie.clone().unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Max-Age=7200", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let billing = world.realm_page(world.realm, "billing", Some(&done.session())).await;
    assert_eq!(billing.status, StatusCode::OK, "{}", billing.body);
    assert!(billing.body.contains("Example Org"));
    assert!(billing.body.contains(r#"id="no-plan""#), "{}", billing.body);
    assert!(billing.body.contains("Ada Lovelace"), "{}", billing.body);
}

#[tokio::test]
async fn a_returning_user_skips_the_email_step_and_is_not_asked_for_the_terms_again() {
    // Given a user who logged in once
    let world = world().await;
    world.log_in(None).await;
    let mails_before = world.mails().len();

    // When the server hands out a new link
    let token = world.access_token(Some("plans")).await;
    let page = world.login_page(&token).await;

    // Then the confirm-login page comes first, without the Terms of Service box
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"name="full_name""#), "{}", page.body);
    assert!(!page.body.contains(r#"name="email""#), "{}", page.body);
    assert!(!page.body.contains("tos_consent"), "{}", page.body);
    let done = world
        .complete_login(&token, &[("csrf_token", &page.csrf()), ("full_name", "Ada Owner")])
        .await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(
        done.location.as_deref(),
        Some(format!("/realm/{}/plans/", world.realm).as_str())
    );
    assert_eq!(world.mails().len(), mails_before);
}

#[tokio::test]
async fn a_tampered_token_shows_the_invalid_token_page() {
    // Given a genuine token with one character changed
    let world = world().await;
    let token = world.access_token(None).await;
    let mut bytes = token.into_bytes();
    let last = bytes.len() - 5;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();

    // When it is opened
    let page = world.login_page(&tampered).await;

    // Then the page says so
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("Invalid billing access token."), "{}", page.body);
    assert!(page.body.contains("text/html") || page.body.starts_with("<!DOCTYPE html>"));
}

#[tokio::test]
async fn an_expired_token_shows_the_expired_page_with_the_way_back_to_the_server() {
    // Given a token issued more than two hours ago
    let world = world().await;
    let token = world.access_token(None).await;
    world.clock.advance(Duration::hours(2) + Duration::minutes(1));

    // When it is opened
    let page = world.login_page(&token).await;

    // Then the page says it expired and links back to the server's billing page
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("Billing access token expired."), "{}", page.body);
    assert!(
        page.body
            .contains(r#"href="https://chat.example.org/self-hosted-billing/""#),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn a_confirmation_link_works_once() {
    // Given a confirmation link that was followed
    let world = world().await;
    let token = world.access_token(None).await;
    world.confirm_email(&token, "owner@example.org").await;
    let key = world.confirmation_key("owner@example.org");

    // When it is followed again
    let again = world.follow_confirmation(&key).await;

    // Then it is refused
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(again.body.contains("already been used"), "{}", again.body);
}

#[tokio::test]
async fn a_confirmation_link_expires_after_a_day_and_unknown_links_are_not_found() {
    // Given a confirmation mail sent 25 hours ago
    let world = world().await;
    let token = world.access_token(None).await;
    let form = world.login_page(&token).await;
    world
        .request_confirmation(&token, "owner@example.org", &form.csrf(), "203.0.113.7")
        .await;
    world.clock.advance(Duration::hours(25));

    // When its link is followed, and a made-up one
    let expired = world
        .follow_confirmation(&world.confirmation_key("owner@example.org"))
        .await;
    let unknown = world.follow_confirmation("no-such-confirmation-key").await;

    // Then both are refused, differently
    assert_eq!(expired.status, StatusCode::BAD_REQUEST);
    assert!(expired.body.contains("expired"), "{}", expired.body);
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn refusing_the_terms_of_service_opens_no_session() {
    // Given a user at the confirm-login page
    let world = world().await;
    let token = world.access_token(None).await;
    let fresh = world.confirm_email(&token, "owner@example.org").await;
    let page = world.login_page(&fresh).await;

    // When the form is sent without ticking the Terms of Service
    let refused = world
        .complete_login(&fresh, &[("csrf_token", &page.csrf()), ("full_name", "Ada Owner")])
        .await;

    // Then it is refused and no session exists
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused
            .body
            .contains("You must accept the Terms of Service to proceed."),
        "{}",
        refused.body
    );
    assert!(refused.set_cookie.is_none());
    let page = world.login_page(&fresh).await;
    assert!(page.body.contains("tos_consent"), "the consent was not recorded");
}

#[tokio::test]
async fn a_forged_csrf_token_is_refused_and_changes_nothing() {
    // Given a user's login page
    let world = world().await;
    let token = world.access_token(None).await;
    let form = world.login_page(&token).await;

    // When a form is posted with a made-up CSRF token, or with none
    let forged = world
        .request_confirmation(&token, "owner@example.org", "forged-token", "203.0.113.7")
        .await;
    let missing = world
        .post(
            REQUEST_CONFIRMATION_ROUTE,
            &format!("/remote-billing-login/{token}/confirm"),
            &[("token", &token)],
            &[("email", "owner@example.org")],
            None,
            "203.0.113.7",
        )
        .await;

    // Then both are refused and no mail is sent; the page's own token still works
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(world.mails().is_empty());
    let genuine = world
        .request_confirmation(&token, "owner@example.org", &form.csrf(), "203.0.113.7")
        .await;
    assert_eq!(genuine.status, StatusCode::OK);
}

#[tokio::test]
async fn a_csrf_token_of_another_access_token_is_refused() {
    // Given the CSRF token of one link's page
    let world = world().await;
    let first = world.access_token(None).await;
    let second = world.access_token(None).await;
    let csrf_of_first = world.login_page(&first).await.csrf();

    // When it is posted with the other link
    let refused = world
        .request_confirmation(&second, "owner@example.org", &csrf_of_first, "203.0.113.7")
        .await;

    // Then it is refused
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(world.mails().is_empty());
}

#[tokio::test]
async fn confirmation_mails_are_rate_limited_per_client_ip() {
    // Given a limit of two mails an hour per address
    let world = world_with_limits(2, 20).await;
    let token = world.access_token(None).await;
    let csrf = world.login_page(&token).await.csrf();

    // When a third is asked for from the same address
    for _ in 0..2 {
        let sent = world
            .request_confirmation(&token, "owner@example.org", &csrf, "198.51.100.1")
            .await;
        assert_eq!(sent.status, StatusCode::OK);
    }
    let third = world
        .request_confirmation(&token, "owner@example.org", &csrf, "198.51.100.1")
        .await;

    // Then it is refused with a 429 page, another address still gets one, and an hour later
    // the first address does too
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(third.body.contains("Too many confirmation emails"), "{}", third.body);
    assert_eq!(world.mails().len(), 2);
    let elsewhere = world
        .request_confirmation(&token, "owner@example.org", &csrf, "198.51.100.2")
        .await;
    assert_eq!(elsewhere.status, StatusCode::OK);
    world.clock.advance(Duration::hours(1));
    let later = world
        .request_confirmation(&token, "owner@example.org", &csrf, "198.51.100.1")
        .await;
    assert_eq!(later.status, StatusCode::OK);
}

#[tokio::test]
async fn confirmation_mails_are_rate_limited_per_server() {
    // Given a limit of three mails an hour per server
    let world = world_with_limits(100, 3).await;
    let token = world.access_token(None).await;
    let csrf = world.login_page(&token).await.csrf();

    // When a fourth is asked for, from a fourth address
    let mut statuses = Vec::new();
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"] {
        statuses.push(
            world
                .request_confirmation(&token, "owner@example.org", &csrf, ip)
                .await
                .status,
        );
    }

    // Then it is refused
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(world.mails().len(), 3);
}

#[tokio::test]
async fn links_of_a_deactivated_server_show_the_deactivated_page() {
    // Given a link handed out before its server was deactivated
    let world = world().await;
    let token = world.access_token(None).await;
    let (session, _) = world.deactivate_through_the_contact().await;
    assert!(!session.is_empty());

    // When it is opened
    let page = world.login_page(&token).await;

    // Then the page says the server is deactivated
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("deactivated"), "{}", page.body);
}

#[tokio::test]
async fn the_realm_page_without_a_session_sends_the_user_back_to_the_server() {
    // Given a registered realm and a user with a session for another realm
    let world = world().await;
    let (session, _) = world.log_in(None).await;
    let other_realm = World {
        realm: Uuid::new_v4(),
        ..world
    };
    other_realm.access_token(None).await;

    // When its billing page is asked for without a session, or with the other realm's
    let without = other_realm.realm_page(other_realm.realm, "billing", None).await;
    let foreign = other_realm
        .realm_page(other_realm.realm, "billing", Some(&session))
        .await;

    // Then both are sent back to the server
    for answer in [without, foreign] {
        assert_eq!(answer.status, StatusCode::FOUND);
        assert_eq!(
            answer.location.as_deref(),
            Some("https://chat.example.org/self-hosted-billing/")
        );
    }
}

#[tokio::test]
async fn an_unknown_realm_page_is_not_found() {
    let world = world().await;
    let (session, _) = world.log_in(None).await;
    let page = world.realm_page(Uuid::new_v4(), "billing", Some(&session)).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let unknown_page = world.realm_page(world.realm, "invoices", Some(&session)).await;
    assert_eq!(unknown_page.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_session_ends_after_two_hours() {
    // Given a session
    let world = world().await;
    let (session, _) = world.log_in(None).await;
    assert_eq!(
        world.realm_page(world.realm, "billing", Some(&session)).await.status,
        StatusCode::OK
    );

    // When two hours pass
    world.clock.advance(Duration::hours(2));

    // Then the page sends the user back to the server
    let page = world.realm_page(world.realm, "billing", Some(&session)).await;
    assert_eq!(page.status, StatusCode::FOUND);
}

#[tokio::test]
async fn a_form_post_that_is_not_form_encoded_is_refused() {
    let world = world().await;
    let token = world.access_token(None).await;
    let event = ApiEvent::sample("apigw-remote-billing-confirm.json")
        .route(
            REQUEST_CONFIRMATION_ROUTE,
            &format!("/remote-billing-login/{token}/confirm"),
            &[("token", &token)],
        )
        .header("content-type", "application/json")
        .body(&json!({"email": "owner@example.org"}));
    let answer = Answer::from(world.pages.handle(event.build()).await);
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(world.mails().is_empty());
}

impl World {
    /// The server's contact logs in through a deactivation link; returns the session and the
    /// deactivation page.
    async fn contact_session(&self) -> (String, Answer) {
        let sent_to = self
            .fixture
            .remote
            .send_deactivation_link(self.server.uuid, self.clock.now())
            .await
            .unwrap();
        assert_eq!(sent_to, "admin@example.org");
        let mail = self.mails().into_iter().rev().find(|m| m.to == sent_to).unwrap();
        let start = mail
            .text
            .find("https://billing.example.com/remote-billing-login/")
            .unwrap();
        let link = mail.text[start..].split_whitespace().next().unwrap();
        let token = token_of(link);
        let fresh = self.confirm_email(&token, "admin@example.org").await;
        let page = self.login_page(&fresh).await;
        let done = self
            .complete_login(
                &fresh,
                &[
                    ("csrf_token", &page.csrf()),
                    ("full_name", "Server Admin"),
                    ("tos_consent", "on"),
                ],
            )
            .await;
        assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
        let location = done.location.clone().unwrap();
        assert_eq!(location, format!("/server/{}/deactivate/", self.server.uuid));
        let server = self.server.uuid.to_string();
        let session = done.session();
        let page = self
            .get(
                SERVER_PAGE_ROUTE,
                &location,
                &[("server_uuid", &server), ("page", "deactivate")],
                Some(&session),
            )
            .await;
        (session, page)
    }

    async fn post_deactivation(&self, session: &str, form: &[(&str, &str)]) -> Answer {
        let server = self.server.uuid.to_string();
        self.post(
            SERVER_FORM_ROUTE,
            &format!("/server/{server}/deactivate/"),
            &[("server_uuid", &server), ("page", "deactivate")],
            form,
            Some(session),
            "203.0.113.7",
        )
        .await
    }

    async fn deactivate_through_the_contact(&self) -> (String, Answer) {
        let (session, page) = self.contact_session().await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let done = self
            .post_deactivation(&session, &[("csrf_token", &page.csrf()), ("confirmed", "true")])
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        (session, done)
    }
}

#[tokio::test]
async fn the_contact_deactivates_the_server_through_the_mailed_link() {
    // Given a server whose realms are all on the free plan
    let world = world().await;
    world.access_token(None).await;

    // When its contact follows the deactivation link and confirms
    let (_, done) = world.deactivate_through_the_contact().await;

    // Then the server is deactivated and can no longer authenticate
    assert!(done.body.contains("has been deactivated"), "{}", done.body);
    let refused = world
        .fixture
        .remote
        .authenticate(Some(&basic(world.server.uuid, SERVER_KEY)), world.clock.now())
        .await;
    assert!(
        matches!(refused, Err(billing::remote::RemoteError::ServerDeactivated)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn deactivation_is_refused_while_a_realm_has_a_paid_plan() {
    // Given a server with a realm on a paid plan
    let world = world().await;
    world.access_token(None).await;
    world.set_realm_plan(RealmPlan::Business).await;

    // When its contact posts the deactivation form
    let (session, page) = world.contact_session().await;
    assert!(page.body.contains("paid plans"), "{}", page.body);
    // (the page shows no form; a hand-made post carries the session's genuine CSRF token)
    let secret = session.trim_start_matches("billing_session=");
    let csrf = world.fixture.remote.sealer.csrf_token(secret);
    let refused = world
        .post_deactivation(&session, &[("csrf_token", &csrf), ("confirmed", "true")])
        .await;

    // Then it is refused with 409 and the server still works
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(
        world
            .fixture
            .remote
            .authenticate(Some(&basic(world.server.uuid, SERVER_KEY)), world.clock.now())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn deactivation_needs_the_box_ticked_and_the_pages_csrf_token() {
    let world = world().await;
    let (session, page) = world.contact_session().await;
    let unticked = world.post_deactivation(&session, &[("csrf_token", &page.csrf())]).await;
    assert_eq!(unticked.status, StatusCode::BAD_REQUEST);
    let forged = world
        .post_deactivation(&session, &[("csrf_token", "forged"), ("confirmed", "true")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let without_session = world
        .post(
            SERVER_FORM_ROUTE,
            &format!("/server/{}/deactivate/", world.server.uuid),
            &[("server_uuid", &world.server.uuid.to_string()), ("page", "deactivate")],
            &[("csrf_token", &page.csrf()), ("confirmed", "true")],
            None,
            "203.0.113.7",
        )
        .await;
    assert_eq!(without_session.status, StatusCode::FOUND);
    assert!(
        world
            .fixture
            .remote
            .authenticate(Some(&basic(world.server.uuid, SERVER_KEY)), world.clock.now())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_realm_user_session_cannot_open_the_server_deactivation_page() {
    let world = world().await;
    let (session, _) = world.log_in(None).await;
    let server = world.server.uuid.to_string();
    let page = world
        .get(
            SERVER_PAGE_ROUTE,
            &format!("/server/{server}/deactivate/"),
            &[("server_uuid", &server), ("page", "deactivate")],
            Some(&session),
        )
        .await;
    assert_eq!(page.status, StatusCode::FOUND);
}

#[tokio::test]
async fn a_deactivation_login_mails_only_the_servers_contact_whatever_address_is_posted() {
    // Given the deactivation link mailed to the server's contact, in other hands
    let world = world().await;
    world
        .fixture
        .remote
        .send_deactivation_link(world.server.uuid, world.clock.now())
        .await
        .unwrap();
    let mail = world.mails().pop().unwrap();
    let start = mail
        .text
        .find("https://billing.example.com/remote-billing-login/")
        .unwrap();
    let token = token_of(mail.text[start..].split_whitespace().next().unwrap());
    let form = world.login_page(&token).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);

    // When the holder asks for the confirmation to go to their own address
    let sent = world
        .request_confirmation(&token, "attacker@evil.example", &form.csrf(), "203.0.113.9")
        .await;

    // Then the confirmation goes to the contact, and never to the posted address
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let mails = world.mails();
    assert!(mails.iter().all(|m| m.to != "attacker@evil.example"), "{mails:?}");
    assert_eq!(mails.last().unwrap().to, "admin@example.org");
    assert!(mails.last().unwrap().text.contains("/remote-billing-login/do_confirm/"));
}

#[tokio::test]
async fn the_confirmation_rate_limit_page_says_when_to_come_back() {
    // Given an address that used up its confirmation mails for the hour
    let world = world_with_limits(1, 20).await;
    let token = world.access_token(None).await;
    let form = world.login_page(&token).await;
    let first = world
        .request_confirmation(&token, "owner@example.org", &form.csrf(), "203.0.113.7")
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    // When it asks for another
    let event = ApiEvent::sample("apigw-remote-billing-confirm.json")
        .route(
            REQUEST_CONFIRMATION_ROUTE,
            &format!("/remote-billing-login/{token}/confirm"),
            &[("token", &token)],
        )
        .form(&[("csrf_token", &form.csrf()), ("email", "owner@example.org")])
        .source_ip("203.0.113.7");
    let response = world.pages.handle(event.build()).await;
    // Then the 429 page carries Retry-After
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn the_server_page_sends_a_visitor_without_a_session_back_over_the_servers_own_scheme() {
    // Given a server reached over plain http (its billing links say so)
    let world = world().await;
    let request: BillingLinkRequest = serde_json::from_value(json!({
        "user": {"uuid": world.user, "email": "owner@example.org", "full_name": "Ada Owner"},
        "realm": {"uuid": world.realm, "host": "chat.example.org", "name": "Example Org"},
        "uri_scheme": "http://",
    }))
    .unwrap();
    world
        .fixture
        .remote
        .billing_link(&world.server, request, world.clock.now())
        .await
        .unwrap();
    // When someone without a session opens its deactivation page
    let server = world.server.uuid.to_string();
    let page = world
        .get(
            SERVER_PAGE_ROUTE,
            &format!("/server/{server}/deactivate/"),
            &[("server_uuid", &server), ("page", "deactivate")],
            None,
        )
        .await;
    // Then they are sent back to the server over http, not a hard-coded https
    assert_eq!(page.status, StatusCode::FOUND);
    assert_eq!(
        page.location.as_deref(),
        Some("http://chat.example.org/self-hosted-billing/")
    );
}

#[tokio::test]
async fn a_server_with_thousands_of_realms_keeps_a_small_record_and_is_deactivated() {
    // Given a server that registered 3,000 realms, all on the free plan
    let world = world_on(RemoteFixture::in_memory(5, 20)).await;
    for n in 0..3_000 {
        let request: BillingLinkRequest = serde_json::from_value(json!({
            "user": {"uuid": Uuid::new_v4(), "email": "owner@example.org", "full_name": "Ada Owner"},
            "realm": {"uuid": Uuid::new_v4(), "host": format!("org-{n}.chat.example.org"), "name": format!("Org {n}")},
            "uri_scheme": "https://",
        }))
        .unwrap();
        world
            .fixture
            .remote
            .billing_link(&world.server, request, world.clock.now())
            .await
            .unwrap();
    }
    // Then the server's own record did not grow with them, and its realms are one collection
    let server_record = world
        .fixture
        .store
        .get_document(
            &billing::remote::records::server_key(world.server.uuid),
            world.clock.now(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(server_record.body.to_string().len() < 1_000, "{}", server_record.body);
    let realms = world
        .fixture
        .remote
        .records
        .realms_of(world.server.uuid, world.clock.now())
        .await
        .unwrap();
    assert_eq!(realms.len(), 3_000);
    // When its contact deactivates it
    let (_, done) = world.deactivate_through_the_contact().await;
    // Then it is deactivated
    assert!(done.body.contains("deactivated"), "{}", done.body);
}

/// The embedded store, refusing every write of a billing user while `failing` is set (a store
/// failing between two writes).
struct FailingUserWrites {
    inner: Arc<dyn DocumentStore>,
    failing: std::sync::atomic::AtomicBool,
}

impl FailingUserWrites {
    fn refuses(&self, key: &str) -> bool {
        key.starts_with("billing_user#") && self.failing.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl DocumentStore for FailingUserWrites {
    async fn get_document(
        &self,
        key: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<billing::store::Document>, billing::store::StoreError> {
        self.inner.get_document(key, now).await
    }

    async fn put_document(
        &self,
        key: &str,
        body: &serde_json::Value,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        expected: Option<u64>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, billing::store::StoreError> {
        if self.refuses(key) {
            return Err(billing::store::StoreError::unavailable("the store failed"));
        }
        self.inner.put_document(key, body, expires_at, expected, now).await
    }

    async fn put_documents(
        &self,
        writes: &[billing::store::DocumentWrite<'_>],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), billing::store::StoreError> {
        if writes.iter().any(|w| self.refuses(w.key)) {
            return Err(billing::store::StoreError::unavailable("the store failed"));
        }
        self.inner.put_documents(writes, now).await
    }

    async fn list_documents(
        &self,
        collection: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(String, billing::store::Document)>, billing::store::StoreError> {
        self.inner.list_documents(collection, now).await
    }

    async fn list_documents_range(
        &self,
        collection: &str,
        after: Option<&str>,
        through: &str,
        limit: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(String, billing::store::Document)>, billing::store::StoreError> {
        self.inner
            .list_documents_range(collection, after, through, limit, now)
            .await
    }
}

#[tokio::test]
async fn a_confirmation_that_fails_to_create_the_billing_user_leaves_the_link_usable() {
    // Given a store that fails when the billing user is written
    let store = billing_testing::embedded_store();
    let failing = Arc::new(FailingUserWrites {
        inner: store.clone(),
        failing: std::sync::atomic::AtomicBool::new(false),
    });
    let outbox = billing_testing::outbox();
    let fixture = RemoteFixture {
        remote: billing_testing::remote_billing_on(failing.clone(), outbox.clone(), 5, 20),
        outbox,
        store,
    };
    let world = world_on(fixture).await;
    let token = world.access_token(None).await;
    let form = world.login_page(&token).await;
    let sent = world
        .request_confirmation(&token, "owner@example.org", &form.csrf(), "203.0.113.7")
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let key = world.confirmation_key("owner@example.org");
    failing.failing.store(true, std::sync::atomic::Ordering::SeqCst);

    // When the link is followed while the store fails
    let failed = world.follow_confirmation(&key).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE, "{}", failed.body);

    // Then the link was not used up: followed again once the store is back, it logs in
    failing.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let confirmed = world.follow_confirmation(&key).await;
    assert_eq!(confirmed.status, StatusCode::FOUND, "{}", confirmed.body);
}

// The plan pages: `plans/`, `upgrade/` and `billing/` of a realm and of a server. Stripe is the
// in-memory `FakeBilling` here; the same flows run against the sandbox over HTTP in
// `tests/self_hosted_plans.rs`.

impl World {
    /// The server reports `users` users of the world's realm now.
    async fn upload_users(&self, id: u64, users: u32) {
        let upload: billing::remote::usage::Upload = serde_json::from_value(json!({
            "realms": [{"uuid": self.realm, "host": "chat.example.org", "name": "Example Org"}],
            "realm_audit_logs": [{"id": id, "realm": self.realm, "event_type": 101,
                "event_time": self.clock.now().timestamp(),
                "extra_data": {"10": {"11": {"100": 1, "400": users - 1}}}}],
        }))
        .unwrap();
        self.fixture
            .remote
            .record_upload(&self.server, &upload, self.clock.now())
            .await
            .unwrap();
    }

    async fn plan_page(&self, page: &str, session: Option<&str>) -> Answer {
        let realm = self.realm.to_string();
        self.get(
            REALM_PAGE_ROUTE,
            &format!("/realm/{realm}/{page}/"),
            &[("realm_uuid", &realm), ("page", page)],
            session,
        )
        .await
    }

    async fn plan_form(&self, page: &str, session: &str, form: &[(&str, &str)]) -> Answer {
        let realm = self.realm.to_string();
        self.post(
            REALM_FORM_ROUTE,
            &format!("/realm/{realm}/{page}/"),
            &[("realm_uuid", &realm), ("page", page)],
            form,
            Some(session),
            "198.51.100.7",
        )
        .await
    }

    /// Upgrades through Checkout: the form, then the completed session as the webhook reports
    /// it (the fake Checkout URL carries the session's reference after `#`).
    async fn buy(&self, session: &str, form: &[(&str, &str)]) {
        let page = self.plan_page("upgrade", Some(session)).await;
        let mut fields = vec![("csrf_token", page.csrf())];
        fields.extend(form.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = self.plan_form("upgrade", session, &fields).await;
        assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
        let checkout = answer.location.unwrap();
        let reference = checkout.split('#').nth(1).expect("the fake Checkout URL's reference");
        let view = self
            .fixture
            .remote
            .billing_view(billing::plans::Entity::Realm(self.realm), self.clock.now())
            .await
            .unwrap();
        let customer = view.customer.stripe_customer.unwrap();
        self.pages
            .purchases
            .checkout_completed(reference, &customer, "seti_fake", self.clock.now())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn plan_pages_without_a_session_send_the_user_back_to_the_server() {
    // Given a realm known to billing
    let world = world().await;
    world.log_in(None).await;
    for page in ["plans", "upgrade", "billing"] {
        // When its plan page is opened without a session
        let answer = world.plan_page(page, None).await;
        // Then the browser goes back to the server to log in
        assert_eq!(answer.status, StatusCode::FOUND, "{page}: {}", answer.body);
        assert_eq!(
            answer.location.as_deref(),
            Some("https://chat.example.org/self-hosted-billing/")
        );
    }
}

#[tokio::test]
async fn an_upgrade_goes_through_checkout_and_the_billing_page_shows_the_plan_and_card() {
    // Given a logged-in owner of a realm of 6 users
    let world = world().await;
    let (session, _) = world.log_in(None).await;
    world.upload_users(1, 6).await;
    let plans = world.plan_page("plans", Some(&session)).await;
    assert!(plans.body.contains("$3.50/month"), "{}", plans.body);
    // When the owner buys basic with automatic licenses and Checkout completes
    world
        .buy(
            &session,
            &[
                ("tier", "basic"),
                ("schedule", "monthly"),
                ("license_management", "automatic"),
            ],
        )
        .await;
    // Then the billing page shows the plan for 6 licenses and the saved card
    let billing = world.plan_page("billing", Some(&session)).await;
    assert_eq!(billing.status, StatusCode::OK);
    for expected in [
        r#"<td id="plan-tier">Basic</td>"#,
        r#"<td id="plan-licenses">6</td>"#,
        "Card ending in 4242",
        r#"id="cancel-plan""#,
    ] {
        assert!(billing.body.contains(expected), "{expected} in {}", billing.body);
    }
    // And a second upgrade is refused with a conflict, inline
    let upgrade = world.plan_page("upgrade", Some(&session)).await;
    assert!(upgrade.body.contains(r#"id="has-plan""#), "{}", upgrade.body);
    let again = world
        .plan_form(
            "upgrade",
            &session,
            &[
                ("csrf_token", &billing.csrf()),
                ("tier", "business"),
                ("schedule", "monthly"),
                ("license_management", "automatic"),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert!(again.body.contains(r#"role="alert""#), "{}", again.body);
}

#[tokio::test]
async fn a_manual_plan_raises_licenses_within_the_period_and_moves_the_next_renewal_above_the_users() {
    // Given a manual basic plan of 10 licenses for a realm of 6 users
    let world = world().await;
    let (session, _) = world.log_in(None).await;
    world.upload_users(1, 6).await;
    world
        .buy(
            &session,
            &[
                ("tier", "basic"),
                ("schedule", "monthly"),
                ("license_management", "manual"),
                ("licenses", "10"),
            ],
        )
        .await;
    let page = world.plan_page("billing", Some(&session)).await;
    assert!(page.body.contains(r#"<td id="plan-licenses">10</td>"#), "{}", page.body);
    let csrf = page.csrf();
    // When the owner raises this period's licenses to 12
    let raised = world
        .plan_form(
            "billing",
            &session,
            &[("csrf_token", &csrf), ("action", "licenses"), ("licenses", "12")],
        )
        .await;
    // Then they are 12 now and at the next renewal
    assert_eq!(raised.status, StatusCode::OK, "{}", raised.body);
    assert!(
        raised.body.contains(r#"<td id="plan-licenses">12</td>"#),
        "{}",
        raised.body
    );
    assert!(
        raised.body.contains(r#"<td id="plan-next-licenses">12</td>"#),
        "{}",
        raised.body
    );
    // When the owner tries to lower them within the period, then it is refused inline
    let lowered = world
        .plan_form(
            "billing",
            &session,
            &[("csrf_token", &csrf), ("action", "licenses"), ("licenses", "11")],
        )
        .await;
    assert_eq!(lowered.status, StatusCode::BAD_REQUEST, "{}", lowered.body);
    assert!(
        lowered
            .body
            .contains("You cannot decrease the licenses in the current billing period.")
    );
    assert!(lowered.body.contains(r#"role="alert""#));
    // When the next renewal is set below the users, then it is refused; above them it moves
    let too_low = world
        .plan_form(
            "billing",
            &session,
            &[
                ("csrf_token", &csrf),
                ("action", "licenses_at_next_renewal"),
                ("licenses_at_next_renewal", "5"),
            ],
        )
        .await;
    assert_eq!(too_low.status, StatusCode::BAD_REQUEST, "{}", too_low.body);
    assert!(too_low.body.contains("(minimum 6)"), "{}", too_low.body);
    let moved = world
        .plan_form(
            "billing",
            &session,
            &[
                ("csrf_token", &csrf),
                ("action", "licenses_at_next_renewal"),
                ("licenses_at_next_renewal", "7"),
            ],
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert!(
        moved.body.contains(r#"<td id="plan-licenses">12</td>"#),
        "{}",
        moved.body
    );
    assert!(
        moved.body.contains(r#"<td id="plan-next-licenses">7</td>"#),
        "{}",
        moved.body
    );
}

#[tokio::test]
async fn plan_forms_with_a_forged_csrf_token_or_an_unknown_action_change_nothing() {
    // Given a logged-in owner of a realm of 6 users
    let world = world().await;
    let (session, _) = world.log_in(None).await;
    world.upload_users(1, 6).await;
    // When the upgrade form comes with a forged token
    let forged = world
        .plan_form(
            "upgrade",
            &session,
            &[
                ("csrf_token", "forged"),
                ("tier", "basic"),
                ("schedule", "monthly"),
                ("license_management", "automatic"),
            ],
        )
        .await;
    // Then it is refused and no Stripe customer was made
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    let view = world
        .fixture
        .remote
        .billing_view(billing::plans::Entity::Realm(world.realm), world.clock.now())
        .await
        .unwrap();
    assert_eq!(view.customer.stripe_customer, None);
    // And a billing form with an unknown action or no plan is refused inline (the session's
    // token is the same on every page)
    let page = world.plan_page("upgrade", Some(&session)).await;
    let unknown = world
        .plan_form(
            "billing",
            &session,
            &[("csrf_token", &page.csrf()), ("action", "refund")],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    let cancel = world
        .plan_form(
            "billing",
            &session,
            &[("csrf_token", &page.csrf()), ("action", "cancel")],
        )
        .await;
    assert_eq!(cancel.status, StatusCode::BAD_REQUEST, "{}", cancel.body);
    assert!(cancel.body.contains("this organization has no plan"), "{}", cancel.body);
}

#[tokio::test]
async fn the_servers_contact_opens_the_servers_plan_pages_and_a_realm_session_cannot() {
    // Given the server's contact logged in through the deactivation link, and a realm owner
    let world = world().await;
    let (contact, _) = world.contact_session().await;
    let (owner, _) = world.log_in(None).await;
    let server = world.server.uuid.to_string();
    // When the contact opens the server's plans page, then it is the server's
    let plans = world
        .get(
            SERVER_PAGE_ROUTE,
            &format!("/server/{server}/plans/"),
            &[("server_uuid", &server), ("page", "plans")],
            Some(&contact),
        )
        .await;
    assert_eq!(plans.status, StatusCode::OK, "{}", plans.body);
    assert!(
        plans.body.contains(&format!("Plans for {}", world.server.hostname)),
        "{}",
        plans.body
    );
    assert!(
        plans.body.contains(&format!(r#"href="/server/{server}/upgrade/""#)),
        "{}",
        plans.body
    );
    // And the realm owner's session is sent back to the server
    let refused = world
        .get(
            SERVER_PAGE_ROUTE,
            &format!("/server/{server}/billing/"),
            &[("server_uuid", &server), ("page", "billing")],
            Some(&owner),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FOUND, "{}", refused.body);
}

#[tokio::test]
async fn deactivation_is_refused_while_the_server_has_a_renewing_plan_and_allowed_once_it_is_cancelled() {
    // Given a server on its own basic plan
    let world = world().await;
    let documents = world.fixture.remote.records.documents().clone();
    let server = billing::plans::Entity::Server(world.server.uuid);
    billing_testing::store_automatic_basic_plan(documents.as_ref(), server, 6, None, world.clock.now()).await;
    // When its contact opens the deactivation page and posts it
    let (session, page) = world.contact_session().await;
    assert!(page.body.contains(r#"id="server-paid-plan""#), "{}", page.body);
    let secret = session.trim_start_matches("billing_session=");
    let csrf = world.fixture.remote.sealer.csrf_token(secret);
    let refused = world
        .post_deactivation(&session, &[("csrf_token", &csrf), ("confirmed", "true")])
        .await;
    // Then it is refused
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    // When the plan is cancelled at the end of its period, then the server can be deactivated
    world.pages.purchases.cancel(server, world.clock.now()).await.unwrap();
    let done = world
        .post_deactivation(&session, &[("csrf_token", &csrf), ("confirmed", "true")])
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
}

#[tokio::test]
async fn on_a_legacy_plan_the_owner_schedules_an_upgrade_and_can_cancel_it_from_the_billing_page() {
    // Given a realm of 6 users on a legacy plan for 60 more days
    let world = world().await;
    let (session, _) = world.log_in(None).await;
    world.upload_users(1, 6).await;
    let realm = billing::plans::Entity::Realm(world.realm);
    world
        .fixture
        .remote
        .start_legacy_plan(
            realm,
            world.clock.now() + chrono::Duration::days(60),
            "admin:test",
            world.clock.now(),
        )
        .await
        .unwrap();
    let upgrade = world.plan_page("upgrade", Some(&session)).await;
    assert!(upgrade.body.contains(r#"id="legacy-notice""#), "{}", upgrade.body);
    assert!(upgrade.body.contains("Schedule upgrade"), "{}", upgrade.body);
    // When the owner schedules basic with 8 manual licenses through Checkout
    world
        .buy(
            &session,
            &[
                ("tier", "basic"),
                ("schedule", "monthly"),
                ("license_management", "manual"),
                ("licenses", "8"),
            ],
        )
        .await;
    // Then the billing page shows the legacy plan and the scheduled one, nothing charged
    let billing = world.plan_page("billing", Some(&session)).await;
    assert!(billing.body.contains(r#"id="scheduled-plan""#), "{}", billing.body);
    assert!(billing.body.contains("8 licenses, $3.50 a license"), "{}", billing.body);
    // When the owner cancels the scheduled upgrade
    let cancelled = world
        .plan_form(
            "billing",
            &session,
            &[("csrf_token", &billing.csrf()), ("action", "undo")],
        )
        .await;
    // Then the legacy plan goes on alone
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert!(!cancelled.body.contains(r#"id="scheduled-plan""#), "{}", cancelled.body);
    assert!(cancelled.body.contains("Complimentary until"), "{}", cancelled.body);
    let view = world
        .fixture
        .remote
        .billing_view(realm, world.clock.now())
        .await
        .unwrap();
    assert!(view.next_plan.is_none());
}
