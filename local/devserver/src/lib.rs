//! The whole bundle on one machine: every function in one process behind a local stand-in
//! for API Gateway, with the embedded store by default or the AWS adapters (`--aws`, for moto
//! or a real account).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::Method;
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment, optional};
use billing::mail::Mailer;
use billing::remote::{Records, RemoteBilling, RemoteSettings, TokenSealer};
use billing::store::{DocumentStore, Store, StoreError};
use billing::stripe::{Billing, BillingError};
use billing::subscription::PlanCatalog;
use billing_adapters::DynamoStore;
use billing_adapters::EmbeddedStore;
use billing_adapters::OutboxMailer;
use billing_adapters::RetryPolicy;
use billing_adapters::SesMailer;
use billing_adapters::StripeBilling;
use billing_http::Cors;
use create_subscription::CreateSubscription;
use get_subscription::GetSubscription;
use invoice_plans::InvoicePlans;
use patch_subscription::PatchSubscription;
use remote_billing_pages::RemoteBillingPages;
use remote_billing_server::RemoteServerApi;
use signup_listener::SignupListener;
use signups::SignupQueue;
use stripe_eventbridge::StripeEventBridge;
use stripe_events::StripeEvents;
use stripe_sandbox::RunningSandbox;
use stripe_webhook::StripeWebhook;
use subscription_lifecycle::SubscriptionLifecycle;
use tokio::net::TcpListener;

pub mod gateway;
pub mod invoicing;
pub mod signups;
pub mod tokens;

use gateway::{Handler, Route};
use tokens::TokenKeys;

/// Command-line options of the local server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub port: u16,
    pub data_dir: PathBuf,
    pub stripe_port: u16,
    /// Use DynamoDB (and the other AWS services) through the standard AWS settings.
    pub aws: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 3000,
            data_dir: PathBuf::from(".data"),
            stripe_port: 12111,
            aws: false,
        }
    }
}

pub const USAGE: &str = "usage: devserver [--port N] [--data-dir DIR] [--stripe-port N] [--aws]";

impl Options {
    /// Reads the command line (without the program's name); the error is the message to print.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut help = false;
        let parsed = Options::parse_with_lexopt(args, &mut help);
        match parsed {
            _ if help => Err(USAGE.to_owned()),
            Ok(options) => Ok(options),
            Err(error) => Err(format!("{error}\n{USAGE}")),
        }
    }

    fn parse_with_lexopt(args: impl IntoIterator<Item = String>, help: &mut bool) -> Result<Options, lexopt::Error> {
        use lexopt::prelude::*;
        let mut options = Options::default();
        let mut parser = lexopt::Parser::from_args(args);
        while let Some(arg) = parser.next()? {
            match arg {
                Long("port") => options.port = parser.value()?.parse()?,
                Long("stripe-port") => options.stripe_port = parser.value()?.parse()?,
                Long("data-dir") => options.data_dir = PathBuf::from(parser.value()?),
                Long("aws") => options.aws = true,
                Short('h') | Long("help") => *help = true,
                other => return Err(other.unexpected()),
            }
        }
        Ok(options)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the store could not be opened: {0}")]
    Store(#[from] StoreError),
    #[error("the Stripe client could not be built: {0}")]
    Billing(#[from] BillingError),
    #[error("could not listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("the signup queue is unavailable: {0}")]
    Queue(String),
}

/// The key the local server's Stripe client uses with the in-process sandbox.
pub const SANDBOX_KEY: &str = "sk_test_devserver";

/// A started server: where it listens, the secret its tokens are signed with, and the
/// in-process Stripe sandbox when it runs one.
pub struct RunningServer {
    pub address: SocketAddr,
    pub keys: TokenKeys,
    pub sandbox: Option<RunningSandbox>,
    pub store: Arc<dyn Store>,
    /// Remote billing as the functions see it (its records, token key and mailer).
    pub remote: RemoteBilling,
    pub signups: SignupQueue,
    /// The secret the webhook endpoint checks Stripe's signatures with.
    pub webhook_secret: String,
    pub task: tokio::task::JoinHandle<()>,
}

/// Opens the store the options ask for: a redb file under the data directory, or the
/// DynamoDB table `BILLING_TABLE` (created when missing, from the same definition as the
/// template). The same backend serves subscriptions and remote-billing documents.
pub async fn open_store(
    options: &Options,
    env: &dyn Environment,
) -> Result<(Arc<dyn Store>, Arc<dyn DocumentStore>), StartError> {
    if options.aws {
        let table = billing::config::billing_table(env)?;
        let store = Arc::new(DynamoStore::connect(table).await);
        store.ensure_table().await?;
        Ok((store.clone(), store))
    } else {
        std::fs::create_dir_all(&options.data_dir)?;
        let store = Arc::new(EmbeddedStore::open(options.data_dir.join("billing.redb"))?);
        Ok((store.clone(), store))
    }
}

/// Remote billing for the local server: `BILLING_TOKEN_KEY` when set, else a fresh key (links
/// then stop working when the server restarts); links point at `PUBLIC_BASE_URL`, else at the
/// server itself.
pub fn open_remote(
    env: &dyn Environment,
    documents: Arc<dyn DocumentStore>,
    mailer: Arc<dyn Mailer>,
    address: SocketAddr,
) -> Result<RemoteBilling, StartError> {
    let sealer = if optional(env, "BILLING_TOKEN_KEY").is_some() {
        TokenSealer::from_env(env)?
    } else {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        TokenSealer::new(&key)
    };
    let base = optional(env, "PUBLIC_BASE_URL").unwrap_or_else(|| format!("http://{address}"));
    let local = LocalEnvironment {
        env,
        public_base_url: base,
    };
    Ok(RemoteBilling {
        records: Records::new(documents),
        sealer: Arc::new(sealer),
        mailer,
        settings: RemoteSettings::from_env(&local)?,
    })
}

/// The environment with `PUBLIC_BASE_URL` defaulted to the local server.
struct LocalEnvironment<'a> {
    env: &'a dyn Environment,
    public_base_url: String,
}

impl Environment for LocalEnvironment<'_> {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "PUBLIC_BASE_URL" => Some(self.public_base_url.clone()),
            _ => self.env.var(name),
        }
    }
}

/// Stripe for the local server: the real API (or `STRIPE_API_BASE`) when `STRIPE_SECRET_KEY`
/// is set, with prices from `STRIPE_PRICE_*`; otherwise the sandbox in-process on
/// `--stripe-port`, offering one price per plan.
pub async fn open_billing(
    options: &Options,
    env: &dyn Environment,
) -> Result<(Arc<dyn Billing>, PlanCatalog, Option<RunningSandbox>), StartError> {
    if optional(env, "STRIPE_SECRET_KEY").is_some() {
        let billing = StripeBilling::from_env(env)?;
        return Ok((Arc::new(billing), billing::config::plan_catalog(env)?, None));
    }
    let prices = sandbox_prices();
    let sandbox = stripe_sandbox::start(options.stripe_port, &prices).await?;
    let billing = StripeBilling::new(SANDBOX_KEY, Some(&sandbox.base_url()), RetryPolicy::default())?;
    let catalog = PlanCatalog::standard(|plan| Ok::<_, ConfigError>(format!("price_{plan}")))?
        .with_cloud_trial_days(billing::config::cloud_free_trial_days(env)?);
    Ok((Arc::new(billing), catalog, Some(sandbox)))
}

/// What the functions of the bundle share in one process.
pub struct Bundle {
    pub store: Arc<dyn Store>,
    pub billing: Arc<dyn Billing>,
    pub catalog: PlanCatalog,
    pub cors: Cors,
    pub mailer: Arc<dyn Mailer>,
    pub webhook_secret: String,
    pub remote: RemoteBilling,
    /// The origins a customer-portal session may return to.
    pub return_origins: Vec<String>,
    /// What time it is, for every function.
    pub clock: SharedClock,
    /// Self-hosted purchases (the pages and the webhook).
    pub purchases: billing::plans::purchase::Purchases,
    /// Where Stripe's Checkout pages are (the sandbox's own, locally).
    pub checkout_origin: String,
}

impl Bundle {
    /// Where the functions keep answers for clients' `Idempotency-Key`s.
    pub fn idempotency(&self) -> billing_http::idempotent::Idempotency {
        billing_http::idempotent::Idempotency {
            documents: self.purchases.documents.clone(),
            clock: self.clock.clone(),
        }
    }
}

/// The local server's clock: real time plus an offset that `POST /_local/clock` sets, so a
/// test can try what happens "a month later". Every function reads time through it.
#[derive(Clone, Debug, Default)]
pub struct LocalClock {
    offset_seconds: Arc<std::sync::atomic::AtomicI64>,
}

impl LocalClock {
    /// Sets the clock to real time + `seconds`.
    pub fn set_offset(&self, seconds: i64) {
        self.offset_seconds.store(seconds, std::sync::atomic::Ordering::SeqCst);
    }

    /// How far the clock is from real time.
    pub fn offset(&self) -> i64 {
        self.offset_seconds.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl billing::clock::Clock for LocalClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::seconds(self.offset())
    }
}

/// Wraps a function's `handle` as a gateway handler.
macro_rules! function_handler {
    ($function:expr) => {{
        let function = $function;
        gateway::handler(move |request| {
            let function = function.clone();
            async move { function.handle(request).await }
        })
    }};
}

/// The routes of `template.yaml`, each bound to its function.
pub fn routes(bundle: &Bundle) -> Vec<Route> {
    let get = function_handler!(Arc::new(
        GetSubscription {
            store: bundle.store.clone(),
            cors: bundle.cors.clone()
        }
        .declared()
    ));
    let create = function_handler!(Arc::new(
        CreateSubscription {
            store: bundle.store.clone(),
            billing: bundle.billing.clone(),
            catalog: bundle.catalog.clone(),
            cors: bundle.cors.clone(),
            clock: bundle.clock.clone(),
            idempotency: bundle.idempotency(),
        }
        .declared()
    ));
    let patch = function_handler!(Arc::new(
        PatchSubscription {
            store: bundle.store.clone(),
            billing: bundle.billing.clone(),
            catalog: bundle.catalog.clone(),
            cors: bundle.cors.clone(),
            clock: bundle.clock.clone(),
            idempotency: bundle.idempotency(),
        }
        .declared()
    ));
    let webhook = function_handler!(Arc::new(
        StripeWebhook {
            store: bundle.store.clone(),
            mailer: bundle.mailer.clone(),
            catalog: bundle.catalog.clone(),
            secret: bundle.webhook_secret.clone(),
            clock: bundle.clock.clone(),
            purchases: bundle.purchases.clone(),
        }
        .declared()
    ));
    let stripe_events = function_handler!(Arc::new(
        StripeEvents {
            store: bundle.store.clone(),
            mailer: bundle.mailer.clone(),
            billing: bundle.billing.clone(),
            catalog: bundle.catalog.clone(),
            cors: bundle.cors.clone(),
            clock: bundle.clock.clone(),
            idempotency: bundle.idempotency(),
            purchases: bundle.purchases.clone(),
        }
        .declared()
    ));
    let remote_server = function_handler!(Arc::new(
        RemoteServerApi {
            remote: bundle.remote.clone(),
            cors: bundle.cors.clone(),
            clock: bundle.clock.clone(),
        }
        .declared()
    ));
    let lifecycle = function_handler!(Arc::new(
        SubscriptionLifecycle {
            store: bundle.store.clone(),
            billing: bundle.billing.clone(),
            catalog: bundle.catalog.clone(),
            cors: bundle.cors.clone(),
            return_origins: bundle.return_origins.clone(),
            clock: bundle.clock.clone(),
            idempotency: bundle.idempotency(),
        }
        .declared()
    ));
    let remote_pages = function_handler!(Arc::new(
        RemoteBillingPages {
            remote: bundle.remote.clone(),
            purchases: bundle.purchases.clone(),
            checkout_origin: bundle.checkout_origin.clone(),
            clock: bundle.clock.clone(),
        }
        .declared()
    ));
    let route =
        |method: Method, path: &'static str, authorized: bool, function: &'static str, handler: &Handler| Route {
            method,
            path,
            authorized,
            function,
            handler: handler.clone(),
        };
    vec![
        route(
            Method::POST,
            "/subscriptions",
            true,
            "CreateSubscriptionFunction",
            &create,
        ),
        route(
            Method::OPTIONS,
            "/subscriptions",
            false,
            "CreateSubscriptionFunction",
            &create,
        ),
        route(Method::GET, "/subscriptions", true, "GetSubscriptionFunction", &get),
        route(
            Method::GET,
            "/subscriptions/{id}",
            true,
            "GetSubscriptionFunction",
            &get,
        ),
        route(
            Method::DELETE,
            "/subscriptions/{id}",
            true,
            "PatchSubscriptionFunction",
            &patch,
        ),
        route(
            Method::PATCH,
            "/subscriptions/{id}",
            true,
            "PatchSubscriptionFunction",
            &patch,
        ),
        route(
            Method::OPTIONS,
            "/subscriptions/{id}",
            false,
            "GetSubscriptionFunction",
            &get,
        ),
        route(
            Method::GET,
            "/subscriptions/{id}/audit",
            true,
            "GetSubscriptionFunction",
            &get,
        ),
        route(
            Method::OPTIONS,
            "/subscriptions/{id}/audit",
            false,
            "GetSubscriptionFunction",
            &get,
        ),
        route(
            Method::GET,
            "/stripe/events",
            true,
            "StripeEventsFunction",
            &stripe_events,
        ),
        route(
            Method::OPTIONS,
            "/stripe/events",
            false,
            "StripeEventsFunction",
            &stripe_events,
        ),
        route(
            Method::POST,
            "/stripe/events/{event_id}/replay",
            true,
            "StripeEventsFunction",
            &stripe_events,
        ),
        route(
            Method::OPTIONS,
            "/stripe/events/{event_id}/replay",
            false,
            "StripeEventsFunction",
            &stripe_events,
        ),
        route(
            Method::POST,
            "/subscriptions/{id}/reconcile",
            true,
            "StripeEventsFunction",
            &stripe_events,
        ),
        route(
            Method::OPTIONS,
            "/subscriptions/{id}/reconcile",
            false,
            "StripeEventsFunction",
            &stripe_events,
        ),
        route(
            Method::POST,
            "/subscriptions/{id}/setup-intent",
            true,
            "SubscriptionLifecycleFunction",
            &lifecycle,
        ),
        route(
            Method::OPTIONS,
            "/subscriptions/{id}/setup-intent",
            false,
            "SubscriptionLifecycleFunction",
            &lifecycle,
        ),
        route(
            Method::POST,
            "/subscriptions/{id}/portal-session",
            true,
            "SubscriptionLifecycleFunction",
            &lifecycle,
        ),
        route(
            Method::OPTIONS,
            "/subscriptions/{id}/portal-session",
            false,
            "SubscriptionLifecycleFunction",
            &lifecycle,
        ),
        route(
            Method::GET,
            "/subscriptions/{id}/invoices",
            true,
            "SubscriptionLifecycleFunction",
            &lifecycle,
        ),
        route(
            Method::OPTIONS,
            "/subscriptions/{id}/invoices",
            false,
            "SubscriptionLifecycleFunction",
            &lifecycle,
        ),
        route(
            Method::POST,
            "/subscriptions/{id}/preview",
            true,
            "SubscriptionLifecycleFunction",
            &lifecycle,
        ),
        route(
            Method::OPTIONS,
            "/subscriptions/{id}/preview",
            false,
            "SubscriptionLifecycleFunction",
            &lifecycle,
        ),
        route(
            Method::POST,
            "/stripe/webhook",
            false,
            "StripeWebhookFunction",
            &webhook,
        ),
        route(
            Method::POST,
            "/api/v1/remotes/server/register",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/api/v1/remotes/server/register",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::POST,
            "/api/v1/remotes/server/billing",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/api/v1/remotes/server/billing",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::POST,
            "/api/v1/remotes/server/analytics",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/api/v1/remotes/server/analytics",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::GET,
            "/api/v1/remotes/server/analytics/status",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/api/v1/remotes/server/analytics/status",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::POST,
            "/remote-realms/{realm_uuid}/legacy-plan",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-realms/{realm_uuid}/legacy-plan",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::POST,
            "/remote-realms/{realm_uuid}/discount",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-realms/{realm_uuid}/discount",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::POST,
            "/remote-servers/{server_uuid}/legacy-plan",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-servers/{server_uuid}/legacy-plan",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::POST,
            "/remote-servers/{server_uuid}/discount",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-servers/{server_uuid}/discount",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::PUT,
            "/remote-realms/{realm_uuid}/server",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-realms/{realm_uuid}/server",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::POST,
            "/remote-realms/{realm_uuid}/sponsorship",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-realms/{realm_uuid}/sponsorship",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::POST,
            "/remote-servers/{server_uuid}/sponsorship",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-servers/{server_uuid}/sponsorship",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::GET,
            "/remote-realms/{realm_uuid}/billing",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-realms/{realm_uuid}/billing",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::GET,
            "/remote-servers/{server_uuid}/billing",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-servers/{server_uuid}/billing",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::GET,
            "/remote-realms/{realm_uuid}/audit",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-realms/{realm_uuid}/audit",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::GET,
            "/remote-servers/{server_uuid}/audit",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-servers/{server_uuid}/audit",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::POST,
            "/remote-servers/{server_uuid}/deactivation-link",
            true,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::OPTIONS,
            "/remote-servers/{server_uuid}/deactivation-link",
            false,
            "RemoteBillingServerFunction",
            &remote_server,
        ),
        route(
            Method::GET,
            "/remote-billing-login/{token}",
            false,
            "RemoteBillingPagesFunction",
            &remote_pages,
        ),
        route(
            Method::POST,
            "/remote-billing-login/{token}",
            false,
            "RemoteBillingPagesFunction",
            &remote_pages,
        ),
        route(
            Method::POST,
            "/remote-billing-login/{token}/confirm",
            false,
            "RemoteBillingPagesFunction",
            &remote_pages,
        ),
        route(
            Method::GET,
            "/remote-billing-login/do_confirm/{key}",
            false,
            "RemoteBillingPagesFunction",
            &remote_pages,
        ),
        route(
            Method::GET,
            "/realm/{realm_uuid}/{page}",
            false,
            "RemoteBillingPagesFunction",
            &remote_pages,
        ),
        route(
            Method::POST,
            "/realm/{realm_uuid}/{page}",
            false,
            "RemoteBillingPagesFunction",
            &remote_pages,
        ),
        route(
            Method::GET,
            "/server/{server_uuid}/{page}",
            false,
            "RemoteBillingPagesFunction",
            &remote_pages,
        ),
        route(
            Method::POST,
            "/server/{server_uuid}/{page}",
            false,
            "RemoteBillingPagesFunction",
            &remote_pages,
        ),
    ]
}

/// Mail: a file outbox under the data directory, or SES with `--aws` (from `MAIL_FROM`,
/// `billing@example.com` when unset; against a local emulator the sender is verified first,
/// as SES requires).
async fn open_mailer(options: &Options, env: &dyn Environment) -> Result<Arc<dyn Mailer>, StartError> {
    if !options.aws {
        return Ok(Arc::new(OutboxMailer::new(options.data_dir.join("outbox"))?));
    }
    let from = optional(env, "MAIL_FROM").unwrap_or_else(|| "billing@example.com".to_owned());
    let client = aws_sdk_sesv2::Client::new(&billing_adapters::aws::load_sdk_config().await);
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        let _ = client.create_email_identity().email_identity(&from).send().await;
    }
    Ok(Arc::new(SesMailer::new(client, from)))
}

/// The local server's own routes, which have no counterpart in AWS.
fn local_routes(
    signups: SignupQueue,
    clock: LocalClock,
    sandbox: Option<stripe_sandbox::Sandbox>,
    invoicing: Arc<invoicing::LocalInvoicing>,
    eventbridge: Arc<StripeEventBridge>,
) -> Vec<Route> {
    let json = |status: u16, body: serde_json::Value| {
        let mut response = lambda_http::Response::new(lambda_http::Body::Text(body.to_string()));
        *response.status_mut() = lambda_http::http::StatusCode::from_u16(status).unwrap_or_default();
        response.headers_mut().insert(
            lambda_http::http::header::CONTENT_TYPE,
            lambda_http::http::HeaderValue::from_static("application/json"),
        );
        response
    };
    let enqueue = {
        let signups = signups.clone();
        gateway::handler(move |request: lambda_http::Request| {
            let signups = signups.clone();
            async move {
                let body = signups::complete_event(&String::from_utf8_lossy(request.body()));
                match signups.send(body.clone()).await {
                    Ok(id) => json(202, serde_json::json!({"message_id": id, "body": body})),
                    Err(error) => json(503, serde_json::json!({"error": error})),
                }
            }
        })
    };
    let dead_letters = gateway::handler(move |_| {
        let signups = signups.clone();
        async move { json(200, serde_json::json!({"dead_letters": signups.dead_letters()})) }
    });
    // Delivers an EventBridge envelope (`detail` a Stripe event) as the partner bus would.
    let deliver_envelope = gateway::handler(move |request: lambda_http::Request| {
        let eventbridge = eventbridge.clone();
        async move {
            let envelope: serde_json::Value = match serde_json::from_slice(request.body()) {
                Ok(envelope) => envelope,
                Err(error) => {
                    return json(
                        400,
                        serde_json::json!({"errors": [{"slug": "invalid_format",
                            "message": format!("send an EventBridge envelope whose detail is a Stripe event: {error}")}]}),
                    );
                }
            };
            match eventbridge.handle(&envelope).await {
                Ok(answer) => json(200, answer),
                Err(error) => json(503, serde_json::json!({"error": error.to_string()})),
            }
        }
    });
    let health = gateway::handler(|_| async { lambda_http::Response::new(lambda_http::Body::Text("ok".into())) });
    // Runs the daily invoicing now, at `{"at": "<RFC 3339>"}` when given (else the clock's time).
    let invoice_plans = gateway::handler(move |request: lambda_http::Request| {
        let invoicing = invoicing.clone();
        async move {
            let input: serde_json::Value = if request.body().is_empty() {
                serde_json::json!({})
            } else {
                match serde_json::from_slice(request.body()) {
                    Ok(input) => input,
                    Err(error) => {
                        return json(
                            400,
                            serde_json::json!({"errors": [{"slug": "invalid_format",
                                "message": format!("send {{\"at\": \"<RFC 3339 time>\"}} or nothing: {error}")}]}),
                        );
                    }
                }
            };
            match invoicing.run(&input).await {
                Ok(report) => json(200, serde_json::to_value(report).unwrap_or_default()),
                Err(error) => json(503, serde_json::json!({"error": error.to_string()})),
            }
        }
    });
    // Moves this server's clock and its in-process sandbox's together, so the renewals the
    // sandbox makes happen and their webhooks are signed at a time the webhook accepts.
    let set_clock = gateway::handler(move |request: lambda_http::Request| {
        let (clock, sandbox) = (clock.clone(), sandbox.clone());
        async move {
            let input: serde_json::Value = serde_json::from_slice(request.body()).unwrap_or_default();
            let Some(offset) = input["offset_seconds"].as_i64() else {
                return json(
                    400,
                    serde_json::json!({"errors": [{"slug": "invalid_format", "field": "/offset_seconds",
                        "message": "send {\"offset_seconds\": n}, whole seconds from real time (0 restores it)"}]}),
                );
            };
            clock.set_offset(offset);
            let events = sandbox.map(|s| s.set_clock_offset(offset)).unwrap_or_default();
            let now = billing::clock::Clock::now(&clock);
            json(
                200,
                serde_json::json!({"offset_seconds": offset, "now": now.to_rfc3339(), "stripe_events": events}),
            )
        }
    });
    let local = |method: Method, path: &'static str, handler: Handler| Route {
        method,
        path,
        authorized: false,
        function: "devserver",
        handler,
    };
    vec![
        local(Method::GET, "/_local/health", health),
        local(Method::POST, "/_local/clock", set_clock),
        local(Method::POST, "/_local/invoice-plans", invoice_plans),
        local(Method::POST, "/_local/signup", enqueue),
        local(Method::GET, "/_local/signup/dead-letters", dead_letters),
        local(Method::POST, "/_local/eventbridge", deliver_envelope),
    ]
}

/// The signup queue: in-process, or SQS (`SIGNUP_QUEUE_URL`, made when unset) with `--aws`.
async fn open_signups(
    options: &Options,
    env: &dyn Environment,
    listener: Arc<SignupListener>,
) -> Result<SignupQueue, StartError> {
    if !options.aws {
        return Ok(signups::start_local(listener));
    }
    let client = aws_sdk_sqs::Client::new(&billing_adapters::aws::load_sdk_config().await);
    let url = signups::sqs_queue(&client, optional(env, "SIGNUP_QUEUE_URL"))
        .await
        .map_err(StartError::Queue)?;
    signups::start_poller(listener, client.clone(), url.clone());
    Ok(SignupQueue::Sqs { client, url })
}

/// Starts serving on 127.0.0.1.
pub async fn start(options: &Options, env: &dyn Environment) -> Result<RunningServer, StartError> {
    let secret = optional(env, "DEV_JWT_SECRET").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let keys = TokenKeys::new(&secret);
    let (store, documents) = open_store(options, env).await?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, options.port)).await?;
    let address = listener.local_addr()?;
    let (billing, catalog, sandbox) = open_billing(options, env).await?;
    let local_clock = LocalClock::default();
    let clock: SharedClock = Arc::new(local_clock.clone());
    let signup_listener = Arc::new(
        SignupListener {
            store: store.clone(),
            billing: billing.clone(),
            catalog: catalog.clone(),
            clock: clock.clone(),
        }
        .declared(),
    );
    let signups = open_signups(options, env, signup_listener).await?;
    // Stripe signs webhooks with the endpoint's secret; the in-process sandbox gets a fresh one.
    let webhook_secret = match (&sandbox, optional(env, "STRIPE_WEBHOOK_SECRET")) {
        (_, Some(secret)) => secret,
        (Some(_), None) => format!("whsec_local_{}", uuid::Uuid::new_v4().simple()),
        (None, None) => billing::config::required(env, "STRIPE_WEBHOOK_SECRET")?,
    };
    let mailer = open_mailer(options, env).await?;
    let invoicing_queue = Arc::new(billing_adapters::LocalInvoicingQueue::default());
    let invoicing = invoicing::LocalInvoicing {
        scheduler: InvoicePlans {
            documents: documents.clone(),
            billing: billing.clone(),
            clock: clock.clone(),
            trial_days: billing::config::self_hosted_free_trial_days(env)?,
            queue: Some(invoicing_queue.clone()),
        }
        .declared(),
        queue: invoicing_queue,
        consumer: invoice_entity::InvoiceEntity {
            documents: documents.clone(),
            billing: billing.clone(),
        }
        .declared(),
    };
    let purchases = billing::plans::purchase::Purchases {
        documents: documents.clone(),
        stripe: billing.clone(),
        trial_days: billing::config::self_hosted_free_trial_days(env)?,
        prices: billing::plans::Prices::default(),
    };
    let checkout_origin = remote_billing_pages::checkout_origin(
        sandbox
            .as_ref()
            .map(|sandbox| sandbox.base_url())
            .or_else(|| optional(env, "STRIPE_API_BASE"))
            .as_deref(),
    );
    let remote = open_remote(env, documents, mailer.clone(), address)?;
    let return_origins = billing::lifecycle::return_origins(
        &optional(env, "CORS_ALLOWED_ORIGINS").unwrap_or_default(),
        Some(&optional(env, "PUBLIC_BASE_URL").unwrap_or_else(|| format!("http://{address}"))),
    );
    let bundle = Bundle {
        store: store.clone(),
        billing,
        catalog,
        cors: Cors::from_env(env),
        return_origins,
        mailer,
        webhook_secret: webhook_secret.clone(),
        remote: remote.clone(),
        clock,
        purchases,
        checkout_origin,
    };
    let returned_secret = webhook_secret.clone();
    let eventbridge = Arc::new(
        StripeEventBridge {
            store: bundle.store.clone(),
            mailer: bundle.mailer.clone(),
            catalog: bundle.catalog.clone(),
            clock: bundle.clock.clone(),
            purchases: bundle.purchases.clone(),
        }
        .declared(),
    );
    let mut all = routes(&bundle);
    all.extend(local_routes(
        signups.clone(),
        local_clock,
        sandbox.as_ref().map(|s| s.sandbox.clone()),
        Arc::new(invoicing),
        eventbridge,
    ));
    if let Some(sandbox) = &sandbox {
        sandbox.sandbox.set_webhook(Some(stripe_sandbox::WebhookTarget {
            url: format!("http://{address}/stripe/webhook"),
            secret: webhook_secret,
        }));
    }
    let app = gateway::router(all, keys.clone());
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await {
            tracing::error!(%error, "the local server stopped");
        }
    });
    Ok(RunningServer {
        address,
        keys,
        sandbox,
        store,
        remote,
        signups,
        webhook_secret: returned_secret,
        task,
    })
}

/// What `make run` prints: where the server is, tokens for an administrator and a user, and
/// commands to try.
pub fn banner(options: &Options, server: &RunningServer) -> String {
    let admin = uuid::Uuid::new_v4();
    let user = uuid::Uuid::new_v4();
    let valid_for = chrono::Duration::hours(12);
    let admin_token = server.keys.mint(admin, "subscriptions subscriptions_admin", valid_for);
    let user_token = server.keys.mint(user, "subscriptions", valid_for);
    let base = format!("http://{}", server.address);
    let store = if options.aws {
        "DynamoDB (AWS settings from the environment)".to_owned()
    } else {
        format!("embedded, in {}", options.data_dir.join("billing.redb").display())
    };
    let stripe = match &server.sandbox {
        Some(sandbox) => format!("the Stripe sandbox on {} (key {SANDBOX_KEY})", sandbox.base_url()),
        None => "Stripe at STRIPE_API_BASE (or api.stripe.com) with STRIPE_SECRET_KEY".to_owned(),
    };
    format!(
        "billing devserver listening on {base}
store:  {store}
stripe: {stripe}

An administrator (scopes subscriptions, subscriptions_admin) and a user (scope subscriptions):
  export ADMIN_TOKEN={admin_token}
  export USER_TOKEN={user_token}
  export USER_ID={user}

Create the user's subscription (admin), read it and choose a plan with a card (user):
  curl -s -X POST {base}/subscriptions -H \"authorization: Bearer $ADMIN_TOKEN\" -H 'content-type: application/json' \\
       -d '{{\"user_id\": \"'$USER_ID'\", \"email\": \"ada@example.com\"}}'
  curl -s {base}/subscriptions/$USER_ID -H \"authorization: Bearer $USER_TOKEN\"
  curl -s -X PATCH {base}/subscriptions/$USER_ID -H \"authorization: Bearer $USER_TOKEN\" -H 'content-type: application/json' \\
       -d '{{\"plan\": \"basic_monthly\", \"stripe_source\": \"pm_card_visa\"}}'
"
    )
}

/// The prices the in-process Stripe sandbox offers: one per plan of the product, with the
/// price ids of the local configuration and demo amounts.
pub fn sandbox_prices() -> Vec<stripe_sandbox::PriceSpec> {
    [
        ("price_pending", 0, "month"),
        ("price_free", 0, "month"),
        ("price_basic_monthly", 800, "month"),
        ("price_basic_annual", 8_000, "year"),
        ("price_business_monthly", 2_000, "month"),
        ("price_business_annual", 20_000, "year"),
    ]
    .into_iter()
    .map(|(id, amount, interval)| stripe_sandbox::PriceSpec::recurring(id, amount, interval))
    .collect()
}
