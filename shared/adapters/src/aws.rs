//! AWS SDK configuration shared by every client the functions build: timeouts and retries.
//!
//! Loaded once per cold start from the standard environment (`AWS_REGION`,
//! `AWS_ENDPOINT_URL` for a local emulator, credentials), so the same code talks to AWS and to
//! moto. Every call has an attempt timeout and an overall timeout: a Lambda must never hang
//! until its own deadline on a stuck connection. A function that needs several AWS clients
//! builds them all from one loaded configuration, so they share one HTTP client and its
//! connection pool. The HTTPS client is the SDK's default (rustls on aws-lc-rs, the platform's
//! roots parsed once per process); BENCHMARKS.md records why a hand-built client with the CA
//! bundle as its roots was measured and dropped.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one attempt of a call may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a call may take, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(6);
/// Attempts per call (the SDK's standard retries).
pub const MAX_ATTEMPTS: u32 = 3;

/// The configuration every client of a function is built from, with the timeouts above.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_client_gets_the_timeouts_and_the_attempt_limit() {
        let config = load_sdk_config().await;

        let timeouts = config.timeout_config().expect("a timeout configuration");
        assert_eq!(timeouts.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(timeouts.operation_timeout(), Some(OPERATION_TIMEOUT));
        assert_eq!(
            config.retry_config().expect("a retry configuration").max_attempts(),
            MAX_ATTEMPTS
        );
    }
}
