//! AWS SDK configuration shared by every client the functions build: timeouts and retries.
//!
//! Loaded once per cold start from the standard environment (`AWS_REGION`,
//! `AWS_ENDPOINT_URL` for a local emulator, credentials), so the same code talks to AWS and to
//! moto. Every call has an attempt timeout and an overall timeout: a Lambda must never hang
//! until its own deadline on a stuck connection.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(6);
pub const MAX_ATTEMPTS: u32 = 3;

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
