//! `docs/openapi.yaml` describes exactly the JSON API of `template.yaml`: the same paths and
//! methods (each route's trailing-slash twin and CORS preflight aside, and the server-rendered
//! pages, which are HTML), every operation with an error response, every reference resolved.

use std::collections::BTreeSet;

use serde_norway::Value;

fn yaml(relative: &str) -> Value {
    let path = format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"));
    serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The function whose routes are HTML pages, not JSON.
const PAGES_FUNCTION: &str = "RemoteBillingPagesFunction";

fn template_json_routes() -> BTreeSet<(String, String)> {
    let template = yaml("template.yaml");
    let mut routes = BTreeSet::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"] != "AWS::Serverless::Function" || name.as_str() == Some(PAGES_FUNCTION) {
            continue;
        }
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for event in events.values().filter(|e| e["Type"] == "HttpApi") {
            let method = event["Properties"]["Method"].as_str().unwrap().to_uppercase();
            let path = event["Properties"]["Path"].as_str().unwrap();
            if method != "OPTIONS" && (path == "/" || !path.ends_with('/')) {
                routes.insert((method, path.to_owned()));
            }
        }
    }
    routes
}

fn spec_routes(spec: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().unwrap() {
        for (method, _) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap();
            if ["get", "post", "put", "patch", "delete"].contains(&method) {
                routes.insert((method.to_uppercase(), path.as_str().unwrap().to_owned()));
            }
        }
    }
    routes
}

#[test]
fn the_spec_describes_exactly_the_json_routes_of_the_template() {
    let spec = yaml("docs/openapi.yaml");
    assert_eq!(spec["openapi"], "3.1.0");
    let (in_spec, in_template) = (spec_routes(&spec), template_json_routes());
    let missing: Vec<_> = in_template.difference(&in_spec).collect();
    let extra: Vec<_> = in_spec.difference(&in_template).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not in the spec: {missing:?}; not in the template: {extra:?}"
    );
}

#[test]
fn every_operation_answers_errors_in_the_envelope_and_every_reference_resolves() {
    let spec = yaml("docs/openapi.yaml");
    for (path, item) in spec["paths"].as_mapping().unwrap() {
        for (method, operation) in item.as_mapping().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert_eq!(
                operation["responses"]["default"]["$ref"], "#/components/responses/Error",
                "{method:?} {path:?} has no error response"
            );
        }
    }
    let text = serde_norway::to_string(&spec).unwrap();
    for reference in text.split("$ref: ").skip(1) {
        let target = reference.lines().next().unwrap().trim().trim_matches(['\'', '"']);
        let mut node = &spec;
        for part in target.trim_start_matches("#/").split('/') {
            node = &node[part];
        }
        assert!(!node.is_null(), "{target} does not resolve");
    }
}
