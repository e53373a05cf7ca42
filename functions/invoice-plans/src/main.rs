//! Lambda bootstrap of the daily invoicing of self-hosted plans.

use billing::config::ProcessEnvironment;
use billing_adapters::metrics::Metrics;
use invoice_plans::InvoicePlans;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let job = InvoicePlans::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    let job = &job;
    let metrics = Metrics::install(&ProcessEnvironment)?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        let deadline = event.context.deadline();
        let work = billing::deadline::within(Some(deadline), job.handle(&event.payload));
        let report = metrics.counted(&event.context.request_id, work).await?;
        Ok::<_, Error>(report)
    }))
    .await
}
