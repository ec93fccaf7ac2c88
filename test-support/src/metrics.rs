//! The metrics a test recorded, read through `metrics-util`'s [`DebuggingRecorder`].
//!
//! Install a [`RecordedMetrics`] as the local recorder of the code under test
//! (`metrics::set_default_local_recorder` or, on threads of its own, `metrics::with_local_recorder`)
//! and read each series by its text form `name{label=value,…}`, labels in registration order.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A [`DebuggingRecorder`] whose readings add up, and which counts how often each series was
/// registered.
///
/// A debugging snapshot *takes* what was recorded since the last one (counters and gauges go back
/// to 0, histograms are emptied). Each reading here folds the new snapshot into running totals, so
/// that a test can read a series as often as it likes and see its value since the start: counters
/// and gauges are the sum of their moves, histograms every sample in order. A gauge moved with
/// `set` reads right only once after each `set`; every gauge these tests read moves by
/// `increment`/`decrement`.
#[derive(Debug)]
pub struct RecordedMetrics {
    recorder: DebuggingRecorder,
    snapshotter: Snapshotter,
    totals: Mutex<Totals>,
    /// The debugging recorder hands out one handle per series however often it is registered, so
    /// "registered once" is only visible here.
    registrations: Mutex<HashMap<String, usize>>,
}

#[derive(Debug, Default)]
struct Totals {
    values: HashMap<String, f64>,
    samples: HashMap<String, Vec<f64>>,
}

impl Default for RecordedMetrics {
    fn default() -> Self {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        Self {
            recorder,
            snapshotter,
            totals: Mutex::default(),
            registrations: Mutex::default(),
        }
    }
}

impl RecordedMetrics {
    /// The counter's or gauge's value, or `None` before it was registered.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.fold().values.get(series).copied()
    }

    /// Every sample the histogram recorded, in order (empty before it was registered).
    pub fn samples(&self, series: &str) -> Vec<f64> {
        self.fold().samples.get(series).cloned().unwrap_or_default()
    }

    /// Every series registered so far, sorted.
    pub fn series(&self) -> Vec<String> {
        let totals = self.fold();
        let mut series: Vec<String> = totals
            .values
            .keys()
            .chain(totals.samples.keys())
            .cloned()
            .collect();
        series.sort();
        series
    }

    /// Every series registered so far and how often it was registered, sorted.
    pub fn registrations(&self) -> Vec<(String, usize)> {
        let registrations = self.registrations.lock().expect("not poisoned");
        let mut registrations: Vec<_> = registrations
            .iter()
            .map(|(series, count)| (series.clone(), *count))
            .collect();
        registrations.sort();
        registrations
    }

    /// Adds what was recorded since the last snapshot to the totals.
    fn fold(&self) -> std::sync::MutexGuard<'_, Totals> {
        let mut totals = self.totals.lock().expect("not poisoned");
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let series = key_name(key.key());
            match value {
                DebugValue::Counter(n) => *totals.values.entry(series).or_default() += n as f64,
                DebugValue::Gauge(v) => *totals.values.entry(series).or_default() += v.0,
                DebugValue::Histogram(samples) => totals
                    .samples
                    .entry(series)
                    .or_default()
                    .extend(samples.into_iter().map(|v| v.0)),
            }
        }
        totals
    }

    fn registered(&self, key: &Key) {
        let mut registrations = self.registrations.lock().expect("not poisoned");
        *registrations.entry(key_name(key)).or_default() += 1;
    }
}

impl Recorder for RecordedMetrics {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.recorder.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.recorder.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.recorder.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.registered(key);
        self.recorder.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.registered(key);
        self.recorder.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.registered(key);
        self.recorder.register_histogram(key, metadata)
    }
}

/// `name{label=value,…}`, labels in registration order.
fn key_name(key: &Key) -> String {
    let mut name = format!("{}{{", key.name());
    for (i, label) in key.labels().enumerate() {
        let separator = if i == 0 { "" } else { "," };
        // Writing to a String cannot fail.
        let _infallible = write!(name, "{separator}{}={}", label.key(), label.value());
    }
    name.push('}');
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_macros)] // this test records raw series to read them back
    fn readings_add_up_across_snapshots() {
        let recorded = RecordedMetrics::default();
        metrics::with_local_recorder(&recorded, || {
            let counter = metrics::counter!("c_total", "a" => "1", "b" => "2");
            let gauge = metrics::gauge!("g");
            let histogram = metrics::histogram!("h");
            counter.increment(2);
            gauge.increment(3.0);
            histogram.record(0.5);
            assert_eq!(recorded.value("c_total{a=1,b=2}"), Some(2.0));
            assert_eq!(recorded.value("g{}"), Some(3.0));
            counter.increment(1);
            gauge.decrement(1.0);
            histogram.record(1.5);
            drop(metrics::counter!("c_total", "a" => "1", "b" => "2"));
        });
        assert_eq!(recorded.value("c_total{a=1,b=2}"), Some(3.0));
        assert_eq!(recorded.value("g{}"), Some(2.0));
        assert_eq!(recorded.samples("h{}"), [0.5, 1.5]);
        assert_eq!(recorded.value("missing{}"), None);
        assert_eq!(recorded.series(), ["c_total{a=1,b=2}", "g{}", "h{}"]);
        assert_eq!(
            recorded.registrations(),
            [
                ("c_total{a=1,b=2}".to_owned(), 2),
                ("g{}".to_owned(), 1),
                ("h{}".to_owned(), 1)
            ]
        );
    }
}
