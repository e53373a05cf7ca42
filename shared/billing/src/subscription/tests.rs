//! Tests of the subscription rules: parsing, validation (one test per rule of API.md), and
//! what applying a change does.

use chrono::TimeZone;

use super::*;
use crate::store::AuditEntry;

const USER: &str = "0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
}

fn catalog() -> PlanCatalog {
    PlanCatalog::standard(|id| Ok::<_, ()>(format!("price_{id}"))).unwrap()
}

fn change(json: &str) -> SubscriptionChange {
    SubscriptionChange::from_json(json.as_bytes()).unwrap()
}

fn errors_of(result: Result<impl std::fmt::Debug, ValidationErrors>) -> Vec<(Slug, Option<String>)> {
    result.unwrap_err().0.into_iter().map(|e| (e.slug, e.field)).collect()
}

fn field(slug: Slug, pointer: &str) -> (Slug, Option<String>) {
    (slug, Some(pointer.to_owned()))
}

fn stored() -> Subscription {
    let create = change(&format!(r#"{{"user_id": "{USER}", "email": "ada@example.com"}}"#));
    create
        .new_subscription(catalog().get("pending").unwrap(), now(), now())
        .unwrap()
}

// Parsing

#[test]
fn body_that_is_not_json_is_invalid_format() {
    let errors = errors_of(SubscriptionChange::from_json(b"{plan: basic"));
    assert_eq!(errors, vec![(Slug::InvalidFormat, None)]);
}

#[test]
fn body_that_is_not_an_object_is_invalid_format() {
    let errors = errors_of(SubscriptionChange::from_json(b"[1, 2]"));
    assert_eq!(errors, vec![(Slug::InvalidFormat, None)]);
}

#[test]
fn every_wrong_type_and_unknown_field_is_reported_at_once() {
    let body = br#"{"plan": 3, "cancel_at_period_end": "yes", "user_id": "ADA", "colour": "blue", "trial_end": "tomorrow", "licenses": "ten"}"#;
    let mut errors = errors_of(SubscriptionChange::from_json(body));
    errors.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        errors,
        vec![
            field(Slug::InvalidFormat, "/cancel_at_period_end"),
            field(Slug::InvalidFormat, "/colour"),
            field(Slug::InvalidFormat, "/licenses"),
            field(Slug::InvalidFormat, "/plan"),
            field(Slug::InvalidFormat, "/trial_end"),
            field(Slug::InvalidFormat, "/user_id"),
        ]
    );
}

#[test]
fn null_is_refused_rather_than_taken_as_absent() {
    let errors = errors_of(SubscriptionChange::from_json(br#"{"email": null}"#));
    assert_eq!(errors, vec![field(Slug::InvalidFormat, "/email")]);
}

#[test]
fn unknown_status_is_invalid_value() {
    let errors = errors_of(SubscriptionChange::from_json(br#"{"status": "sleeping"}"#));
    assert_eq!(errors, vec![field(Slug::InvalidValue, "/status")]);
}

#[test]
fn negative_licenses_is_invalid_value() {
    let errors = errors_of(SubscriptionChange::from_json(br#"{"licenses": -1}"#));
    assert_eq!(errors, vec![field(Slug::InvalidValue, "/licenses")]);
}

#[test]
fn pointer_escapes_slash_and_tilde_in_unknown_field_names() {
    let errors = errors_of(SubscriptionChange::from_json(br#"{"a/b~c": 1}"#));
    assert_eq!(errors, vec![field(Slug::InvalidFormat, "/a~1b~0c")]);
}

#[test]
fn well_formed_body_parses_every_field() {
    let parsed = change(&format!(
        r#"{{"plan": "basic_monthly", "stripe_source": "pm_card_visa", "email": "ada@example.com",
            "cancel_at_period_end": true, "user_id": "{USER}", "stripe_customer": "cus_1",
            "stripe_subscription": "sub_1", "status": "past_due", "trial_end": "2026-12-01T00:00:00Z",
            "licenses": 12, "discount_percent": 15}}"#
    ));
    assert_eq!(parsed.plan.as_deref(), Some("basic_monthly"));
    assert_eq!(parsed.status, Some(Status::PastDue));
    assert_eq!(parsed.user_id.unwrap().to_string(), USER);
    assert_eq!(parsed.licenses, Some(12));
    assert_eq!(
        parsed.trial_end,
        Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())
    );
}

// The split between user- and system-controlled properties

#[test]
fn system_properties_are_named_by_json_pointer() {
    let parsed = change(r#"{"plan": "basic_monthly", "status": "active", "trial_end": "2027-01-01T00:00:00Z"}"#);
    assert_eq!(parsed.changing_system_properties(), vec!["/status", "/trial_end"]);
}

#[test]
fn user_properties_are_not_system_properties() {
    let parsed = change(
        r#"{"plan": "basic_monthly", "stripe_source": "pm_card_visa", "email": "a@b.co", "cancel_at_period_end": false}"#,
    );
    assert!(parsed.changing_system_properties().is_empty());
}

#[test]
fn empty_object_is_an_empty_change() {
    assert!(change("{}").is_empty());
    assert!(!change(r#"{"cancel_at_period_end": false}"#).is_empty());
}

// validate_patch

#[test]
fn empty_patch_is_missing() {
    let errors = errors_of(change("{}").validate_patch(Authority::Owner, &catalog(), now()));
    assert_eq!(errors, vec![(Slug::Missing, None)]);
}

#[test]
fn patch_by_non_admin_cannot_change_status_or_trial_end() {
    let parsed = change(r#"{"status": "active", "trial_end": "2027-01-01T00:00:00Z"}"#);
    let errors = errors_of(parsed.validate_patch(Authority::Owner, &catalog(), now()));
    assert_eq!(
        errors,
        vec![
            field(Slug::AccessDenied, "/status"),
            field(Slug::AccessDenied, "/trial_end")
        ]
    );
}

#[test]
fn patch_by_non_admin_gets_one_error_per_system_property() {
    let parsed = change(&format!(
        r#"{{"user_id": "{USER}", "stripe_customer": "cus_1", "stripe_subscription": "sub_1", "status": "active",
            "trial_end": "2027-01-01T00:00:00Z", "licenses": 1, "discount_percent": 5}}"#
    ));
    let errors = errors_of(parsed.validate_patch(Authority::Owner, &catalog(), now()));
    let system_controlled = [
        "/user_id",
        "/stripe_customer",
        "/stripe_subscription",
        "/status",
        "/trial_end",
        "/licenses",
        "/discount_percent",
    ];
    let expected: Vec<_> = system_controlled.iter().map(|p| field(Slug::AccessDenied, p)).collect();
    assert_eq!(errors, expected);
}

#[test]
fn patch_by_admin_may_change_system_properties() {
    let parsed = change(r#"{"status": "active", "trial_end": "2027-01-01T00:00:00Z", "licenses": 3}"#);
    assert!(parsed.validate_patch(Authority::Admin, &catalog(), now()).is_ok());
}

#[test]
fn patch_by_admin_cannot_move_a_subscription_to_another_user() {
    let parsed = change(&format!(r#"{{"user_id": "{USER}"}}"#));
    let errors = errors_of(parsed.validate_patch(Authority::Admin, &catalog(), now()));
    assert_eq!(errors, vec![field(Slug::InvalidValue, "/user_id")]);
}

#[test]
fn unknown_plan_is_invalid_value() {
    let errors = errors_of(change(r#"{"plan": "platinum"}"#).validate_patch(Authority::Owner, &catalog(), now()));
    assert_eq!(errors, vec![field(Slug::InvalidValue, "/plan")]);
}

#[test]
fn non_admin_choosing_an_admin_only_plan_is_access_denied() {
    for plan in ["free", "pending"] {
        let parsed = change(&format!(r#"{{"plan": "{plan}"}}"#));
        let errors = errors_of(parsed.validate_patch(Authority::Owner, &catalog(), now()));
        assert_eq!(errors, vec![field(Slug::AccessDenied, "/plan")], "{plan}");
    }
}

#[test]
fn admin_may_choose_an_admin_only_plan() {
    assert!(
        change(r#"{"plan": "free"}"#)
            .validate_patch(Authority::Admin, &catalog(), now())
            .is_ok()
    );
}

#[test]
fn non_admin_may_choose_a_paid_plan() {
    for plan in ["basic_monthly", "basic_annual", "business_monthly", "business_annual"] {
        let parsed = change(&format!(r#"{{"plan": "{plan}"}}"#));
        assert!(
            parsed.validate_patch(Authority::Owner, &catalog(), now()).is_ok(),
            "{plan}"
        );
    }
}

#[test]
fn email_without_at_sign_is_invalid_value() {
    let errors =
        errors_of(change(r#"{"email": "ada.example.com"}"#).validate_patch(Authority::Owner, &catalog(), now()));
    assert_eq!(errors, vec![field(Slug::InvalidValue, "/email")]);
}

#[test]
fn trial_end_in_the_past_is_invalid_value() {
    let errors = errors_of(change(r#"{"trial_end": "2026-11-20T10:00:00Z"}"#).validate_patch(
        Authority::Admin,
        &catalog(),
        now(),
    ));
    assert_eq!(errors, vec![field(Slug::InvalidValue, "/trial_end")]);
}

#[test]
fn payment_method_must_be_a_payment_method_id() {
    let errors =
        errors_of(change(r#"{"stripe_source": "tok_visa"}"#).validate_patch(Authority::Owner, &catalog(), now()));
    assert_eq!(errors, vec![field(Slug::InvalidValue, "/stripe_source")]);
}

#[test]
fn stripe_ids_must_have_their_prefix() {
    let parsed = change(r#"{"stripe_customer": "sub_1", "stripe_subscription": "cus_1"}"#);
    let errors = errors_of(parsed.validate_patch(Authority::Admin, &catalog(), now()));
    assert_eq!(
        errors,
        vec![
            field(Slug::InvalidValue, "/stripe_customer"),
            field(Slug::InvalidValue, "/stripe_subscription")
        ]
    );
}

#[test]
fn discount_above_one_hundred_percent_is_invalid_value() {
    let errors = errors_of(change(r#"{"discount_percent": 101}"#).validate_patch(Authority::Admin, &catalog(), now()));
    assert_eq!(errors, vec![field(Slug::InvalidValue, "/discount_percent")]);
}

#[test]
fn patch_reports_denied_and_invalid_fields_together() {
    let parsed = change(r#"{"plan": "platinum", "email": "nobody", "status": "active"}"#);
    let errors = errors_of(parsed.validate_patch(Authority::Owner, &catalog(), now()));
    assert_eq!(
        errors,
        vec![
            field(Slug::AccessDenied, "/status"),
            field(Slug::InvalidValue, "/plan"),
            field(Slug::InvalidValue, "/email"),
        ]
    );
}

// validate_create

#[test]
fn create_without_user_id_and_email_reports_both_missing() {
    let errors = errors_of(change(r#"{"plan": "basic_monthly"}"#).validate_create(&catalog(), now()));
    assert_eq!(
        errors,
        vec![field(Slug::Missing, "/user_id"), field(Slug::Missing, "/email")]
    );
}

#[test]
fn create_reports_missing_and_invalid_fields_together() {
    let errors = errors_of(change(r#"{"email": "ada", "plan": "platinum"}"#).validate_create(&catalog(), now()));
    assert_eq!(
        errors,
        vec![
            field(Slug::Missing, "/user_id"),
            field(Slug::InvalidValue, "/plan"),
            field(Slug::InvalidValue, "/email"),
        ]
    );
}

#[test]
fn create_with_user_id_and_email_is_valid() {
    let parsed = change(&format!(r#"{{"user_id": "{USER}", "email": "ada@example.com"}}"#));
    assert!(parsed.validate_create(&catalog(), now()).is_ok());
}

// new_subscription and apply

#[test]
fn new_pending_subscription_trials_for_31_days_from_signup() {
    let signup = now() - Duration::days(2);
    let create = change(&format!(r#"{{"user_id": "{USER}", "email": "ada@example.com"}}"#));
    let subscription = create
        .new_subscription(catalog().get("pending").unwrap(), signup, now())
        .unwrap();
    assert_eq!(subscription.id, subscription.user_id);
    assert_eq!(subscription.status, Status::Trialing);
    assert_eq!(subscription.trial_start, Some(signup));
    assert_eq!(subscription.trial_end, Some(now() + Duration::days(29)));
    assert_eq!(subscription.version, 1);
    assert_eq!(subscription.created_at, now());
}

#[test]
fn new_subscription_on_a_plan_without_trial_has_no_trial() {
    let create = change(&format!(
        r#"{{"user_id": "{USER}", "email": "ada@example.com", "plan": "free"}}"#
    ));
    let subscription = create
        .new_subscription(catalog().get("free").unwrap(), now(), now())
        .unwrap();
    assert_eq!(subscription.status, Status::Active);
    assert_eq!((subscription.trial_start, subscription.trial_end), (None, None));
}

#[test]
fn apply_sets_the_changed_fields_and_moves_to_the_next_version() {
    let current = stored();
    let later = now() + Duration::hours(1);
    let next = change(r#"{"plan": "basic_monthly", "stripe_source": "pm_card_visa", "cancel_at_period_end": true}"#)
        .apply(&current, later)
        .unwrap();
    assert_eq!(next.plan, "basic_monthly");
    assert!(next.has_payment_source);
    assert!(next.cancel_at_period_end);
    assert_eq!(next.version, current.version + 1);
    assert_eq!(next.updated_at, later);
    assert_eq!(next.created_at, current.created_at);
    assert_eq!(next.email, current.email);
}

#[test]
fn apply_of_a_change_that_changes_nothing_is_none() {
    let current = stored();
    assert_eq!(
        change(r#"{"plan": "pending", "email": "ada@example.com"}"#).apply(&current, now()),
        None
    );
}

#[test]
fn audit_of_a_change_gives_each_changed_field_before_and_after_but_no_payment_method_id() {
    // Given a stored subscription and a change of plan with a card
    let current = stored();
    let next = change(r#"{"stripe_source": "pm_card_visa", "plan": "basic_monthly"}"#)
        .apply(&current, now())
        .unwrap();
    // When its audit record is made
    let audit = AuditEntry::between(Some(&current), &next, "user:someone", "patch");
    // Then it names each field that changed, before and after, and not the card's id
    assert_eq!(
        audit.changes,
        serde_json::json!([
            {"field": "/has_payment_source", "before": false, "after": true},
            {"field": "/plan", "before": "pending", "after": "basic_monthly"},
        ])
    );
    assert!(!audit.changes.to_string().contains("pm_card_visa"));
    assert_eq!((audit.version, audit.at), (next.version, next.updated_at));
}

#[test]
fn audit_of_a_create_has_no_before_values() {
    let created = stored();
    let audit = AuditEntry::between(None, &created, "system:signup", "create");
    let changes = audit.changes.as_array().unwrap();
    assert!(changes.iter().all(|change| change["before"].is_null()));
    assert!(
        changes
            .iter()
            .any(|change| change["field"] == "/plan" && change["after"] == "pending")
    );
    assert!(!changes.iter().any(|change| change["field"] == "/version"));
}

#[test]
fn audit_records_of_the_older_form_read_as_field_changes_without_before() {
    let mut audit = AuditEntry::between(None, &stored(), "system:stripe", "customer.subscription.updated");
    audit.changes = serde_json::json!({"plan": "basic_monthly", "event": "evt_1"});
    assert_eq!(
        audit.field_changes(),
        serde_json::json!([{"field": "/plan", "before": null, "after": "basic_monthly"}])
    );
}

#[test]
fn subscription_serialises_with_the_api_field_names() {
    let json = serde_json::to_value(stored()).unwrap();
    let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    let mut expected = vec![
        "id",
        "user_id",
        "email",
        "plan",
        "status",
        "trial_start",
        "trial_end",
        "cancel_at_period_end",
        "current_period_end",
        "stripe_customer",
        "stripe_subscription",
        "has_payment_source",
        "licenses",
        "discount_percent",
        "created_at",
        "updated_at",
        "version",
    ];
    expected.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, expected);
    assert_eq!(json["trial_start"], "2026-11-21T10:00:00Z");
    assert_eq!(json["status"], "trialing");
    assert_eq!(json["current_period_end"], serde_json::Value::Null);
}

#[test]
fn every_field_of_the_table_is_read_applied_and_audited() {
    // Given a change that sets every field
    let parsed = change(&format!(
        r#"{{"plan": "basic_monthly", "stripe_source": "pm_card_visa", "email": "new@example.com",
            "cancel_at_period_end": true, "user_id": "{USER}", "stripe_customer": "cus_9",
            "stripe_subscription": "sub_9", "status": "past_due", "trial_end": "2027-01-01T00:00:00Z",
            "licenses": 12, "discount_percent": 15}}"#
    ));
    // Then applying it sets what each field names
    let current = change(&format!(r#"{{"user_id": "{USER}", "email": "ada@example.com"}}"#))
        .new_subscription(catalog().get("pending").unwrap(), now(), now())
        .unwrap();
    let next = parsed.apply(&current, now()).unwrap();
    assert_eq!(next.plan, "basic_monthly");
    assert!(next.has_payment_source);
    assert_eq!(next.email, "new@example.com");
    assert!(next.cancel_at_period_end);
    assert_eq!(next.stripe_customer.as_deref(), Some("cus_9"));
    assert_eq!(next.stripe_subscription.as_deref(), Some("sub_9"));
    assert_eq!(next.status, Status::PastDue);
    assert_eq!(
        next.trial_end.map(|t| t.to_rfc3339()).as_deref(),
        Some("2027-01-01T00:00:00+00:00")
    );
    assert_eq!((next.licenses, next.discount_percent), (Some(12), Some(15)));
    assert_eq!(next.id, current.id);
    // and the audit record of the write names every field but the fixed user id
    let audit = AuditEntry::between(Some(&current), &next, "admin:someone", "patch");
    let audited: Vec<&str> = audit
        .changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    for field in FIELDS.iter().filter(|field| field.name != "user_id") {
        let pointer = if field.name == "stripe_source" {
            "/has_payment_source"
        } else {
            field.pointer
        };
        assert!(audited.contains(&pointer), "{} is not audited", field.name);
    }
}
