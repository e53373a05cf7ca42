//! What the end-to-end tests share: the local services they start and the checks they need.
//!
//! Tests that need moto fail, with instructions, when `AWS_ENDPOINT_URL` is not set (`make test`
//! starts moto and sets it); the Stripe sandbox and the local server are started in-process.

use std::time::Duration;

use billing::stripe::{RetryPolicy, StripeBilling};
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
pub async fn stripe_get(sandbox: &RunningSandbox, path_and_query: &str) -> serde_json::Value {
    let url = format!("{}{}", sandbox.base_url(), path_and_query.trim_start_matches('/'));
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(TEST_KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(response.status().is_success(), "GET {url}: {}", response.status());
    response.json().await.expect("a JSON body")
}

/// The moto endpoint; panics with instructions when there is none.
pub fn moto_endpoint() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL is not set: this test needs the moto server. Run `make test`, which installs and starts it.")
    });
    let local = ["http://127.0.0.1:", "http://localhost:"]
        .iter()
        .any(|p| endpoint.starts_with(p));
    assert!(local, "AWS_ENDPOINT_URL={endpoint} is not a local emulator");
    endpoint
}
