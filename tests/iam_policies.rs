//! Every function's IAM policy in `template.yaml` grants exactly what its code calls: the
//! permissions its declared operations need (`billing_adapters::iam`), no fewer (AWS would
//! refuse the call while moto accepts it) and no more (least privilege).
//!
//! The operations a function declares are enforced in every test that runs it
//! (`billing::access::Declared`), so together these keep the policies true.

use std::collections::{BTreeMap, BTreeSet};

use billing::access::Operation;
use billing_adapters::iam::{self, Grant, Resource};
use serde_norway::Value;

/// Each function of the bundle, by the binary the template builds, with what it declares.
fn declared() -> BTreeMap<&'static str, &'static [Operation]> {
    BTreeMap::from([
        (create_subscription::FUNCTION, create_subscription::OPERATIONS),
        (get_subscription::FUNCTION, get_subscription::OPERATIONS),
        (patch_subscription::FUNCTION, patch_subscription::OPERATIONS),
        (subscription_lifecycle::FUNCTION, subscription_lifecycle::OPERATIONS),
        (invoice_plans::FUNCTION, invoice_plans::OPERATIONS),
        (invoice_entity::FUNCTION, invoice_entity::OPERATIONS),
        (signup_listener::FUNCTION, signup_listener::OPERATIONS),
        (stripe_webhook::FUNCTION, stripe_webhook::OPERATIONS),
        (stripe_events::FUNCTION, stripe_events::OPERATIONS),
        (stripe_eventbridge::FUNCTION, stripe_eventbridge::OPERATIONS),
        (remote_billing_server::FUNCTION, remote_billing_server::OPERATIONS),
        (remote_billing_pages::FUNCTION, remote_billing_pages::OPERATIONS),
    ])
}

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A policy's `Resource`, however written (`!GetAtt`, `!Sub`, a list), as the kinds of resource
/// this bundle grants on.
fn resources(value: &Value) -> Vec<Resource> {
    match value {
        Value::Sequence(items) => items.iter().flat_map(resources).collect(),
        Value::Tagged(tagged) => resources(&tagged.value),
        Value::String(text) if text.contains("BillingTable.Arn") && text.ends_with("/index/*") => {
            vec![Resource::TableIndexes]
        }
        Value::String(text) if text.contains("BillingTable.Arn") => vec![Resource::Table],
        Value::String(text) if text.contains(":ses:") && text.contains(":identity/") => vec![Resource::MailIdentities],
        Value::String(text) if text.contains(":ses:") && text.contains(":configuration-set/") => {
            vec![Resource::MailConfigurationSet]
        }
        Value::String(text) if text.contains(":secretsmanager:") && text.contains(":secret:") => {
            vec![Resource::Secrets]
        }
        Value::String(text) if text == "InvoicingQueue.Arn" => vec![Resource::InvoicingQueue],
        other => panic!("a policy resource this test does not know: {other:?}"),
    }
}

fn actions(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().flat_map(actions).collect(),
        Value::String(action) => vec![action.clone()],
        other => panic!("a policy action this test does not know: {other:?}"),
    }
}

/// What each function's inline policy statements grant, by the binary it is built from.
fn granted() -> BTreeMap<String, BTreeSet<Grant>> {
    let template = template();
    let mut functions = BTreeMap::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{name:?} names no binary"))
            .to_owned();
        let mut grants = BTreeSet::new();
        for policy in resource["Properties"]["Policies"].as_sequence().into_iter().flatten() {
            let statements = policy["Statement"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{binary}: only inline statements are checked, found {policy:?}"));
            for statement in statements {
                assert_eq!(statement["Effect"], "Allow", "{binary}");
                for action in actions(&statement["Action"]) {
                    for resource in resources(&statement["Resource"]) {
                        let action = iam::policy(&Operation::ALL)
                            .into_iter()
                            .map(|g| g.action)
                            .find(|known| *known == action)
                            .unwrap_or_else(|| panic!("{binary} is granted {action}, which no operation needs"));
                        grants.insert(Grant { action, resource });
                    }
                }
            }
        }
        functions.insert(binary, grants);
    }
    functions
}

#[test]
fn every_function_of_the_template_declares_its_operations() {
    let granted = granted();
    let declared = declared();
    let in_template: BTreeSet<&str> = granted.keys().map(String::as_str).collect();
    let in_code: BTreeSet<&str> = declared.keys().copied().collect();
    assert_eq!(
        in_template, in_code,
        "the template's functions and the declared ones differ"
    );
}

#[test]
fn every_policy_grants_exactly_what_its_operations_need() {
    let granted = granted();
    let mut mismatches = Vec::new();
    for (function, operations) in declared() {
        let needed: BTreeSet<Grant> = iam::policy(operations).into_iter().collect();
        let has = granted.get(function).cloned().unwrap_or_default();
        for missing in needed.difference(&has) {
            mismatches.push(format!(
                "{function}: missing {} on {:?}",
                missing.action, missing.resource
            ));
        }
        for unused in has.difference(&needed) {
            mismatches.push(format!(
                "{function}: {} on {:?} is granted but no declared operation needs it",
                unused.action, unused.resource
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "template.yaml policies:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn an_event_that_changes_nothing_needs_the_condition_check_permission() {
    // The webhook's "unchanged" write is a ConditionCheck in a transaction: the permission the
    // template once lacked, so that those events failed in AWS only.
    let needed = iam::grants(Operation::RecordEventWithWrite);
    assert!(needed.iter().any(|g| g.action == "dynamodb:ConditionCheckItem"));
    assert!(stripe_webhook::OPERATIONS.contains(&Operation::RecordEventWithWrite));
}
