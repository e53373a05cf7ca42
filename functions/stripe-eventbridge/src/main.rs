//! Lambda bootstrap of Stripe's events from an EventBridge partner event source.

use billing::config::ProcessEnvironment;
use billing_adapters::metrics::Metrics;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use stripe_eventbridge::StripeEventBridge;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let function =
        StripeEventBridge::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    let function = &function;
    let metrics = Metrics::install(&ProcessEnvironment)?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        let deadline = event.context.deadline();
        let work = billing::deadline::within(Some(deadline), function.handle(&event.payload));
        let answer = metrics.counted(&event.context.request_id, work).await?;
        Ok::<_, Error>(answer)
    }))
    .await
}
