//! PATCH /subscriptions/{id} in-process, against the embedded store and the Stripe sandbox.

use std::sync::Arc;

use billing::store::Store;
use billing_http::Cors;
use billing_testing::{ApiEvent, catalog, embedded_store};
use chrono::{Timelike, Utc};
use patch_subscription::PatchSubscription;
use serde_json::{Value, json};
use stripe_sandbox::RunningSandbox;
use uuid::Uuid;

struct Fixture {
    function: Arc<PatchSubscription>,
    sandbox: RunningSandbox,
    store: Arc<dyn Store>,
}

async fn fixture() -> Fixture {
    let (sandbox, billing) = billing_testing::sandbox_billing(800, billing_testing::fast_retries()).await;
    let store: Arc<dyn Store> = embedded_store();
    let function = Arc::new(
        PatchSubscription {
            store: store.clone(),
            billing,
            catalog: catalog(),
            cors: Cors::default(),
            clock: std::sync::Arc::new(billing_adapters::SystemClock),
            idempotency: billing_http::idempotent::Idempotency {
                documents: billing_testing::in_memory_store(),
                clock: std::sync::Arc::new(billing_adapters::SystemClock),
            },
        }
        .declared(),
    );
    Fixture {
        function,
        sandbox,
        store,
    }
}

impl Fixture {
    /// A subscription created the way administrators and signups create them.
    async fn subscriber(&self) -> billing::subscription::Subscription {
        billing_testing::provision_subscriber(self.store.as_ref(), self.function.billing.as_ref(), "pending", None)
            .await
    }
}

fn patch(caller: Uuid, scope: &str, id: Uuid, body: &Value) -> ApiEvent {
    ApiEvent::sample("apigw-patch-subscription.json")
        .caller(caller, scope)
        .path_id(&id.to_string())
        .body(body)
        .header("if-match", "")
}

fn body(response: &lambda_http::Response<lambda_http::Body>) -> Value {
    serde_json::from_slice(response.body()).unwrap()
}

fn without_if_match(event: ApiEvent) -> lambda_http::Request {
    let mut request = event.build();
    request.headers_mut().remove("if-match");
    request
}

#[tokio::test]
async fn owner_picks_a_plan_and_attaches_a_card_in_stripe_then_in_the_store() {
    let f = fixture().await;
    let mine = f.subscriber().await;
    let request = without_if_match(patch(
        mine.id,
        "subscriptions",
        mine.id,
        &json!({"plan": "basic_monthly", "stripe_source": "pm_card_visa"}),
    ));
    let response = f.function.handle(request).await;
    assert_eq!(response.status(), 200, "{:?}", body(&response));
    let changed = &body(&response)["subscriptions"][0];
    assert_eq!(changed["plan"], "basic_monthly");
    assert_eq!(changed["has_payment_source"], true);
    assert_eq!(changed["version"], 2);
    assert_eq!(response.headers()["etag"], "\"2\"");
    // Stripe's subscription item has the plan's price, the customer the card as default
    let subscription = billing_testing::stripe_get(
        &f.sandbox,
        &format!("/v1/subscriptions/{}", mine.stripe_subscription.unwrap()),
    )
    .await;
    assert_eq!(subscription["items"]["data"][0]["price"]["id"], "price_basic_monthly");
    let customer =
        billing_testing::stripe_get(&f.sandbox, &format!("/v1/customers/{}", mine.stripe_customer.unwrap())).await;
    let method = customer["invoice_settings"]["default_payment_method"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        billing_testing::stripe_get(&f.sandbox, &format!("/v1/payment_methods/{method}")).await["card"]["last4"],
        "4242"
    );
}

#[tokio::test]
async fn patch_by_non_admin_cannot_change_status_or_trial_end_and_nothing_changes() {
    let f = fixture().await;
    let mine = f.subscriber().await;
    let request = without_if_match(patch(
        mine.id,
        "subscriptions",
        mine.id,
        &json!({"status": "active", "trial_end": "2030-01-01T00:00:00Z"}),
    ));
    let response = f.function.handle(request).await;
    assert_eq!(response.status(), 403);
    let errors = body(&response)["errors"].clone();
    assert_eq!(errors.as_array().unwrap().len(), 2);
    assert_eq!(errors[0]["field"], "/status");
    assert_eq!(errors[1]["field"], "/trial_end");
    assert_eq!(f.store.get_subscription(mine.id).await.unwrap(), mine);
}

#[tokio::test]
async fn non_admin_choosing_free_is_refused() {
    let f = fixture().await;
    let mine = f.subscriber().await;
    let response = f
        .function
        .handle(without_if_match(patch(
            mine.id,
            "subscriptions",
            mine.id,
            &json!({"plan": "free"}),
        )))
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(body(&response)["errors"][0]["field"], "/plan");
    assert_eq!(f.store.get_subscription(mine.id).await.unwrap(), mine);
}

#[tokio::test]
async fn admin_may_change_system_properties_of_anyones_subscription() {
    let f = fixture().await;
    let theirs = f.subscriber().await;
    let request = without_if_match(patch(
        Uuid::new_v4(),
        "subscriptions_admin",
        theirs.id,
        &json!({"licenses": 25, "plan": "free"}),
    ));
    let response = f.function.handle(request).await;
    assert_eq!(response.status(), 200, "{:?}", body(&response));
    let stored = f.store.get_subscription(theirs.id).await.unwrap();
    assert_eq!((stored.licenses, stored.plan.as_str()), (Some(25), "free"));
    assert_eq!(
        f.store.audit_trail(theirs.id).await.unwrap()[1].actor.split(':').next(),
        Some("admin")
    );
}

#[tokio::test]
async fn someone_elses_subscription_cannot_be_patched() {
    let f = fixture().await;
    let theirs = f.subscriber().await;
    let response = f
        .function
        .handle(without_if_match(patch(
            Uuid::new_v4(),
            "subscriptions",
            theirs.id,
            &json!({"plan": "basic_monthly"}),
        )))
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(f.store.get_subscription(theirs.id).await.unwrap(), theirs);
}

#[tokio::test]
async fn stale_if_match_is_a_failed_precondition_and_changes_nothing() {
    let f = fixture().await;
    let mine = f.subscriber().await;
    let response = f
        .function
        .handle(
            patch(
                mine.id,
                "subscriptions",
                mine.id,
                &json!({"cancel_at_period_end": true}),
            )
            .header("if-match", "\"7\"")
            .build(),
        )
        .await;
    assert_eq!(response.status(), 412);
    assert_eq!(f.store.get_subscription(mine.id).await.unwrap(), mine);
    let response = f
        .function
        .handle(
            patch(
                mine.id,
                "subscriptions",
                mine.id,
                &json!({"cancel_at_period_end": true}),
            )
            .header("if-match", "\"1\"")
            .build(),
        )
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn change_that_changes_nothing_answers_200_and_writes_nothing() {
    let f = fixture().await;
    let mine = f.subscriber().await;
    let response = f
        .function
        .handle(without_if_match(patch(
            mine.id,
            "subscriptions",
            mine.id,
            &json!({"plan": "pending"}),
        )))
        .await;
    // pending is admin-only, so the owner re-sending it is refused; an admin re-sending it is a no-op
    assert_eq!(response.status(), 403);
    let response = f
        .function
        .handle(without_if_match(patch(
            Uuid::new_v4(),
            "subscriptions_admin",
            mine.id,
            &json!({"plan": "pending", "email": "ada@example.com"}),
        )))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(body(&response)["subscriptions"][0]["version"], 1);
    assert_eq!(f.store.audit_trail(mine.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn empty_change_is_missing() {
    let f = fixture().await;
    let mine = f.subscriber().await;
    let response = f
        .function
        .handle(without_if_match(patch(mine.id, "subscriptions", mine.id, &json!({}))))
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(body(&response)["errors"][0]["slug"], "missing");
}

#[tokio::test]
async fn declined_card_is_invalid_value_and_nothing_is_stored() {
    let f = fixture().await;
    let mine = f.subscriber().await;
    let request = without_if_match(patch(
        mine.id,
        "subscriptions",
        mine.id,
        &json!({"stripe_source": "pm_card_chargeDeclined"}),
    ));
    let response = f.function.handle(request).await;
    assert_eq!(response.status(), 400);
    assert_eq!(body(&response)["errors"][0]["field"], "/stripe_source");
    assert_eq!(f.store.get_subscription(mine.id).await.unwrap(), mine);
}

#[tokio::test]
async fn stripe_down_is_502_and_nothing_is_stored() {
    let f = fixture().await;
    let mine = f.subscriber().await;
    f.sandbox.sandbox.fail_next(10, 503);
    let response = f
        .function
        .handle(without_if_match(patch(
            mine.id,
            "subscriptions",
            mine.id,
            &json!({"plan": "business_annual"}),
        )))
        .await;
    assert_eq!(response.status(), 502);
    assert_eq!(f.store.get_subscription(mine.id).await.unwrap(), mine);
}

#[tokio::test]
async fn concurrent_patches_without_if_match_keep_each_others_fields() {
    let f = fixture().await;
    let mine = f.subscriber().await;
    let changes = [
        json!({"email": "new@example.com"}),
        json!({"cancel_at_period_end": true}),
        json!({"plan": "basic_annual"}),
    ];
    let tasks: Vec<_> = changes
        .iter()
        .enumerate()
        .map(|(i, change)| {
            let function = f.function.clone();
            let request = without_if_match(
                patch(mine.id, "subscriptions", mine.id, change).request_id(&format!("concurrent-{i}")),
            );
            tokio::spawn(async move { function.handle(request).await.status() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let stored = f.store.get_subscription(mine.id).await.unwrap();
    assert_eq!(stored.email, "new@example.com");
    assert!(stored.cancel_at_period_end);
    assert_eq!(stored.plan, "basic_annual");
    assert_eq!(stored.version, 4);
}

#[tokio::test]
async fn a_non_admin_sending_a_malformed_system_field_and_an_unknown_one_gets_both_errors_as_403() {
    // Given a subscriber
    let f = fixture().await;
    let subscription = f.subscriber().await;
    // When they send a status (of the wrong type, too) and a field that does not exist
    let event = patch(
        subscription.id,
        "subscriptions",
        subscription.id,
        &json!({"status": 5, "colour": 1}),
    );
    let response = f.function.handle(without_if_match(event)).await;
    // Then the refusal decides the status, and both errors are reported, one per field
    assert_eq!(response.status(), 403);
    let errors = body(&response)["errors"].clone();
    let found: Vec<(&str, &str)> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["slug"].as_str().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(found, [("access_denied", "/status"), ("invalid_format", "/colour")]);
    let stored = f.store.get_subscription(subscription.id).await.unwrap();
    assert_eq!(stored, subscription);
}

/// `request` as Lambda invokes it, with `left` until the invocation's deadline.
fn with_deadline(request: lambda_http::Request, left: std::time::Duration) -> lambda_http::Request {
    use lambda_http::RequestExt;
    let mut context = lambda_http::Context::default();
    let deadline = std::time::SystemTime::now() + left;
    context.deadline = deadline.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    request.with_lambda_context(context)
}

#[tokio::test]
async fn a_slow_stripe_answers_502_before_the_deadline_and_changes_nothing() {
    // Given a subscriber, and a Stripe that now takes 3 s per call
    let f = fixture().await;
    let subscription = f.subscriber().await;
    f.sandbox.sandbox.set_latency(std::time::Duration::from_millis(3000));
    // When they change plan in an invocation with 2 s left
    let event = patch(
        subscription.id,
        "subscriptions",
        subscription.id,
        &json!({"plan": "basic_monthly"}),
    );
    let started = std::time::Instant::now();
    let response = f
        .function
        .handle(with_deadline(
            without_if_match(event),
            std::time::Duration::from_secs(2),
        ))
        .await;
    // Then the function answers 502 with Retry-After before the deadline, and nothing changed
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 502, "{}", body(&response));
    assert_eq!(body(&response)["errors"][0]["slug"], "upstream_unavailable");
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(f.store.get_subscription(subscription.id).await.unwrap(), subscription);
}

#[tokio::test]
async fn linking_a_stripe_subscription_of_another_subscription_is_a_conflict_on_that_field() {
    // Given two subscribers, each with their own Stripe subscription
    let f = fixture().await;
    let (first, second) = (f.subscriber().await, f.subscriber().await);
    // When an administrator links the second to the first's Stripe subscription
    let taken = first.stripe_subscription.clone().unwrap();
    let event = patch(
        Uuid::new_v4(),
        "subscriptions subscriptions_admin",
        second.id,
        &json!({"stripe_subscription": taken}),
    );
    let response = f.function.handle(without_if_match(event)).await;
    // Then it is refused on that field, and the second is unchanged
    assert_eq!(response.status(), 409, "{}", body(&response));
    assert_eq!(body(&response)["errors"][0]["field"], "/stripe_subscription");
    assert_eq!(f.store.get_subscription(second.id).await.unwrap(), second);
}

#[tokio::test]
async fn an_email_change_reaches_the_stripe_customer() {
    // Given a subscriber
    let f = fixture().await;
    let subscription = f.subscriber().await;
    // When they change their address
    let event = patch(
        subscription.id,
        "subscriptions",
        subscription.id,
        &json!({"email": "new-address@example.com"}),
    );
    let response = f.function.handle(without_if_match(event)).await;
    // Then Stripe bills the new address, and the store holds it
    assert_eq!(response.status(), 200, "{}", body(&response));
    let customer = billing_testing::stripe_get(
        &f.sandbox,
        &format!("/v1/customers/{}", subscription.stripe_customer.as_deref().unwrap()),
    )
    .await;
    assert_eq!(customer["email"], "new-address@example.com");
    assert_eq!(
        f.store.get_subscription(subscription.id).await.unwrap().email,
        "new-address@example.com"
    );
}

#[tokio::test]
async fn an_administrators_trial_end_reaches_stripe_and_the_store_keeps_what_stripe_answered() {
    // Given a trialing subscriber
    let f = fixture().await;
    let subscription = f.subscriber().await;
    let end = (Utc::now() + chrono::Duration::days(60)).with_nanosecond(0).unwrap();
    // When an administrator moves the trial's end
    let event = patch(
        Uuid::new_v4(),
        "subscriptions subscriptions_admin",
        subscription.id,
        &json!({"trial_end": end.to_rfc3339()}),
    );
    let response = f.function.handle(without_if_match(event)).await;
    // Then Stripe's subscription ends its trial then (so its next event agrees), and the store
    // holds Stripe's answer: the trial end and the period end with it
    assert_eq!(response.status(), 200, "{}", body(&response));
    let stripe = billing_testing::stripe_get(
        &f.sandbox,
        &format!(
            "/v1/subscriptions/{}",
            subscription.stripe_subscription.as_deref().unwrap()
        ),
    )
    .await;
    assert_eq!(stripe["trial_end"], end.timestamp());
    let stored = f.store.get_subscription(subscription.id).await.unwrap();
    assert_eq!(stored.trial_end, Some(end));
    assert_eq!(stored.current_period_end, Some(end));
    assert_eq!(stored.status.as_str(), "trialing");
}

#[tokio::test]
async fn licenses_set_by_an_administrator_are_the_quantity_stripe_bills() {
    // Given a subscriber on one license
    let f = fixture().await;
    let subscription = f.subscriber().await;
    // When an administrator gives them five
    let event = patch(
        Uuid::new_v4(),
        "subscriptions subscriptions_admin",
        subscription.id,
        &json!({"licenses": 5}),
    );
    let response = f.function.handle(without_if_match(event)).await;
    // Then Stripe's item quantity is 5, and the store says 5 licenses
    assert_eq!(response.status(), 200, "{}", body(&response));
    let stripe = billing_testing::stripe_get(
        &f.sandbox,
        &format!(
            "/v1/subscriptions/{}",
            subscription.stripe_subscription.as_deref().unwrap()
        ),
    )
    .await;
    assert_eq!(stripe["items"]["data"][0]["quantity"], 5);
    assert_eq!(
        f.store.get_subscription(subscription.id).await.unwrap().licenses,
        Some(5)
    );
}

#[tokio::test]
async fn a_discount_set_by_an_administrator_is_a_coupon_on_the_stripe_subscription_and_zero_removes_it() {
    // Given a subscriber without a discount
    let f = fixture().await;
    let subscription = f.subscriber().await;
    let stripe_path = format!(
        "/v1/subscriptions/{}",
        subscription.stripe_subscription.as_deref().unwrap()
    );
    let admin = Uuid::new_v4();
    // When an administrator gives them 25 % off
    let response = f
        .function
        .handle(without_if_match(patch(
            admin,
            "subscriptions subscriptions_admin",
            subscription.id,
            &json!({"discount_percent": 25}),
        )))
        .await;
    // Then Stripe's subscription carries a discount from a 25 %, forever coupon, and the store 25
    assert_eq!(response.status(), 200, "{}", body(&response));
    assert_eq!(body(&response)["subscriptions"][0]["discount_percent"], 25);
    let stripe = billing_testing::stripe_get(&f.sandbox, &stripe_path).await;
    assert_eq!(stripe["discounts"].as_array().unwrap().len(), 1, "{stripe}");
    let coupon = billing_testing::stripe_get(&f.sandbox, "/v1/coupons/billing-percent-25").await;
    assert_eq!(
        (coupon["percent_off"].as_f64(), coupon["duration"].as_str()),
        (Some(25.0), Some("forever"))
    );
    // When the discount is set to 0, then Stripe's subscription has none and the store null
    let response = f
        .function
        .handle(without_if_match(
            patch(
                admin,
                "subscriptions subscriptions_admin",
                subscription.id,
                &json!({"discount_percent": 0}),
            )
            .request_id("a-second-request"),
        ))
        .await;
    assert_eq!(response.status(), 200, "{}", body(&response));
    assert_eq!(body(&response)["subscriptions"][0]["discount_percent"], Value::Null);
    assert_eq!(
        billing_testing::stripe_get(&f.sandbox, &stripe_path).await["discounts"],
        json!([])
    );
}

fn cancel(caller: Uuid, scope: &str, id: Uuid) -> lambda_http::Request {
    ApiEvent::sample("apigw-patch-subscription.json")
        .caller(caller, scope)
        .route(
            patch_subscription::CANCEL_ROUTE,
            &format!("/subscriptions/{id}"),
            &[("id", &id.to_string())],
        )
        .build()
}

#[tokio::test]
async fn delete_cancels_now_and_a_plan_sent_later_subscribes_again() {
    // Given a subscriber with a card, on a paid plan
    let f = fixture().await;
    let subscription = f.subscriber().await;
    let event = patch(
        subscription.id,
        "subscriptions",
        subscription.id,
        &json!({"plan": "basic_monthly", "stripe_source": "pm_card_visa"}),
    );
    assert_eq!(f.function.handle(without_if_match(event)).await.status(), 200);
    let old_stripe_id = subscription.stripe_subscription.clone().unwrap();

    // When they cancel it
    let mut request = cancel(subscription.id, "subscriptions", subscription.id);
    *request.method_mut() = lambda_http::http::Method::DELETE;
    let response = f.function.handle(request).await;

    // Then Stripe's subscription is canceled now and the stored one says so, still readable
    assert_eq!(response.status(), 200, "{}", body(&response));
    assert_eq!(body(&response)["subscriptions"][0]["status"], "canceled");
    assert_eq!(
        billing_testing::stripe_get(&f.sandbox, &format!("/v1/subscriptions/{old_stripe_id}")).await["status"],
        "canceled"
    );
    assert_eq!(
        f.store.get_subscription(subscription.id).await.unwrap().status.as_str(),
        "canceled"
    );

    // And when they send a plan again, a new Stripe subscription is made, paid with their card
    let event = patch(
        subscription.id,
        "subscriptions",
        subscription.id,
        &json!({"plan": "basic_monthly"}),
    );
    let response = f.function.handle(without_if_match(event)).await;
    assert_eq!(response.status(), 200, "{}", body(&response));
    let stored = f.store.get_subscription(subscription.id).await.unwrap();
    let new_stripe_id = stored.stripe_subscription.clone().unwrap();
    assert_ne!(new_stripe_id, old_stripe_id);
    assert_eq!(stored.status.as_str(), "active");
    assert_eq!(
        billing_testing::stripe_get(&f.sandbox, &format!("/v1/subscriptions/{new_stripe_id}")).await["status"],
        "active"
    );
}

#[tokio::test]
async fn a_change_after_stripe_canceled_the_subscription_unseen_is_a_409_and_the_cancel_is_stored() {
    // Given a subscriber whose Stripe subscription was canceled in Stripe (its dashboard, say),
    // the deleted event not delivered yet
    let f = fixture().await;
    let subscription = f.subscriber().await;
    let stripe_id = subscription.stripe_subscription.clone().unwrap();
    let url = format!("{}v1/subscriptions/{stripe_id}", f.sandbox.base_url());
    let canceled = reqwest::Client::new()
        .delete(url)
        .bearer_auth("sk_test_handler")
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);
    // When the owner asks to cancel at the period's end
    let event = patch(
        subscription.id,
        "subscriptions",
        subscription.id,
        &json!({"cancel_at_period_end": true}),
    );
    let response = f.function.handle(without_if_match(event)).await;
    // Then a conflict that says why, not a failure, and the store shows the cancel
    assert_eq!(response.status(), 409, "{}", body(&response));
    let errors = &body(&response)["errors"];
    assert_eq!(errors[0]["slug"], "conflict", "{errors}");
    assert!(errors[0]["message"].as_str().unwrap().contains("canceled"), "{errors}");
    let stored = f.store.get_subscription(subscription.id).await.unwrap();
    assert_eq!(stored.status.as_str(), "canceled");
}

#[tokio::test]
async fn someone_elses_subscription_cannot_be_canceled() {
    let f = fixture().await;
    let subscription = f.subscriber().await;
    let mut request = cancel(Uuid::new_v4(), "subscriptions", subscription.id);
    *request.method_mut() = lambda_http::http::Method::DELETE;
    let response = f.function.handle(request).await;
    assert_eq!(response.status(), 403, "{}", body(&response));
    assert_eq!(f.store.get_subscription(subscription.id).await.unwrap(), subscription);
}

#[tokio::test]
async fn a_plan_change_whose_charge_is_declined_is_402_and_changes_nothing_in_stripe_or_the_store() {
    // Given an active subscriber on basic monthly, paying with a good card
    let f = fixture().await;
    let mine = billing_testing::provision_subscriber(
        f.store.as_ref(),
        f.function.billing.as_ref(),
        "basic_monthly",
        Some("pm_card_visa"),
    )
    .await;
    let stripe_id = mine.stripe_subscription.clone().unwrap();
    // When they move to business monthly (invoiced at once) with a card whose charges fail
    let request = without_if_match(patch(
        mine.id,
        "subscriptions",
        mine.id,
        &json!({"plan": "business_monthly", "stripe_source": "pm_card_chargeCustomerFail"}),
    ));
    let response = f.function.handle(request).await;
    // Then the answer is 402 card_declined on the card, and the store is unchanged
    assert_eq!(response.status(), 402, "{}", body(&response));
    assert_eq!(body(&response)["errors"][0]["slug"], "card_declined");
    assert_eq!(body(&response)["errors"][0]["field"], "/stripe_source");
    assert_eq!(f.store.get_subscription(mine.id).await.unwrap(), mine);
    // And Stripe still bills basic, with no change pending and the change's invoice void
    let stripe = billing_testing::stripe_get(&f.sandbox, &format!("/v1/subscriptions/{stripe_id}")).await;
    assert_eq!(stripe["items"]["data"][0]["price"]["id"], "price_basic_monthly");
    assert!(stripe["pending_update"].is_null(), "{stripe}");
    assert_eq!(stripe["status"], "active");
    let invoice = billing_testing::stripe_get(
        &f.sandbox,
        &format!("/v1/invoices/{}", stripe["latest_invoice"].as_str().unwrap()),
    )
    .await;
    assert_eq!(invoice["status"], "void");
    // When the same request is sent again, then it is declined again and still nothing is owed
    let again = without_if_match(patch(
        mine.id,
        "subscriptions",
        mine.id,
        &json!({"plan": "business_monthly", "stripe_source": "pm_card_chargeCustomerFail"}),
    ));
    assert_eq!(f.function.handle(again).await.status(), 402);
    let invoices = billing_testing::stripe_get(
        &f.sandbox,
        &format!("/v1/invoices?customer={}", mine.stripe_customer.as_deref().unwrap()),
    )
    .await;
    assert!(
        invoices["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "paid" || i["status"] == "void"),
        "{invoices}"
    );
}

#[tokio::test]
async fn a_move_to_annual_starts_a_year_now_and_invoices_it_at_once_with_the_month_credited() {
    // Given an active subscriber on basic monthly
    let f = fixture().await;
    let mine = billing_testing::provision_subscriber(
        f.store.as_ref(),
        f.function.billing.as_ref(),
        "basic_monthly",
        Some("pm_card_visa"),
    )
    .await;
    let stripe_id = mine.stripe_subscription.clone().unwrap();
    // When they move to basic annual
    let request = without_if_match(patch(
        mine.id,
        "subscriptions",
        mine.id,
        &json!({"plan": "basic_annual"}),
    ));
    let response = f.function.handle(request).await;
    assert_eq!(response.status(), 200, "{}", body(&response));
    // Then Stripe's period is a year from now, and so is the stored period end
    let stripe = billing_testing::stripe_get(&f.sandbox, &format!("/v1/subscriptions/{stripe_id}")).await;
    let item = &stripe["items"]["data"][0];
    let period = item["current_period_end"].as_i64().unwrap() - item["current_period_start"].as_i64().unwrap();
    assert_eq!(period, 365 * 86_400);
    let stored = f.store.get_subscription(mine.id).await.unwrap();
    assert_eq!(
        stored.current_period_end.map(|end| end.timestamp()),
        item["current_period_end"].as_i64()
    );
    // And the year was invoiced and paid at once, the unused month credited on the same invoice
    let invoice = billing_testing::stripe_get(
        &f.sandbox,
        &format!("/v1/invoices/{}", stripe["latest_invoice"].as_str().unwrap()),
    )
    .await;
    assert_eq!(invoice["status"], "paid");
    assert_eq!(stored.latest_invoice.as_deref(), invoice["id"].as_str());
    let lines = invoice["lines"]["data"].as_array().unwrap();
    assert!(lines.iter().any(|l| l["amount"].as_i64().unwrap() < 0), "{invoice}");
    let year = lines
        .iter()
        .find(|l| l["parent"]["subscription_item_details"]["proration"] == false)
        .unwrap();
    assert_eq!(year["pricing"]["price_details"]["price"], "price_basic_annual");
    assert_eq!(year["amount"], 8_000);
}

#[tokio::test]
async fn a_plan_and_licenses_sent_together_are_charged_or_declined_together() {
    // Given an active subscriber on basic monthly whose card now declines every charge
    let f = fixture().await;
    let mine = billing_testing::provision_subscriber(
        f.store.as_ref(),
        f.function.billing.as_ref(),
        "basic_monthly",
        Some("pm_card_visa"),
    )
    .await;
    let customer = mine.stripe_customer.clone().unwrap();
    f.function
        .billing
        .attach_default_payment_method(&customer, "pm_card_chargeCustomerFail", "test:failing-card")
        .await
        .unwrap();
    // When an administrator moves it to business with 5 licenses
    let request = without_if_match(patch(
        Uuid::new_v4(),
        "subscriptions subscriptions_admin",
        mine.id,
        &json!({"plan": "business_monthly", "licenses": 5}),
    ));
    let response = f.function.handle(request).await;
    // Then it is declined on the plan, and neither the plan nor the quantity moved in Stripe
    assert_eq!(response.status(), 402, "{}", body(&response));
    assert_eq!(body(&response)["errors"][0]["field"], "/plan");
    let stripe = billing_testing::stripe_get(
        &f.sandbox,
        &format!("/v1/subscriptions/{}", mine.stripe_subscription.as_deref().unwrap()),
    )
    .await;
    let item = &stripe["items"]["data"][0];
    assert_eq!(
        (item["price"]["id"].as_str(), item["quantity"].as_i64()),
        (Some("price_basic_monthly"), Some(1))
    );
    // And only one invoice was made for the change, and it is void
    let invoices = billing_testing::stripe_get(&f.sandbox, &format!("/v1/invoices?customer={customer}")).await;
    let updates: Vec<&Value> = invoices["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["billing_reason"] == "subscription_update")
        .collect();
    assert_eq!(updates.len(), 1, "{invoices}");
    assert_eq!(updates[0]["status"], "void");
    assert_eq!(f.store.get_subscription(mine.id).await.unwrap(), mine);
}
