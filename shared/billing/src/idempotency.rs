//! Client idempotency keys (API.md: `Idempotency-Key` on `POST` and `PATCH`), with Stripe's
//! semantics: the first request's answer is kept 24 hours under (caller, key); a repeat of the
//! same request gets that answer again, marked as replayed; another request under the same key
//! is refused (422 `idempotency_key_reused`); a repeat while the first is still running is told
//! to wait (409 `conflict`).
//!
//! Records are documents with an expiry, written conditionally: the first request claims the key
//! (an insert that only one writer wins), then replaces its claim with its answer (a write on
//! the version it claimed). An answer that says "try again" (5xx, or 429 past a rate limit)
//! releases the key instead, so the retry runs. A claim whose request died (no answer after [`ABANDONED_AFTER`]) may be taken
//! over by the next attempt.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::errors::{FieldError, Slug};
use crate::remote::records::sha256_hex;
use crate::store::{DocumentStore, StoreError};

/// How long an answer is kept.
pub const KEEP_ANSWERS_FOR: Duration = Duration::hours(24);

/// A claim older than this belongs to a request that died: longer than any function's timeout.
pub const ABANDONED_AFTER: Duration = Duration::seconds(60);

/// The longest key (Stripe's limit).
pub const MAX_KEY_CHARS: usize = 255;

/// The header.
pub const HEADER: &str = "idempotency-key";

/// An answer as it was sent, to send again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The body, as sent.
    pub body: String,
    /// The headers worth sending again (`etag`, `location`, `content-type`), as (name, value).
    pub headers: Vec<(String, String)>,
}

/// What to do with a request that carries a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// Run it; then [`finish`] with the claim's version.
    Run(u64),
    /// Answer what the first request answered.
    Replay(KeptAnswer),
    /// Refuse: the key belongs to another request, or its request is still running.
    Refuse(FieldError),
}

/// Checks a key: 1 to 255 printable ASCII characters.
pub fn check_key(key: &str) -> Result<(), FieldError> {
    let fits = !key.is_empty() && key.len() <= MAX_KEY_CHARS && key.bytes().all(|b| (0x20..0x7f).contains(&b));
    if fits {
        Ok(())
    } else {
        Err(FieldError::param(
            Slug::InvalidValue,
            "Idempotency-Key",
            format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable ASCII characters"),
        ))
    }
}

/// What makes two requests "the same": method, path and body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut bytes = format!("{method} {path}\n").into_bytes();
    bytes.extend_from_slice(body);
    sha256_hex(&bytes)
}

/// Where (caller, key) is kept; both hashed, so neither a caller's id nor a key shapes the key.
fn record_key(caller: &str, key: &str) -> String {
    format!("idempotency#{}", sha256_hex(format!("{caller}\n{key}").as_bytes()))
}

/// Claims `key` for this request, or says what to answer instead.
pub async fn begin(
    documents: &dyn DocumentStore,
    caller: &str,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> Result<Begin, StoreError> {
    let record = record_key(caller, key);
    let claim = json!({"state": "running", "fingerprint": fingerprint, "started_at": now});
    // Two tries: a claim lost to a concurrent first request is read back and answered.
    for _ in 0..2 {
        let Some(found) = documents.get_document(&record, now).await? else {
            match documents
                .put_document(&record, &claim, Some(now + KEEP_ANSWERS_FOR), None, now)
                .await
            {
                Ok(version) => return Ok(Begin::Run(version)),
                Err(StoreError::AlreadyExists | StoreError::VersionConflict) => continue,
                Err(other) => return Err(other),
            }
        };
        if found.body["fingerprint"] != fingerprint {
            return Ok(Begin::Refuse(FieldError::param(
                Slug::IdempotencyKeyReused,
                "Idempotency-Key",
                "this Idempotency-Key was used with another request; use a new key for a new request",
            )));
        }
        if found.body["state"] == "done" {
            return Ok(Begin::Replay(kept_answer(&found.body)));
        }
        let started = found.body["started_at"]
            .as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|t| t.with_timezone(&Utc));
        if started.is_some_and(|started| now - started < ABANDONED_AFTER) {
            return Ok(Begin::Refuse(FieldError::param(
                Slug::Conflict,
                "Idempotency-Key",
                "a request with this Idempotency-Key is still running; try again in a moment",
            )));
        }
        match documents
            .put_document(&record, &claim, Some(now + KEEP_ANSWERS_FOR), Some(found.version), now)
            .await
        {
            Ok(version) => return Ok(Begin::Run(version)),
            Err(StoreError::VersionConflict | StoreError::AlreadyExists) => continue,
            Err(other) => return Err(other),
        }
    }
    Ok(Begin::Refuse(FieldError::param(
        Slug::Conflict,
        "Idempotency-Key",
        "a request with this Idempotency-Key is still running; try again in a moment",
    )))
}

/// Keeps the answer of the request that claimed `key` at `version`; an answer that says "try
/// again" (5xx, or 429: a limit whose window ends) releases the key instead.
pub async fn finish(
    documents: &dyn DocumentStore,
    caller: &str,
    key: &str,
    fingerprint: &str,
    version: u64,
    answer: &KeptAnswer,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let record = record_key(caller, key);
    let (body, expires) = if answer.status >= 500 || answer.status == 429 {
        (json!({"state": "released", "fingerprint": fingerprint}), now)
    } else {
        (
            json!({
                "state": "done",
                "fingerprint": fingerprint,
                "status": answer.status,
                "body": answer.body,
                "headers": answer.headers,
            }),
            now + KEEP_ANSWERS_FOR,
        )
    };
    documents
        .put_document(&record, &body, Some(expires), Some(version), now)
        .await
        .map(|_| ())
}

fn kept_answer(body: &Value) -> KeptAnswer {
    KeptAnswer {
        status: body["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(200),
        body: body["body"].as_str().unwrap_or_default().to_owned(),
        headers: body["headers"]
            .as_array()
            .map(|pairs| {
                pairs
                    .iter()
                    .filter_map(|pair| Some((pair[0].as_str()?.to_owned(), pair[1].as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_printable_characters() {
        assert!(check_key("order-42").is_ok());
        assert!(check_key(&"k".repeat(255)).is_ok());
        for bad in ["", "tab\there", "é", &"k".repeat(256)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_same_request_has_the_same_fingerprint_and_another_body_another() {
        let one = fingerprint("POST", "/subscriptions", b"{}");
        assert_eq!(one, fingerprint("POST", "/subscriptions", b"{}"));
        assert_ne!(one, fingerprint("POST", "/subscriptions", b"{ }"));
        assert_ne!(one, fingerprint("PATCH", "/subscriptions", b"{}"));
    }
}
