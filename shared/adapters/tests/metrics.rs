//! The service's counts as CloudWatch Embedded Metric Format documents: what a Lambda function
//! writes to stdout after an invocation. One test per process (the recorder is process-wide).

use std::collections::HashMap;

use billing::metrics;
use billing_adapters::metrics::Metrics;
use serde_json::{Value, json};

struct NoVariables;

impl billing::config::Environment for NoVariables {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

fn documents(metrics: &Metrics, request_id: &str) -> Vec<Value> {
    let bytes = metrics.documents(request_id).expect("installed");
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
        .collect()
}

#[test]
fn an_invocations_counts_are_written_once_as_embedded_metric_format_documents_per_label_set() {
    // Given no namespace, nothing is installed
    let off = Metrics::install(&NoVariables).unwrap();
    assert!(!off.is_installed());
    assert_eq!(off.documents("r-0"), None);

    // Given the recorder installed
    let recorder = Metrics::install_for_tests("Billing/test", 1_764_547_200_000).unwrap();
    // When an invocation counts events, a retry and a ledger sync
    metrics::stripe_event("applied");
    metrics::stripe_event("applied");
    metrics::stripe_event("failed");
    metrics::stripe_retry();
    metrics::ledger_synced(3);
    let written = documents(&recorder, "req-1");

    // Then one document per label set, each naming its dimensions, metrics and values
    let mut by_dimensions: HashMap<String, &Value> = HashMap::new();
    for document in &written {
        let set = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(set["Namespace"], "Billing/test");
        assert_eq!(document["_aws"]["Timestamp"], 1_764_547_200_000_u64);
        assert_eq!(document["requestId"], "req-1");
        let outcome = document.get(metrics::OUTCOME).map(Value::to_string).unwrap_or_default();
        by_dimensions.insert(format!("{}{outcome}", set["Dimensions"]), document);
    }
    assert_eq!(written.len(), 3, "{written:#?}");
    let applied = by_dimensions[r#"[["Outcome"]]"applied""#];
    assert_eq!(applied[metrics::STRIPE_EVENTS], 2);
    assert_eq!(
        applied["_aws"]["CloudWatchMetrics"][0]["Metrics"],
        json!([{"Name": "StripeEvents"}])
    );
    assert_eq!(by_dimensions[r#"[["Outcome"]]"failed""#][metrics::STRIPE_EVENTS], 1);
    let unlabelled = by_dimensions["[[]]"];
    assert_eq!(
        (
            &unlabelled[metrics::STRIPE_RETRIES],
            &unlabelled[metrics::LEDGER_SYNCS],
            &unlabelled[metrics::LEDGER_ROWS]
        ),
        (&json!(1), &json!(1), &json!(3))
    );

    // And the next invocation writes only what it counted
    assert!(documents(&recorder, "req-2").is_empty());
    metrics::mail(true);
    let next = documents(&recorder, "req-3");
    assert_eq!(next.len(), 1);
    assert_eq!((&next[0]["Mails"], &next[0]["Outcome"]), (&json!(1), &json!("sent")));

    // And a second recorder in one process is a configuration error, not a panic
    assert!(Metrics::install_for_tests("Billing/other", 0).is_err());
}
