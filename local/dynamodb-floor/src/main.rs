//! An HTTP Lambda function that reads one item from DynamoDB and answers `200 ok`: lambda_http,
//! aws-config and a DynamoDB client built at init (from the standard environment, with the
//! SDK's defaults), one `GetItem` per request, nothing else. No function of the bundle that
//! reads DynamoDB can cost less, so `make bench` reports each function's init, cold start and
//! size as a ratio to this floor as well as to the empty function.

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::AttributeValue;
use lambda_http::{Body, Error, Request, RequestExt, Response, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let table = std::env::var("BILLING_TABLE").map_err(|_| "BILLING_TABLE is not set")?;
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    run(service_fn(|request: Request| {
        let (client, table) = (&client, &table);
        async move {
            let id = request.path_parameters().first("id").unwrap_or("none").to_owned();
            client
                .get_item()
                .table_name(table)
                .key("pk", AttributeValue::S(format!("SUBSCRIPTION#{id}")))
                .key("sk", AttributeValue::S("STATE".into()))
                .send()
                .await?;
            Ok::<_, Error>(Response::new(Body::Text("ok".into())))
        }
    }))
    .await
}
