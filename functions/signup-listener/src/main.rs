//! Lambda bootstrap of the signup queue's consumer.

use billing::config::ProcessEnvironment;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use signup_listener::SignupListener;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let listener =
        SignupListener::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    let listener = &listener;
    run(service_fn(|event: LambdaEvent<_>| async move {
        let deadline = event.context.deadline();
        Ok::<_, Error>(listener.handle_within(event.payload, Some(deadline)).await)
    }))
    .await
}
