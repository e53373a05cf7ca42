//! docs/DEPLOY.md can be followed as written: every command it gives is a standard CLI or a
//! script of this repository, every parameter, output and alarm it names is in template.yaml,
//! and the names it creates (secrets, the SSM price parameters) are the template's defaults.

use std::collections::BTreeSet;
use std::path::Path;

use serde_norway::Value;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn deploy_doc() -> String {
    std::fs::read_to_string(root().join("docs/DEPLOY.md")).unwrap()
}

fn template() -> Value {
    serde_norway::from_str(&std::fs::read_to_string(root().join("template.yaml")).unwrap()).unwrap()
}

fn keys(section: &Value) -> BTreeSet<String> {
    section
        .as_mapping()
        .unwrap()
        .keys()
        .map(|key| key.as_str().unwrap().to_owned())
        .collect()
}

/// Every command of the document: the lines of its `sh` blocks (comments and continuations
/// joined) and the inline code spans that start with a command.
fn commands(doc: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in doc.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if in_block {
            let code = line.split(" #").next().unwrap_or_default().trim();
            if code.is_empty() || code.starts_with('#') {
                continue;
            }
            pending.push_str(code.trim_end_matches('\\'));
            pending.push(' ');
            if !code.ends_with('\\') {
                commands.push(std::mem::take(&mut pending).trim().to_owned());
            }
        }
    }
    for span in doc.split('`').skip(1).step_by(2) {
        let first = span.split_whitespace().next().unwrap_or_default();
        if ["aws", "sam", "curl", "openssl", "pip", "cargo"].contains(&first) || span.starts_with("scripts/") {
            commands.push(span.to_owned());
        }
    }
    commands
}

/// The program a command runs: its first word after any `NAME=value` assignments.
fn program(command: &str) -> &str {
    command
        .split_whitespace()
        .find(|word| !(word.contains('=') && word.chars().next().is_some_and(|c| c.is_ascii_uppercase())))
        .unwrap_or_default()
}

#[test]
fn every_command_is_a_standard_cli_or_a_script_of_this_repository() {
    let commands = commands(&deploy_doc());
    assert!(commands.len() >= 8, "{commands:#?}");
    for command in &commands {
        let program = program(command);
        if let Some(script) = program.strip_prefix("scripts/") {
            let path = root().join("scripts").join(script);
            let mode = std::fs::metadata(&path)
                .unwrap_or_else(|_| panic!("{command}: no {}", path.display()))
                .permissions();
            assert!(
                std::os::unix::fs::PermissionsExt::mode(&mode) & 0o111 != 0,
                "{command}: not executable"
            );
        } else {
            assert!(
                ["aws", "sam", "curl", "openssl", "pip", "cargo"].contains(&program),
                "{command}: {program} is neither a standard CLI nor in scripts/"
            );
        }
    }
}

#[test]
fn every_parameter_output_and_alarm_named_is_in_the_template() {
    let template = template();
    let known: BTreeSet<String> = keys(&template["Parameters"])
        .into_iter()
        .chain(keys(&template["Outputs"]))
        .chain(keys(&template["Resources"]))
        .collect();
    let doc = deploy_doc();
    let named: BTreeSet<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| {
            span.len() > 3
                && span.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && span.chars().all(|c| c.is_ascii_alphanumeric())
                && span.chars().any(|c| c.is_ascii_lowercase())
        })
        .collect();
    let missing: Vec<&&str> = named
        .iter()
        .filter(|name| **name != "String" && !known.contains(**name))
        .collect();
    assert!(
        missing.is_empty(),
        "named in DEPLOY.md, not in template.yaml: {missing:?}"
    );
    assert!(named.contains("SecretsExtensionLayerArn") && named.contains("WebhookUrl"));
}

#[test]
fn the_secrets_and_price_parameters_it_creates_are_the_templates_defaults() {
    let template = template();
    let doc = deploy_doc();
    for parameter in [
        "StripeSecretKeySecret",
        "StripeWebhookSecretSecret",
        "BillingTokenKeySecret",
    ] {
        let name = template["Parameters"][parameter]["Default"].as_str().unwrap();
        assert!(
            doc.contains(&format!("create-secret --name {name} ")),
            "DEPLOY.md creates no secret named {name} ({parameter})"
        );
    }
    let script = std::fs::read_to_string(root().join("scripts/stripe_prices.py")).unwrap();
    assert!(script.contains(r#"default="/billing/stripe/prices""#));
    for (parameter, plan) in [
        ("StripePricePending", "pending"),
        ("StripePriceFree", "free"),
        ("StripePriceBasicMonthly", "basic_monthly"),
        ("StripePriceBasicAnnual", "basic_annual"),
        ("StripePriceBusinessMonthly", "business_monthly"),
        ("StripePriceBusinessAnnual", "business_annual"),
    ] {
        assert_eq!(
            template["Parameters"][parameter]["Default"].as_str(),
            Some(format!("/billing/stripe/prices/{plan}").as_str())
        );
        assert!(
            script.contains(&format!("\"{plan}:")),
            "the script creates no {plan} price"
        );
    }
}
