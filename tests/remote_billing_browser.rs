//! The remote-billing login in headless Chromium (Debian's package, driven by playwright-core
//! from `tests/browser`): the real forms clicked through against the local server in AWS mode
//! (DynamoDB and SES in moto). The billing page's screenshot is kept in
//! `target/artifacts/remote-billing-page.png`.
//!
//! `make test` installs Chromium and the driver when missing; without them this test fails
//! with what to run.

use std::path::PathBuf;
use std::process::Command;

use bundle_tests::{billing_access_url, register_remote_server, start_server_against_moto};
use serde_json::Value;
use uuid::Uuid;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

#[tokio::test]
async fn the_login_pages_work_in_a_real_browser_and_the_billing_page_is_screenshotted() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).exists(),
        "{chromium} is missing: run `make test`, which installs Debian's chromium"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: run `make test`, which runs `npm ci` there"
    );

    // Given a registered server and two billing links of one user
    let running = start_server_against_moto().await;
    let base = format!("http://{}", running.address);
    let server = register_remote_server(&base, "admin@example.org").await;
    let (realm, user) = (Uuid::new_v4(), Uuid::new_v4());
    let email = format!("owner-{}@example.org", user.simple());
    let first = billing_access_url(&base, &server, realm, user, &email).await;
    let second = billing_access_url(&base, &server, realm, user, &email).await;
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("remote-billing-page.png");
    let _ = std::fs::remove_file(&screenshot);

    // When Chromium clicks through the forms
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(browser_dir())
            .arg("remote-billing-login.mjs")
            .args([&first, &second, &email])
            .arg(&screenshot)
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

    // Then it saw every step, landed on the billing page, and the second login skipped the email
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(seen["afterEmail"], "Check your email", "{seen}");
    assert_eq!(seen["termsShown"], true, "{seen}");
    assert_eq!(seen["billingUrl"], format!("{base}/realm/{realm}/billing/"), "{seen}");
    assert_eq!(seen["plan"], "Free", "{seen}");
    assert_eq!(seen["secondLoginAsksForEmail"], false, "{seen}");
    assert_eq!(seen["secondLoginShowsTerms"], false, "{seen}");
    assert_eq!(seen["secondPlan"], "Free", "{seen}");
    let png = std::fs::read(artifacts.join("remote-billing-page.png")).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "a real screenshot");
}
