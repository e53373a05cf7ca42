//! Lambda bootstrap of the operators' Stripe-event endpoints (list, replay, reconcile).

use billing::config::ProcessEnvironment;
use billing_adapters::metrics::Metrics;
use lambda_http::{Error, Request, RequestExt, run, service_fn};
use stripe_events::StripeEvents;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let function = StripeEvents::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    let metrics = Metrics::install(&ProcessEnvironment)?;
    run(service_fn(|request: Request| async {
        let request_id = request.lambda_context_ref().map(|context| context.request_id.clone());
        Ok::<_, Error>(
            metrics
                .counted(&request_id.unwrap_or_default(), function.handle(request))
                .await,
        )
    }))
    .await
}
