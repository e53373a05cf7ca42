//! A stateful stand-in for the part of Stripe's v1 API the billing service uses, for tests and
//! offline work: customers, subscriptions and their items, prices, payment methods (Stripe's test
//! cards such as `pm_card_visa`) and events, form-encoded like Stripe, with Stripe-shaped errors,
//! `Idempotency-Key` semantics, signed webhooks, and controls to inject failures and latency.
//!
//! It knows Stripe's API and nothing of the billing model. Objects start from Stripe's own
//! published examples (`fixtures/`), so clients that parse strictly (async-stripe) accept them.

// Building a whole subscription with `json!` nests deeper than the default limit.
#![recursion_limit = "256"]

use std::net::SocketAddr;

pub mod api;
pub mod form;
pub mod objects;
pub mod server;
pub mod webhooks;

pub use objects::{API_VERSION, PriceSpec};
pub use server::Sandbox;
pub use webhooks::{WebhookTarget, signature_header};

/// A sandbox serving on a local port.
pub struct RunningSandbox {
    pub address: SocketAddr,
    pub sandbox: Sandbox,
    pub task: tokio::task::JoinHandle<()>,
}

impl RunningSandbox {
    /// The base URL a Stripe client is pointed at (`http://127.0.0.1:PORT/`).
    pub fn base_url(&self) -> String {
        format!("http://{}/", self.address)
    }
}

/// Starts a sandbox offering `prices` on 127.0.0.1:`port` (0 picks a free port).
pub async fn start(port: u16, prices: &[PriceSpec]) -> std::io::Result<RunningSandbox> {
    let sandbox = Sandbox::new(prices);
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await?;
    let address = listener.local_addr()?;
    let app = sandbox.router();
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the Stripe sandbox stopped");
        }
    });
    Ok(RunningSandbox { address, sandbox, task })
}
