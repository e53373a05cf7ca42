//! A recorder of `billing::metrics` for tests: counts in memory, installed for the current
//! thread only, so tests running side by side never see each other's counts. Tests run on
//! tokio's current-thread runtime (`#[tokio::test]`'s default), so everything the test awaits
//! counts here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, LocalRecorderGuard, Metadata, Recorder, SharedString, Unit};

/// A counter's name and its labels, sorted.
type CounterKey = (String, Vec<(String, String)>);

/// The counters recorded while installed.
#[derive(Debug, Default)]
pub struct Counts {
    counters: Mutex<BTreeMap<CounterKey, Arc<AtomicU64>>>,
}

impl Counts {
    /// Counts what this thread records until the guard is dropped.
    pub fn count_here(&self) -> LocalRecorderGuard<'_> {
        metrics::set_default_local_recorder(self)
    }

    /// The count of `name` with exactly these labels (0 when never recorded).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        labels.sort();
        self.counters
            .lock()
            .unwrap()
            .get(&(name.to_owned(), labels))
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// Every non-zero count as `name{label=value,...} = n`, for assertion messages.
    pub fn summary(&self) -> Vec<String> {
        self.counters
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, count)| count.load(Ordering::Relaxed) > 0)
            .map(|((name, labels), count)| {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{name}{{{}}} = {}", labels.join(","), count.load(Ordering::Relaxed))
            })
            .collect()
    }
}

impl Recorder for Counts {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|label| (label.key().to_owned(), label.value().to_owned()))
            .collect();
        labels.sort();
        let count = self
            .counters
            .lock()
            .unwrap()
            .entry((key.name().to_owned(), labels))
            .or_default()
            .clone();
        Counter::from_arc(count)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
