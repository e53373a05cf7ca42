//! An HTTP Lambda function that answers every request with `200 ok` and does nothing else: what
//! the runtime, the tokio executor and lambda_http cost by themselves, against which the
//! bundle's functions are measured.

use lambda_http::{Body, Error, Request, Response, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|_request: Request| async {
        Ok::<_, Error>(Response::new(Body::Text("ok".into())))
    }))
    .await
}
