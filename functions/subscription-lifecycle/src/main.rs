//! Lambda bootstrap of a subscription's lifecycle endpoints (setup intent, portal session,
//! invoices, preview).

use billing::config::ProcessEnvironment;
use billing_adapters::metrics::Metrics;
use billing_adapters::secrets::{OnFirstInvocation, with_secrets};
use lambda_http::Error;
use subscription_lifecycle::SubscriptionLifecycle;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    // Built on the first invocation, when its secrets are read (billing_adapters::secrets).
    let function: OnFirstInvocation<SubscriptionLifecycle> = OnFirstInvocation::default();
    let function = &function;
    let metrics = Metrics::install(&ProcessEnvironment)?;
    billing_http::run_api(
        |request| async move {
            match function
                .get(|| async { SubscriptionLifecycle::from_env(&with_secrets(ProcessEnvironment).await?).await })
                .await
            {
                Ok(function) => function.handle(request).await,
                Err(error) => billing_http::not_started(&error),
            }
        },
        |request_id| metrics.flush(request_id),
    )
    .await
}
