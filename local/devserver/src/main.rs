//! `make run`: the bundle on 127.0.0.1, with ready-to-use tokens printed at start.

use billing::config::ProcessEnvironment;
use devserver::{Options, banner, start};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    match start(&options, &ProcessEnvironment).await {
        Ok(server) => {
            println!("{}", banner(&options, &server));
            let _ = server.task.await;
        }
        Err(error) => {
            eprintln!("devserver: {error}");
            std::process::exit(1);
        }
    }
}
