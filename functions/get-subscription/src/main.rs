//! Lambda bootstrap of `GET /subscriptions/{id}`.

use billing::config::ProcessEnvironment;
use get_subscription::GetSubscription;
use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let function = GetSubscription::from_env(&ProcessEnvironment).await?;
    run(service_fn(|request| async {
        Ok::<_, Error>(function.handle(request).await)
    }))
    .await
}
