//! Every function of `template.yaml` can be operated: its logs go to a log group of its own
//! with a retention, its errors and throttles raise alarms, every alarm notifies someone, and the
//! dashboard and the metric alarms read the counts the functions write.
//! (Least privilege is `tests/iam_policies.rs`'s.)

use std::collections::BTreeMap;

use serde_norway::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn resources(template: &Value) -> BTreeMap<String, Value> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(name, resource)| (name.as_str().unwrap().to_owned(), resource.clone()))
        .collect()
}

/// The logical name a `!Ref` or `!GetAtt` names (serde_norway reads tags as tagged values).
fn reference(value: &Value) -> Option<String> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str().map(str::to_owned),
        Value::Tagged(tagged) if tagged.tag == "GetAtt" => tagged
            .value
            .as_str()
            .and_then(|text| text.split('.').next())
            .map(str::to_owned),
        _ => None,
    }
}

#[test]
fn every_function_logs_to_its_own_log_group_with_a_retention() {
    let template = template();
    let resources = resources(&template);
    for (name, function) in resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
    {
        let group = reference(&function["Properties"]["LoggingConfig"]["LogGroup"])
            .unwrap_or_else(|| panic!("{name} names no log group"));
        let group = &resources[&group];
        assert_eq!(group["Type"], "AWS::Logs::LogGroup", "{name}");
        assert_eq!(
            reference(&group["Properties"]["RetentionInDays"]).as_deref(),
            Some("LogRetentionDays")
        );
        assert_eq!(
            group["Condition"], function["Condition"],
            "{name}'s log group exists when it does"
        );
    }
    let globals = &template["Globals"]["Function"];
    assert_eq!(globals["LoggingConfig"]["LogFormat"], "JSON");
    assert_eq!(globals["Tracing"], "Active");
}

#[test]
fn every_function_has_an_errors_and_a_throttles_alarm() {
    let resources = resources(&template());
    let alarms: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm" && r["Properties"]["Namespace"] == "AWS/Lambda")
        .collect();
    for (name, _) in resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
    {
        for metric in ["Errors", "Throttles"] {
            let found = alarms.iter().any(|alarm| {
                alarm["Properties"]["MetricName"] == metric
                    && alarm["Properties"]["Dimensions"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|d| d["Name"] == "FunctionName" && reference(&d["Value"]).as_deref() == Some(name))
            });
            assert!(found, "{name} has no {metric} alarm");
        }
    }
}

#[test]
fn every_alarm_notifies_the_alarm_topic() {
    let resources = resources(&template());
    let alarms: Vec<(&String, &Value)> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
        .collect();
    assert!(alarms.len() > 20);
    for (name, alarm) in alarms {
        let actions = alarm["Properties"]["AlarmActions"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} has no action"));
        assert!(
            actions
                .iter()
                .any(|action| reference(action).as_deref() == Some("AlarmTopic")),
            "{name} does not notify the alarm topic"
        );
    }
    assert_eq!(resources["AlarmTopic"]["Type"], "AWS::SNS::Topic");
}

#[test]
fn the_api_is_throttled_and_the_signup_consumer_bounded() {
    let resources = resources(&template());
    let api = &resources["BillingApi"]["Properties"];
    assert!(!api["DefaultRouteSettings"]["ThrottlingRateLimit"].is_null());
    let routes = api["RouteSettings"].as_mapping().unwrap();
    for public in [
        "POST /api/v1/remotes/server/register",
        "GET /remote-billing-login/{token}",
    ] {
        assert!(routes.contains_key(public), "{public} has no limit of its own");
    }
    let signups = &resources["SignupListenerFunction"]["Properties"]["Events"]["Signups"]["Properties"];
    assert!(!signups["ScalingConfig"]["MaximumConcurrency"].is_null());
}

#[test]
fn no_secret_is_in_a_function_environment_or_a_parameter_default() {
    let template = template();
    let resources = resources(&template);
    for (name, function) in resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
    {
        let variables = function["Properties"]["Environment"]["Variables"].as_mapping();
        for (variable, _) in variables.into_iter().flatten() {
            let variable = variable.as_str().unwrap();
            assert!(
                !billing_adapters::secrets::SECRET_VARIABLES.contains(&variable),
                "{name} has the secret {variable} in its environment; give {variable}_SECRET_ID instead"
            );
        }
        let reads_a_secret = variables
            .into_iter()
            .flatten()
            .any(|(variable, _)| variable.as_str().unwrap().ends_with("_SECRET_ID"));
        let has_the_extension = function["Properties"]["Layers"].as_sequence().is_some_and(|layers| {
            layers
                .iter()
                .any(|l| reference(l).as_deref() == Some("SecretsExtensionLayerArn"))
        });
        assert_eq!(
            reads_a_secret, has_the_extension,
            "{name}: secrets are read through the extension layer"
        );
    }
    for (name, parameter) in template["Parameters"].as_mapping().unwrap() {
        let default = parameter["Default"].as_str().unwrap_or_default();
        assert!(
            !["sk_", "rk_", "whsec_"]
                .iter()
                .any(|prefix| default.starts_with(prefix)),
            "{name:?} has a secret as its default"
        );
    }
}

/// The `!Sub "..."` text of a value.
fn sub_text(value: &Value) -> Option<&str> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "Sub" => tagged.value.as_str(),
        _ => None,
    }
}

#[test]
fn the_dashboard_shows_every_metric_the_functions_count_by_the_labels_they_count_with() {
    let template = template();
    let resources = resources(&template);
    let namespace = sub_text(&template["Globals"]["Function"]["Environment"]["Variables"]["METRICS_NAMESPACE"])
        .expect("the functions are given their metrics namespace");
    let dashboard = &resources["BillingDashboard"]["Properties"]["DashboardBody"];
    let Value::Tagged(sub) = dashboard else {
        panic!("the dashboard body is a !Sub")
    };
    let [body, variables] = sub.value.as_sequence().unwrap().as_slice() else {
        panic!("!Sub [body, variables]")
    };
    assert_eq!(sub_text(&variables["MetricsNamespace"]), Some(namespace));
    let body: serde_json::Value = serde_json::from_str(body.as_str().unwrap()).unwrap();
    // Every metric line of the service's namespace: [namespace, name, (label, value)?]
    let mut shown: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for widget in body["widgets"].as_array().unwrap() {
        for line in widget["properties"]["metrics"].as_array().unwrap() {
            let line: Vec<&str> = line.as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
            if line[0] == "${MetricsNamespace}" {
                let labels = shown.entry(line[1].to_owned()).or_default();
                if let [_, _, label, value] = line.as_slice() {
                    labels.push(((*label).to_owned(), (*value).to_owned()));
                }
            } else if line[2] == "FunctionName" {
                let function = line[3].trim_start_matches("${").trim_end_matches('}');
                assert_eq!(resources[function]["Type"], "AWS::Serverless::Function", "{function}");
            }
        }
    }
    let counted: BTreeMap<&str, &[&str]> = billing::metrics::ALL.iter().copied().collect();
    assert_eq!(
        shown.keys().map(String::as_str).collect::<Vec<_>>(),
        counted.keys().copied().collect::<Vec<_>>(),
        "the dashboard shows exactly the metrics the functions count"
    );
    for (metric, lines) in &shown {
        for (label, _) in lines {
            assert!(
                counted[metric.as_str()].contains(&label.as_str()),
                "{metric} by {label}"
            );
        }
    }
    let mut event_outcomes: Vec<&str> = shown["StripeEvents"].iter().map(|(_, v)| v.as_str()).collect();
    let mut kept_outcomes = billing::store::EVENT_OUTCOMES.to_vec();
    event_outcomes.sort_unstable();
    kept_outcomes.sort_unstable();
    assert_eq!(
        event_outcomes, kept_outcomes,
        "every outcome of a Stripe event is drawn"
    );
}

#[test]
fn failed_stripe_events_and_an_unavailable_stripe_raise_alarms_on_the_functions_counts() {
    let template = template();
    let resources = resources(&template);
    let namespace = sub_text(&template["Globals"]["Function"]["Environment"]["Variables"]["METRICS_NAMESPACE"]);
    let on_counts: Vec<(String, String, String)> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm" && sub_text(&r["Properties"]["Namespace"]) == namespace)
        .map(|alarm| {
            let properties = &alarm["Properties"];
            let dimension = &properties["Dimensions"][0];
            let metric = properties["MetricName"].as_str().unwrap().to_owned();
            let label = dimension["Name"].as_str().unwrap_or_default().to_owned();
            let counted = billing::metrics::ALL.iter().find(|(name, _)| *name == metric);
            assert!(
                counted.is_some_and(|(_, labels)| label.is_empty() || labels.contains(&label.as_str())),
                "{metric} by {label}"
            );
            (
                metric,
                label,
                dimension["Value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for wanted in [
        ("StripeEvents", "Outcome", "failed"),
        ("StripeFailures", "Reason", "unavailable"),
        ("PlanInvoices", "Outcome", "needs_attention"),
        ("InvoicingRuns", "", ""),
    ] {
        assert!(
            on_counts
                .iter()
                .any(|(m, l, v)| (m.as_str(), l.as_str(), v.as_str()) == wanted),
            "{wanted:?} in {on_counts:?}"
        );
    }
}

/// The alarm watching queue `queue` for any visible message, if there is one.
fn alarm_on_queue<'t>(resources: &'t BTreeMap<String, Value>, queue: &str) -> Option<&'t Value> {
    resources.values().find(|r| {
        r["Type"] == "AWS::CloudWatch::Alarm"
            && r["Properties"]["Namespace"] == "AWS/SQS"
            && reference(&r["Properties"]["Dimensions"][0]["Value"]).as_deref() == Some(queue)
    })
}

#[test]
fn every_asynchronously_invoked_function_sends_its_failures_to_an_alarmed_queue() {
    // Lambda retries an asynchronous invocation twice and then drops it, unless an on-failure
    // destination keeps it: a schedule's or an EventBridge rule's target must have one.
    let template = template();
    let resources = resources(&template);
    let mut checked = 0;
    for (name, function) in resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
    {
        let asynchronous = function["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
            .any(|(_, event)| {
                matches!(
                    event["Type"].as_str(),
                    Some("Schedule" | "ScheduleV2" | "EventBridgeRule")
                )
            });
        if !asynchronous {
            continue;
        }
        checked += 1;
        let config = &function["Properties"]["EventInvokeConfig"];
        let destination = &config["DestinationConfig"]["OnFailure"];
        assert_eq!(destination["Type"], "SQS", "{name} keeps no failed invocation");
        let queue = reference(&destination["Destination"]).unwrap_or_else(|| panic!("{name}: a queue of the stack"));
        assert_eq!(resources[&queue]["Type"], "AWS::SQS::Queue", "{name}");
        assert!(
            alarm_on_queue(&resources, &queue).is_some(),
            "{name}: nothing alarms on {queue}"
        );
        assert!(config["MaximumRetryAttempts"].as_u64().is_some(), "{name}");
        // And the event's own delivery has a dead-letter queue too
        for (event_name, event) in function["Properties"]["Events"].as_mapping().into_iter().flatten() {
            if matches!(event["Type"].as_str(), Some("ScheduleV2" | "EventBridgeRule")) {
                let dead = reference(&event["Properties"]["DeadLetterConfig"]["Arn"])
                    .unwrap_or_else(|| panic!("{name} {event_name:?} has no dead-letter queue"));
                assert!(
                    alarm_on_queue(&resources, &dead).is_some(),
                    "{name}: nothing alarms on {dead}"
                );
            }
        }
    }
    assert_eq!(checked, 2, "the EventBridge consumer and the invoicing scheduler");
}

#[test]
fn schedules_are_named_per_stack_and_queue_writers_are_this_stacks_own() {
    let template = template();
    let resources = resources(&template);
    for (name, function) in resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
    {
        for (_, event) in function["Properties"]["Events"].as_mapping().into_iter().flatten() {
            if event["Type"] == "ScheduleV2" {
                let Value::Tagged(named) = &event["Properties"]["Name"] else {
                    panic!("{name}: a schedule without a name gets its logical id, the same in every stack");
                };
                assert!(named.tag == "Sub" && named.value.as_str().unwrap().contains("${AWS::StackName}"));
            }
        }
    }
    let policy = &resources["StripeEventBridgeDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"];
    for statement in policy["Statement"].as_sequence().unwrap() {
        assert!(
            statement["Condition"]["ArnEquals"]["aws:SourceArn"] != Value::Null,
            "any EventBridge rule of the account could write to the queue"
        );
    }
}

#[test]
fn the_table_is_protected_from_deletion_and_lambda_keeps_its_start_and_report_lines() {
    let template = template();
    let resources = resources(&template);
    let table = &resources["BillingTable"];
    assert_eq!(table["Properties"]["DeletionProtectionEnabled"], true);
    assert_eq!(table["DeletionPolicy"], "Retain");
    assert_eq!(
        template["Globals"]["Function"]["LoggingConfig"]["SystemLogLevel"], "INFO",
        "WARN drops Lambda's START and REPORT lines"
    );
}

#[test]
fn every_alarm_evaluates_within_cloudwatchs_limits() {
    // CloudWatch refuses a period that is not 10, 30 or a multiple of 60 seconds, and an
    // evaluation range (period × evaluation periods) over seven days; moto accepts both.
    let template = template();
    for (name, alarm) in resources(&template)
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
    {
        let properties = &alarm["Properties"];
        let period = properties["Period"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: no period"));
        assert!(
            period == 10 || period == 30 || period % 60 == 0,
            "{name}: period {period}"
        );
        let evaluations = properties["EvaluationPeriods"].as_u64().unwrap();
        assert!(period * evaluations <= 7 * 86_400, "{name}: {period} s × {evaluations}");
        if let Some(datapoints) = properties["DatapointsToAlarm"].as_u64() {
            assert!(datapoints <= evaluations, "{name}");
        }
    }
}

#[test]
fn the_jwt_authorizer_accepts_only_tokens_with_the_apis_scope() {
    // Without a scope, the gateway accepts any token of the issuer, ID tokens included.
    let template = template();
    let authorizer = &template["Resources"]["BillingApi"]["Properties"]["Auth"]["Authorizers"]["BillingJwt"];
    let scopes: Vec<&str> = authorizer["AuthorizationScopes"]
        .as_sequence()
        .expect("the authorizer names scopes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(scopes, [billing::auth::Scope::SUBSCRIPTION.id]);
}

#[test]
fn every_form_of_a_throttled_public_route_has_the_same_throttle() {
    // API Gateway matches a route key exactly: a limit on `POST /x` leaves `POST /x/` at the
    // default limits, so an attacker floods the twin.
    let template = template();
    let settings = template["Resources"]["BillingApi"]["Properties"]["RouteSettings"]
        .as_mapping()
        .unwrap();
    let keys: Vec<&str> = settings.keys().filter_map(Value::as_str).collect();
    for key in &keys {
        let twin = match key.strip_suffix('/') {
            Some(bare) => bare.to_owned(),
            None => format!("{key}/"),
        };
        assert!(keys.contains(&twin.as_str()), "{key} is throttled, {twin} is not");
        assert_eq!(settings[*key], settings[twin.as_str()], "{key} and {twin}");
    }
    assert!(keys.len() >= 12, "{keys:?}");
}

#[test]
fn the_http_api_writes_json_access_logs_with_the_authorizers_refusals() {
    let template = template();
    let resources = resources(&template);
    let settings = &resources["BillingApi"]["Properties"]["AccessLogSettings"];
    let group = reference(&settings["DestinationArn"]).expect("a log group of the stack");
    assert_eq!(resources[&group]["Type"], "AWS::Logs::LogGroup");
    assert!(resources[&group]["Properties"]["RetentionInDays"] != Value::Null);
    let format: serde_json::Value =
        serde_json::from_str(settings["Format"].as_str().unwrap()).expect("the format is one JSON object");
    for field in ["requestId", "routeKey", "status", "authorizerError", "integrationError"] {
        assert!(format.get(field).is_some(), "{field}");
    }
}

#[test]
fn a_wrong_webhook_secret_a_stuck_signup_queue_throttling_and_mail_reputation_raise_alarms() {
    let template = template();
    let resources = resources(&template);
    let alarms: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|r| &r["Properties"])
        .collect();
    let watched = |namespace_is: &dyn Fn(&Value) -> bool, metric: &str| {
        alarms
            .iter()
            .any(|a| namespace_is(&a["Namespace"]) && a["MetricName"] == metric)
    };
    let ours = |namespace: &Value| matches!(namespace, Value::Tagged(t) if t.tag == "Sub");
    let named = |wanted: &'static str| move |namespace: &Value| namespace == wanted;
    assert!(watched(&ours, "WebhookSignatureFailures"), "a wrong webhook secret");
    assert!(
        watched(&named("AWS/SQS"), "ApproximateAgeOfOldestMessage"),
        "signups waiting"
    );
    assert!(watched(&named("AWS/DynamoDB"), "ReadThrottleEvents"), "read throttles");
    assert!(
        watched(&named("AWS/DynamoDB"), "WriteThrottleEvents"),
        "write throttles"
    );
    assert!(watched(&named("AWS/SES"), "Reputation.BounceRate"), "bounces");
    assert!(watched(&named("AWS/SES"), "Reputation.ComplaintRate"), "complaints");
    // A wrong secret alarms within five minutes
    let signature = alarms
        .iter()
        .find(|a| a["MetricName"] == "WebhookSignatureFailures")
        .unwrap();
    assert!(signature["Period"].as_u64().unwrap() * signature["EvaluationPeriods"].as_u64().unwrap() <= 300);
}

#[test]
fn every_mail_goes_with_a_configuration_set_that_suppresses_bounces_and_complaints() {
    let template = template();
    let resources = resources(&template);
    let set = &resources["MailConfigurationSet"];
    assert_eq!(set["Type"], "AWS::SES::ConfigurationSet");
    let reasons: Vec<&str> = set["Properties"]["SuppressionOptions"]["SuppressedReasons"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(reasons, ["BOUNCE", "COMPLAINT"]);
    let mut senders = 0;
    for (name, function) in resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
    {
        let variables = &function["Properties"]["Environment"]["Variables"];
        if variables["MAIL_FROM"] == Value::Null {
            continue;
        }
        senders += 1;
        assert_eq!(
            reference(&variables["MAIL_CONFIGURATION_SET"]).as_deref(),
            Some("MailConfigurationSet"),
            "{name} sends mail without the configuration set"
        );
    }
    assert!(senders >= 4, "{senders}");
}
