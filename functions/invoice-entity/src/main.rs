//! Lambda bootstrap of the invoicing queue's consumer.

use billing::config::ProcessEnvironment;
use billing_adapters::metrics::Metrics;
use billing_adapters::secrets::{OnFirstInvocation, with_secrets};
use invoice_entity::InvoiceEntity;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // Built on the first invocation, when its secrets are read (billing_adapters::secrets).
    let consumer: OnFirstInvocation<InvoiceEntity> = OnFirstInvocation::default();
    let consumer = &consumer;
    let metrics = Metrics::install(&ProcessEnvironment)?;
    run(service_fn(|event: LambdaEvent<_>| async move {
        let consumer = consumer
            .get(|| async { InvoiceEntity::from_env(&with_secrets(ProcessEnvironment).await?).await })
            .await?;
        let deadline = event.context.deadline();
        let work = billing::deadline::within(Some(deadline), consumer.handle(event.payload));
        Ok::<_, Error>(metrics.counted(&event.context.request_id, work).await)
    }))
    .await
}
