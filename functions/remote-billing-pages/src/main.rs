//! Lambda bootstrap of the remote-billing browser pages.

use billing::config::ProcessEnvironment;
use lambda_http::{Error, run, service_fn};
use remote_billing_pages::RemoteBillingPages;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let function =
        RemoteBillingPages::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    run(service_fn(|request| async {
        Ok::<_, Error>(function.handle(request).await)
    }))
    .await
}
