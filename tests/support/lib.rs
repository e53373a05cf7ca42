//! What the end-to-end tests share: the local services they start and the checks they need.
//!
//! Tests that need moto fail, with instructions, when `AWS_ENDPOINT_URL` is not set (`make test`
//! starts moto and sets it); the Stripe sandbox and the local server are started in-process.

use std::time::Duration;

use billing_adapters::RetryPolicy;
use billing_adapters::StripeBilling;
use stripe_sandbox::{PriceSpec, RunningSandbox};

pub const TEST_KEY: &str = "sk_test_bundle_tests";

/// The prices of the product's plans, as the local server offers them.
pub fn plan_prices() -> Vec<PriceSpec> {
    devserver::sandbox_prices()
}

pub async fn start_sandbox() -> RunningSandbox {
    stripe_sandbox::start(0, &plan_prices())
        .await
        .expect("starting the Stripe sandbox")
}

/// Retries quick enough for tests, with the same shape as production's.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        attempt_timeout: Duration::from_secs(3),
        first_backoff: Duration::from_millis(20),
    }
}

pub fn billing_for(sandbox: &RunningSandbox) -> StripeBilling {
    StripeBilling::new(TEST_KEY, Some(&sandbox.base_url()), fast_retries()).expect("a Stripe client")
}

/// A plain HTTP GET of the sandbox's API, as a person checking on it would make.
pub use billing_testing::stripe_get;

pub use billing_testing::moto_endpoint;

/// The local server in `--aws` mode (DynamoDB in moto, on a fresh table) with the Stripe
/// sandbox in-process, both on free ports.
pub async fn start_server_against_moto() -> devserver::RunningServer {
    start_server_against_moto_with(&[]).await
}

/// [`start_server_against_moto`] with more environment (`SIGNUP_QUEUE_URL`, ...).
pub async fn start_server_against_moto_with(extra: &[(&str, &str)]) -> devserver::RunningServer {
    moto_endpoint();
    let options = devserver::Options {
        port: 0,
        stripe_port: 0,
        aws: true,
        data_dir: std::env::temp_dir(),
    };
    let env: std::collections::HashMap<String, String> = [
        (
            "BILLING_TABLE".to_owned(),
            format!("billing-e2e-{}", uuid::Uuid::new_v4().simple()),
        ),
        ("DEV_JWT_SECRET".to_owned(), "end-to-end secret".to_owned()),
        ("CORS_ALLOWED_ORIGINS".to_owned(), "https://app.example.com".to_owned()),
    ]
    .into_iter()
    .chain(extra.iter().map(|(name, value)| (name.to_string(), value.to_string())))
    .collect();
    devserver::start(&options, &env)
        .await
        .expect("starting the local server")
}

/// A client of the local server, calling as one principal.
pub struct Caller {
    pub base: String,
    pub token: Option<String>,
    client: reqwest::Client,
}

impl Caller {
    pub fn new(server: &devserver::RunningServer, token: Option<String>) -> Self {
        Caller {
            base: format!("http://{}", server.address),
            token,
            client: reqwest::Client::new(),
        }
    }

    pub fn admin(server: &devserver::RunningServer) -> Self {
        let token = server.keys.mint(
            uuid::Uuid::new_v4(),
            "subscriptions subscriptions_admin",
            chrono::Duration::hours(1),
        );
        Caller::new(server, Some(token))
    }

    pub fn user(server: &devserver::RunningServer, user: uuid::Uuid) -> Self {
        Caller::new(
            server,
            Some(server.keys.mint(user, "subscriptions", chrono::Duration::hours(1))),
        )
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends and returns the status and the JSON body (`null` when there is none).
    pub async fn send(&self, builder: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = builder.send().await.expect("the local server answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    pub async fn create(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::POST, "/subscriptions").json(&body))
            .await
    }

    pub async fn get(&self, id: uuid::Uuid) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::GET, &format!("/subscriptions/{id}")))
            .await
    }

    pub async fn patch(&self, id: uuid::Uuid, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(
            self.request(reqwest::Method::PATCH, &format!("/subscriptions/{id}"))
                .json(&body),
        )
        .await
    }
}

/// Every customer the sandbox holds, through its paginated list.
pub async fn all_stripe_customers(sandbox: &RunningSandbox) -> Vec<serde_json::Value> {
    let mut customers = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(id) => format!("/v1/customers?limit=100&starting_after={id}"),
            None => "/v1/customers?limit=100".to_owned(),
        };
        let page = stripe_get(sandbox, &query).await;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        after = data.last().and_then(|c| c["id"].as_str()).map(str::to_owned);
        customers.extend(data);
        if page["has_more"] != true {
            return customers;
        }
    }
}

/// A form POST to the sandbox's API, as the Stripe dashboard or another client would change
/// things behind the service's back.
pub async fn stripe_post(sandbox: &RunningSandbox, path: &str, form: &[(&str, &str)]) -> serde_json::Value {
    let url = format!("{}{}", sandbox.base_url(), path.trim_start_matches('/'));
    let body: String = form
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k.replace('[', "%5B").replace(']', "%5D"),
                v.replace('@', "%40")
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(TEST_KEY)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    assert!(response.status().is_success(), "POST {url}: {}", response.status());
    response.json().await.expect("a JSON body")
}

/// Waits until every event the local server's sandbox made was delivered to its webhook and
/// answered 200. Deliveries are sent one at a time, each a DynamoDB transaction in moto, which
/// is slow when several tests share it and two cores: the wait is long, the usual case quick.
pub async fn all_delivered(server: &devserver::RunningServer) {
    let sandbox = &server.sandbox.as_ref().expect("the in-process sandbox").sandbox;
    eventually(120, "webhook deliveries", || async {
        let delivered: std::collections::HashSet<serde_json::Value> = sandbox
            .deliveries()
            .iter()
            .filter(|d| d["status"] == 200)
            .map(|d| d["event_id"].clone())
            .collect();
        sandbox.events().iter().all(|e| delivered.contains(&e["id"]))
    })
    .await;
}

/// Polls `check` until it holds or `seconds` pass; panics with `what` then.
pub async fn eventually<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The mails moto's SES has accepted for `address`, oldest first (`subject`, `body`, ...).
pub async fn ses_mails_to(address: &str) -> Vec<serde_json::Value> {
    let sent: serde_json::Value = reqwest::get(format!("{}/moto-api/data.json", moto_endpoint()))
        .await
        .expect("moto's state")
        .json()
        .await
        .expect("moto's state as JSON");
    sent["ses"]["Message"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|m| m["destinations"]["ToAddresses"][0] == address)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// A self-hosted server as the remote-billing API knows it.
pub struct RemoteServerCredentials {
    pub uuid: uuid::Uuid,
    pub key: String,
}

impl RemoteServerCredentials {
    /// `Authorization: Basic ...` of the server.
    pub fn basic(&self) -> String {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.uuid, self.key))
        )
    }
}

/// Registers a new server with the local server's remote-billing API.
pub async fn register_remote_server(base: &str, contact_email: &str) -> RemoteServerCredentials {
    let server = RemoteServerCredentials {
        uuid: uuid::Uuid::new_v4(),
        key: format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
    };
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/remotes/server/register"))
        .json(&serde_json::json!({
            "server_uuid": server.uuid,
            "server_key": server.key,
            "hostname": "chat.example.org",
            "contact_email": contact_email,
        }))
        .send()
        .await
        .expect("registering a server");
    assert_eq!(response.status().as_u16(), 201, "{:?}", response.text().await);
    server
}

/// The billing access link the server gets for one of its users and realms.
pub async fn billing_access_url(
    base: &str,
    server: &RemoteServerCredentials,
    realm: uuid::Uuid,
    user: uuid::Uuid,
    email: &str,
) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/remotes/server/billing"))
        .header("authorization", server.basic())
        .json(&serde_json::json!({
            "user": {"uuid": user, "email": email, "full_name": "Ada Owner"},
            "realm": {"uuid": realm, "host": "chat.example.org", "name": "Example Org"},
            "uri_scheme": "https://",
        }))
        .send()
        .await
        .expect("asking for a billing link");
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    body["billing_access_url"].as_str().expect("a link").to_owned()
}

/// The confirmation link in the last confirmation mail moto's SES accepted for `address`.
pub async fn confirmation_link_for(address: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let link = ses_mails_to(address).await.last().and_then(|mail| {
            let body = mail["body"].as_str()?;
            let start = body.find("http")?;
            body[start..]
                .split_whitespace()
                .next()
                .filter(|l| l.contains("/remote-billing-login/do_confirm/"))
                .map(str::to_owned)
        });
        if let Some(link) = link {
            return link;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no confirmation mail to {address}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A browser without JavaScript: follows nothing by itself, keeps the session cookie.
pub struct Browser {
    /// Where the local server listens, `http://127.0.0.1:port`.
    pub base: String,
    client: reqwest::Client,
    /// The session cookie, `name=value`, once the server set one.
    pub cookie: Option<String>,
}

/// A page as the browser received it.
pub struct Page {
    /// Its status.
    pub status: reqwest::StatusCode,
    /// Its HTML.
    pub body: String,
    /// Where it redirects.
    pub location: Option<String>,
}

impl Page {
    /// The form's CSRF token.
    pub fn csrf(&self) -> String {
        billing_testing::csrf_field(&self.body)
    }
}

impl Browser {
    /// A browser with no cookie yet.
    pub fn new(base: &str) -> Self {
        Browser {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    fn url(&self, link: &str) -> String {
        if link.starts_with("http") {
            link.to_owned()
        } else {
            format!("{}{link}", self.base)
        }
    }

    async fn answer(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        };
        let response = request.send().await.unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            let set = set.to_str().unwrap();
            assert!(
                set.contains("HttpOnly") && set.contains("Secure") && set.contains("SameSite=Lax"),
                "{set}"
            );
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
        Page {
            status: response.status(),
            location: response
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: response.text().await.unwrap(),
        }
    }

    /// Opens a link (absolute, or a path on the server).
    pub async fn get(&mut self, link: &str) -> Page {
        let request = self.client.get(self.url(link));
        self.answer(request).await
    }

    /// Submits a form to `action`.
    pub async fn submit(&mut self, action: &str, fields: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let request = self
            .client
            .post(self.url(action))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.answer(request).await
    }
}

/// The path (and query) of a link.
pub fn path_of(link: &str) -> String {
    let after_scheme = link.split_once("://").map_or(link, |(_, rest)| rest);
    after_scheme[after_scheme.find('/').unwrap()..].to_owned()
}

/// What a first login through the emailed confirmation went through, page by page.
pub struct FirstLogin {
    /// The email form the access link opened.
    pub form: Page,
    /// The confirmation link of the mail SES sent.
    pub confirmation: String,
    /// The login page the confirmation redirected to (a fresh token).
    pub login: String,
    /// The answer to the confirm-login form, Terms of Service accepted.
    pub done: Page,
}

/// A first login: opens `link`, asks for the confirmation mail to `email`, follows the link of
/// the mail SES sent, and accepts the Terms of Service. Checks each step's status on the way.
pub async fn first_login(browser: &mut Browser, link: &str, email: &str) -> FirstLogin {
    let form = browser.get(link).await;
    assert_eq!(form.status, reqwest::StatusCode::OK, "{}", form.body);
    let sent = browser
        .submit(
            &format!("{}/confirm", path_of(link)),
            &[("csrf_token", &form.csrf()), ("email", email)],
        )
        .await;
    assert_eq!(sent.status, reqwest::StatusCode::OK, "{}", sent.body);
    assert!(sent.body.contains("Check your email"));
    let confirmation = confirmation_link_for(email).await;
    let confirmed = browser.get(&confirmation).await;
    assert_eq!(confirmed.status, reqwest::StatusCode::FOUND, "{}", confirmed.body);
    let login = confirmed.location.unwrap();
    let page = browser.get(&login).await;
    assert_eq!(page.status, reqwest::StatusCode::OK);
    assert!(page.body.contains("tos_consent"), "{}", page.body);
    let done = browser
        .submit(
            &login,
            &[
                ("csrf_token", &page.csrf()),
                ("full_name", "Ada Owner"),
                ("tos_consent", "true"),
            ],
        )
        .await;
    FirstLogin {
        form,
        confirmation,
        login,
        done,
    }
}
