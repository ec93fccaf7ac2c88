//! Cost per admission: `Admission::try_acquire_local` + drop (process scope), against a bare
//! tokio `Semaphore` `try_acquire` + drop, in the same run; plus the metric handle updates on
//! the invocation path (the concurrency gauge, and the invoker's per-attempt counter and
//! histogram) on their own; and `Admission::try_acquire` + drop with `limits.scope = "cluster"`
//! on the Redis at `IMPULSE_BENCH_REDIS_URL` (default `redis://127.0.0.1:6379`; the bench fails,
//! naming `scripts/services.sh up redis`, when it cannot be reached), driven by a current-thread runtime. That case
//! is a busy function's: after the first admissions it reuses its kept slot and takes cells from
//! blocks, with a Redis round-trip whenever a block runs out or a slot has been reused for 1 s.
//! `cluster_limiter_try_acquire_refused_round_trip` is the other end: every call asks Redis (the
//! one slot of another function is held throughout, so each is refused after one round-trip).
//!
//! Run with `cargo bench -p impulse-broker --bench limiter`. After criterion's report this prints
//! each limiter case as a multiple of the semaphore baseline.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use impulse_config::{Config, FunctionConfig, LimitsScope, QueueBackend, RedisQueueConfig};
use impulse_connectors::contract::Name;
use impulse_connectors::telemetry::{self, ConcurrencyGauge, InvocationMetrics, InvocationOutcome};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use serde_json::json;
use tokio::sync::Semaphore;

// The limiter is `pub(crate)` in a binary crate, so the benchmark compiles its source in. The
// module imports nothing else from the crate for this reason. The benchmark uses only part of it,
// and `cargo clippy --all-targets` also compiles its unit tests here without a test harness, so
// their imports look unused.
#[path = "../src/limiter/mod.rs"]
#[allow(dead_code, unused_imports)]
mod limiter;

use limiter::{Admission, Limiter};

const GROUP: &str = "admission";
const BASELINE: &str = "semaphore_try_acquire_drop";
const LIMITER: &str = "limiter_try_acquire_drop";
const LIMITER_PROMETHEUS: &str = "limiter_try_acquire_drop_prometheus";
const CLUSTER: &str = "cluster_limiter_try_acquire_drop";
const CLUSTER_ROUND_TRIP: &str = "cluster_limiter_try_acquire_refused_round_trip";
const GAUGE: &str = "concurrency_gauge_started_finished_prometheus";
const INVOCATION: &str = "invocation_metrics_completed_prometheus";

/// Histogram samples recorded between two upkeeps (the broker runs one every 5 s): the
/// exporter buffers samples until upkeep folds them into buckets, so a run of millions of
/// iterations without one would grow that buffer without bound.
const UPKEEP_EVERY: u64 = 4096;

/// One function whose limits the benchmark never reaches: 1000 reserved slots (at most one is
/// in use) and a rate of `u32::MAX` per second with an equal burst.
fn ample_admission() -> Admission {
    Limiter::new(&ample_config())
        .admission("bench")
        .expect("the benchmark's function is configured")
}

/// The configuration of [`ample_admission`].
fn ample_config() -> Config {
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
    config
}

/// [`ample_admission`]'s function with cluster scope, on a stream of its own, beside a function
/// `full` of one reserved slot; `None` when Redis cannot be reached.
fn ample_cluster_limiter(runtime: &tokio::runtime::Runtime) -> Limiter {
    let url = std::env::var("IMPULSE_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let mut config = ample_config();
    let full = json!({
        "target": { "type": "http", "endpoint": "http://127.0.0.1:9/" },
        "reserved_concurrency": 1,
    });
    config.functions.insert(
        "full".to_owned(),
        serde_json::from_value(full).expect("the benchmark's function config is valid"),
    );
    config.limits.account_concurrency = 1001;
    config.limits.scope = LimitsScope::Cluster;
    config.queue.backend = QueueBackend::Redis;
    config.queue.redis = Some(RedisQueueConfig {
        url,
        stream: format!("impulse-bench-limiter-{}", std::process::id()),
    });
    runtime
        .block_on(Limiter::connect(&config, "bench"))
        .unwrap_or_else(|e| {
            panic!("{CLUSTER} needs Redis ({e}): start it with `scripts/services.sh up redis`")
        })
}

/// The broker's exporter, with the broker's buckets for the invocation duration histogram.
fn prometheus() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(telemetry::INVOCATION_DURATION_SECONDS.to_owned()),
            telemetry::DURATION_BUCKETS,
        )
        .expect("the duration buckets are not empty")
        .build_recorder()
}

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);

    let semaphore = Arc::new(Semaphore::new(1000));
    group.bench_function(BASELINE, |b| {
        b.iter(|| drop(black_box(semaphore.try_acquire())));
    });

    // No metrics recorder installed: the gauge handle is metrics' no-op handle.
    let admission = ample_admission();
    group.bench_function(LIMITER, |b| {
        b.iter(|| drop(black_box(admission.try_acquire_local())));
    });

    // The broker's exporter: the gauge is real. Handles are bound to the recorder installed when
    // they are registered, so this limiter (and each handle below) is built under it.
    let recorder = prometheus();
    metrics::with_local_recorder(&recorder, || {
        let admission = ample_admission();
        group.bench_function(LIMITER_PROMETHEUS, |b| {
            b.iter(|| drop(black_box(admission.try_acquire_local())));
        });

        // The two gauge updates each admission makes, for the breakdown.
        let gauge = ConcurrencyGauge::new("bench");
        group.bench_function(GAUGE, |b| {
            b.iter(|| {
                black_box(&gauge).started();
                black_box(&gauge).finished();
            });
        });

        // The invoker's metrics layer per attempt: the trigger lookup, one counter increment
        // and one histogram sample. Upkeep runs between timed chunks, as the broker's timer would.
        let metrics = InvocationMetrics::new("bench");
        let trigger = Name::new("orders");
        let handle = recorder.handle();
        group.bench_function(INVOCATION, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let chunk = left.min(UPKEEP_EVERY);
                    let start = Instant::now();
                    for _ in 0..chunk {
                        black_box(&metrics)
                            .trigger(black_box(trigger))
                            .completed(InvocationOutcome::Success, Duration::from_millis(3));
                    }
                    timed += start.elapsed();
                    left -= chunk;
                    handle.run_upkeep();
                }
                timed
            });
        });
    });

    // The runtime outlives the admission: its keeper task sends the releases.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    {
        let limiter = ample_cluster_limiter(&runtime);
        let admission = limiter.admission("bench").expect("configured");
        group.bench_function(CLUSTER, |b| {
            b.iter(|| {
                let permit = runtime.block_on(admission.try_acquire());
                drop(black_box(permit.expect("the ample limits admit")));
            });
        });
        let full = limiter.admission("full").expect("configured");
        let held = runtime
            .block_on(full.try_acquire())
            .expect("the one slot is free");
        group.bench_function(CLUSTER_ROUND_TRIP, |b| {
            b.iter(|| black_box(runtime.block_on(full.try_acquire()).is_err()));
        });
        drop(held);
    }

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
    for name in [
        BASELINE,
        LIMITER,
        LIMITER_PROMETHEUS,
        GAUGE,
        INVOCATION,
        CLUSTER,
        CLUSTER_ROUND_TRIP,
    ] {
        if let Some(time) = estimate_ns(&output, name) {
            println!("  {name:<44} {time:>8.1} ns  {:>5.1}×", time / baseline);
        }
    }
}
