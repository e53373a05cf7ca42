//! The Stripe sandbox as a program of its own: `stripe-sandbox [--port N] [--price ID:AMOUNT:INTERVAL]...
//! [--webhook URL --webhook-secret whsec_...]`.

use stripe_sandbox::{PriceSpec, WebhookTarget, start};

const USAGE: &str = "usage: stripe-sandbox [--port N] [--price price_ID:AMOUNT_IN_CENTS:INTERVAL]... [--webhook URL --webhook-secret SECRET]";

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let mut port = 12111;
    let mut prices = Vec::new();
    let (mut webhook, mut secret) = (None, None);
    let mut parser = lexopt::Parser::from_env();
    use lexopt::ValueExt;
    let value = |parser: &mut lexopt::Parser| -> String {
        parser
            .value()
            .map_err(|e| e.to_string())
            .and_then(|v| v.string().map_err(|e| e.to_string()))
            .unwrap_or_else(|e| fail(&e))
    };
    while let Some(arg) = parser.next().unwrap_or_else(|e| fail(&e.to_string())) {
        use lexopt::Arg::Long;
        match arg {
            Long("port") => {
                port = value(&mut parser)
                    .parse()
                    .unwrap_or_else(|e| fail(&format!("--port: {e}")))
            }
            Long("price") => prices.push(PriceSpec::parse(&value(&mut parser)).unwrap_or_else(|e| fail(&e))),
            Long("webhook") => webhook = Some(value(&mut parser)),
            Long("webhook-secret") => secret = Some(value(&mut parser)),
            other => fail(&other.unexpected().to_string()),
        }
    }
    if prices.is_empty() {
        prices = vec![
            PriceSpec::recurring("price_monthly", 1000, "month"),
            PriceSpec::recurring("price_annual", 10000, "year"),
        ];
    }
    let running = start(port, &prices)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot listen on 127.0.0.1:{port}: {e}")));
    match (webhook, secret) {
        (Some(url), Some(secret)) => running.sandbox.set_webhook(Some(WebhookTarget { url, secret })),
        (None, None) => {}
        _ => fail("--webhook and --webhook-secret go together"),
    }
    println!(
        "Stripe sandbox on {} (API version {}), prices: {}",
        running.base_url(),
        stripe_sandbox::API_VERSION,
        prices.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", ")
    );
    let _ = running.task.await;
}

fn fail(message: &str) -> ! {
    eprintln!("stripe-sandbox: {message}\n{USAGE}");
    std::process::exit(2)
}
