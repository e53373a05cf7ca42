//! Lambda bootstrap of a subscription's lifecycle endpoints (setup intent, portal session,
//! invoices, preview).

use billing::config::ProcessEnvironment;
use lambda_http::{Error, run, service_fn};
use subscription_lifecycle::SubscriptionLifecycle;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let function =
        SubscriptionLifecycle::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    run(service_fn(|request| async {
        Ok::<_, Error>(function.handle(request).await)
    }))
    .await
}
