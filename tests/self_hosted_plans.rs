//! Self-hosted plans end to end: HTTP to the local server in `--aws` mode (the plans, ledger and
//! uploads in moto's DynamoDB), Stripe in the sandbox, time moved with `POST /_local/clock`. A
//! server's uploads move its realm's license ledger, and the daily invoicing run
//! (`POST /_local/invoice-plans`) bills the ledger in Stripe. An owner buys a plan the way a
//! browser does: the `upgrade/` form, the sandbox's Checkout page, the webhook that carries
//! the upgrade through, the `billing/` page.

use billing::plans::{self, Entity, Schedule};
use billing::stripe::Billing;
use bundle_tests::{
    Browser, FirstLogin, all_delivered, billing_access_url, billing_for, first_login, path_of, register_remote_server,
    start_server_against_moto, stripe_get,
};
use chrono::{Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

fn audit_row(id: u64, realm: Uuid, at: chrono::DateTime<Utc>, users: u32) -> Value {
    json!({"id": id, "realm": realm, "event_type": 101, "event_time": at.timestamp(),
           "extra_data": {"10": {"11": {"100": 1, "400": users - 1}}}})
}

async fn post(url: String, authorization: Option<String>, body: &Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).json(body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn uploads_move_the_ledger_and_the_invoicing_run_bills_it_a_month_later() {
    let server = start_server_against_moto().await;
    let base = format!("http://{}", server.address);
    let sandbox = server.sandbox.as_ref().unwrap();
    let remote_server = register_remote_server(&base, "admin@example.org").await;
    let realm = Uuid::new_v4();
    let analytics = format!("{base}/api/v1/remotes/server/analytics");
    // Given the realm registered by a first upload, on a basic plan bought for 6 licenses that
    // follow its users, paid by card (stored as the upgrade page stores it)
    let listing = json!({"uuid": realm, "host": "chat.example.org", "name": "Example Org"});
    let (status, body) = post(
        analytics.clone(),
        Some(remote_server.basic()),
        &json!({"realms": [listing]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stripe = billing_for(sandbox);
    let customer = stripe
        .create_customer(realm, "owner@example.org", &format!("{realm}:customer"))
        .await
        .unwrap();
    stripe
        .attach_default_payment_method(&customer.id, "pm_card_visa", &format!("{realm}:card"))
        .await
        .unwrap();
    let documents = server.remote.records.documents().clone();
    let start = Utc::now();
    billing_testing::store_automatic_basic_plan(
        documents.as_ref(),
        Entity::Realm(realm),
        6,
        Some(customer.id.clone()),
        start,
    )
    .await;
    // When the server uploads 23, 20 and 21 users over the month (sent on day 20: rows from
    // the future are refused)
    let rows = json!({"realms": [], "realm_audit_logs": [
        audit_row(1, realm, start + Duration::days(4), 23),
        audit_row(2, realm, start + Duration::days(9), 20),
        audit_row(3, realm, start + Duration::days(19), 21)]});
    let (status, _) = post(
        format!("{base}/_local/clock"),
        None,
        &json!({"offset_seconds": 20 * 86_400}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = post(analytics.clone(), Some(remote_server.basic()), &rows).await;
    assert_eq!((status, &body["ledger_rows"]), (200, &json!(3)), "{body}");
    // Then the administrators' view has API.md's ledger
    let admin = server
        .keys
        .mint(Uuid::new_v4(), "subscriptions subscriptions_admin", Duration::hours(1));
    let view: Value = reqwest::Client::new()
        .get(format!("{base}/remote-realms/{realm}/billing"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ledger: Vec<(bool, u64, u64)> = view["billing"][0]["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["is_renewal"].as_bool().unwrap(),
                r["licenses"].as_u64().unwrap(),
                r["licenses_at_next_renewal"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ledger,
        [(true, 6, 6), (false, 23, 23), (false, 23, 20), (false, 23, 21)]
    );
    // When a month has passed, the server has uploaded again and the invoicing job runs
    let (status, _) = post(
        format!("{base}/_local/clock"),
        None,
        &json!({"offset_seconds": 32 * 86_400}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = post(analytics, Some(remote_server.basic()), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, report) = post(format!("{base}/_local/invoice-plans"), None, &json!({})).await;
    assert_eq!(status, 200, "{report}");
    // Then one invoice bills the 17 added licenses for the rest of the first period and the
    // renewal of 21, and the ledger has its renewal
    let outcome = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["entity"]["uuid"] == json!(realm))
        .cloned()
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(outcome["outcome"], "invoiced", "{outcome}");
    let invoice = stripe_get(
        sandbox,
        &format!("/v1/invoices/{}", outcome["invoice"].as_str().unwrap()),
    )
    .await;
    let period_end = plans::next_period_start(start, Schedule::Monthly, start);
    let whole = (period_end - start).num_seconds() as f64;
    let left = (period_end - (start + Duration::days(4))).num_seconds() as f64;
    let prorated = (350.0 * left / whole + 0.5) as i64;
    assert_eq!(
        invoice["amount_due"].as_i64().unwrap(),
        17 * prorated + 21 * 350,
        "{invoice}"
    );
    assert_eq!(invoice["customer"], customer.id.as_str());
    let book = plans::stored::load(documents.as_ref(), Entity::Realm(realm), Utc::now())
        .await
        .unwrap()
        .book;
    assert_eq!(book.ledger.last().map(|r| (r.is_renewal, r.licenses)), Some((true, 21)));
    post(format!("{base}/_local/clock"), None, &json!({"offset_seconds": 0})).await;
}

/// The local server with a realm whose server has just uploaded `users` users, and the realm's
/// owner logged in to its billing pages.
struct Owner {
    server: devserver::RunningServer,
    base: String,
    remote_server: bundle_tests::RemoteServerCredentials,
    realm: Uuid,
    user: Uuid,
    email: String,
    browser: Browser,
}

async fn owner_logged_in(users: u32) -> Owner {
    let server = start_server_against_moto().await;
    let base = format!("http://{}", server.address);
    let remote_server = register_remote_server(&base, "admin@example.org").await;
    let realm = Uuid::new_v4();
    let listing = json!({"uuid": realm, "host": "chat.example.org", "name": "Example Org"});
    let rows = json!({"realms": [listing], "realm_audit_logs": [
        audit_row(1, realm, Utc::now() - Duration::hours(1), users)]});
    let (status, body) = post(
        format!("{base}/api/v1/remotes/server/analytics"),
        Some(remote_server.basic()),
        &rows,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let email = format!("owner-{}@example.org", realm.simple());
    let user = Uuid::new_v4();
    let link = billing_access_url(&base, &remote_server, realm, user, &email).await;
    let mut browser = Browser::new(&base);
    let FirstLogin { done, .. } = first_login(&mut browser, &link, &email).await;
    assert_eq!(done.status.as_u16(), 302, "{}", done.body);
    Owner {
        server,
        base,
        remote_server,
        realm,
        user,
        email,
        browser,
    }
}

impl Owner {
    /// Moves the local server's clock to real time + `days` and logs in again there (a session
    /// lasts two hours); a returning owner confirms with the login form only.
    async fn at_day(&mut self, days: i64) {
        let (status, _) = post(
            format!("{}/_local/clock", self.base),
            None,
            &json!({"offset_seconds": days * 86_400}),
        )
        .await;
        assert_eq!(status, 200);
        let link = billing_access_url(&self.base, &self.remote_server, self.realm, self.user, &self.email).await;
        let page = self.browser.get(&link).await;
        assert_eq!(page.status.as_u16(), 200, "{}", page.body);
        let done = self
            .browser
            .submit(
                &path_of(&link),
                &[("csrf_token", &page.csrf()), ("full_name", "Ada Owner")],
            )
            .await;
        assert_eq!(done.status.as_u16(), 302, "{}", done.body);
    }

    fn page(&self, page: &str) -> String {
        format!("/realm/{}/{page}/", self.realm)
    }

    /// Submits the upgrade form and, on Stripe's Checkout page, saves `card`; returns where
    /// Checkout sent the browser.
    async fn upgrade_through_checkout(&mut self, fields: &[(&str, &str)], card: &str) -> String {
        let form = self.browser.get(&self.page("upgrade")).await;
        assert_eq!(form.status.as_u16(), 200, "{}", form.body);
        let csrf = form.csrf();
        let mut sent = vec![("csrf_token", csrf.as_str())];
        sent.extend_from_slice(fields);
        let answer = self.browser.submit(&self.page("upgrade"), &sent).await;
        assert_eq!(answer.status.as_u16(), 302, "{}", answer.body);
        let checkout = answer.location.unwrap();
        assert!(checkout.contains("/checkout/cs_test_"), "{checkout}");
        // Checkout is Stripe's origin: the session cookie is not sent there.
        let mut stripe = Browser::new(checkout.split("/checkout/").next().unwrap());
        let page = stripe.get(&checkout).await;
        assert_eq!(page.status.as_u16(), 200, "{}", page.body);
        assert!(page.body.contains(r#"name="payment_method""#), "{}", page.body);
        let saved = stripe.submit(&path_of(&checkout), &[("payment_method", card)]).await;
        assert_eq!(saved.status.as_u16(), 303, "{}", saved.body);
        saved.location.unwrap()
    }

    /// The billing page once it shows `marker`: the webhook carrying the upgrade through may
    /// land after Checkout sent the browser back.
    async fn billing_page_showing(&mut self, marker: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            all_delivered(&self.server).await;
            let page = self.browser.get(&self.page("billing")).await;
            assert_eq!(page.status.as_u16(), 200, "{}", page.body);
            if page.body.contains(marker) {
                return page.body;
            }
            assert!(std::time::Instant::now() < deadline, "no {marker} on {}", page.body);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The entity's Stripe customer and its invoices in the sandbox, newest first.
    async fn invoices(&self) -> (String, Value) {
        let view = self.admin_view().await;
        let customer = view["billing"][0]["customer"]["stripe_customer"]
            .as_str()
            .expect("a Stripe customer")
            .to_owned();
        let sandbox = self.server.sandbox.as_ref().unwrap();
        let invoices = stripe_get(sandbox, &format!("/v1/invoices?customer={customer}")).await;
        (customer, invoices)
    }

    async fn admin_view(&self) -> Value {
        let admin = self
            .server
            .keys
            .mint(Uuid::new_v4(), "subscriptions subscriptions_admin", Duration::hours(1));
        reqwest::Client::new()
            .get(format!("{}/remote-realms/{}/billing", self.base, self.realm))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn an_owner_buys_basic_through_checkout_and_every_invoice_matches_the_ledger_to_the_cent() {
    // Given a realm of 6 users whose owner is logged in to billing
    let mut owner = owner_logged_in(6).await;
    let plans = owner.browser.get(&owner.page("plans")).await;
    assert!(
        plans.body.contains("$3.50/month") && plans.body.contains("$8.00/month"),
        "{}",
        plans.body
    );
    // When the owner upgrades to basic, monthly, automatic licenses, saving a card on Checkout
    let back = owner
        .upgrade_through_checkout(
            &[
                ("tier", "basic"),
                ("schedule", "monthly"),
                ("license_management", "automatic"),
            ],
            "pm_card_visa",
        )
        .await;
    // Then Checkout returns to the billing page, which shows the plan once the webhook landed
    assert_eq!(back, format!("{}{}", owner.base, owner.page("billing")));
    let billing = owner.billing_page_showing(r#"<td id="plan-tier">Basic</td>"#).await;
    assert!(billing.contains("Card ending in 4242"), "{billing}");
    assert!(billing.contains(r#"<td id="plan-licenses">6</td>"#), "{billing}");
    // And the first month was paid at once: 6 × $3.50
    let view = owner.admin_view().await;
    let (customer, invoices) = owner.invoices().await;
    let first = &invoices["data"][0];
    assert_eq!(
        (first["status"].as_str(), first["amount_paid"].as_i64()),
        (Some("paid"), Some(6 * 350)),
        "{invoices}"
    );
    let customer_object = stripe_get(
        owner.server.sandbox.as_ref().unwrap(),
        &format!("/v1/customers/{customer}"),
    )
    .await;
    assert!(customer_object["invoice_settings"]["default_payment_method"].is_string());
    // When the server reports 23, 20 and 21 users over the month, then uploads a month later
    let start =
        chrono::DateTime::parse_from_rfc3339(view["billing"][0]["plan"]["billing_cycle_anchor"].as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc);
    let analytics = format!("{}/api/v1/remotes/server/analytics", owner.base);
    let realm = owner.realm;
    let rows = json!({"realms": [], "realm_audit_logs": [
        audit_row(2, realm, start + Duration::days(4), 23),
        audit_row(3, realm, start + Duration::days(9), 20),
        audit_row(4, realm, start + Duration::days(19), 21)]});
    owner.at_day(20).await;
    let (status, body) = post(analytics.clone(), Some(owner.remote_server.basic()), &rows).await;
    assert_eq!((status, &body["ledger_rows"]), (200, &json!(3)), "{body}");
    owner.at_day(32).await;
    let (status, body) = post(analytics, Some(owner.remote_server.basic()), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    // And the invoicing job runs
    let (status, report) = post(format!("{}/_local/invoice-plans", owner.base), None, &json!({})).await;
    assert_eq!(status, 200, "{report}");
    // Then one invoice bills the 17 added licenses for the rest of the month and the renewal of 21
    let outcome = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["entity"]["uuid"] == json!(realm))
        .cloned()
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(outcome["outcome"], "invoiced", "{outcome}");
    let period_end = plans::next_period_start(start, Schedule::Monthly, start);
    let whole = (period_end - start).num_seconds() as f64;
    let left = (period_end - (start + Duration::days(4))).num_seconds() as f64;
    let prorated = (350.0 * left / whole + 0.5) as i64;
    let invoice = stripe_get(
        owner.server.sandbox.as_ref().unwrap(),
        &format!("/v1/invoices/{}", outcome["invoice"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        invoice["amount_due"].as_i64().unwrap(),
        17 * prorated + 21 * 350,
        "{invoice}"
    );
    // And Stripe collects it about an hour later, with the card saved on Checkout
    owner.at_day(33).await;
    let invoice = stripe_get(
        owner.server.sandbox.as_ref().unwrap(),
        &format!("/v1/invoices/{}", outcome["invoice"].as_str().unwrap()),
    )
    .await;
    assert_eq!(invoice["status"], "paid", "{invoice}");
    assert_eq!(invoice["amount_paid"], invoice["amount_due"]);
    // And running it again adds no item and no invoice
    let (status, again) = post(format!("{}/_local/invoice-plans", owner.base), None, &json!({})).await;
    assert_eq!(status, 200, "{again}");
    assert!(
        again["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["entity"]["uuid"] != json!(realm)),
        "{again}"
    );
    let invoices = stripe_get(
        owner.server.sandbox.as_ref().unwrap(),
        &format!("/v1/invoices?customer={customer}"),
    )
    .await;
    assert_eq!(invoices["data"].as_array().unwrap().len(), 2, "{invoices}");
    // When the owner tries to set licenses by hand, then the automatic plan refuses inline
    let page = owner.browser.get(&owner.page("billing")).await;
    assert!(!page.body.contains(r#"id="update-licenses""#), "{}", page.body);
    let refused = owner
        .browser
        .submit(
            &owner.page("billing"),
            &[("csrf_token", &page.csrf()), ("action", "licenses"), ("licenses", "30")],
        )
        .await;
    assert_eq!(refused.status.as_u16(), 400, "{}", refused.body);
    assert!(
        refused.body.contains(r#"role="alert""#) && refused.body.contains("automatic license management"),
        "{}",
        refused.body
    );
    // When the owner cancels, then the plan ends at the period's end; undoing keeps it
    let cancelled = owner
        .browser
        .submit(
            &owner.page("billing"),
            &[("csrf_token", &page.csrf()), ("action", "cancel")],
        )
        .await;
    assert_eq!(cancelled.status.as_u16(), 200, "{}", cancelled.body);
    assert!(
        cancelled.body.contains("Ends at the end of this billing period"),
        "{}",
        cancelled.body
    );
    let kept = owner
        .browser
        .submit(
            &owner.page("billing"),
            &[("csrf_token", &page.csrf()), ("action", "undo")],
        )
        .await;
    assert!(
        kept.body.contains(r#"<td id="plan-status">Active</td>"#),
        "{}",
        kept.body
    );
    post(
        format!("{}/_local/clock", owner.base),
        None,
        &json!({"offset_seconds": 0}),
    )
    .await;
}

#[tokio::test]
async fn a_declined_card_voids_the_first_invoice_starts_no_plan_and_says_why() {
    // Given a realm of 30 users whose owner is logged in
    let mut owner = owner_logged_in(30).await;
    // When the owner buys business for 40 manual licenses with a card that saves but declines
    owner
        .upgrade_through_checkout(
            &[
                ("tier", "business"),
                ("schedule", "annual"),
                ("license_management", "manual"),
                ("licenses", "40"),
            ],
            "pm_card_chargeCustomerFail",
        )
        .await;
    // Then the billing page says Stripe's message, and there is no plan
    let billing = owner.billing_page_showing("upgrade-declined").await;
    assert!(
        billing.contains("Your card was declined.") && billing.contains(r#"role="alert""#),
        "{billing}"
    );
    assert!(billing.contains(r#"id="no-plan""#), "{billing}");
    let view = owner.admin_view().await;
    assert_eq!(view["billing"][0]["plan"], Value::Null, "{view}");
    // And the invoice for 40 × $80.00 was voided, not left open
    let (_, invoices) = owner.invoices().await;
    let first = &invoices["data"][0];
    assert_eq!(
        (first["status"].as_str(), first["amount_due"].as_i64()),
        (Some("void"), Some(40 * 8000)),
        "{invoices}"
    );
}

#[tokio::test]
async fn too_few_licenses_and_stale_usage_data_are_refused_inline_and_change_nothing() {
    // Given a realm of 30 users whose owner is logged in
    let mut owner = owner_logged_in(30).await;
    let form = owner.browser.get(&owner.page("upgrade")).await;
    // When the owner asks for 26 manual business licenses
    let refused = owner
        .browser
        .submit(
            &owner.page("upgrade"),
            &[
                ("csrf_token", &form.csrf()),
                ("tier", "business"),
                ("schedule", "monthly"),
                ("license_management", "manual"),
                ("licenses", "26"),
            ],
        )
        .await;
    // Then the form comes back with the rule, its answers kept, and nothing was bought
    assert_eq!(refused.status.as_u16(), 400, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("You must purchase licenses for all active users in your organization (minimum 30)."),
        "{}",
        refused.body
    );
    assert!(refused.body.contains(r#"value="26""#), "{}", refused.body);
    // When three days pass without an upload
    owner.at_day(3).await;
    let form = owner.browser.get(&owner.page("upgrade")).await;
    let stale = owner
        .browser
        .submit(
            &owner.page("upgrade"),
            &[
                ("csrf_token", &form.csrf()),
                ("tier", "basic"),
                ("schedule", "monthly"),
                ("license_management", "automatic"),
            ],
        )
        .await;
    post(
        format!("{}/_local/clock", owner.base),
        None,
        &json!({"offset_seconds": 0}),
    )
    .await;
    // Then the upgrade is refused for missing data, and no Stripe customer was made
    assert_eq!(stale.status.as_u16(), 400, "{}", stale.body);
    assert!(stale.body.contains("Missing data"), "{}", stale.body);
    let view = owner.admin_view().await;
    assert_eq!(view["billing"][0]["customer"]["stripe_customer"], Value::Null, "{view}");
}

#[tokio::test]
async fn a_manual_business_plan_bills_the_licenses_its_owner_adds_to_the_cent() {
    // Given a realm of 30 users whose owner bought business, monthly, 30 manual licenses
    let mut owner = owner_logged_in(30).await;
    owner
        .upgrade_through_checkout(
            &[
                ("tier", "business"),
                ("schedule", "monthly"),
                ("license_management", "manual"),
                ("licenses", "30"),
            ],
            "pm_card_visa",
        )
        .await;
    owner.billing_page_showing(r#"<td id="plan-licenses">30</td>"#).await;
    // When, ten days later, the owner raises this period's licenses to 35
    owner.at_day(10).await;
    let page = owner.browser.get(&owner.page("billing")).await;
    let raised = owner
        .browser
        .submit(
            &owner.page("billing"),
            &[("csrf_token", &page.csrf()), ("action", "licenses"), ("licenses", "35")],
        )
        .await;
    assert_eq!(raised.status.as_u16(), 200, "{}", raised.body);
    assert!(
        raised.body.contains(r#"<td id="plan-licenses">35</td>"#),
        "{}",
        raised.body
    );
    // And a month after the purchase the server uploads and the invoicing job runs
    owner.at_day(32).await;
    let analytics = format!("{}/api/v1/remotes/server/analytics", owner.base);
    let (status, _) = post(analytics, Some(owner.remote_server.basic()), &json!({})).await;
    assert_eq!(status, 200);
    let view = owner.admin_view().await;
    let (status, report) = post(format!("{}/_local/invoice-plans", owner.base), None, &json!({})).await;
    assert_eq!(status, 200, "{report}");
    // Then the first invoice was 30 × $8.00, and this one bills the 5 added licenses for the
    // rest of the first month and the renewal of 35, to the cent
    let time = |text: &Value| {
        chrono::DateTime::parse_from_rfc3339(text.as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc)
    };
    let start = time(&view["billing"][0]["plan"]["billing_cycle_anchor"]);
    let added = time(&view["billing"][0]["ledger"][1]["event_time"]);
    let period_end = plans::next_period_start(start, Schedule::Monthly, start);
    let whole = (period_end - start).num_seconds() as f64;
    let left = (period_end - added).num_seconds() as f64;
    let prorated = (800.0 * left / whole + 0.5) as i64;
    let outcome = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["entity"]["uuid"] == json!(owner.realm))
        .cloned()
        .unwrap_or_else(|| panic!("{report}"));
    let customer = view["billing"][0]["customer"]["stripe_customer"].as_str().unwrap();
    let sandbox = owner.server.sandbox.as_ref().unwrap();
    let invoices = stripe_get(sandbox, &format!("/v1/invoices?customer={customer}")).await;
    let amounts: Vec<i64> = invoices["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|invoice| invoice["amount_due"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [5 * prorated + 35 * 800, 30 * 800], "{invoices}");
    assert_eq!(
        invoices["data"][0]["id"], outcome["invoice"],
        "the newest invoice is the run's"
    );
    post(
        format!("{}/_local/clock", owner.base),
        None,
        &json!({"offset_seconds": 0}),
    )
    .await;
}

/// An administrator's POST with a JSON body; its status and answer.
async fn admin_post(server: &devserver::RunningServer, path: &str, body: &Value) -> (u16, Value) {
    let admin = server
        .keys
        .mint(Uuid::new_v4(), "subscriptions subscriptions_admin", Duration::hours(1));
    let response = reqwest::Client::new()
        .post(format!("http://{}{path}", server.address))
        .bearer_auth(admin)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_legacy_server_scheduled_for_upgrade_keeps_the_manual_license_count() {
    // Given a server of 30 users on a legacy plan for ten more days, with 20% off
    let server = start_server_against_moto().await;
    let base = format!("http://{}", server.address);
    let contact = format!("admin-{}@example.org", Uuid::new_v4().simple());
    let remote_server = register_remote_server(&base, &contact).await;
    let realm = Uuid::new_v4();
    let analytics = format!("{base}/api/v1/remotes/server/analytics");
    let rows = json!({"realms": [{"uuid": realm, "host": "chat.example.org", "name": "Example Org"}],
                      "realm_audit_logs": [audit_row(1, realm, Utc::now() - Duration::hours(1), 30)]});
    let (status, body) = post(analytics.clone(), Some(remote_server.basic()), &rows).await;
    assert_eq!(status, 200, "{body}");
    let entity = format!("/remote-servers/{}", remote_server.uuid);
    let end = Utc::now() + Duration::days(10);
    let (status, view) = admin_post(
        &server,
        &format!("{entity}/legacy-plan"),
        &json!({"end_date": end.timestamp()}),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["billing"][0]["plan"]["tier"], "legacy", "{view}");
    let (status, again) = admin_post(
        &server,
        &format!("{entity}/legacy-plan"),
        &json!({"end_date": end.timestamp()}),
    )
    .await;
    assert_eq!(
        (status, &again["errors"][0]["slug"]),
        (409, &json!("conflict")),
        "{again}"
    );
    let (status, view) = admin_post(&server, &format!("{entity}/discount"), &json!({"percent": 20})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["billing"][0]["customer"]["default_discount"], 20, "{view}");
    // And its contact logged in to the server's billing
    let (status, _) = admin_post(&server, &format!("{entity}/deactivation-link"), &json!({})).await;
    assert_eq!(status, 202);
    let mail = bundle_tests::ses_mails_to(&contact).await.last().cloned().unwrap();
    let body = mail["body"].as_str().unwrap();
    let link = body[body.find("http").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut browser = Browser::new(&base);
    let FirstLogin { done, .. } = first_login(&mut browser, &link, &contact).await;
    assert_eq!(done.status.as_u16(), 302, "{}", done.body);
    // When the contact schedules business, monthly, 40 manual licenses, saving a card
    let pages = format!("/server/{}", remote_server.uuid);
    let plans = browser.get(&format!("{pages}/plans/")).await;
    assert!(
        plans.body.contains("Prices include your 20% discount.") && plans.body.contains("$6.40/month"),
        "{}",
        plans.body
    );
    let form = browser.get(&format!("{pages}/upgrade/")).await;
    assert!(form.body.contains(r#"id="legacy-notice""#), "{}", form.body);
    let answer = browser
        .submit(
            &format!("{pages}/upgrade/"),
            &[
                ("csrf_token", &form.csrf()),
                ("tier", "business"),
                ("schedule", "monthly"),
                ("license_management", "manual"),
                ("licenses", "40"),
            ],
        )
        .await;
    assert_eq!(answer.status.as_u16(), 302, "{}", answer.body);
    let checkout = answer.location.unwrap();
    let mut stripe = Browser::new(checkout.split("/checkout/").next().unwrap());
    let saved = stripe
        .submit(&path_of(&checkout), &[("payment_method", "pm_card_visa")])
        .await;
    assert_eq!(saved.status.as_u16(), 303, "{}", saved.body);
    all_delivered(&server).await;
    // Then the billing page shows the scheduled plan at the discounted price, nothing charged yet
    let billing = browser.get(&format!("{pages}/billing/")).await;
    assert!(billing.body.contains(r#"id="scheduled-plan""#), "{}", billing.body);
    assert!(
        billing.body.contains("40 licenses, $6.40 a license"),
        "{}",
        billing.body
    );
    // When uploads lower the users to 26 before the end date
    let rows = json!({"realm_audit_logs": [audit_row(2, realm, Utc::now(), 26)]});
    let (status, body) = post(analytics.clone(), Some(remote_server.basic()), &rows).await;
    assert_eq!(status, 200, "{body}");
    // And the invoicing job runs the day after the end date, the server having uploaded
    let (status, _) = post(
        format!("{base}/_local/clock"),
        None,
        &json!({"offset_seconds": 11 * 86_400}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(analytics, Some(remote_server.basic()), &json!({})).await;
    assert_eq!(status, 200);
    let (status, report) = post(format!("{base}/_local/invoice-plans"), None, &json!({})).await;
    assert_eq!(status, 200, "{report}");
    // Then business started with the 40 licenses chosen, invoiced 40 × floor(800 × 0.8) = $256.00
    let outcome = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["entity"]["uuid"] == json!(remote_server.uuid))
        .cloned()
        .unwrap_or_else(|| panic!("{report}"));
    let sandbox = server.sandbox.as_ref().unwrap();
    let invoice = stripe_get(
        sandbox,
        &format!("/v1/invoices/{}", outcome["invoice"].as_str().unwrap()),
    )
    .await;
    assert_eq!(invoice["amount_due"], 40 * 640, "{invoice}");
    let (_, view) = admin_post(&server, &format!("{entity}/discount"), &json!({"percent": 20})).await;
    let plan = &view["billing"][0]["plan"];
    assert_eq!(
        (plan["tier"].as_str(), plan["licenses"].as_u64()),
        (Some("business"), Some(40)),
        "{view}"
    );
    post(format!("{base}/_local/clock"), None, &json!({"offset_seconds": 0})).await;
}

#[tokio::test]
async fn an_approved_sponsorship_puts_the_realm_on_community_and_mails_who_asked() {
    // Given a realm of 12 users whose owner is logged in
    let mut owner = owner_logged_in(12).await;
    // When the owner sends the sponsorship form
    let form = owner.browser.get(&owner.page("sponsorship")).await;
    assert_eq!(form.status.as_u16(), 200, "{}", form.body);
    let sent = owner
        .browser
        .submit(
            &owner.page("sponsorship"),
            &[
                ("csrf_token", &form.csrf()),
                ("org_type", "opensource"),
                ("website", "https://example.org"),
                ("description", "A community chat for an open-source project."),
                ("expected_total_users", "200"),
                ("paid_users_count", "0"),
                ("plan_to_use", "community"),
            ],
        )
        .await;
    // Then it is pending, and a second request is not offered
    assert_eq!(sent.status.as_u16(), 200, "{}", sent.body);
    assert!(sent.body.contains(r#"id="sponsorship-pending""#), "{}", sent.body);
    let view = owner.admin_view().await;
    assert_eq!(view["billing"][0]["customer"]["sponsorship_pending"], true, "{view}");
    // When an administrator approves it
    let path = format!("/remote-realms/{}/sponsorship", owner.realm);
    let (status, view) = admin_post(&owner.server, &path, &json!({"approve": true})).await;
    // Then the realm is on community at once, nothing pending, and the owner is told
    assert_eq!(status, 200, "{view}");
    let billing = &view["billing"][0];
    assert_eq!(
        (
            billing["plan"]["tier"].as_str(),
            billing["plan"]["next_invoice_date"].as_str()
        ),
        (Some("community"), None),
        "{view}"
    );
    assert_eq!(billing["customer"]["sponsorship_pending"], false);
    let mails = bundle_tests::ses_mails_to(&owner.email).await;
    assert!(
        mails
            .iter()
            .any(|m| m["subject"].as_str().unwrap_or_default().contains("Community plan")),
        "{mails:?}"
    );
    // And deciding again is a conflict
    let (status, _) = admin_post(&owner.server, &path, &json!({"approve": true})).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn a_realm_moved_to_the_server_it_was_imported_into_is_counted_there_only() {
    // Given a realm of 9 users registered by server A, then imported into server B
    let server = start_server_against_moto().await;
    let base = format!("http://{}", server.address);
    let old = register_remote_server(&base, "old@example.org").await;
    let new = register_remote_server(&base, "new@example.org").await;
    let realm = Uuid::new_v4();
    let analytics = format!("{base}/api/v1/remotes/server/analytics");
    let listing = json!({"uuid": realm, "host": "chat.example.org", "name": "Example Org"});
    let rows = json!({"realms": [listing], "realm_audit_logs": [audit_row(1, realm, Utc::now(), 9)]});
    assert_eq!(post(analytics.clone(), Some(old.basic()), &rows).await.0, 200);
    let (status, body) = post(analytics.clone(), Some(new.basic()), &rows).await;
    assert_eq!(
        (status, &body["errors"][0]["slug"]),
        (403, &json!("remote_realm_server_mismatch")),
        "{body}"
    );
    // When an administrator moves it to B
    let admin = server
        .keys
        .mint(Uuid::new_v4(), "subscriptions subscriptions_admin", Duration::hours(1));
    let response = reqwest::Client::new()
        .put(format!("{base}/remote-realms/{realm}/server"))
        .bearer_auth(&admin)
        .json(&json!({"server_uuid": new.uuid}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{:?}", response.text().await);
    // Then B's uploads count for it and A's are refused
    assert_eq!(post(analytics.clone(), Some(new.basic()), &rows).await.0, 200);
    let more = json!({"realm_audit_logs": [audit_row(2, realm, Utc::now(), 30)]});
    assert_eq!(post(analytics, Some(old.basic()), &more).await.0, 403);
    let view: Value = reqwest::Client::new()
        .get(format!("{base}/remote-realms/{realm}/billing"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["billing"][0]["billed_licenses"], 9, "{view}");
}
