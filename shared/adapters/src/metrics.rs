//! The recorder of [`billing::metrics`] in a Lambda function: CloudWatch Embedded Metric Format
//! documents on stdout, which CloudWatch Logs turns into metrics without an API call (no
//! latency, no PutMetricData permission, nothing lost to throttling).
//!
//! The counts of an invocation are flushed when it ends, one JSON document per line (per label
//! set), written with one `write_all` so that they never interleave with the log lines of the
//! tracing subscriber. `METRICS_NAMESPACE` names the namespace; without it nothing is installed
//! and nothing is written (the local server, tests), and counting costs an atomic load.

use billing::config::{ConfigError, Environment, optional};
use metrics_cloudwatch_embedded::{Builder, Collector};
use std::io::Write;

/// The variable naming the CloudWatch namespace of the service's metrics.
pub const NAMESPACE_VARIABLE: &str = "METRICS_NAMESPACE";

/// The installed recorder, or nothing when the function keeps no metrics.
#[derive(Clone, Copy, Default)]
pub struct Metrics {
    collector: Option<&'static Collector>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("installed", &self.is_installed())
            .finish()
    }
}

impl Metrics {
    /// Installs the process-wide recorder when `METRICS_NAMESPACE` is set; once per process.
    pub fn install(env: &dyn Environment) -> Result<Self, ConfigError> {
        let Some(namespace) = optional(env, NAMESPACE_VARIABLE) else {
            return Ok(Metrics::default());
        };
        Self::install_in(namespace, None)
    }

    /// [`Metrics::install`] with a fixed timestamp on every document, for comparisons in tests.
    pub fn install_for_tests(namespace: &str, timestamp: u64) -> Result<Self, ConfigError> {
        Self::install_in(namespace.to_owned(), Some(timestamp))
    }

    fn install_in(namespace: String, timestamp: Option<u64>) -> Result<Self, ConfigError> {
        let mut builder = Builder::new().cloudwatch_namespace(namespace);
        if let Some(timestamp) = timestamp {
            builder = builder.with_timestamp(timestamp);
        }
        let collector = builder.init().map_err(|error| ConfigError::Invalid {
            name: NAMESPACE_VARIABLE.into(),
            reason: format!("the metrics recorder could not be installed: {error}"),
        })?;
        Ok(Metrics {
            collector: Some(collector),
        })
    }

    /// Whether a recorder is installed.
    pub fn is_installed(&self) -> bool {
        self.collector.is_some()
    }

    /// Runs one invocation's `work`, then flushes what it counted.
    pub async fn counted<T>(&self, request_id: &str, work: impl Future<Output = T>) -> T {
        let answer = work.await;
        self.flush(request_id);
        answer
    }

    /// Writes what was counted since the last flush to stdout, with the invocation's request id
    /// as a property (searchable in Logs Insights, not a dimension). A failed write is logged,
    /// never the invocation's failure.
    pub fn flush(&self, request_id: &str) {
        let Some(documents) = self.documents(request_id) else {
            return;
        };
        if documents.is_empty() {
            return;
        }
        if let Err(error) = std::io::stdout().lock().write_all(&documents) {
            tracing::warn!(%error, "metrics could not be written");
        }
    }

    /// The documents [`Metrics::flush`] would write (and the counters reset), or `None` when no
    /// recorder is installed.
    pub fn documents(&self, request_id: &str) -> Option<Vec<u8>> {
        let collector = self.collector?;
        let mut documents = Vec::new();
        collector
            .set_property("requestId", request_id.to_owned())
            .flush(&mut documents)
            .expect("writing to memory cannot fail");
        Some(documents)
    }
}
