//! Lambda bootstrap of `PATCH /subscriptions/{id}`.

use billing::config::ProcessEnvironment;
use lambda_http::{Error, run, service_fn};
use patch_subscription::PatchSubscription;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let function =
        PatchSubscription::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    run(service_fn(|request| async {
        Ok::<_, Error>(function.handle(request).await)
    }))
    .await
}
