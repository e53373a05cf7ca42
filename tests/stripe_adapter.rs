//! The async-stripe adapter of the `Billing` port against the Stripe sandbox over HTTP: what it
//! creates is what the sandbox holds, retries reuse their idempotency key, and failures map to
//! the errors the handlers expect.

use std::time::Duration;

use billing::metrics::{REASON, STRIPE_FAILURES, STRIPE_RETRIES};
use billing::plans::charge::{Charged, InvoiceSpec, charge, void_declined};
use billing::stripe::{Billing, BillingError, SubscriptionTerms, idempotency_key};
use billing::subscription::Status;
use billing_testing::Counts;
use bundle_tests::{billing_for, start_sandbox, stripe_get, stripe_post};
use chrono::{Duration as Days, Utc};
use serde_json::Value;
use uuid::Uuid;

fn email() -> String {
    format!("ada-{}@example.com", Uuid::new_v4().simple())
}

#[tokio::test]
async fn created_customer_and_trialing_subscription_are_what_the_sandbox_holds() {
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let user = Uuid::new_v4();
    let address = email();
    // When a customer and a 31-day trial subscription are created
    let customer = billing
        .create_customer(user, &address, &idempotency_key("customer", &user.to_string(), "t"))
        .await
        .unwrap();
    let trial_end = Utc::now() + Days::days(31);
    let subscription = billing
        .create_subscription(
            SubscriptionTerms {
                customer: &customer.id,
                price: "price_pending",
                trial_end: Some(trial_end),
                quantity: None,
                discount_percent: None,
                user_id: user,
            },
            &idempotency_key("subscription", &user.to_string(), "t"),
        )
        .await
        .unwrap();
    // Then the sandbox holds them as created
    let stored = stripe_get(&sandbox, &format!("/v1/customers/{}", customer.id)).await;
    assert_eq!(stored["email"], address.as_str());
    assert_eq!(stored["metadata"]["user_id"], user.to_string());
    assert_eq!(subscription.status, Status::Trialing);
    assert_eq!(subscription.customer, customer.id);
    assert_eq!(subscription.price, "price_pending");
    assert_eq!(subscription.trial_end.unwrap().timestamp(), trial_end.timestamp());
    let stored = stripe_get(&sandbox, &format!("/v1/subscriptions/{}", subscription.id)).await;
    assert_eq!(stored["status"], "trialing");
    assert_eq!(stored["items"]["data"][0]["price"]["id"], "price_pending");
}

#[tokio::test]
async fn the_same_idempotency_key_makes_one_customer() {
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let (user, address) = (Uuid::new_v4(), email());
    let key = idempotency_key("customer", &user.to_string(), "signup");
    let first = billing.create_customer(user, &address, &key).await.unwrap();
    let second = billing.create_customer(user, &address, &key).await.unwrap();
    assert_eq!(first, second);
    let listed = stripe_get(&sandbox, &format!("/v1/customers?email={address}")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_calls_with_one_key_wait_for_the_first_and_share_its_customer() {
    let sandbox = start_sandbox().await;
    sandbox.sandbox.set_latency(Duration::from_millis(30));
    let billing = billing_for(&sandbox);
    let (user, address) = (Uuid::new_v4(), email());
    let key = idempotency_key("customer", &user.to_string(), "signup");
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (billing, address, key) = (billing.clone(), address.clone(), key.clone());
            tokio::spawn(async move { billing.create_customer(user, &address, &key).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for call in calls {
        ids.insert(call.await.unwrap().unwrap().id);
    }
    assert_eq!(ids.len(), 1);
    let listed = stripe_get(&sandbox, &format!("/v1/customers?email={address}")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn transient_failures_are_retried_with_the_same_key_and_counted() {
    let counts = Counts::default();
    let _counting = counts.count_here();
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let (user, address) = (Uuid::new_v4(), email());
    sandbox.sandbox.fail_next(2, 503);
    let customer = billing
        .create_customer(user, &address, &idempotency_key("customer", &user.to_string(), "r"))
        .await
        .unwrap();
    assert!(customer.id.starts_with("cus_"));
    let listed = stripe_get(&sandbox, &format!("/v1/customers?email={address}")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(counts.get(STRIPE_RETRIES, &[]), 2, "{:?}", counts.summary());
    assert_eq!(counts.get(STRIPE_FAILURES, &[(REASON, "unavailable")]), 0);
}

#[tokio::test]
async fn failures_outlasting_the_retries_are_unavailable_create_nothing_and_are_counted() {
    let counts = Counts::default();
    let _counting = counts.count_here();
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let (user, address) = (Uuid::new_v4(), email());
    sandbox.sandbox.fail_next(3, 500);
    let outcome = billing
        .create_customer(user, &address, &idempotency_key("customer", &user.to_string(), "x"))
        .await;
    assert!(matches!(outcome, Err(BillingError::Unavailable(_))), "{outcome:?}");
    let listed = stripe_get(&sandbox, &format!("/v1/customers?email={address}")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 0);
    assert_eq!(counts.get(STRIPE_RETRIES, &[]), 2, "{:?}", counts.summary());
    assert_eq!(counts.get(STRIPE_FAILURES, &[(REASON, "unavailable")]), 1);
}

#[tokio::test]
async fn reusing_a_key_with_other_parameters_is_a_conflict() {
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let user = Uuid::new_v4();
    let key = idempotency_key("customer", &user.to_string(), "c");
    billing.create_customer(user, &email(), &key).await.unwrap();
    let outcome = billing.create_customer(user, &email(), &key).await;
    assert!(matches!(outcome, Err(BillingError::Conflict(_))), "{outcome:?}");
}

#[tokio::test]
async fn price_change_payment_method_and_cancellation_reach_the_sandbox() {
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let user = Uuid::new_v4();
    let customer = billing.create_customer(user, &email(), "k:customer").await.unwrap();
    let trial_end = Utc::now() + Days::days(31);
    let subscription = billing
        .create_subscription(
            SubscriptionTerms {
                customer: &customer.id,
                price: "price_pending",
                trial_end: Some(trial_end),
                quantity: None,
                discount_percent: None,
                user_id: user,
            },
            "k:subscription",
        )
        .await
        .unwrap();

    // A plan change moves the subscription item to the new price
    let changed = billing
        .change_price(&subscription.id, "price_basic_monthly", "k:price")
        .await
        .unwrap();
    assert_eq!(changed.price, "price_basic_monthly");
    assert_eq!(changed.item, subscription.item);
    let stored = stripe_get(&sandbox, &format!("/v1/subscriptions/{}", subscription.id)).await;
    assert_eq!(stored["items"]["data"][0]["price"]["id"], "price_basic_monthly");

    // A test card becomes the customer's default payment method
    let method = billing
        .attach_default_payment_method(&customer.id, "pm_card_visa", "k:pm")
        .await
        .unwrap();
    assert!(method.starts_with("pm_") && method != "pm_card_visa", "{method}");
    let stored = stripe_get(&sandbox, &format!("/v1/customers/{}", customer.id)).await;
    assert_eq!(stored["invoice_settings"]["default_payment_method"], method.as_str());
    let stored = stripe_get(&sandbox, &format!("/v1/payment_methods/{method}")).await;
    assert_eq!(stored["customer"], customer.id.as_str());
    assert_eq!(stored["card"]["last4"], "4242");

    // Cancel at period end, then at once
    let flagged = billing
        .set_cancel_at_period_end(&subscription.id, true, "k:cape")
        .await
        .unwrap();
    assert!(flagged.cancel_at_period_end);
    let canceled = billing.cancel(&subscription.id, "k:cancel").await.unwrap();
    assert_eq!(canceled.status, Status::Canceled);
}

#[tokio::test]
async fn a_declined_card_is_reported_as_declined_and_counted_as_refused() {
    let counts = Counts::default();
    let _counting = counts.count_here();
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let customer = billing
        .create_customer(Uuid::new_v4(), &email(), "d:customer")
        .await
        .unwrap();
    let outcome = billing
        .attach_default_payment_method(&customer.id, "pm_card_chargeDeclined", "d:pm")
        .await;
    assert!(matches!(outcome, Err(BillingError::CardDeclined(_))), "{outcome:?}");
    assert_eq!(
        counts.get(STRIPE_FAILURES, &[(REASON, "refused")]),
        1,
        "{:?}",
        counts.summary()
    );
    assert_eq!(counts.get(STRIPE_RETRIES, &[]), 0);
    let stored = stripe_get(&sandbox, &format!("/v1/customers/{}", customer.id)).await;
    assert_eq!(
        stored["invoice_settings"]["default_payment_method"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn an_unknown_payment_method_is_refused() {
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let customer = billing
        .create_customer(Uuid::new_v4(), &email(), "u:customer")
        .await
        .unwrap();
    let outcome = billing
        .attach_default_payment_method(&customer.id, "pm_doesnotexist", "u:pm")
        .await;
    assert!(
        matches!(outcome, Err(BillingError::PaymentMethodRefused(_))),
        "{outcome:?}"
    );
}

/// A paying customer in the sandbox: a customer with `card` as its default.
async fn paying_customer(billing: &dyn Billing, card: &str) -> (Uuid, String) {
    let user = Uuid::new_v4();
    let customer = billing
        .create_customer(user, &email(), &format!("{user}:customer"))
        .await
        .unwrap();
    billing
        .attach_default_payment_method(&customer.id, card, &format!("{user}:card"))
        .await
        .unwrap();
    (user, customer.id)
}

#[tokio::test]
async fn a_discount_at_creation_discounts_the_first_invoice_and_zero_removes_it() {
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let (user, customer) = paying_customer(&billing, "pm_card_visa").await;
    // When a subscription of 3 licenses at 20 % off is created without a trial
    let subscription = billing
        .create_subscription(
            SubscriptionTerms {
                customer: &customer,
                price: "price_basic_monthly",
                trial_end: None,
                quantity: Some(3),
                discount_percent: Some(20),
                user_id: user,
            },
            &format!("{user}:subscription"),
        )
        .await
        .unwrap();
    // Then its first invoice is paid for 3 licenses less 20 %, with the shared coupon
    assert_eq!(subscription.status, Status::Active);
    let stored = stripe_get(&sandbox, &format!("/v1/subscriptions/{}", subscription.id)).await;
    let invoice = stripe_get(
        &sandbox,
        &format!("/v1/invoices/{}", stored["latest_invoice"].as_str().unwrap()),
    )
    .await;
    let price = stripe_get(&sandbox, "/v1/prices/price_basic_monthly").await["unit_amount"]
        .as_i64()
        .unwrap();
    assert_eq!(
        invoice["amount_paid"].as_i64().unwrap(),
        3 * price * 80 / 100,
        "{invoice}"
    );
    assert_eq!(
        stripe_get(&sandbox, "/v1/coupons/billing-percent-20").await["percent_off"],
        20.0
    );
    // And the invoices list has it, newest first
    let page = billing.list_invoices(&customer, 10, None).await.unwrap();
    assert_eq!(page.invoices[0].id, invoice["id"].as_str().unwrap());
    assert_eq!(page.invoices[0].status.as_deref(), Some("paid"));
    // When the discount is set to 0, then the subscription has none
    billing.set_discount(&subscription.id, 0, "k:discount:0").await.unwrap();
    let stored = stripe_get(&sandbox, &format!("/v1/subscriptions/{}", subscription.id)).await;
    assert_eq!(stored["discounts"], serde_json::json!([]));
    // And a second subscription at 20 % reuses the coupon rather than failing on its id
    billing
        .set_discount(&subscription.id, 20, "k:discount:20")
        .await
        .unwrap();
    let stored = stripe_get(&sandbox, &format!("/v1/subscriptions/{}", subscription.id)).await;
    assert_eq!(stored["discounts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn setup_intents_portal_sessions_and_previews_come_from_the_sandbox() {
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let (user, customer) = paying_customer(&billing, "pm_card_visa").await;
    let subscription = billing
        .create_subscription(
            SubscriptionTerms {
                customer: &customer,
                price: "price_basic_monthly",
                trial_end: None,
                quantity: None,
                discount_percent: None,
                user_id: user,
            },
            &format!("{user}:subscription"),
        )
        .await
        .unwrap();
    let intent = billing.create_setup_intent(&customer, "k:seti").await.unwrap();
    assert!(intent.client_secret.starts_with(&format!("{}_secret_", intent.id)));
    let again = billing.create_setup_intent(&customer, "k:seti").await.unwrap();
    assert_eq!(again, intent, "the same key answers the same intent");
    // A new request (another key) while the intent still waits for a card gets it again
    let reloaded = billing.create_setup_intent(&customer, "k:seti:reload").await.unwrap();
    assert_eq!(reloaded, intent, "a waiting intent is reused");
    let listed = stripe_get(&sandbox, &format!("/v1/setup_intents?customer={customer}")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    let url = billing
        .create_portal_session(&customer, "https://app.example.com/billing", "k:portal")
        .await
        .unwrap();
    assert!(url.starts_with("https://"), "{url}");
    // An upgrade previews as prorated lines invoiced now; nothing changes in Stripe
    let preview = billing
        .preview_change(&subscription.id, Some("price_business_monthly"), None)
        .await
        .unwrap();
    assert_eq!(preview.lines.len(), 2, "{preview:?}");
    assert!(preview.lines.iter().all(|line| line.proration));
    assert!(preview.amount_due > 0);
    let stored = stripe_get(&sandbox, &format!("/v1/subscriptions/{}", subscription.id)).await;
    assert_eq!(stored["items"]["data"][0]["price"]["id"], "price_basic_monthly");
}

/// Posts the sandbox's Checkout page form as a browser would; returns where it sent the browser.
async fn complete_checkout(url: &str, card: &str) -> (u16, Option<String>) {
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("payment_method={card}"))
        .send()
        .await
        .unwrap();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), location)
}

#[tokio::test]
async fn a_setup_checkout_saves_a_card_that_becomes_the_entitys_default_for_invoices() {
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let realm = Uuid::new_v4();
    let entity = billing::plans::Entity::Realm(realm);
    // Given an entity's customer, made twice under one key
    let key = idempotency_key("entity_customer", &realm.to_string(), "t");
    let customer = billing
        .create_entity_customer(entity, "owner@example.org", &key)
        .await
        .unwrap();
    let again = billing
        .create_entity_customer(entity, "owner@example.org", &key)
        .await
        .unwrap();
    assert_eq!(customer.id, again.id);
    let held = stripe_get(&sandbox, &format!("/v1/customers/{}", customer.id)).await;
    assert_eq!(held["metadata"]["remote_realm"], realm.to_string());
    // When a setup Checkout Session is made and its page completed with a card
    let session = billing
        .create_setup_checkout(
            billing::stripe::SetupCheckout {
                customer: &customer.id,
                success_url: "http://127.0.0.1:9/realm/x/billing/",
                cancel_url: "http://127.0.0.1:9/realm/x/upgrade/",
                pending_upgrade: "realm/x/y",
            },
            &idempotency_key("checkout", &realm.to_string(), "t"),
        )
        .await
        .unwrap();
    assert!(
        session.id.starts_with("cs_test_") && session.url.ends_with(&session.id),
        "{session:?}"
    );
    let (status, location) = complete_checkout(&session.url, "pm_card_visa").await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some("http://127.0.0.1:9/realm/x/billing/"))
    );
    let held = stripe_get(&sandbox, &format!("/v1/checkout/sessions/{}", session.id)).await;
    assert_eq!(
        (held["status"].as_str(), held["mode"].as_str()),
        (Some("complete"), Some("setup"))
    );
    assert_eq!(held["metadata"]["pending_upgrade"], "realm/x/y");
    // Then the card of its SetupIntent becomes the customer's default
    let intent = held["setup_intent"].as_str().unwrap();
    let saved = billing
        .save_checkout_card(
            &customer.id,
            intent,
            &idempotency_key("checkout_card", &realm.to_string(), intent),
        )
        .await
        .unwrap();
    assert_eq!(saved.last4.as_deref(), Some("4242"));
    let held = stripe_get(&sandbox, &format!("/v1/customers/{}", customer.id)).await;
    assert_eq!(
        held["invoice_settings"]["default_payment_method"],
        saved.payment_method.as_str()
    );
    // And a completed session's page cannot be completed again
    let (status, _) = complete_checkout(&session.url, "pm_card_visa").await;
    assert_eq!(status, 402);
}

#[tokio::test]
async fn an_invoice_is_found_again_by_its_reference_after_stripe_forgot_its_keys() {
    // Given the sandbox (Stripe over HTTP, through async-stripe) and a customer whose card pays
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let (_, paying) = paying_customer(&billing, "pm_card_visa").await;
    let line = |key: &str, quantity: u32| billing::plans::InvoiceItem {
        idempotency_key: key.to_owned(),
        description: "Basic - renewal".into(),
        quantity,
        unit_amount: 350,
        period: (Utc::now(), Utc::now() + Days::days(30)),
    };
    // And a pending item of the customer's that is not ours to bill
    stripe_post(
        &sandbox,
        "/v1/invoiceitems",
        &[("customer", paying.as_str()), ("amount", "999"), ("currency", "usd")],
    )
    .await;
    let lines = [line("ledger_entry:a-2", 6), line("ledger_entry:a-3", 2)];
    let spec = InvoiceSpec {
        customer: &paying,
        reference: "invoicing:a:1",
        description: "Basic plan",
        lines: &lines,
        auto_advance: true,
    };
    // When the first line is added and the run stops (the second call fails)
    sandbox
        .sandbox
        .fail_next_matching(3, 500, Some("/v1/invoiceitems"), Some("ledger_entry:a-3"));
    let stopped = charge(&billing, spec, None).await;
    assert!(matches!(stopped, Err(BillingError::Unavailable(_))), "{stopped:?}");
    // And it runs again after both the keys and a day are gone
    sandbox.sandbox.advance_clock(25 * 60 * 60);
    let charged = charge(&billing, spec, None).await.unwrap();
    // Then one invoice, found by its reference, has both lines once and is paid
    let Charged::Paid { invoice } = &charged else {
        panic!("{charged:?}")
    };
    let invoices = stripe_get(&sandbox, &format!("/v1/invoices?customer={paying}")).await;
    let ours: Vec<&Value> = invoices["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["metadata"]["billing_reference"] == "invoicing:a:1")
        .collect();
    assert_eq!(ours.len(), 1, "{invoices}");
    assert_eq!(
        (ours[0]["id"].as_str(), ours[0]["amount_paid"].as_i64()),
        (Some(invoice.as_str()), Some(2_800))
    );
    // And the customer's own pending item stayed pending
    let pending = stripe_get(&sandbox, &format!("/v1/invoiceitems?customer={paying}&pending=true")).await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 1, "{pending}");
    // And charging again finds it paid and changes nothing
    assert_eq!(charge(&billing, spec, None).await.unwrap(), charged);
}

#[tokio::test]
async fn a_declined_purchase_invoice_stays_open_until_voided() {
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    // Given a customer whose card declines charges
    let (_, declining) = paying_customer(&billing, "pm_card_chargeCustomerFail").await;
    let lines = [billing::plans::InvoiceItem {
        idempotency_key: "upgrade:2:first-period".into(),
        description: "Basic (monthly), first period".into(),
        quantity: 6,
        unit_amount: 350,
        period: (Utc::now(), Utc::now() + Days::days(30)),
    }];
    let spec = InvoiceSpec {
        customer: &declining,
        reference: "upgrade:2",
        description: "Basic (monthly), first period",
        lines: &lines,
        auto_advance: false,
    };
    // When the first period is charged
    let declined = charge(&billing, spec, None).await.unwrap();
    // Then Stripe's message comes back and the invoice is open
    let Charged::Declined { invoice, message } = &declined else {
        panic!("{declined:?}")
    };
    assert_eq!(message, "Your card was declined.");
    // When it is voided, twice
    void_declined(&billing, "upgrade:2", invoice).await.unwrap();
    void_declined(&billing, "upgrade:2", invoice).await.unwrap();
    // Then it is void, and a re-run of the charge says so without charging
    let held = stripe_get(&sandbox, &format!("/v1/invoices/{invoice}")).await;
    assert_eq!(
        (
            held["status"].as_str(),
            held["amount_paid"].as_i64(),
            held["amount_remaining"].as_i64()
        ),
        (Some("void"), Some(0), Some(0))
    );
    assert_eq!(
        charge(&billing, spec, None).await.unwrap(),
        Charged::Voided {
            invoice: invoice.clone()
        }
    );
}

#[tokio::test]
async fn portal_sessions_open_with_the_configured_portal() {
    // Given a portal configuration that allows no plan changes, and a client configured with it
    let sandbox = start_sandbox().await;
    let configuration = stripe_post(
        &sandbox,
        "/v1/billing_portal/configurations",
        &[
            ("features[subscription_update][enabled]", "false"),
            ("features[invoice_history][enabled]", "true"),
        ],
    )
    .await;
    let id = configuration["id"].as_str().unwrap().to_owned();
    let billing = billing_for(&sandbox).with_portal_configuration(Some(id.clone()));
    let (_, customer) = paying_customer(&billing, "pm_card_visa").await;
    // When a portal session is made, then Stripe opens it with that configuration
    billing
        .create_portal_session(&customer, "https://app.example.com/billing", "k:portal:configured")
        .await
        .unwrap();
    // And a configuration Stripe does not hold is refused, so it is the one sent
    let misconfigured = billing_for(&sandbox).with_portal_configuration(Some("bpc_unknown".into()));
    let refused = misconfigured
        .create_portal_session(&customer, "https://app.example.com/billing", "k:portal:unknown")
        .await
        .unwrap_err();
    assert!(matches!(refused, BillingError::Rejected(_)), "{refused:?}");
}

#[tokio::test]
async fn a_price_change_declined_at_once_is_voided_and_discarded_and_a_rerun_is_declined_again() {
    // Given a subscription on basic monthly whose card now declines every charge
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let (user, customer) = paying_customer(&billing, "pm_card_visa").await;
    let subscription = billing
        .create_subscription(
            SubscriptionTerms {
                customer: &customer,
                price: "price_basic_monthly",
                trial_end: None,
                quantity: None,
                discount_percent: None,
                user_id: user,
            },
            &format!("{user}:subscription"),
        )
        .await
        .unwrap();
    billing
        .attach_default_payment_method(&customer, "pm_card_chargeCustomerFail", "k:failing-card")
        .await
        .unwrap();
    // When it moves to business (invoiced at once), twice with one key
    for _ in 0..2 {
        let refused = billing
            .change_price(&subscription.id, "price_business_monthly", "k:upgrade")
            .await
            .unwrap_err();
        assert!(matches!(refused, BillingError::CardDeclined(_)), "{refused:?}");
    }
    // Then Stripe bills basic still, nothing is pending, and the change's invoice is void
    let held = stripe_get(&sandbox, &format!("/v1/subscriptions/{}", subscription.id)).await;
    assert_eq!(held["items"]["data"][0]["price"]["id"], "price_basic_monthly");
    assert!(held["pending_update"].is_null(), "{held}");
    let invoice = stripe_get(
        &sandbox,
        &format!("/v1/invoices/{}", held["latest_invoice"].as_str().unwrap()),
    )
    .await;
    assert_eq!(invoice["status"], "void");
    assert_eq!(invoice["billing_reason"], "subscription_update");
}

#[tokio::test]
async fn a_change_left_pending_by_a_failed_void_is_discarded_before_the_next_change() {
    // Given a subscription on basic monthly whose card declines, and a move to business whose
    // invoice could not be voided (Stripe failing every void)
    let sandbox = start_sandbox().await;
    let billing = billing_for(&sandbox);
    let (user, customer) = paying_customer(&billing, "pm_card_visa").await;
    let subscription = billing
        .create_subscription(
            SubscriptionTerms {
                customer: &customer,
                price: "price_basic_monthly",
                trial_end: None,
                quantity: None,
                discount_percent: None,
                user_id: user,
            },
            &format!("{user}:subscription"),
        )
        .await
        .unwrap();
    billing
        .attach_default_payment_method(&customer, "pm_card_chargeCustomerFail", "k:failing")
        .await
        .unwrap();
    sandbox.sandbox.fail_next_on(20, 503, Some("POST /v1/invoices/*/void"));
    let failed = billing
        .change_price(&subscription.id, "price_business_monthly", "k:first")
        .await
        .unwrap_err();
    assert!(matches!(failed, BillingError::Unavailable(_)), "{failed:?}");
    let held = stripe_get(&sandbox, &format!("/v1/subscriptions/{}", subscription.id)).await;
    assert!(!held["pending_update"].is_null(), "{held}");
    let left_open = held["latest_invoice"].as_str().unwrap().to_owned();
    // When Stripe is back and the customer tries again (a new request, a new key)
    sandbox.sandbox.fail_next(0, 503);
    let refused = billing
        .change_price(&subscription.id, "price_business_monthly", "k:second")
        .await
        .unwrap_err();
    // Then the change left pending was voided first, the new one was declined and voided too,
    // and nothing is pending or payable
    assert!(matches!(refused, BillingError::CardDeclined(_)), "{refused:?}");
    assert_eq!(
        stripe_get(&sandbox, &format!("/v1/invoices/{left_open}")).await["status"],
        "void"
    );
    let after = stripe_get(&sandbox, &format!("/v1/subscriptions/{}", subscription.id)).await;
    assert!(after["pending_update"].is_null(), "{after}");
    let open = stripe_get(&sandbox, &format!("/v1/invoices?customer={customer}&status=open")).await;
    assert_eq!(open["data"].as_array().unwrap().len(), 0, "{open}");
}
