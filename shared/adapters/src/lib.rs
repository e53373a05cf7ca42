//! The ports of `billing` on real backends. Each backend is a cargo feature, so a function
//! links only the clients it calls:
//!
//! | feature | adapters |
//! |---|---|
//! | `dynamodb` | [`DynamoStore`] (AWS, and moto in tests), [`aws`] client settings |
//! | `embedded` | [`EmbeddedStore`] (one redb file, or memory) |
//! | `stripe` | [`StripeBilling`] (async-stripe) |
//! | `ses` | [`SesMailer`] (SES v2), [`aws`] client settings |
//! | `metrics` | [`metrics::Metrics`]: the service's counts as CloudWatch Embedded Metric Format |
//! | (always) | [`OutboxMailer`] (a directory of JSON files), [`SystemClock`] |

#![warn(missing_docs)]

#[cfg(any(feature = "dynamodb", feature = "ses", feature = "sqs"))]
pub mod aws;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod iam;
pub mod mail;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod queue;
#[cfg(feature = "secrets")]
pub mod secrets;
#[cfg(feature = "stripe")]
pub mod stripe;

#[cfg(feature = "dynamodb")]
pub use dynamo::{DynamoStore, IndexDefinition, TABLE_DEFINITION, TableDefinition};
#[cfg(feature = "embedded")]
pub use embedded::EmbeddedStore;
pub use mail::OutboxMailer;
#[cfg(feature = "ses")]
pub use mail::SesMailer;
pub use queue::LocalInvoicingQueue;
#[cfg(feature = "sqs")]
pub use queue::SqsInvoicingQueue;
#[cfg(feature = "stripe")]
pub use stripe::{RetryPolicy, StripeBilling};

use billing::clock::Clock;
use chrono::{DateTime, Utc};

/// The system's clock: the one place the service reads the time of day.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
