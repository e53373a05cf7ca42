//! Lambda bootstrap of `POST /subscriptions`.

use billing::config::ProcessEnvironment;
use billing_adapters::metrics::Metrics;
use create_subscription::CreateSubscription;
use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let function =
        CreateSubscription::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    let metrics = Metrics::install(&ProcessEnvironment)?;
    billing_http::run_api(
        |request| function.handle(request),
        |request_id| metrics.flush(request_id),
    )
    .await
}
