//! Helpers for the tests of the functions (feature `testing`): the standard plan catalog with
//! local price ids, a throwaway embedded store, and API Gateway events from the samples in
//! `events/` with the caller, path and body a test needs.

use std::sync::Arc;

use lambda_http::Request;
use serde_json::Value;
use uuid::Uuid;

use crate::store::EmbeddedStore;
use crate::subscription::PlanCatalog;

/// The product's plans priced `price_<plan>`, as the local server configures them.
pub fn catalog() -> PlanCatalog {
    PlanCatalog::standard(|id| Ok::<_, ()>(format!("price_{id}"))).expect("infallible")
}

/// An embedded store in a temporary directory that lives as long as the process.
pub fn embedded_store() -> Arc<EmbeddedStore> {
    let dir = std::env::temp_dir().join(format!("billing-test-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    Arc::new(EmbeddedStore::open(dir.join("billing.redb")).expect("an embedded store"))
}

/// An API Gateway v2 event from `events/<name>`, to be adjusted before use.
pub struct ApiEvent(Value);

impl ApiEvent {
    pub fn sample(name: &str) -> Self {
        let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        ApiEvent(serde_json::from_str(&text).expect("a JSON event"))
    }

    /// The caller: `sub` and space-separated scopes, as the JWT authorizer passes them.
    pub fn caller(mut self, user: Uuid, scope: &str) -> Self {
        self.0["requestContext"]["authorizer"] =
            serde_json::json!({"jwt": {"claims": {"sub": user.to_string(), "scope": scope}, "scopes": null}});
        self
    }

    pub fn anonymous(mut self) -> Self {
        if let Some(context) = self.0["requestContext"].as_object_mut() {
            context.remove("authorizer");
        }
        self
    }

    pub fn path_id(mut self, id: &str) -> Self {
        self.0["pathParameters"]["id"] = Value::from(id);
        let path = format!("/subscriptions/{id}");
        self.0["rawPath"] = Value::from(path.as_str());
        self.0["requestContext"]["http"]["path"] = Value::from(path);
        self
    }

    pub fn body(mut self, body: &Value) -> Self {
        self.0["body"] = Value::from(body.to_string());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0["headers"][name] = Value::from(value);
        self
    }

    pub fn request_id(mut self, id: &str) -> Self {
        self.0["requestContext"]["requestId"] = Value::from(id);
        self
    }

    pub fn build(self) -> Request {
        lambda_http::request::from_str(&self.0.to_string()).expect("a valid API Gateway event")
    }
}
