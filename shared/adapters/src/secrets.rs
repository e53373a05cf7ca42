//! Secrets from AWS Secrets Manager, read once per execution environment through the AWS
//! Parameters and Secrets Lambda Extension (a local HTTP endpoint that caches them), on the
//! first invocation, before a function reads its configuration.
//!
//! On the first invocation, not at start: the extension's guide documents calls made during
//! invocations, and during Lambda's INIT phase it may answer 400 "not ready to serve traffic".
//! [`OnFirstInvocation`] builds the function on its first invocation (that answer retried for up
//! to [`NOT_READY_WAIT`]); a failure fails that invocation with a clear error, and the next
//! invocation tries again, where a failure at start would end the process.
//!
//! A function is configured with the *id* of each secret (`STRIPE_SECRET_KEY_SECRET_ID`, ...),
//! never its value, so no secret is readable from the function's configuration; at start
//! [`with_secrets`] fetches every one named and exposes it under its plain name
//! (`STRIPE_SECRET_KEY`), which is what the rest of the code reads. A plain variable set in the
//! environment wins (the local server and tests set them directly). The extension rather than
//! the Secrets Manager SDK: no second AWS client to link and initialise in every binary, and
//! its cache spares warm starts the call (BENCHMARKS.md has the cold-start cost).

use std::collections::HashMap;
use std::time::Duration;

use billing::config::{ConfigError, Environment};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The variables that may be given as a secret's id (`<NAME>_SECRET_ID`).
pub const SECRET_VARIABLES: [&str; 3] = ["STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "BILLING_TOKEN_KEY"];

/// The extension's port unless `PARAMETERS_SECRETS_EXTENSION_HTTP_PORT` says otherwise.
const DEFAULT_PORT: u16 = 2773;

/// Each attempt's limit; the extension answers from its cache or one Secrets Manager call.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Attempts per secret when the extension fails or does not answer.
const ATTEMPTS: u32 = 3;

/// How long an extension that answers "not ready" is asked again.
pub const NOT_READY_WAIT: Duration = Duration::from_secs(2);

/// A function built on its first invocation (with its secrets), once per execution
/// environment; a build that failed is tried again by the next invocation.
pub struct OnFirstInvocation<F> {
    built: tokio::sync::OnceCell<F>,
}

impl<F> Default for OnFirstInvocation<F> {
    fn default() -> Self {
        OnFirstInvocation {
            built: tokio::sync::OnceCell::new(),
        }
    }
}

impl<F> OnFirstInvocation<F> {
    /// The function, built by `build` if no invocation built it yet. Concurrent first
    /// invocations wait for one build.
    pub async fn get<B, Fut>(&self, build: B) -> Result<&F, ConfigError>
    where
        B: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<F, ConfigError>>,
    {
        let built = self.built.get_or_try_init(build).await;
        if let Err(error) = &built {
            tracing::error!(%error, "the function could not be built; the next invocation tries again");
        }
        built
    }
}

/// An environment with the secrets it named resolved.
pub struct WithSecrets<E> {
    inner: E,
    secrets: HashMap<String, String>,
}

impl<E: Environment> Environment for WithSecrets<E> {
    fn var(&self, name: &str) -> Option<String> {
        self.inner.var(name).or_else(|| self.secrets.get(name).cloned())
    }
}

/// `env` with every secret it names by id fetched from the extension, all at once: on a cold
/// start each is a Secrets Manager call the extension makes, so they overlap rather than queue.
pub async fn with_secrets<E: Environment>(env: E) -> Result<WithSecrets<E>, ConfigError> {
    let named: Vec<(&str, String)> = SECRET_VARIABLES
        .iter()
        .filter(|name| env.var(name).is_none())
        .filter_map(|name| env.var(&format!("{name}_SECRET_ID")).map(|id| (*name, id)))
        .collect();
    let fetched = futures_util::future::join_all(named.iter().map(|(_, id)| fetch(&env, id))).await;
    let mut secrets = HashMap::new();
    for ((name, _), value) in named.into_iter().zip(fetched) {
        let value = value.map_err(|reason| ConfigError::Invalid {
            name: format!("{name}_SECRET_ID"),
            reason,
        })?;
        tracing::info!(variable = name, "secret read from Secrets Manager");
        secrets.insert(name.to_owned(), value);
    }
    Ok(WithSecrets { inner: env, secrets })
}

/// The secret's string value, or why not (never the value itself).
async fn fetch(env: &dyn Environment, id: &str) -> Result<String, String> {
    let port = env
        .var("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT")
        .and_then(|port| port.parse::<u16>().ok())
        .unwrap_or(DEFAULT_PORT);
    // The extension admits only callers holding the function's session token.
    let token = env
        .var("AWS_SESSION_TOKEN")
        .ok_or("AWS_SESSION_TOKEN is not set: the extension admits only the function's own calls")?;
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("secretId", id)
        .finish();
    let uri = format!("http://127.0.0.1:{port}/secretsmanager/get?{query}");
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let mut last = String::new();
    let started = std::time::Instant::now();
    let mut attempt = 0;
    while attempt < ATTEMPTS {
        let request = hyper::Request::get(&uri)
            .header("X-Aws-Parameters-Secrets-Token", &token)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("extension unreachable: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("extension answer unreadable: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())));
        match answer {
            Ok((status, body)) if status.is_success() => {
                let parsed: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|_| "the extension's answer is not JSON".to_owned())?;
                return parsed["SecretString"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "the secret has no SecretString (binary secrets are not read)".to_owned());
            }
            // Still starting: asked again for a while, without counting an attempt.
            Ok((status, body))
                if status == hyper::StatusCode::BAD_REQUEST
                    && String::from_utf8_lossy(&body)
                        .to_ascii_lowercase()
                        .contains("not ready")
                    && started.elapsed() < NOT_READY_WAIT =>
            {
                tracing::info!("the secrets extension is not ready yet; asking again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            // 4xx: the id is wrong or access is denied; asking again will not change it.
            Ok((status, _)) if status.is_client_error() => {
                return Err(format!("the extension refused secret {id:?}: HTTP {status}"));
            }
            Ok((status, _)) => last = format!("HTTP {status}"),
            Err(error) => last = error,
        }
        attempt += 1;
        tracing::warn!(attempt, error = %last, "reading a secret failed; retrying");
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    Err(format!("secret {id:?} could not be read: {last}"))
}
