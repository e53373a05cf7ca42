//! No log line holds a secret (API.md conventions): the whole remote-billing login, a server's
//! billing-link request and an administrator's call run through the local server against moto
//! with every log line captured, at a more verbose level than production's, and none of the
//! secrets those requests carried appears in them.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bundle_tests::{
    Browser, FirstLogin, billing_access_url, first_login, path_of, register_remote_server, start_server_against_moto,
};
use reqwest::StatusCode;
use uuid::Uuid;

/// Every log line written, as text.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    fn install() -> Self {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,billing=debug,billing_http=debug,billing_adapters=debug,devserver=debug,\
                 remote_billing_pages=debug,remote_billing_server=debug",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The last path segment of a link: the token or key it carries.
fn last_segment(link: &str) -> String {
    path_of(link)
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn no_log_line_holds_a_token_a_key_a_cookie_or_a_bearer_token() {
    // Given every log line captured, and a registered server
    let logs = CapturedLogs::install();
    let running = start_server_against_moto().await;
    let base = format!("http://{}", running.address);
    let contact = format!("admin-{}@example.org", Uuid::new_v4().simple());
    let server = register_remote_server(&base, &contact).await;

    // When its owner logs in through the emailed confirmation
    let (realm, user) = (Uuid::new_v4(), Uuid::new_v4());
    let email = format!("owner-{}@example.org", user.simple());
    let link = billing_access_url(&base, &server, realm, user, &email).await;
    let mut browser = Browser::new(&base);
    let FirstLogin {
        form,
        confirmation,
        login,
        done,
    } = first_login(&mut browser, &link, &email).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let billing = browser.get(&done.location.unwrap()).await;
    assert_eq!(billing.status, StatusCode::OK, "{}", billing.body);
    // and an administrator has the server's deactivation link mailed
    let bearer = running.keys.mint(
        Uuid::new_v4(),
        "subscriptions subscriptions_admin",
        chrono::Duration::minutes(5),
    );
    let deactivation = reqwest::Client::new()
        .post(format!("{base}/remote-servers/{}/deactivation-link", server.uuid))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(deactivation.status(), StatusCode::ACCEPTED);

    // Then the requests were logged, by their routes, and no secret they carried was
    let text = logs.text();
    assert!(text.contains("answered"), "the requests were logged:\n{text}");
    assert!(
        text.contains("/remote-billing-login/{token}"),
        "routes are logged:\n{text}"
    );
    let session = browser.cookie.clone().expect("a session cookie");
    let secrets = [
        ("the access token", last_segment(&link)),
        ("the confirmation key", last_segment(&confirmation)),
        ("the login token after confirmation", last_segment(&login)),
        ("the server key", server.key.clone()),
        (
            "the server's Basic credentials",
            server.basic()["Basic ".len()..].to_owned(),
        ),
        ("the session cookie", session.split_once('=').unwrap().1.to_owned()),
        ("the bearer token", bearer),
        ("the CSRF token", form.csrf()),
    ];
    for (what, secret) in secrets {
        assert!(secret.len() >= 16, "{what} is a real secret: {secret}");
        assert!(!text.contains(&secret), "{what} reached the logs:\n{text}");
    }
}
