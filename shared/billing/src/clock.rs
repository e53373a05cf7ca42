//! The `Clock` port: what time it is. Every rule that depends on time takes it from a
//! [`Clock`] (or as an argument), never from the system directly, so tests can fix or move
//! time and the rules stay pure. The system clock is an adapter (`billing_adapters::SystemClock`);
//! tests use the fixed and stepping clocks of `billing-testing`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// A clock shared by the parts of one function.
pub type SharedClock = Arc<dyn Clock>;

impl<F> Clock for F
where
    F: Fn() -> DateTime<Utc> + Send + Sync,
{
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}

/// A clock that always answers the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}
