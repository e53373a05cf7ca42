//! Lambda bootstrap of the signup queue's consumer.

use billing::config::ProcessEnvironment;
use billing_adapters::metrics::Metrics;
use billing_adapters::secrets::{OnFirstInvocation, with_secrets};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use signup_listener::SignupListener;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // Built on the first invocation, when its secrets are read (billing_adapters::secrets).
    let listener: OnFirstInvocation<SignupListener> = OnFirstInvocation::default();
    let listener = &listener;
    let metrics = Metrics::install(&ProcessEnvironment)?;
    run(service_fn(|event: LambdaEvent<_>| async move {
        let listener = listener
            .get(|| async { SignupListener::from_env(&with_secrets(ProcessEnvironment).await?).await })
            .await?;
        let deadline = event.context.deadline();
        let work = listener.handle_within(event.payload, Some(deadline));
        Ok::<_, Error>(metrics.counted(&event.context.request_id, work).await)
    }))
    .await
}
