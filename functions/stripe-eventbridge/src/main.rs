//! Lambda bootstrap of Stripe's events from an EventBridge partner event source.

use billing::config::ProcessEnvironment;
use billing_adapters::metrics::Metrics;
use billing_adapters::secrets::{OnFirstInvocation, with_secrets};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use stripe_eventbridge::StripeEventBridge;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // Built on the first invocation, when its secrets are read (billing_adapters::secrets).
    let function: OnFirstInvocation<StripeEventBridge> = OnFirstInvocation::default();
    let function = &function;
    let metrics = Metrics::install(&ProcessEnvironment)?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        let function = function
            .get(|| async { StripeEventBridge::from_env(&with_secrets(ProcessEnvironment).await?).await })
            .await?;
        let deadline = event.context.deadline();
        let work = billing::deadline::within(Some(deadline), function.handle(&event.payload));
        let answer = metrics.counted(&event.context.request_id, work).await?;
        Ok::<_, Error>(answer)
    }))
    .await
}
