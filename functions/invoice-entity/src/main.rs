//! Lambda bootstrap of the invoicing queue's consumer.

use billing::config::ProcessEnvironment;
use billing_adapters::metrics::Metrics;
use invoice_entity::InvoiceEntity;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let consumer = InvoiceEntity::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    let consumer = &consumer;
    let metrics = Metrics::install(&ProcessEnvironment)?;
    run(service_fn(|event: LambdaEvent<_>| async move {
        let deadline = event.context.deadline();
        let work = billing::deadline::within(Some(deadline), consumer.handle(event.payload));
        Ok::<_, Error>(metrics.counted(&event.context.request_id, work).await)
    }))
    .await
}
