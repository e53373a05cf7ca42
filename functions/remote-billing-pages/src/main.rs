//! Lambda bootstrap of the remote-billing browser pages.

use billing::config::ProcessEnvironment;
use billing_adapters::metrics::Metrics;
use lambda_http::Error;
use remote_billing_pages::RemoteBillingPages;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let function =
        RemoteBillingPages::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    let metrics = Metrics::install(&ProcessEnvironment)?;
    billing_http::run_api(
        |request| function.handle(request),
        |request_id| metrics.flush(request_id),
    )
    .await
}
