//! Access to the local services integration tests need.
//!
//! A test that needs moto fails, with instructions, when it is not there: `make test` starts
//! it and exports `AWS_ENDPOINT_URL`. Nothing is skipped; `cargo test --lib` runs the tests
//! that need no service.

use billing_adapters::DynamoStore;
/// The local moto endpoint; panics when there is none, or when it is not on this machine.
pub fn moto_endpoint() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!(
            "AWS_ENDPOINT_URL is not set: this test needs the moto server. Run `make test`, which installs and \
             starts it (or run only the service-free tests with `cargo test --lib`)."
        )
    });
    let local = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|prefix| endpoint.starts_with(prefix));
    assert!(
        local,
        "AWS_ENDPOINT_URL={endpoint} is not a local emulator, and these tests create and write tables"
    );
    endpoint
}

/// A store on a fresh table of its own in moto.
pub async fn dynamo_store() -> DynamoStore {
    moto_endpoint();
    let table = format!("billing-test-{}", uuid::Uuid::new_v4().simple());
    let store = DynamoStore::connect(table).await;
    store.ensure_table().await.expect("creating the test table in moto");
    store
}
