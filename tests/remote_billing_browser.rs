//! Remote billing in headless Chromium (Debian's package, driven by playwright-core from
//! `tests/browser`): the real forms clicked through against the local server in AWS mode
//! (DynamoDB and SES in moto, Stripe in the sandbox): login, plans, upgrade, Stripe's Checkout,
//! the billing page with the plan. Screenshots of each page are kept in `target/artifacts/`.
//!
//! `make test` installs Chromium and the driver when missing; without them this test fails
//! with what to run.

use std::path::PathBuf;
use std::process::Command;

use bundle_tests::{billing_access_url, register_remote_server, start_server_against_moto};
use serde_json::{Value, json};
use uuid::Uuid;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

#[tokio::test]
async fn an_admin_logs_in_and_buys_a_plan_through_checkout_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).exists(),
        "{chromium} is missing: run `make test`, which installs Debian's chromium"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: run `make test`, which runs `npm ci` there"
    );

    // Given a registered server that reported a realm of 4 users, and two billing links of one
    // of its users
    let running = start_server_against_moto().await;
    let base = format!("http://{}", running.address);
    let server = register_remote_server(&base, "admin@example.org").await;
    let (realm, user) = (Uuid::new_v4(), Uuid::new_v4());
    let upload = reqwest::Client::new()
        .post(format!("{base}/api/v1/remotes/server/analytics"))
        .header("authorization", server.basic())
        .json(&json!({
            "realms": [{"uuid": realm, "host": "chat.example.org", "name": "Example Org"}],
            "realm_audit_logs": [{"id": 1, "realm": realm, "event_type": 101,
                "event_time": chrono::Utc::now().timestamp() - 60,
                "extra_data": {"10": {"11": {"100": 1, "400": 3}}}}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status().as_u16(), 200);
    let email = format!("owner-{}@example.org", user.simple());
    let first = billing_access_url(&base, &server, realm, user, &email).await;
    let second = billing_access_url(&base, &server, realm, user, &email).await;
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    for page in [
        "remote-billing-page",
        "plans-page",
        "upgrade-page",
        "checkout-page",
        "billing-with-plan",
    ] {
        let _ = std::fs::remove_file(artifacts.join(format!("{page}.png")));
    }
    let artifacts_arg = artifacts.clone();

    // When Chromium clicks through the forms
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(browser_dir())
            .arg("remote-billing-login.mjs")
            .args([&first, &second, &email])
            .arg(&artifacts_arg)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Then it saw every step, landed on the billing page, bought basic through Checkout, and the
    // second login skipped the email
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(seen["afterEmail"], "Check your email", "{seen}");
    assert_eq!(seen["termsShown"], true, "{seen}");
    assert_eq!(seen["billingUrl"], format!("{base}/realm/{realm}/billing/"), "{seen}");
    assert_eq!(seen["noPlan"], true, "{seen}");
    assert_eq!(seen["basicMonthly"], "$3.50/month", "{seen}");
    assert_eq!(seen["upgradeLabelled"], true, "{seen}");
    assert_eq!(seen["checkoutHeading"], "Save a card", "{seen}");
    assert_eq!(
        seen["afterCheckoutUrl"],
        format!("{base}/realm/{realm}/billing/"),
        "{seen}"
    );
    assert_eq!(seen["planTier"], "Basic", "{seen}");
    assert_eq!(seen["card"], "Card ending in 4242", "{seen}");
    assert_eq!(seen["secondLoginAsksForEmail"], false, "{seen}");
    assert_eq!(seen["secondLoginShowsTerms"], false, "{seen}");
    assert_eq!(seen["secondPlan"], "Basic", "{seen}");
    for page in [
        "remote-billing-page",
        "plans-page",
        "upgrade-page",
        "checkout-page",
        "billing-with-plan",
    ] {
        let png = std::fs::read(artifacts.join(format!("{page}.png"))).expect("the screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "a real screenshot of {page}"
        );
    }
}
