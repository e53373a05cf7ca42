//! Read-modify-write against a versioned store: the one loop every use case uses when its
//! conditional write can lose a race.
//!
//! The store refuses a write made from a stale read ([`StoreError::VersionConflict`]); the
//! writer reads again and re-applies its change to what the other writer stored, so neither
//! loses the other's fields. A bounded number of attempts keeps a hot item from holding a
//! request until its Lambda's deadline.

use std::future::Future;

use super::StoreError;

/// How many times a write that lost a race is re-applied before giving up.
pub const WRITE_ATTEMPTS: u32 = 5;

/// Runs `attempt` (read, decide, conditional write) until it does not answer
/// [`StoreError::VersionConflict`], at most [`WRITE_ATTEMPTS`] times. `attempt` is given its
/// number, starting at 1, for idempotency keys that must differ between attempts. After the
/// last conflict, the conflict is returned: the caller decides whether that is a 409 or a
/// retry by its own caller.
pub async fn retry_on_conflict<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: AsConflict,
{
    let mut number = 1;
    loop {
        match attempt(number).await {
            Err(error) if error.is_conflict() && number < WRITE_ATTEMPTS => {
                tracing::info!(attempt = number, "lost a race with another write; applying again");
                number += 1;
            }
            other => return other,
        }
    }
}

/// Errors that can say "another writer was first": what [`retry_on_conflict`] retries on.
pub trait AsConflict {
    /// Whether this error is a lost race, worth reading again and retrying.
    fn is_conflict(&self) -> bool;
}

impl AsConflict for StoreError {
    fn is_conflict(&self) -> bool {
        matches!(self, StoreError::VersionConflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_conflict_is_retried_until_the_write_lands() {
        // Given a write that loses two races
        let mut calls = 0;
        // When it is retried on conflict
        let result = retry_on_conflict(|attempt| {
            calls += 1;
            async move {
                if attempt < 3 {
                    Err(StoreError::VersionConflict)
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        // Then the third attempt's result is the answer
        assert_eq!(result.unwrap(), 3);
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn a_conflict_on_every_attempt_gives_up_with_the_conflict() {
        let mut calls = 0;
        let result: Result<(), StoreError> = retry_on_conflict(|_| {
            calls += 1;
            async { Err(StoreError::VersionConflict) }
        })
        .await;
        assert!(matches!(result, Err(StoreError::VersionConflict)));
        assert_eq!(calls, WRITE_ATTEMPTS);
    }

    #[tokio::test]
    async fn any_other_error_is_not_retried() {
        let mut calls = 0;
        let result: Result<(), StoreError> = retry_on_conflict(|_| {
            calls += 1;
            async { Err(StoreError::NotFound) }
        })
        .await;
        assert!(matches!(result, Err(StoreError::NotFound)));
        assert_eq!(calls, 1);
    }
}
