//! Lambda bootstrap of the daily invoicing of self-hosted plans.

use billing::config::ProcessEnvironment;
use billing_adapters::metrics::Metrics;
use billing_adapters::secrets::{OnFirstInvocation, with_secrets};
use invoice_plans::InvoicePlans;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // Built on the first invocation, when its secrets are read (billing_adapters::secrets).
    let job: OnFirstInvocation<InvoicePlans> = OnFirstInvocation::default();
    let job = &job;
    let metrics = Metrics::install(&ProcessEnvironment)?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        let job = job
            .get(|| async { InvoicePlans::from_env(&with_secrets(ProcessEnvironment).await?).await })
            .await?;
        let deadline = event.context.deadline();
        let work = billing::deadline::within(Some(deadline), job.handle(&event.payload));
        let report = metrics.counted(&event.context.request_id, work).await?;
        Ok::<_, Error>(report)
    }))
    .await
}
