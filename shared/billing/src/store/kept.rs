//! Stripe events as received, kept for review and replay longer than Stripe keeps them.
//!
//! Every verified event's raw body is kept [`KEEP_EVENTS_FOR`] with what became of it, so an
//! operator can list the events that were not applied (`unknown_subscription`, `failed`, ...)
//! and apply them again through the same exactly-once path. Bodies are deflated when large:
//! a DynamoDB item holds at most 400 KB, and most of an event is repetitive JSON.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::StoreError;

/// How long an event's body is kept: longer than Stripe's 30 days of event history, so an
/// outage noticed late can still be replayed from here.
pub const KEEP_EVENTS_FOR: Duration = Duration::days(400);

/// Bodies up to this size are kept as they are; larger ones are deflated.
const DEFLATE_FROM_BYTES: usize = 4 * 1024;

/// Every outcome an event can be recorded with, in the order lists walk them.
pub const EVENT_OUTCOMES: [&str; 11] = [
    "applied",
    "failed",
    "unknown_subscription",
    "stale",
    "ignored",
    "mailed",
    "mail_refused",
    "declined",
    "refused",
    "unknown_upgrade",
    "received",
];

/// A Stripe event as received, with what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptEvent {
    /// Stripe's id (`evt_...`).
    pub id: String,
    /// Its `type`.
    pub kind: String,
    /// Stripe's `created`, in seconds.
    pub created: i64,
    /// What became of it: one of [`EVENT_OUTCOMES`].
    pub outcome: String,
    /// The subscription it concerns, when one was found.
    pub subscription_id: Option<Uuid>,
    /// The body exactly as Stripe sent it.
    pub body: Vec<u8>,
    /// When the store may forget it.
    pub kept_until: DateTime<Utc>,
}

/// One page of kept events, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct KeptEventPage {
    /// At most the limit asked.
    pub events: Vec<KeptEvent>,
    /// Where the next page starts, when one may follow (the store's own position).
    pub next: Option<serde_json::Value>,
}

/// How a body is stored: `identity`, or `deflate` when large.
pub fn pack(body: &[u8]) -> (&'static str, Vec<u8>) {
    if body.len() < DEFLATE_FROM_BYTES {
        ("identity", body.to_vec())
    } else {
        ("deflate", miniz_oxide::deflate::compress_to_vec(body, 6))
    }
}

/// The body [`pack`] stored as `encoding`.
pub fn unpack(encoding: &str, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
    match encoding {
        "identity" => Ok(stored.to_vec()),
        "deflate" => miniz_oxide::inflate::decompress_to_vec(stored)
            .map_err(|e| StoreError::Corrupt(format!("a kept event's body does not inflate: {e:?}"))),
        other => Err(StoreError::Corrupt(format!(
            "a kept event's body is encoded as {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_are_kept_as_they_are_and_large_ones_deflated_and_read_back() {
        let small = br#"{"id": "evt_1"}"#;
        assert_eq!(pack(small), ("identity", small.to_vec()));
        let large = format!(r#"{{"id": "evt_2", "data": "{}"}}"#, "line item ".repeat(2000)).into_bytes();
        let (encoding, stored) = pack(&large);
        assert_eq!(encoding, "deflate");
        assert!(stored.len() < large.len() / 10);
        assert_eq!(unpack(encoding, &stored).unwrap(), large);
        assert!(unpack("gzip", &stored).is_err());
    }
}
