//! Lambda bootstrap of the remote-billing server API.

use billing::config::ProcessEnvironment;
use lambda_http::{Error, run, service_fn};
use remote_billing_server::RemoteServerApi;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let function =
        RemoteServerApi::from_env(&billing_adapters::secrets::with_secrets(ProcessEnvironment).await?).await?;
    run(service_fn(|request| async {
        Ok::<_, Error>(function.handle(request).await)
    }))
    .await
}
