//! Lambda bootstrap of `POST /subscriptions`.

use billing::config::ProcessEnvironment;
use create_subscription::CreateSubscription;
use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let function =
        CreateSubscription::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    run(service_fn(|request| async {
        Ok::<_, Error>(function.handle(request).await)
    }))
    .await
}
