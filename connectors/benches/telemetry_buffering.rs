//! What the telemetry's buffering of per-event metric updates saves: the metric updates of one
//! Kafka event at batch 1 made through the telemetry types against the same handles updated
//! directly, from 2 threads at once (as Impulse's worker threads make them), under the
//! Prometheus recorder with the broker's buckets.
//!
//! Per event, as the Kafka → HTTP path makes them:
//! - `source`: the Kafka source's records counter, batches counter and batch-size histogram
//!   (telemetry: a `KafkaPartitionCounts` per partition, 8 partitions per thread, each flushed
//!   every 190 of its events, about the 100 ms of upkeep at 30k events/s over 16 partitions);
//! - `gauge`: the concurrency gauge up and down (`ConcurrencyGauge`);
//! - `invocation`: one attempt's outcome counter and duration sample
//!   (`TriggerInvocationMetrics::completed`); `invocation_direct_arc` adds the clone and drop of
//!   an `Arc` both threads share, which handles owned per attempt (rather than leaked for the
//!   process) would cost;
//! - `all`: the three together.
//!
//! The gauge and the invocation handles were buffered per thread when this bench measured them
//! (a per-thread log replayed in bulk, and a gauge striped per thread; see BENCHMARKS.md,
//! "Telemetry buffering micro-bench"); they now update their handles directly, so those rows
//! check that the telemetry types cost what raw handles cost. The source's per-partition counts
//! are still buffered.
//!
//! Each thread spins on private work for `IMPULSE_BENCH_SPACING_NS` between events (0 = back to
//! back, the worst case for contention); `none` is that work alone. Cost per event is the
//! threads' CPU time (`CLOCK_THREAD_CPUTIME_ID`) over the events, minus `none`'s. Cases are
//! interleaved in every replica (direct and telemetry swap places on odd replicas), and the
//! saving is taken per replica; the report is the median [min–max] over replicas.
//!
//! Run: `cargo bench -p impulse-connectors --no-default-features --bench telemetry_buffering`
//! (no protocol is needed). Knobs (environment): `IMPULSE_BENCH_EVENTS` (events per thread per
//! case, default 300000), `IMPULSE_BENCH_REPLICAS` (default 7), `IMPULSE_BENCH_THREADS`
//! (default 2), `IMPULSE_BENCH_SPACING_NS` (comma-separated, default `0,2000`),
//! `IMPULSE_BENCH_VERBOSE` (print every run).
#![allow(clippy::disallowed_macros)] // the direct side registers the same series by hand

use std::error::Error;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use impulse_connectors::contract::Name;
use impulse_connectors::telemetry::{
    self, ConcurrencyGauge, InvocationMetrics, InvocationOutcome, KafkaPartitionCounts,
    KafkaSourceMetrics, TriggerInvocationMetrics,
};
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use nix::time::{clock_gettime, ClockId};

type BoxError = Box<dyn Error + Send + Sync>;

/// Partitions each thread serves, as 16 partitions over 2 worker threads.
const PARTITIONS_PER_THREAD: usize = 8;
/// A partition's events between two flushes of its counts.
const FLUSH_EVERY: u64 = 190;
/// The duration every attempt reports.
const ELAPSED: Duration = Duration::from_micros(800);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    None,
    SourceDirect,
    SourceTelemetry,
    GaugeDirect,
    GaugeTelemetry,
    InvocationDirect,
    InvocationDirectArc,
    InvocationTelemetry,
    AllDirect,
    AllTelemetry,
}

/// The components, each as (direct, telemetry).
const PAIRS: [(&str, Case, Case); 4] = [
    ("source", Case::SourceDirect, Case::SourceTelemetry),
    ("gauge", Case::GaugeDirect, Case::GaugeTelemetry),
    (
        "invocation",
        Case::InvocationDirect,
        Case::InvocationTelemetry,
    ),
    ("all", Case::AllDirect, Case::AllTelemetry),
];

/// The same series, as direct handles and as the telemetry's types.
struct Handles {
    received: Counter,
    batches: Counter,
    batch_size: Histogram,
    concurrency: Gauge,
    invocations: Counter,
    duration: Histogram,
    /// Stands for per-attempt ownership of a trigger's handles.
    shared: Arc<(Counter, Histogram)>,
    source: KafkaSourceMetrics,
    gauge: ConcurrencyGauge,
    trigger: &'static TriggerInvocationMetrics,
}

impl Handles {
    fn new() -> Self {
        let invocations = metrics::counter!(
            telemetry::INVOCATIONS_TOTAL,
            "function" => "f",
            "trigger" => "t",
            "outcome" => InvocationOutcome::Success.as_str(),
        );
        let duration =
            metrics::histogram!(telemetry::INVOCATION_DURATION_SECONDS, "function" => "f");
        Self {
            received: metrics::counter!(telemetry::KAFKA_RECORDS_RECEIVED_TOTAL, "trigger" => "t"),
            batches: metrics::counter!(telemetry::KAFKA_BATCHES_TOTAL, "trigger" => "t"),
            batch_size: metrics::histogram!(telemetry::KAFKA_BATCH_SIZE, "trigger" => "t"),
            concurrency: metrics::gauge!(telemetry::CONCURRENT_EXECUTIONS, "function" => "f"),
            shared: Arc::new((invocations.clone(), duration.clone())),
            invocations,
            duration,
            source: KafkaSourceMetrics::new("t"),
            gauge: ConcurrencyGauge::new("f"),
            trigger: InvocationMetrics::new("f").trigger(Name::new("t")),
        }
    }
}

/// One thread's partitions.
struct Partitions {
    counts: Vec<KafkaPartitionCounts>,
    events: Vec<u64>,
}

impl Partitions {
    fn new(handles: &Handles) -> Self {
        Self {
            counts: (0..PARTITIONS_PER_THREAD)
                .map(|_| KafkaPartitionCounts::new(&handles.source))
                .collect(),
            events: vec![0; PARTITIONS_PER_THREAD],
        }
    }

    fn event(&mut self, i: usize) {
        let partition = i % PARTITIONS_PER_THREAD;
        let counts = &mut self.counts[partition];
        counts.records_received(1);
        counts.batch_sent(1);
        self.events[partition] += 1;
        if self.events[partition].is_multiple_of(FLUSH_EVERY) {
            counts.flush();
        }
    }
}

fn source_direct(h: &Handles) {
    h.received.increment(1);
    h.batches.increment(1);
    h.batch_size.record(1.0);
}

fn gauge_direct(h: &Handles) {
    h.concurrency.increment(1.0);
    h.concurrency.decrement(1.0);
}

fn gauge_telemetry(h: &Handles) {
    h.gauge.started();
    h.gauge.finished();
}

fn invocation_direct(h: &Handles) {
    h.invocations.increment(1);
    h.duration.record(black_box(ELAPSED).as_secs_f64());
}

fn invocation_direct_arc(h: &Handles) {
    let owned = Arc::clone(black_box(&h.shared));
    owned.0.increment(1);
    owned.1.record(black_box(ELAPSED).as_secs_f64());
}

fn invocation_telemetry(h: &Handles) {
    h.trigger
        .completed(InvocationOutcome::Success, black_box(ELAPSED));
}

fn event(case: Case, h: &Handles, partitions: &mut Partitions, i: usize) {
    match case {
        Case::None => {}
        Case::SourceDirect => source_direct(h),
        Case::SourceTelemetry => partitions.event(i),
        Case::GaugeDirect => gauge_direct(h),
        Case::GaugeTelemetry => gauge_telemetry(h),
        Case::InvocationDirect => invocation_direct(h),
        Case::InvocationDirectArc => invocation_direct_arc(h),
        Case::InvocationTelemetry => invocation_telemetry(h),
        Case::AllDirect => {
            source_direct(h);
            gauge_direct(h);
            invocation_direct(h);
        }
        Case::AllTelemetry => {
            partitions.event(i);
            gauge_telemetry(h);
            invocation_telemetry(h);
        }
    }
}

/// Private work between events: `rounds` xorshift steps.
fn spin(rounds: u32, state: &mut u64) {
    for _ in 0..rounds {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
    }
    black_box(*state);
}

/// CPU time this thread has run, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`, exact to the
/// call, unlike `/proc`'s figures, which lag by up to a scheduler tick).
fn thread_cpu_ns() -> Result<u64, BoxError> {
    let now = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)?;
    Ok(u64::try_from(now.tv_sec())? * 1_000_000_000 + u64::try_from(now.tv_nsec())?)
}

struct Settings {
    events: usize,
    replicas: usize,
    threads: usize,
}

/// Runs `case` on every thread at once; returns CPU nanoseconds per event.
fn run(
    case: Case,
    handles: &Handles,
    settings: &Settings,
    rounds: u32,
    exporter: &PrometheusHandle,
) -> Result<f64, BoxError> {
    let start = Barrier::new(settings.threads);
    let cpu: Result<Vec<u64>, BoxError> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..settings.threads)
            .map(|seed| {
                let start = &start;
                scope.spawn(move || -> Result<u64, BoxError> {
                    let mut partitions = Partitions::new(handles);
                    let mut state = seed as u64 + 1;
                    start.wait();
                    let before = thread_cpu_ns()?;
                    for i in 0..settings.events {
                        spin(rounds, &mut state);
                        event(case, handles, &mut partitions, i);
                    }
                    Ok(thread_cpu_ns()? - before)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().map_err(|_| "a worker panicked")?)
            .collect()
    });
    // Untimed, as the broker's upkeep is: fold the histogram samples into buckets.
    exporter.run_upkeep();
    let cpu = cpu?;
    let per_event = cpu.iter().sum::<u64>() as f64 / (settings.events * settings.threads) as f64;
    if std::env::var_os("IMPULSE_BENCH_VERBOSE").is_some() {
        println!("    {case:?}: {per_event:.1} ns/event (thread CPU ns {cpu:?})");
    }
    Ok(per_event)
}

/// Xorshift rounds that take about `ns` of this thread's CPU.
fn calibrate(ns: u64) -> Result<u32, BoxError> {
    if ns == 0 {
        return Ok(0);
    }
    // In calls of the size the event loop makes, so that the loop around them is the same.
    let (calls, rounds) = (20_000u32, 1_000u32);
    let mut state = 1;
    let before = thread_cpu_ns()?;
    for _ in 0..calls {
        spin(black_box(rounds), &mut state);
    }
    let per_round = (thread_cpu_ns()? - before) as f64 / f64::from(calls * rounds);
    Ok((ns as f64 / per_round).round() as u32)
}

fn median_min_max(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    (median, values[0], values[values.len() - 1])
}

fn show(values: &mut [f64]) -> String {
    let (median, min, max) = median_min_max(values);
    format!("{median:7.1} [{min:6.1}–{max:6.1}]")
}

fn env_usize(name: &str, default: usize) -> Result<usize, BoxError> {
    match std::env::var(name) {
        Ok(value) => Ok(value.parse()?),
        Err(_) => Ok(default),
    }
}

fn main() -> Result<(), BoxError> {
    let settings = Settings {
        events: env_usize("IMPULSE_BENCH_EVENTS", 300_000)?,
        replicas: env_usize("IMPULSE_BENCH_REPLICAS", 7)?,
        threads: env_usize("IMPULSE_BENCH_THREADS", 2)?,
    };
    let spacings: Vec<u64> = std::env::var("IMPULSE_BENCH_SPACING_NS")
        .unwrap_or_else(|_| "0,2000".to_owned())
        .split(',')
        .map(|ns| ns.trim().parse())
        .collect::<Result<_, _>>()?;
    let exporter = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(telemetry::INVOCATION_DURATION_SECONDS.to_owned()),
            telemetry::DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(telemetry::KAFKA_BATCH_SIZE.to_owned()),
            telemetry::KAFKA_BATCH_SIZE_BUCKETS,
        )?
        .install_recorder()?;
    let handles = Handles::new();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_default();
    println!(
        "telemetry buffering: {} threads, {} events per thread per case, {} replicas; {} vCPU {cpu_model}",
        settings.threads,
        settings.events,
        settings.replicas,
        std::thread::available_parallelism().map_or(0, usize::from),
    );

    for spacing in spacings {
        let rounds = calibrate(spacing)?;
        // Warm-up: every case once, discarded.
        for case in [Case::None, Case::AllDirect, Case::AllTelemetry] {
            run(case, &handles, &settings, rounds, &exporter)?;
        }
        let mut none = Vec::new();
        let mut direct: Vec<Vec<f64>> = vec![Vec::new(); PAIRS.len()];
        let mut telemetry: Vec<Vec<f64>> = vec![Vec::new(); PAIRS.len()];
        let mut saving: Vec<Vec<f64>> = vec![Vec::new(); PAIRS.len()];
        let mut arc = Vec::new();
        for replica in 0..settings.replicas {
            let idle = run(Case::None, &handles, &settings, rounds, &exporter)?;
            none.push(idle);
            for (i, &(_, a, b)) in PAIRS.iter().enumerate() {
                let (a_ns, b_ns) = if replica.is_multiple_of(2) {
                    let a_ns = run(a, &handles, &settings, rounds, &exporter)?;
                    (a_ns, run(b, &handles, &settings, rounds, &exporter)?)
                } else {
                    let b_ns = run(b, &handles, &settings, rounds, &exporter)?;
                    (run(a, &handles, &settings, rounds, &exporter)?, b_ns)
                };
                direct[i].push(a_ns - idle);
                telemetry[i].push(b_ns - idle);
                saving[i].push(a_ns - b_ns);
            }
            let arc_ns = run(
                Case::InvocationDirectArc,
                &handles,
                &settings,
                rounds,
                &exporter,
            )?;
            arc.push(arc_ns - idle);
            println!(
                "  spacing {spacing} ns replica {replica}: none {idle:.1} ns/event · all direct +{:.1} · all telemetry +{:.1}",
                direct[3][replica], telemetry[3][replica]
            );
        }
        println!(
            "spacing {spacing} ns ({rounds} rounds of private work per event; that work alone {} ns of CPU per event)",
            show(&mut none)
        );
        println!(
            "  ns of CPU per event over `none`, median [min–max] of {} replicas",
            settings.replicas
        );
        println!("  component    direct                telemetry             saving (direct − telemetry, per replica)");
        for (i, &(name, _, _)) in PAIRS.iter().enumerate() {
            println!(
                "  {name:<11}  {}  {}  {}",
                show(&mut direct[i]),
                show(&mut telemetry[i]),
                show(&mut saving[i]),
            );
        }
        println!(
            "  invocation with a shared Arc cloned per attempt (direct): {}",
            show(&mut arc)
        );
    }
    Ok(())
}
