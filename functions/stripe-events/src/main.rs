//! Lambda bootstrap of the operators' Stripe-event endpoints (list, replay, reconcile).

use billing::config::ProcessEnvironment;
use lambda_http::{Error, run, service_fn};
use stripe_events::StripeEvents;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let function = StripeEvents::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    run(service_fn(|request| async {
        Ok::<_, Error>(function.handle(request).await)
    }))
    .await
}
