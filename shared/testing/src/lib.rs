//! Fixtures shared by the tests and benches of the functions (a dev-dependency only): the
//! standard plan catalog with local price ids, throwaway stores and outboxes, clocks, API
//! Gateway events from the samples in `events/` with the caller, path and body a test needs, and
//! the benches' timings, and an in-memory recorder of the service's metrics.

#![warn(missing_docs)]

mod fake_billing;
pub mod faults;
pub mod metrics;

pub use fake_billing::{FakeBilling, FakeInvoice};
pub use faults::{FaultyDocuments, WriteFault};
pub use metrics::Counts;
pub use stripe_sandbox::RunningSandbox;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use billing::clock::{Clock, SharedClock};
use billing::remote::{Records, RemoteBilling, RemoteSettings, TokenSealer};
use billing::subscription::PlanCatalog;
use billing_adapters::{EmbeddedStore, OutboxMailer, RetryPolicy, StripeBilling};
use chrono::{DateTime, Duration, Utc};
use lambda_http::Request;
use serde_json::Value;
use stripe_sandbox::PriceSpec;
use uuid::Uuid;

/// The product's plans priced `price_<plan>`, as the local server configures them.
pub fn catalog() -> PlanCatalog {
    PlanCatalog::standard(|id| Ok::<_, ()>(format!("price_{id}"))).expect("infallible")
}

/// An embedded store in a temporary directory that lives as long as the process.
pub fn embedded_store() -> Arc<EmbeddedStore> {
    let dir = std::env::temp_dir().join(format!("billing-test-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    Arc::new(EmbeddedStore::open(dir.join("billing.redb")).expect("an embedded store"))
}

/// An embedded store in memory, for measuring handlers rather than the disk.
pub fn in_memory_store() -> Arc<EmbeddedStore> {
    Arc::new(EmbeddedStore::in_memory().expect("an in-memory embedded store"))
}

/// The value of the `csrf_token` field of the form in a page, as a browser would post it back.
pub fn csrf_field(html: &str) -> String {
    let marker = r#"name="csrf_token" value=""#;
    let start = html.find(marker).unwrap_or_else(|| panic!("no CSRF field in {html}")) + marker.len();
    html[start..].split('"').next().unwrap_or_default().to_owned()
}

/// Latencies of one measurement, for the benches' tables.
#[derive(Clone, Debug, Default)]
pub struct Timings(Vec<std::time::Duration>);

impl Timings {
    /// Adds one measurement.
    pub fn push(&mut self, elapsed: std::time::Duration) {
        self.0.push(elapsed);
    }

    /// The `p`-quantile (0.5 for the median) in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }

    /// The median, in milliseconds.
    pub fn p50(&self) -> f64 {
        self.percentile_ms(0.5)
    }

    /// The 99th percentile, in milliseconds.
    pub fn p99(&self) -> f64 {
        self.percentile_ms(0.99)
    }

    /// A markdown table of measurements, each `(what, timings, baseline)`: p50, p99 and p50 as a
    /// ratio to its baseline's (a baseline row is its own baseline, ratio 1.0).
    pub fn table(rows: &[(&str, &Timings, &Timings)]) -> String {
        let mut table = String::from("| measurement | p50 | p99 | p50 ratio to its baseline |\n|---|---|---|---|\n");
        for (what, timings, baseline) in rows {
            table.push_str(&timings.row(what, baseline));
            table.push('\n');
        }
        table
    }

    /// A markdown row: what, p50, p99, and p50 as a ratio to `baseline`'s.
    pub fn row(&self, what: &str, baseline: &Timings) -> String {
        format!(
            "| {what} | {:.3} ms | {:.3} ms | {:.1} |",
            self.p50(),
            self.p99(),
            self.p50() / baseline.p50()
        )
    }
}

/// `runs` raw `GetItem` round trips to the store's table, one per run over `ids` in turn: the
/// benches' baseline for DynamoDB (or moto), what a read costs before any of the bundle's code.
pub async fn raw_get_item_round_trips(store: &billing_adapters::DynamoStore, ids: &[Uuid], runs: usize) -> Timings {
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut timings = Timings::default();
    for run in 0..runs {
        let started = std::time::Instant::now();
        store
            .client()
            .get_item()
            .table_name(store.table())
            .key(
                "pk",
                AttributeValue::S(format!("SUBSCRIPTION#{}", ids[run % ids.len()])),
            )
            .key("sk", AttributeValue::S("STATE".into()))
            .send()
            .await
            .expect("a GetItem round trip");
        timings.push(started.elapsed());
    }
    timings
}

/// `runs` reads of the stored record `key`: the benches' baseline for the remote-billing pages,
/// what a record read costs before any of the bundle's code.
pub async fn record_reads(documents: &dyn billing::store::DocumentStore, key: &str, runs: usize) -> Timings {
    let mut timings = Timings::default();
    for _ in 0..runs {
        let started = std::time::Instant::now();
        documents
            .get_document(key, Utc::now())
            .await
            .expect("a record read")
            .expect("a stored record");
        timings.push(started.elapsed());
    }
    timings
}

/// The local moto endpoint (`AWS_ENDPOINT_URL`, which `make test` exports). Panics with
/// instructions when it is not set, and when it is not on this machine: tests create and write
/// tables there. A test that needs moto fails without it; it never skips.
pub fn moto_endpoint() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!(
            "AWS_ENDPOINT_URL is not set: this test needs the moto server. Run `make test`, which installs and \
             starts it (or run only the service-free tests with `cargo test --lib`)."
        )
    });
    let local = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|prefix| endpoint.starts_with(prefix));
    assert!(
        local,
        "AWS_ENDPOINT_URL={endpoint} is not a local emulator, and these tests create and write tables"
    );
    endpoint
}

/// A DynamoDB store on a fresh table of its own in moto.
pub async fn moto_store(prefix: &str) -> billing_adapters::DynamoStore {
    moto_endpoint();
    let table = format!("{prefix}-{}", Uuid::new_v4().simple());
    let store = billing_adapters::DynamoStore::connect(table).await;
    store.ensure_table().await.expect("creating a table in moto");
    store
}

/// Retries for tests: the same attempts as in production, a short backoff.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        attempt_timeout: std::time::Duration::from_secs(3),
        first_backoff: std::time::Duration::from_millis(10),
    }
}

/// The Stripe sandbox on a free loopback port, offering every plan of [`catalog`] as its name
/// says (`unit_amount` a month; business at twice that; annual plans yearly at ten months),
/// and a Stripe client on it with `retry`.
pub async fn sandbox_billing(unit_amount: i64, retry: RetryPolicy) -> (RunningSandbox, Arc<StripeBilling>) {
    let prices: Vec<_> = catalog()
        .plans()
        .iter()
        .map(|plan| {
            let monthly = if plan.id.starts_with("business") {
                2 * unit_amount
            } else {
                unit_amount
            };
            if plan.id.ends_with("_annual") {
                PriceSpec::recurring(&plan.stripe_price, 10 * monthly, "year")
            } else {
                PriceSpec::recurring(&plan.stripe_price, monthly, "month")
            }
        })
        .collect();
    let sandbox = stripe_sandbox::start(0, &prices)
        .await
        .expect("the Stripe sandbox starts");
    let billing = StripeBilling::new("sk_test_fixture", Some(&sandbox.base_url()), retry).expect("a Stripe client");
    (sandbox, Arc::new(billing))
}

/// A subscriber provisioned as administrators and signups provision them: a Stripe customer
/// (paying with `stripe_source` when given) and a Stripe subscription on `plan`; as stored.
pub async fn provision_subscriber(
    store: &dyn billing::store::Store,
    stripe: &dyn billing::stripe::Billing,
    plan: &str,
    stripe_source: Option<&str>,
) -> billing::subscription::Subscription {
    let mut fields = serde_json::json!({"user_id": Uuid::new_v4(), "email": "ada@example.com"});
    if plan != "pending" {
        fields["plan"] = Value::from(plan);
    }
    if let Some(source) = stripe_source {
        fields["stripe_source"] = Value::from(source);
    }
    let change =
        billing::subscription::SubscriptionChange::from_json(fields.to_string().as_bytes()).expect("a valid create");
    let catalog = catalog();
    let request = billing::provisioning::Provision {
        change: &change,
        plan: catalog.get(plan).expect("a plan of the catalog"),
        trial_start: None,
        actor: "system:test",
        now: Utc::now(),
    };
    billing::provisioning::provision(store, stripe, request)
        .await
        .expect("provisioned")
}

/// `GET` of a path of the Stripe sandbox's API (`/v1/...`), as JSON; panics unless it answers 2xx.
pub async fn stripe_get(sandbox: &RunningSandbox, path_and_query: &str) -> Value {
    let url = format!("{}{}", sandbox.base_url(), path_and_query.trim_start_matches('/'));
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth("sk_test_billing_testing")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(response.status().is_success(), "GET {url}: {}", response.status());
    response.json().await.expect("a JSON body")
}

/// Completes a setup Checkout Session's page of the sandbox with `payment_method`, as a
/// customer's browser does; the session's SetupIntent (`seti_...`), as Stripe's
/// `checkout.session.completed` names it.
pub async fn complete_checkout(sandbox: &RunningSandbox, url: &str, payment_method: &str) -> String {
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("payment_method={payment_method}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    assert_eq!(response.status().as_u16(), 303, "POST {url}");
    let session = url.rsplit('/').next().expect("a session id");
    let held = stripe_get(sandbox, &format!("/v1/checkout/sessions/{session}")).await;
    held["setup_intent"]
        .as_str()
        .expect("a completed session's SetupIntent")
        .to_owned()
}

/// A subscription created from `fields` (a create's JSON: `user_id`, `email`, Stripe ids...) on
/// `pending`, stored with the audit record of its creation; as stored.
pub async fn store_pending_subscription(
    store: &dyn billing::store::Store,
    fields: Value,
) -> billing::subscription::Subscription {
    let change =
        billing::subscription::SubscriptionChange::from_json(fields.to_string().as_bytes()).expect("a valid create");
    let subscription = change
        .new_subscription(
            catalog().get("pending").expect("the pending plan"),
            Utc::now(),
            Utc::now(),
        )
        .expect("a new subscription");
    store
        .create_subscription(
            &subscription,
            &billing::store::AuditEntry::between(None, &subscription, "system:test", "create"),
        )
        .await
        .expect("stored");
    subscription
}

/// A subscription as an administrator would create it for a new user, not yet in Stripe
/// unless `stripe` names its customer and subscription.
pub fn new_subscription(stripe: Option<(&str, &str)>) -> billing::subscription::Subscription {
    let mut body = serde_json::json!({"user_id": Uuid::new_v4(), "email": "bench@example.com"});
    if let Some((customer, subscription)) = stripe {
        body["stripe_customer"] = Value::from(customer);
        body["stripe_subscription"] = Value::from(subscription);
    }
    let change =
        billing::subscription::SubscriptionChange::from_json(body.to_string().as_bytes()).expect("a valid change");
    let catalog = catalog();
    change
        .new_subscription(
            catalog.get("pending").expect("the pending plan"),
            Utc::now(),
            Utc::now(),
        )
        .expect("a new subscription")
}

/// A clock tests move forward: the real time plus an offset.
#[derive(Clone, Default)]
pub struct TestClock {
    offset_seconds: Arc<AtomicI64>,
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::seconds(self.offset_seconds.load(Ordering::SeqCst))
    }
}

impl TestClock {
    /// This clock, to be shared with the code under test; it moves when this one is advanced.
    pub fn clock(&self) -> SharedClock {
        Arc::new(self.clone())
    }

    /// The current time of this clock.
    pub fn now(&self) -> DateTime<Utc> {
        Clock::now(self)
    }

    /// Moves this clock (and every copy) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_seconds.fetch_add(by.num_seconds(), Ordering::SeqCst);
    }
}

/// Remote billing on a throwaway embedded store, mailing into a file outbox, with links under
/// `https://billing.example.com`.
pub struct RemoteFixture {
    /// The service.
    pub remote: RemoteBilling,
    /// Where its mail goes.
    pub outbox: Arc<OutboxMailer>,
    /// Where its records live.
    pub store: Arc<EmbeddedStore>,
}

impl RemoteFixture {
    /// A fixture with these mail limits.
    pub fn new(mails_per_ip_hour: u32, mails_per_server_hour: u32) -> Self {
        let store = embedded_store();
        let outbox = outbox();
        let remote = remote_billing_on(store.clone(), outbox.clone(), mails_per_ip_hour, mails_per_server_hour);
        RemoteFixture { remote, outbox, store }
    }

    /// A fixture on an in-memory store, for tests that write thousands of records.
    pub fn in_memory(mails_per_ip_hour: u32, mails_per_server_hour: u32) -> Self {
        let store = in_memory_store();
        let outbox = outbox();
        let remote = remote_billing_on(store.clone(), outbox.clone(), mails_per_ip_hour, mails_per_server_hour);
        RemoteFixture { remote, outbox, store }
    }
}

/// A file outbox in a temporary directory.
pub fn outbox() -> Arc<OutboxMailer> {
    let dir = std::env::temp_dir().join(format!("billing-outbox-{}", Uuid::new_v4().simple()));
    Arc::new(OutboxMailer::new(dir).expect("an outbox directory"))
}

/// Remote billing keeping its records in `documents` and mailing into `outbox`, with links
/// under `https://billing.example.com`.
pub fn remote_billing_on(
    documents: Arc<dyn billing::store::DocumentStore>,
    outbox: Arc<OutboxMailer>,
    mails_per_ip_hour: u32,
    mails_per_server_hour: u32,
) -> RemoteBilling {
    RemoteBilling {
        records: Records::new(documents),
        sealer: Arc::new(TokenSealer::new(&[42u8; 32])),
        mailer: outbox,
        settings: RemoteSettings {
            public_base_url: "https://billing.example.com".into(),
            mails_per_ip_hour,
            mails_per_server_hour,
            registrations_per_ip_hour: 10,
        },
    }
}

/// An API Gateway v2 event from `events/<name>`, to be adjusted before use.
pub struct ApiEvent(Value);

impl ApiEvent {
    /// The sample `events/<name>`.
    pub fn sample(name: &str) -> Self {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        ApiEvent(serde_json::from_str(&text).expect("a JSON event"))
    }

    /// The caller: `sub` and space-separated scopes, as the JWT authorizer passes them.
    pub fn caller(mut self, user: Uuid, scope: &str) -> Self {
        self.0["requestContext"]["authorizer"] =
            serde_json::json!({"jwt": {"claims": {"sub": user.to_string(), "scope": scope}, "scopes": null}});
        self
    }

    /// No caller: no authorizer claims.
    pub fn anonymous(mut self) -> Self {
        if let Some(context) = self.0["requestContext"].as_object_mut() {
            context.remove("authorizer");
        }
        self
    }

    /// `/subscriptions/{id}` with this id.
    pub fn path_id(mut self, id: &str) -> Self {
        self.0["pathParameters"]["id"] = Value::from(id);
        let path = format!("/subscriptions/{id}");
        self.0["rawPath"] = Value::from(path.as_str());
        self.0["requestContext"]["http"]["path"] = Value::from(path);
        self
    }

    /// This JSON body.
    pub fn body(mut self, body: &Value) -> Self {
        self.0["body"] = Value::from(body.to_string());
        self
    }

    /// Another route of the API: its key, the concrete path and the path parameters.
    pub fn route(mut self, route_key: &str, path: &str, parameters: &[(&str, &str)]) -> Self {
        let method = route_key.split(' ').next().unwrap_or("GET");
        self.0["routeKey"] = Value::from(route_key);
        self.0["requestContext"]["routeKey"] = Value::from(route_key);
        self.0["requestContext"]["http"]["method"] = Value::from(method);
        self.0["rawPath"] = Value::from(path);
        self.0["requestContext"]["http"]["path"] = Value::from(path);
        let parameters: serde_json::Map<String, Value> = parameters
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        self.0["pathParameters"] = Value::Object(parameters);
        self
    }

    /// The query string, as API Gateway passes it (raw and parsed).
    pub fn query(mut self, parameters: &[(&str, &str)]) -> Self {
        let raw = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(parameters)
            .finish();
        self.0["rawQueryString"] = Value::from(raw);
        self.0["queryStringParameters"] = Value::Object(
            parameters
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect(),
        );
        self
    }

    /// A form post's body (`application/x-www-form-urlencoded`), fields percent-encoded.
    pub fn form(mut self, fields: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.0["headers"]["content-type"] = Value::from("application/x-www-form-urlencoded");
        self.0["body"] = Value::from(body);
        self
    }

    /// Cookies as API Gateway passes them (`name=value` each).
    pub fn cookies(mut self, cookies: &[&str]) -> Self {
        self.0["cookies"] = Value::from(cookies.iter().map(|c| Value::from(*c)).collect::<Vec<_>>());
        self
    }

    /// The client's address as API Gateway reports it.
    pub fn source_ip(mut self, ip: &str) -> Self {
        self.0["requestContext"]["http"]["sourceIp"] = Value::from(ip);
        self
    }

    /// A header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0["headers"][name] = Value::from(value);
        self
    }

    /// The domain name the request came to (API Gateway's request context).
    pub fn domain_name(mut self, name: &str) -> Self {
        self.0["requestContext"]["domainName"] = Value::from(name);
        self
    }

    /// API Gateway's request id.
    pub fn request_id(mut self, id: &str) -> Self {
        self.0["requestContext"]["requestId"] = Value::from(id);
        self
    }

    /// The request, as lambda_http reads the event.
    pub fn build(self) -> Request {
        lambda_http::request::from_str(&self.0.to_string()).expect("a valid API Gateway event")
    }
}

/// An entity's `basic` monthly plan bought at `now` for `billed_count` users, licenses following
/// the users, as the upgrade page stores it (the customer's Stripe id set when given). Returns
/// the book stored.
pub async fn store_automatic_basic_plan(
    documents: &dyn billing::store::DocumentStore,
    entity: billing::plans::Entity,
    billed_count: u32,
    stripe_customer: Option<String>,
    now: DateTime<Utc>,
) -> billing::plans::Book {
    use billing::plans::{self, LicenseManagement, Schedule, Tier, UpgradeContext, UpgradeRequest};
    let stored = plans::stored::load(documents, entity, now)
        .await
        .expect("the plans read");
    let mut book = stored.book.clone();
    if stripe_customer.is_some() {
        book.customer.stripe_customer = stripe_customer;
    }
    let request = UpgradeRequest {
        tier: Tier::Basic,
        schedule: Schedule::Monthly,
        license_management: LicenseManagement::Automatic,
        licenses: None,
    };
    let context = UpgradeContext {
        billed_count,
        trial_days: 0,
        prices: plans::Prices::default(),
        now,
        plan_id: uuid::Uuid::new_v4(),
    };
    let (bought, changes) = plans::upgrade(&book, &request, &context).expect("a basic plan for sale");
    plans::stored::save(documents, &stored, &bought, &changes, now)
        .await
        .expect("the plan stored");
    bought
}

/// Records that `server` uploaded its usage at `at` (its upload marker), as the upload route
/// does: what lets a due plan of the server (or of its realms) be invoiced.
pub async fn mark_uploaded(documents: &dyn billing::store::DocumentStore, server: Uuid, at: DateTime<Utc>) {
    use billing::remote::usage::{UploadMarker, usage_collection};
    let key = billing::store::member_key(&usage_collection(server), "marker");
    let marker = serde_json::to_value(UploadMarker {
        last_audit_log_id: Some(1),
        last_upload_at: Some(at),
    })
    .expect("a marker serializes");
    let version = documents
        .get_document(&key, at)
        .await
        .expect("the marker reads")
        .map(|d| d.version);
    documents
        .put_document(&key, &marker, None, version, at)
        .await
        .expect("the marker stored");
}

/// A server on a basic plan of `users` licenses bought at `start`, paying by card (its
/// customer and card made through `billing`), that uploaded on its due date a month later:
/// due for its renewal. Returns it and the due date.
pub async fn due_paying_server(
    documents: &dyn billing::store::DocumentStore,
    billing: &dyn billing::stripe::Billing,
    users: u32,
    start: DateTime<Utc>,
) -> (billing::plans::Entity, DateTime<Utc>) {
    let server = Uuid::new_v4();
    let entity = billing::plans::Entity::Server(server);
    let customer = billing
        .create_customer(server, "billing@example.org", &format!("{server}:customer"))
        .await
        .expect("a customer");
    billing
        .attach_default_payment_method(&customer.id, "pm_card_visa", &format!("{server}:card"))
        .await
        .expect("a card");
    store_automatic_basic_plan(documents, entity, users, Some(customer.id), start).await;
    let due = start + Duration::days(31);
    mark_uploaded(documents, server, due).await;
    (entity, due)
}
