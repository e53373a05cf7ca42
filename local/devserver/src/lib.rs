//! The whole bundle on one machine: every function in one process behind a local stand-in
//! for API Gateway, with the embedded store by default or the AWS adapters (`--aws`, for moto
//! or a real account).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::Request as HttpRequest;
use axum::response::IntoResponse;
use billing::config::{ConfigError, Environment, optional};
use billing::store::{DynamoStore, EmbeddedStore, Store, StoreError};
use tokio::net::TcpListener;

pub mod gateway;
pub mod tokens;

use gateway::{Gateway, Route, handler};
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
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut options = Options::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--port" => options.port = value("--port")?.parse().map_err(|e| format!("--port: {e}"))?,
                "--stripe-port" => {
                    options.stripe_port = value("--stripe-port")?
                        .parse()
                        .map_err(|e| format!("--stripe-port: {e}"))?
                }
                "--data-dir" => options.data_dir = PathBuf::from(value("--data-dir")?),
                "--aws" => options.aws = true,
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
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
    #[error("could not listen: {0}")]
    Io(#[from] std::io::Error),
}

/// What the functions of the bundle share in one process.
pub struct Services {
    pub store: Arc<dyn Store>,
}

/// A started server: where it listens, the secret its tokens are signed with.
pub struct RunningServer {
    pub address: SocketAddr,
    pub keys: TokenKeys,
    pub task: tokio::task::JoinHandle<()>,
}

/// Opens the store the options ask for: a redb file under the data directory, or the
/// DynamoDB table `BILLING_TABLE` (created when missing, from the same definition as the
/// template).
pub async fn open_store(options: &Options, env: &dyn Environment) -> Result<Arc<dyn Store>, StartError> {
    if options.aws {
        let table = billing::config::billing_table(env)?;
        let store = DynamoStore::connect(table).await;
        store.ensure_table().await?;
        Ok(Arc::new(store))
    } else {
        std::fs::create_dir_all(&options.data_dir)?;
        Ok(Arc::new(EmbeddedStore::open(options.data_dir.join("billing.redb"))?))
    }
}

/// The routes of `template.yaml`, each bound to its function.
pub fn routes(_services: &Arc<Services>) -> Vec<Route> {
    vec![Route {
        method: axum::http::Method::GET,
        path: "/_local/health",
        authorized: false,
        function: "devserver",
        handler: handler(|_| async { lambda_http::Response::new(lambda_http::Body::Text("ok".into())) }),
    }]
}

/// Starts serving on 127.0.0.1.
pub async fn start(options: &Options, env: &dyn Environment) -> Result<RunningServer, StartError> {
    let secret = optional(env, "DEV_JWT_SECRET").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let keys = TokenKeys::new(&secret);
    let services = Arc::new(Services {
        store: open_store(options, env).await?,
    });
    let gateway = Arc::new(Gateway::new(routes(&services), keys.clone()));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, options.port)).await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().fallback(forward).with_state(gateway);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await {
            tracing::error!(%error, "the local server stopped");
        }
    });
    Ok(RunningServer { address, keys, task })
}

async fn forward(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: HttpRequest<axum::body::Body>,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 10 * 1024 * 1024).await {
        Ok(bytes) => bytes,
        // API Gateway's own payload limit is 10 MB.
        Err(_) => return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large").into_response(),
    };
    let response = gateway
        .dispatch(parts.method, parts.uri, parts.headers, body, client)
        .await;
    let (parts, body) = response.into_parts();
    let bytes: Vec<u8> = match body {
        lambda_http::Body::Empty => Vec::new(),
        lambda_http::Body::Text(text) => text.into_bytes(),
        lambda_http::Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
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
    format!(
        "billing devserver listening on {base}\n\
         store: {store}\n\n\
         admin token (subscriptions_admin):\n  export ADMIN_TOKEN={admin_token}\n\
         user token (subscriptions) for user {user}:\n  export USER_TOKEN={user_token}\n\n\
         try:\n  curl -s {base}/_local/health\n"
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
