//! The invocation's deadline, for the calls made on its behalf.
//!
//! Lambda stops an invocation at its deadline: a client then gets API Gateway's bare 500 and a
//! signup batch fails as a whole, whatever was half done. So the entry points run their work
//! [`within`] the deadline of the invocation (`lambda_runtime::Context::deadline`), and the
//! adapters that retry (Stripe) ask for the time [`remaining`] before each attempt: an attempt
//! that cannot finish in time is not started, and the caller gets "unavailable" (502
//! `upstream_unavailable`) while there is still time to answer and log it. Outside `within`
//! (tests, the local server) there is no deadline and the retry policy alone applies.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Time kept back from the deadline to answer, log and flush after the last upstream call.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// Runs `work` with `deadline` as the deadline of every call it makes (none when `None`).
pub async fn within<F: Future>(deadline: Option<SystemTime>, work: F) -> F::Output {
    match deadline {
        Some(at) => DEADLINE.scope(instant_of(at), work).await,
        None => work.await,
    }
}

/// The time left for upstream calls: until the deadline less [`ANSWER_MARGIN`]; `None` when
/// the work runs without a deadline.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|at| {
            at.saturating_duration_since(Instant::now())
                .saturating_sub(ANSWER_MARGIN)
        })
        .ok()
}

/// The time until the deadline itself, for a last guard around the whole work.
pub fn until_deadline(deadline: SystemTime) -> Duration {
    deadline.duration_since(SystemTime::now()).unwrap_or_default()
}

fn instant_of(at: SystemTime) -> Instant {
    Instant::now() + until_deadline(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_time_remaining_is_the_deadline_less_the_margin_and_none_without_one() {
        assert_eq!(remaining(), None);
        let deadline = SystemTime::now() + Duration::from_secs(3);
        let left = within(Some(deadline), async { remaining() }).await.unwrap();
        assert!(
            left <= Duration::from_millis(2500) && left > Duration::from_millis(2000),
            "{left:?}"
        );
        let past = within(Some(SystemTime::now() - Duration::from_secs(1)), async { remaining() }).await;
        assert_eq!(past, Some(Duration::ZERO));
    }
}
