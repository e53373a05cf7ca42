//! Remote billing end to end: the local server in AWS mode (DynamoDB and SES in moto), a
//! self-hosted server calling its API, and a browser's requests made by hand.

use bundle_tests::{
    Browser, FirstLogin, billing_access_url, first_login, path_of, register_remote_server, ses_mails_to,
    start_server_against_moto,
};
use reqwest::StatusCode;
use uuid::Uuid;

#[tokio::test]
async fn a_server_admin_logs_in_with_an_emailed_confirmation_and_comes_back_without_one() {
    // Given a registered server and the billing link it got for its organisation's owner
    let running = start_server_against_moto().await;
    let base = format!("http://{}", running.address);
    let server = register_remote_server(&base, "admin@example.org").await;
    let (realm, user) = (Uuid::new_v4(), Uuid::new_v4());
    let email = format!("owner-{}@example.org", user.simple());
    let link = billing_access_url(&base, &server, realm, user, &email).await;
    assert!(link.starts_with(&format!("{base}/remote-billing-login/")), "{link}");

    // When the owner opens it, has the confirmation mailed, follows the link of the mail SES
    // sent and accepts the Terms of Service
    let mut browser = Browser::new(&base);
    let FirstLogin { form, done, .. } = first_login(&mut browser, &link, &email).await;
    assert!(form.body.contains(&email), "the address was prefilled");

    // Then the owner lands on the realm's billing page with a session
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let billing_page = done.location.unwrap();
    assert_eq!(billing_page, format!("/realm/{realm}/billing/"));
    assert!(browser.cookie.is_some());
    let billing = browser.get(&billing_page).await;
    assert_eq!(billing.status, StatusCode::OK, "{}", billing.body);
    assert!(billing.body.contains("Example Org") && billing.body.contains(r#"id="no-plan""#));

    // and a later login of the same user skips the email step and the Terms of Service
    let mut later = Browser::new(&base);
    let link = billing_access_url(&base, &server, realm, user, &email).await;
    let page = later.get(&link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains(r#"name="email""#) && !page.body.contains("tos_consent"),
        "{}",
        page.body
    );
    let done = later
        .submit(
            &path_of(&link),
            &[("csrf_token", &page.csrf()), ("full_name", "Ada Owner")],
        )
        .await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(later.get(&done.location.unwrap()).await.status, StatusCode::OK);
    assert_eq!(ses_mails_to(&email).await.len(), 1, "one confirmation mail in all");
    // The first browser's session is its own; without one, the page sends back to the server.
    let anonymous = Browser::new(&base).get(&billing_page).await;
    assert_eq!(anonymous.status, StatusCode::FOUND);
    assert_eq!(
        anonymous.location.as_deref(),
        Some("https://chat.example.org/self-hosted-billing/")
    );
}

#[tokio::test]
async fn an_administrator_has_the_deactivation_link_mailed_to_the_servers_contact() {
    // Given a registered server
    let running = start_server_against_moto().await;
    let base = format!("http://{}", running.address);
    let contact = format!("admin-{}@example.org", Uuid::new_v4().simple());
    let server = register_remote_server(&base, &contact).await;

    // When an administrator asks for its deactivation link
    let token = running.keys.mint(
        Uuid::new_v4(),
        "subscriptions subscriptions_admin",
        chrono::Duration::minutes(5),
    );
    let response = reqwest::Client::new()
        .post(format!("{base}/remote-servers/{}/deactivation-link", server.uuid))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();

    // Then SES mails the contact a login link
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mails = ses_mails_to(&contact).await;
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]["body"]
            .as_str()
            .unwrap()
            .contains(&format!("{base}/remote-billing-login/"))
    );
    let anonymous = reqwest::Client::new()
        .post(format!("{base}/remote-servers/{}/deactivation-link", server.uuid))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_server_level_link_confirms_the_contact_and_opens_the_servers_billing_pages() {
    // Given a registered server too old to upload realms
    let running = start_server_against_moto().await;
    let base = format!("http://{}", running.address);
    let contact = format!("admin-{}@example.org", Uuid::new_v4().simple());
    let server = register_remote_server(&base, &contact).await;
    // When it asks for a billing link without a realm, for one of its users
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/remotes/server/billing"))
        .header("authorization", server.basic())
        .json(&serde_json::json!({
            "user": {"uuid": Uuid::new_v4(), "email": "someone@example.org", "full_name": "Some One"},
            "uri_scheme": "https://",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    let link = body["billing_access_url"].as_str().unwrap().to_owned();
    // Then its login confirms the contact's address (whatever was asked) and lands on the
    // server's billing page
    let mut browser = Browser::new(&base);
    let FirstLogin { done, .. } = first_login(&mut browser, &link, &contact).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let landing = done.location.unwrap();
    assert_eq!(landing, format!("/server/{}/billing/", server.uuid));
    let page = browser.get(&landing).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("Billing for chat.example.org") && page.body.contains(r#"id="no-plan""#),
        "{}",
        page.body
    );
    assert!(
        ses_mails_to("someone@example.org").await.is_empty(),
        "only the contact is mailed"
    );
}
