//! Webhook delivery: each event the sandbox makes is POSTed, signed the way Stripe signs
//! (`Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload">`), to the configured
//! endpoint, in the order the events happened, with a few retries when it does not answer 2xx.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Where events go and the secret they are signed with (`whsec_...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

/// The `Stripe-Signature` header value for `payload` sent at `timestamp`.
pub fn signature_header(secret: &str, timestamp: i64, payload: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, format!("{timestamp}.{payload}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(tag.as_ref()))
}

/// One delivery attempt series, kept for whoever wants to check what was sent.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub event_id: String,
    pub event_type: String,
    pub status: Option<u16>,
    pub attempts: u32,
}

impl Delivery {
    pub fn to_json(&self) -> Value {
        json!({"event_id": self.event_id, "type": self.event_type, "status": self.status, "attempts": self.attempts})
    }
}

const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends events one after another, so an endpoint sees them in the order they happened unless
/// it is asked to see otherwise.
#[derive(Clone)]
pub struct Sender {
    client: Client<HttpConnector, Full<Bytes>>,
    queue: tokio::sync::mpsc::UnboundedSender<(WebhookTarget, Value)>,
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// While held, events wait here instead of being sent (see [`Sender::release`]).
    held: Arc<Mutex<Option<Vec<Outgoing>>>>,
    /// Seconds the sandbox's clock is ahead of real time (shared with the sandbox).
    pub clock_offset: Arc<std::sync::atomic::AtomicI64>,
}

/// An event on its way to an endpoint.
type Outgoing = (WebhookTarget, Value);

/// In what order held events are sent when released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    AsHappened,
    Reversed,
    Shuffled,
}

/// Random indexes without a random-number crate: UUID v4s are random enough for shuffling.
fn random_below(n: usize) -> usize {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    (u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) % n as u64) as usize
}

impl Sender {
    pub fn start() -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        let (queue, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(WebhookTarget, Value)>();
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let sender = Sender {
            client: client.clone(),
            queue,
            deliveries: Arc::clone(&deliveries),
            held: Arc::new(Mutex::new(None)),
            clock_offset: Arc::new(std::sync::atomic::AtomicI64::new(0)),
        };
        let worker = sender.clone();
        tokio::spawn(async move {
            while let Some((target, event)) = receiver.recv().await {
                worker.deliver(&target, &event).await;
            }
        });
        sender
    }

    pub fn enqueue(&self, target: WebhookTarget, event: Value) {
        if let Ok(mut held) = self.held.lock()
            && let Some(held) = held.as_mut()
        {
            held.push((target, event));
            return;
        }
        // The receiver lives as long as the runtime; a closed queue means shutdown.
        let _ = self.queue.send((target, event));
    }

    /// Holds events back from now on, until [`Sender::release`].
    pub fn hold(&self) {
        if let Ok(mut held) = self.held.lock() {
            held.get_or_insert_with(Vec::new);
        }
    }

    /// Sends the held events in `order`, plus `duplicates` extra copies of randomly chosen
    /// ones mixed in, and stops holding. Returns how many deliveries were queued.
    pub fn release(&self, order: Order, duplicates: usize) -> usize {
        let Some(mut events) = self.held.lock().ok().and_then(|mut held| held.take()) else {
            return 0;
        };
        if !events.is_empty() {
            for _ in 0..duplicates {
                let copy = events[random_below(events.len())].clone();
                events.push(copy);
            }
        }
        match order {
            Order::AsHappened if duplicates == 0 => {}
            Order::AsHappened => {
                // Duplicates go right after their original, as a redelivery would.
                let mut ordered: Vec<Outgoing> = Vec::new();
                for event in events.drain(..) {
                    let at = ordered
                        .iter()
                        .rposition(|(_, e)| e["id"] == event.1["id"])
                        .map_or(ordered.len(), |i| i + 1);
                    ordered.insert(at, event);
                }
                events = ordered;
            }
            Order::Reversed => events.reverse(),
            Order::Shuffled => {
                for i in (1..events.len()).rev() {
                    events.swap(i, random_below(i + 1));
                }
            }
        }
        let count = events.len();
        for (target, event) in events {
            let _ = self.queue.send((target, event));
        }
        count
    }

    async fn deliver(&self, target: &WebhookTarget, event: &Value) {
        let payload = serde_json::to_string_pretty(event).unwrap_or_default();
        let mut record = Delivery {
            event_id: event["id"].as_str().unwrap_or_default().to_owned(),
            event_type: event["type"].as_str().unwrap_or_default().to_owned(),
            status: None,
            attempts: 0,
        };
        for attempt in 0..ATTEMPTS {
            record.attempts = attempt + 1;
            // Signed at the sandbox's time, which a test may have moved forward.
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
                + self.clock_offset.load(std::sync::atomic::Ordering::SeqCst);
            let request = axum::http::Request::post(&target.url)
                .header("content-type", "application/json; charset=utf-8")
                .header("user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
                .header(
                    "stripe-signature",
                    signature_header(&target.secret, timestamp, &payload),
                )
                .body(Full::new(Bytes::from(payload.clone())));
            let Ok(request) = request else {
                tracing::warn!(url = %target.url, "webhook URL is not valid");
                break;
            };
            match tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request)).await {
                Ok(Ok(response)) => {
                    record.status = Some(response.status().as_u16());
                    if response.status().is_success() {
                        break;
                    }
                }
                Ok(Err(error)) => tracing::warn!(%error, event = %record.event_id, "webhook delivery failed"),
                Err(_) => tracing::warn!(event = %record.event_id, "webhook delivery timed out"),
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
        }
        if let Ok(mut deliveries) = self.deliveries.lock() {
            deliveries.push(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256_of_timestamp_dot_payload() {
        // Computed independently: hmac.new(b"whsec_test", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            signature_header("whsec_test", 1_700_000_000, "{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }
}
