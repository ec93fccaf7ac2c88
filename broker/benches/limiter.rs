//! Cost per admission: `Limiter::try_acquire` + drop, against a bare tokio `Semaphore`
//! `try_acquire` + drop, in the same run.
//!
//! Run with `cargo bench -p impulse-broker --bench limiter`. After criterion's report this prints
//! each limiter case as a multiple of the semaphore baseline.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::Criterion;
use impulse_config::{Config, FunctionConfig};
use impulse_connectors::telemetry;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;
use tokio::sync::Semaphore;

// The limiter is `pub(crate)` in a binary crate, so the benchmark compiles its source in. The
// module imports nothing else from the crate for this reason. The benchmark uses only part of it,
// and `cargo clippy --all-targets` also compiles its unit tests here without a test harness, so
// their imports look unused.
#[path = "../src/limiter/mod.rs"]
#[allow(dead_code, unused_imports)]
mod limiter;

use limiter::Limiter;

const GROUP: &str = "admission";
const BASELINE: &str = "semaphore_try_acquire_drop";
const LIMITER: &str = "limiter_try_acquire_drop";
const LIMITER_PROMETHEUS: &str = "limiter_try_acquire_drop_prometheus";
const GAUGE: &str = "telemetry_concurrent_executions";

/// One function whose limits the benchmark never reaches: 1000 reserved slots (at most one is
/// in use) and a rate of `u32::MAX` per second with an equal burst.
fn ample_limiter() -> Limiter {
    // JSON, so that the other fields keep their serde defaults.
    let function = json!({
        "target": { "type": "http", "endpoint": "http://127.0.0.1:9/" },
        "reserved_concurrency": 1000,
        "rate": { "per_second": u32::MAX, "burst": u32::MAX },
    });
    let function: FunctionConfig =
        serde_json::from_value(function).expect("the benchmark's function config is valid");
    let mut config = Config::default();
    config.functions.insert("bench".to_owned(), function);
    Limiter::new(&config)
}

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);

    let semaphore = Arc::new(Semaphore::new(1000));
    group.bench_function(BASELINE, |b| {
        b.iter(|| drop(black_box(semaphore.try_acquire())));
    });

    // No metrics recorder installed: the telemetry calls reach metrics' no-op recorder.
    let limiter = ample_limiter();
    group.bench_function(LIMITER, |b| {
        b.iter(|| drop(black_box(limiter.try_acquire(black_box("bench")))));
    });

    // The broker's exporter: the gauge and counters are real.
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        group.bench_function(LIMITER_PROMETHEUS, |b| {
            b.iter(|| drop(black_box(limiter.try_acquire(black_box("bench")))));
        });
    });

    // One of the two gauge updates each admission makes (no recorder), for the breakdown.
    group.bench_function(GAUGE, |b| {
        b.iter(|| telemetry::concurrent_executions(black_box("bench"), black_box(1)));
    });

    group.finish();
}

/// Criterion's estimate of the time per iteration of `GROUP/name`, in nanoseconds, read from its
/// output: the slope (the middle `time:` figure criterion prints), or the mean without one.
fn estimate_ns(output: &Path, name: &str) -> Option<f64> {
    let path = output.join(GROUP).join(name).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let estimates: serde_json::Value = serde_json::from_str(&text).ok()?;
    estimates["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| estimates["mean"]["point_estimate"].as_f64())
}

fn main() {
    // Criterion's default output directory, named explicitly so that the ratios can be read back.
    let output: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("criterion");
    let mut criterion = Criterion::default()
        .output_directory(&output)
        .configure_from_args();
    admission(&mut criterion);
    criterion.final_summary();

    let Some(baseline) = estimate_ns(&output, BASELINE) else {
        return; // `--test` or a filter: nothing measured.
    };
    println!("\ncost per admission, relative to a bare semaphore try_acquire + drop:");
    for name in [BASELINE, LIMITER, LIMITER_PROMETHEUS, GAUGE] {
        if let Some(time) = estimate_ns(&output, name) {
            println!("  {name:<38} {time:>8.1} ns  {:>5.1}×", time / baseline);
        }
    }
}
