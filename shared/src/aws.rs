//! AWS SDK configuration shared by every client the functions build: timeouts, retries and the
//! HTTPS client's trusted roots.
//!
//! Loaded once per cold start from the standard environment (`AWS_REGION`,
//! `AWS_ENDPOINT_URL` for a local emulator, credentials), so the same code talks to AWS and to
//! moto. Every call has an attempt timeout and an overall timeout: a Lambda must never hang
//! until its own deadline on a stuck connection. A function that needs several AWS clients
//! builds them all from one loaded configuration, so they share one HTTP client.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(6);
pub const MAX_ATTEMPTS: u32 = 3;

/// Where the system's CA bundle lives: `SSL_CERT_FILE` when set, else Amazon Linux's (Lambda's
/// `provided.al2023`), else Debian's.
const CA_BUNDLES: [&str; 2] = ["/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/certs/ca-certificates.crt"];

/// The system's CA bundle, read once per process as one file. The SDK's default client loads
/// "native" roots, which also walks the certificate directory one file per CA: measured at 5 ms
/// of every cold start here (BENCHMARKS.md). The same roots from the one bundle file cost a
/// single read.
static CA_BUNDLE: LazyLock<Option<Vec<u8>>> = LazyLock::new(|| {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(CA_BUNDLES.iter().map(PathBuf::from))
        .filter_map(|path| std::fs::read(path).ok())
        .find(|bundle| !bundle.is_empty())
});

/// The TLS context of the SDK's HTTPS client: the system bundle's roots; `None` where there is
/// no bundle file, and the SDK's default client (native roots) is used.
fn tls_context() -> Option<aws_smithy_http_client::tls::TlsContext> {
    use aws_smithy_http_client::tls::{TlsContext, TrustStore};
    let bundle = CA_BUNDLE.as_ref()?;
    TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(bundle.as_slice()))
        .build()
        .ok()
}

pub async fn load_sdk_config() -> SdkConfig {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(context) = tls_context() {
        // rustls on aws-lc, as the SDK's default client, with the bundle's roots.
        loader = loader.http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
                .tls_context(context)
                .build_https(),
        );
    }
    loader
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

    #[test]
    fn the_system_ca_bundle_is_found_and_holds_certificates() {
        let bundle = CA_BUNDLE
            .as_ref()
            .expect("a CA bundle at SSL_CERT_FILE or a standard path");
        let text = String::from_utf8_lossy(bundle);
        assert!(text.matches("-----BEGIN CERTIFICATE-----").count() > 50);
        assert!(tls_context().is_some());
    }
}
