//! The local server routes exactly like the HTTP API of `template.yaml`: the same methods and
//! paths, to the same functions, with the JWT authorizer on the same routes.

use std::collections::BTreeSet;
use std::sync::Arc;

use billing::subscription::PlanCatalog;
use billing_adapters::EmbeddedStore;
use billing_adapters::RetryPolicy;
use billing_adapters::StripeBilling;
use billing_http::Cors;
use serde_norway::Value;

type RouteKey = (String, String, bool, String);

fn template_routes() -> BTreeSet<RouteKey> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
    let template: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut routes = BTreeSet::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for event in events.values().filter(|e| e["Type"] == "HttpApi") {
            let properties = &event["Properties"];
            let authorized = properties["Auth"]["Authorizer"] != "NONE";
            routes.insert((
                properties["Method"].as_str().unwrap().to_uppercase(),
                properties["Path"].as_str().unwrap().to_owned(),
                authorized,
                name.as_str().unwrap().to_owned(),
            ));
        }
    }
    routes
}

fn devserver_routes() -> BTreeSet<RouteKey> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("routes.redb")).unwrap());
    let billing =
        Arc::new(StripeBilling::new("sk_test_routes", Some("http://127.0.0.1:9/"), RetryPolicy::default()).unwrap());
    let catalog = PlanCatalog::standard(|plan| Ok::<_, ()>(format!("price_{plan}"))).unwrap();
    let mailer: Arc<dyn billing::mail::Mailer> =
        Arc::new(billing_adapters::OutboxMailer::new(dir.path().join("outbox")).unwrap());
    let remote = billing::remote::RemoteBilling {
        records: billing::remote::Records::new(store.clone()),
        sealer: Arc::new(billing::remote::TokenSealer::new(&[1u8; 32])),
        mailer: mailer.clone(),
        settings: billing::remote::RemoteSettings {
            public_base_url: "http://127.0.0.1:9".into(),
            mails_per_ip_hour: 5,
            mails_per_server_hour: 20,
        },
    };
    let bundle = devserver::Bundle {
        remote,
        store,
        billing,
        catalog,
        cors: Cors::default(),
        mailer,
        webhook_secret: "whsec_routes".into(),
        clock: std::sync::Arc::new(billing_adapters::SystemClock),
    };
    devserver::routes(&bundle)
        .into_iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.path.to_owned(),
                r.authorized,
                r.function.to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn devserver_routes_are_the_template_routes() {
    let template = template_routes();
    assert!(!template.is_empty());
    assert_eq!(devserver_routes(), template);
}
