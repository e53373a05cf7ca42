//! Per-caller limits on the calls that spend the Stripe account's rate limit, which every
//! customer shares: one user calling `preview` (three Stripe calls) or `setup-intent` (a new
//! SetupIntent each time) in a loop must not slow everyone else's billing down.
//!
//! A fixed window per caller and operation: a counter document
//! `call_limits/<operation>#<caller>#<window start>` counted up with conditional writes, and
//! gone when its window ends. Past the limit the caller is told when the window ends.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::store::{AsConflict, DocumentStore, StoreError, member_key, retry_on_conflict};

/// How many calls a caller may make in one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Calls per window.
    pub calls: u64,
    /// The window.
    pub window: Duration,
}

/// What `preview`, `setup-intent` and `portal-session` allow each caller: a person clicking
/// never meets it, a loop does within seconds.
pub const STRIPE_CALLS_PER_CALLER: Limit = Limit {
    calls: 20,
    window: Duration::minutes(1),
};

/// The collection of counters.
pub const CALL_LIMITS: &str = "call_limits";

/// Why a call was not counted.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The caller made its calls for this window.
    #[error("too many requests: try again in {retry_after_seconds} s")]
    Limited {
        /// Seconds until the window ends.
        retry_after_seconds: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AsConflict for LimitError {
    fn is_conflict(&self) -> bool {
        matches!(
            self,
            LimitError::Store(StoreError::VersionConflict | StoreError::AlreadyExists)
        )
    }
}

/// Counts one call of `operation` by `caller` at `now`, or refuses it past `limit`.
pub async fn take(
    documents: &dyn DocumentStore,
    operation: &str,
    caller: &str,
    limit: Limit,
    now: DateTime<Utc>,
) -> Result<(), LimitError> {
    let window = limit.window.num_seconds().max(1);
    let start = now.timestamp() - now.timestamp().rem_euclid(window);
    let ends = DateTime::from_timestamp(start + window, 0).unwrap_or(now);
    let key = member_key(CALL_LIMITS, &format!("{operation}#{caller}#{start}"));
    retry_on_conflict(|_| {
        let key = &key;
        async move {
            let held = documents.get_document(key, now).await?;
            let count = held.as_ref().and_then(|d| d.body["count"].as_u64()).unwrap_or(0);
            if count >= limit.calls {
                return Err(LimitError::Limited {
                    retry_after_seconds: u64::try_from((ends - now).num_seconds().max(1)).unwrap_or(1),
                });
            }
            let body = json!({"count": count + 1});
            documents
                .put_document(key, &body, Some(ends), held.map(|d| d.version), now)
                .await?;
            Ok(())
        }
    })
    .await
}
