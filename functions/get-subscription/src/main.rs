//! Lambda bootstrap of `GET /subscriptions/{id}`.

use billing::config::ProcessEnvironment;
use get_subscription::GetSubscription;
use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let function = GetSubscription::from_env(&ProcessEnvironment).await?;
    // No metrics: a read counts nothing.
    billing_http::run_api(|request| function.handle(request), |_| {}).await
}
