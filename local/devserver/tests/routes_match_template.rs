//! The local server routes exactly like the HTTP API of `template.yaml`: the same methods and
//! paths, to the same functions, with the JWT authorizer on the same routes. The template
//! declares every route with and without a trailing slash (API Gateway routes them apart; the
//! local server treats them as one), and a preflight for every path of the JSON API.

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
            registrations_per_ip_hour: 10,
        },
    };
    let purchases = billing::plans::purchase::Purchases {
        documents: store.clone(),
        stripe: billing.clone(),
        trial_days: 0,
        prices: billing::plans::Prices::default(),
    };
    let bundle = devserver::Bundle {
        purchases,
        checkout_origin: "https://checkout.stripe.com".into(),
        remote,
        store,
        billing,
        catalog,
        cors: Cors::default(),
        mailer,
        webhook_secret: "whsec_routes".into(),
        return_origins: Vec::new(),
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

/// The template's routes with the trailing-slash twins folded into their routes.
fn template_routes_without_twins() -> BTreeSet<RouteKey> {
    template_routes()
        .into_iter()
        .filter(|(_, path, _, _)| !path.ends_with('/'))
        .collect()
}

#[tokio::test]
async fn devserver_routes_are_the_template_routes() {
    let template = template_routes_without_twins();
    assert!(!template.is_empty());
    assert_eq!(devserver_routes(), template);
}

#[test]
fn every_template_route_is_declared_with_and_without_a_trailing_slash() {
    let routes = template_routes();
    let mut missing = Vec::new();
    for (method, path, authorized, function) in &routes {
        let twin = match path.strip_suffix('/') {
            Some(bare) => bare.to_owned(),
            None => format!("{path}/"),
        };
        if !routes.contains(&(method.clone(), twin.clone(), *authorized, function.clone())) {
            missing.push(format!("{method} {twin} ({function})"));
        }
    }
    assert!(missing.is_empty(), "routes without their twin: {missing:#?}");
}

#[test]
fn every_json_api_path_answers_preflight_requests() {
    // The pages are same-origin HTML and Stripe calls the webhook from its servers: neither is
    // called by scripts of other origins.
    let not_browser_apis = ["RemoteBillingPagesFunction", "StripeWebhookFunction"];
    let routes = template_routes();
    let mut missing = Vec::new();
    for (method, path, _, function) in &routes {
        if method == "OPTIONS" || not_browser_apis.contains(&function.as_str()) {
            continue;
        }
        let preflight = routes
            .iter()
            .any(|(m, p, authorized, _)| m == "OPTIONS" && p == path && !authorized);
        if !preflight {
            missing.push(format!("OPTIONS {path} ({function})"));
        }
    }
    assert!(missing.is_empty(), "paths without a preflight route: {missing:#?}");
}
