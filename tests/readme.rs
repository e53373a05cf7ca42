//! The README's curl examples run as written on a fresh machine: the shell blocks of "Trying it
//! with curl", "Operators" and "Remote billing" run in bash against the local server, with only the
//! commands a fresh Debian has on its PATH (no `uuidgen`, no `jq`), and every answer is a
//! success.

use std::collections::HashMap;
use std::path::Path;

/// The shell blocks of the README section that starts with `heading`.
fn blocks_under(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("the README has no {heading}"));
    let section = &readme[start + heading.len()..];
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|next| section.find(next))
        .min()
        .unwrap_or(section.len());
    section[..end]
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().to_owned())
        .collect()
}

/// A directory with links to the commands a fresh Debian (with curl) has, for `PATH`.
fn fresh_machine_path() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for command in [
        "bash", "curl", "cat", "head", "base64", "tr", "sed", "printf", "echo", "env",
    ] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|base| Path::new(base).join(command))
            .find(|path| path.exists());
        if let Some(found) = found {
            std::os::unix::fs::symlink(found, dir.path().join(command)).unwrap();
        }
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_examples_run_as_written() {
    // (the server's warnings and errors go to the test's output, shown when it fails)
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
    // Given the local server, as `make run` starts it, and the tokens it prints
    let data = tempfile::tempdir().unwrap();
    let options = devserver::Options {
        port: 0,
        stripe_port: 0,
        aws: false,
        data_dir: data.path().to_owned(),
    };
    let env: HashMap<String, String> = [("DEV_JWT_SECRET".to_owned(), "readme secret".to_owned())].into();
    let server = devserver::start(&options, &env).await.expect("the local server");
    let user = uuid::Uuid::new_v4();
    let admin_token = server.keys.mint(
        uuid::Uuid::new_v4(),
        "subscriptions subscriptions_admin",
        chrono::Duration::hours(1),
    );
    let user_token = server.keys.mint(user, "subscriptions", chrono::Duration::hours(1));
    let sandbox = server.sandbox.as_ref().unwrap().base_url();
    let sandbox_host = sandbox.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let path = fresh_machine_path();

    // When each block of the two sections runs in bash, the ports being this server's
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    // (the sections' first blocks: the later one of the curl section has placeholders for ids)
    let blocks = [
        blocks_under(&readme, "### Trying it with curl").remove(0),
        blocks_under(&readme, "### Operators").remove(0),
        blocks_under(&readme, "### Remote billing (self-hosted servers)").remove(0),
    ];
    for block in blocks {
        let script = block
            .replace("localhost:3000", &server.address.to_string())
            .replace("localhost:12111", &sandbox_host);
        let mut command = std::process::Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", &script])
            .env_clear()
            .env("PATH", path.path())
            .env("ADMIN_TOKEN", &admin_token)
            .env("USER_TOKEN", &user_token)
            .env("USER_ID", user.to_string());
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );

        // Then it succeeds, and no answer is an error
        assert!(output.status.success(), "{script}\nstdout: {stdout}\nstderr: {stderr}");
        assert!(!stdout.contains("\"errors\""), "{script}\n{stdout}");
        assert!(!stdout.trim().is_empty(), "{script}: no output");
    }
    // and the examples did what they say
    let stored = server.store.get_subscription(user).await.unwrap();
    assert_eq!(stored.plan, "basic_monthly");
    assert!(stored.has_payment_source);
}
