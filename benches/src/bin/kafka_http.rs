//! S1, Kafka → HTTP function throughput (BENCHMARKING.md §2), against R1 in the same run.
//!
//! ```text
//! scripts/services.sh up kafka
//! cargo run --release -p impulse-benches --bin kafka_http [-- --help]
//! ```
//!
//! - **Target**: [`impulse_benches::target`], one worker thread, `200 {}`; it counts distinct
//!   `(partition, offset)` pairs of the events it receives, and duplicates.
//! - **Topics**: one fresh 16-partition topic per batch size, pre-filled once with N records
//!   (1 KB JSON values, fixed seed, round-robin over partitions). Every replica reads it from the
//!   start with a **fresh consumer group**.
//! - **A = R1**, in a process of its own (this binary, started with `--r1-child`), as Impulse
//!   runs in its own: neither side shares an address space with the target (`--r1 in-bench`
//!   runs it in the bench process instead, beside the target's thread). An rdkafka
//!   `StreamConsumer` (same librdkafka settings as Impulse's, a fresh group id, every partition
//!   assigned from the beginning, no offset store or commit) with one queue and one task per
//!   partition, as Impulse's source; each task takes what is already fetched up to the batch
//!   size, reads each record's key, value and headers (as any correct consumer must, even though
//!   the bench's records carry none), writes Lambda's Kafka event with plain byte writes (the
//!   same bytes as Impulse's `encode_event`), and POSTs it through Impulse's own `http`
//!   target ([`impulse_benches::Poster`]: the same client, connections and headers): one
//!   request in flight per partition, no limiter, no acks, no retries.
//! - **B = Impulse**: `target/release/impulse run` (built first; `IMPULSE_BIN` overrides) with one
//!   `http` function and one Kafka trigger on the same topic: fresh `group_id`,
//!   `starting_position = "earliest"`, the batch size, `batch_window = "0s"`, the limiter on but
//!   not binding (`rate.per_second = 1000000`, account concurrency 1000 > 16 partitions),
//!   `max_retry_attempts = 2` and an `on_failure` Kafka topic (configured, unused). Stopped with
//!   SIGTERM once the target has every record; its committed offsets are then checked.
//! - **Replicas**: per batch size, one discarded Impulse replica (`--warmup-replicas`), then
//!   ABAB… (`--replicas` pairs), so that every measured replica starts right after one of the
//!   other side. The rate of a replica is taken
//!   between the instants the target's distinct count reaches `warmup × N` and N: group join,
//!   connection set-up and the first records are discarded. CPU per event over the same window:
//!   B's whole `impulse` process; A's whole R1 process (in-bench: the bench process minus the
//!   target's thread); the target's thread; the Kafka broker (from the services script's pid
//!   file).
//! - **Gate**: the median of the B/A ratios ≥ 0.90 at every batch size; ≥ 0.80 with
//!   `--limits-scope cluster` (admission on Redis: the queue is the Redis one, `limits.scope =
//!   "cluster"`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use clap::Parser;
use futures::{FutureExt as _, StreamExt as _};
use impulse_benches::kafka;
use impulse_benches::proc::{
    busy_fraction, cpu_time, loadavg, machine_ticks, optional_cpu_time, peak_rss_kib, process_stat,
    rss_kib,
};
use impulse_benches::side::{work_dir, SideProcess};
use impulse_benches::stats::Summary;
use impulse_benches::target::{Tally, Target};
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{Consumer, DefaultConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::{ClientConfig, Offset, Timestamp, TopicPartitionList};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// The allocator `impulse` uses, so that R1 (this binary) is not slowed down by a worse one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Appends a formatted line to a `String`.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// Appends formatted text to a `String`.
macro_rules! put_inline {
    ($out:expr, $($arg:tt)*) => {
        $out.push_str(&format!($($arg)*))
    };
}

/// The gate: median B/A at every batch size.
const TARGET_RATIO: f64 = 0.90;
/// The gate with `--limits-scope cluster` (issue 17): admission on Redis may cost up to a fifth.
const CLUSTER_TARGET_RATIO: f64 = 0.80;
/// BENCHMARKING.md: flag broker CPU per event above 1.25 × the raw loop's.
const CPU_FLAG: f64 = 1.25;
/// The function timeout in Impulse, also announced by the baseline's deadline header.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Limiter cost per admission, in µs, without a metrics recorder and with the Prometheus
/// recorder that `impulse run` installs: the costs before per-function metric handles, above
/// today's (BENCHMARKS.md, S3 Limiter cost), so the limiter share printed is an upper bound.
const LIMITER_US: (f64, f64) = (0.31, 0.72);

#[derive(Debug, Parser)]
#[command(about = "S1: Kafka → HTTP function throughput, Impulse (B) against R1 (A), ABAB")]
struct Args {
    /// A/B pairs per batch size.
    #[arg(long, default_value_t = 5)]
    replicas: usize,
    /// Batch sizes, in order.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 100])]
    batch_sizes: Vec<u32>,
    /// Records per replica at batch size 1: at 40–50k events/s, the ≥ 20 s measured after
    /// warm-up that BENCHMARKING.md asks for (shorter replicas let a slow stretch of the VM
    /// decide a pair).
    #[arg(long, default_value_t = 1_200_000)]
    records_batch1: u64,
    /// Records per replica at larger batch sizes: at 350–450k events/s, the ≥ 20 s measured
    /// after warm-up that BENCHMARKING.md asks for. The topic takes ~1.1 KB per record on disk
    /// (~13 GB; it is deleted at the end unless `--keep-topics`).
    #[arg(long, default_value_t = 12_000_000)]
    records_batched: u64,
    /// Partitions of each topic (one request in flight per partition).
    #[arg(long, default_value_t = 16)]
    partitions: i32,
    /// Impulse replicas run, and discarded, before each batch size's ABAB pairs. Without one,
    /// the first replica (always R1's) starts on a machine that sat nearly idle while the topic
    /// was filled, unlike every later replica, which starts right after the other side's.
    #[arg(long, default_value_t = 1)]
    warmup_replicas: usize,
    /// Fraction of each replica's records discarded as warm-up.
    #[arg(long, default_value_t = 0.2)]
    warmup: f64,
    /// Seed of the record values.
    #[arg(long, default_value_t = 20_261_127)]
    seed: u64,
    /// Keep the topics at the end (deleted by default).
    #[arg(long)]
    keep_topics: bool,
    /// Where R1 runs: in a process of its own, as Impulse does, or in the bench process beside
    /// the target's thread (where a switch between R1 and the target stays within one address
    /// space, which Impulse never gets).
    #[arg(long, value_enum, default_value_t = R1Placement::Process)]
    r1: R1Placement,
    /// Impulse's `limits.scope`: `cluster` admits every attempt on Redis (the queue then is the
    /// Redis one at `--redis-url`, as cluster scope requires), with the gate at 0.80.
    #[arg(long, value_enum, default_value_t = LimitsScope::Process)]
    limits_scope: LimitsScope,
    /// Redis for `--limits-scope cluster`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Internal: run R1 alone with this configuration (JSON) until SIGTERM.
    #[arg(long, hide = true)]
    r1_child: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LimitsScope {
    Process,
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum R1Placement {
    Process,
    InBench,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// R1, the raw loop.
    A,
    /// Impulse.
    B,
}

/// CPU readings at one instant.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    /// The side's own process: impulse, or R1 in its own (in-bench R1: unused, see `bench`).
    process: Duration,
    /// The bench process (target thread and, in A, the raw loop).
    bench: Duration,
    target: Duration,
    kafka: Option<Duration>,
    machine: Option<(u64, u64, u64)>,
    /// RSS in KiB of the side's process (in-bench R1: the bench process, target included).
    rss_kib: Option<u64>,
}

/// One replica's measurements.
#[derive(Debug, Clone)]
struct Replica {
    side: Side,
    load: f64,
    /// Events per second over the measured window.
    rate: f64,
    /// CPU µs per event of the side under test (impulse, or R1 without the target).
    cpu_us: f64,
    target_us: f64,
    kafka_us: Option<f64>,
    /// Fractions of the machine's CPU busy (everything, neighbours included) and in iowait
    /// while measuring.
    busy: Option<(f64, f64)>,
    tally: Tally,
    /// B: committed offsets after exit; DLQ records; exit status; peak RSS in MiB.
    committed: Option<i64>,
    dlq: Option<i64>,
    exit: Option<String>,
    rss_mib: Option<f64>,
    /// RSS at the end of the measured window, MiB (in-bench R1: the whole bench process).
    rss_end_mib: Option<f64>,
}

#[derive(Debug)]
struct Setup {
    bootstrap: String,
    impulse_bin: PathBuf,
    endpoint: String,
    partitions: i32,
    warmup: f64,
    run_id: String,
    dlq: String,
    kafka_stat: Option<PathBuf>,
    bench_stat: PathBuf,
    r1: R1Placement,
    /// The Redis Impulse admits on, with `--limits-scope cluster`.
    cluster_redis: Option<String>,
}

impl Setup {
    fn target_ratio(&self) -> f64 {
        if self.cluster_redis.is_some() {
            CLUSTER_TARGET_RATIO
        } else {
            TARGET_RATIO
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(config) = &args.r1_child {
        let config: BaselineConfig =
            serde_json::from_str(config).context("--r1-child takes R1's configuration as JSON")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(r1_child(config));
    }
    anyhow::ensure!(args.replicas > 0, "--replicas must be at least 1");
    anyhow::ensure!(
        (0.0..1.0).contains(&args.warmup),
        "--warmup must be in [0, 1)"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bootstrap = kafka::bootstrap();
    kafka::require(&bootstrap).await?;
    let impulse_bin = tokio::task::spawn_blocking(impulse_benches::build_impulse).await??;
    anyhow::ensure!(
        impulse_bin.exists(),
        "{} does not exist",
        impulse_bin.display()
    );
    let target = Target::start()?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let setup = Setup {
        dlq: format!("bench-s1-{run_id}-dlq"),
        bootstrap,
        impulse_bin,
        endpoint: target.endpoint(),
        partitions: args.partitions,
        warmup: args.warmup,
        run_id,
        kafka_stat: kafka::broker_stat(),
        bench_stat: process_stat(std::process::id()),
        r1: args.r1,
        cluster_redis: (args.limits_scope == LimitsScope::Cluster).then(|| args.redis_url.clone()),
    };
    kafka::create_topic(&setup.bootstrap, &setup.dlq, 1).await?;
    let mut topics = vec![setup.dlq.clone()];

    let mut report = String::new();
    let started = Instant::now();
    let result = async {
        for &batch_size in &args.batch_sizes {
            let records = if batch_size == 1 {
                args.records_batch1
            } else {
                args.records_batched
            };
            let topic = format!("bench-s1-{}-b{batch_size}", setup.run_id);
            kafka::create_topic(&setup.bootstrap, &topic, setup.partitions).await?;
            topics.push(topic.clone());
            let filling = Instant::now();
            kafka::fill(
                &setup.bootstrap,
                &topic,
                setup.partitions,
                records,
                args.seed,
            )
            .await?;
            eprintln!(
                "batch {batch_size}: produced {records} records to {topic} in {:.1?}",
                filling.elapsed()
            );
            for w in 0..args.warmup_replicas {
                // Indexes after the pairs' own: a consumer group of its own.
                let index = args.replicas + w;
                let b =
                    replica(&setup, &target, Side::B, &topic, batch_size, records, index).await?;
                print_replica(batch_size, "B0 (warm-up, discarded)", &b, records);
            }
            let mut pairs = Vec::new();
            for i in 0..args.replicas {
                let a = replica(&setup, &target, Side::A, &topic, batch_size, records, i).await?;
                print_replica(batch_size, &format!("A{}", i + 1), &a, records);
                let b = replica(&setup, &target, Side::B, &topic, batch_size, records, i).await?;
                print_replica(batch_size, &format!("B{}", i + 1), &b, records);
                pairs.push((a, b));
            }
            let summary = summarize(batch_size, records, &setup, &pairs);
            eprintln!("{summary}");
            report.push_str(&summary);
        }
        anyhow::Ok(())
    }
    .await;
    if !args.keep_topics {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        if let Err(e) = kafka::delete_topics(&setup.bootstrap, &names).await {
            eprintln!("warning: deleting the bench topics: {e:#}");
        }
    }
    result?;
    println!(
        "S1 Kafka → HTTP · {} vCPU {} · run {} · {:.0?} in all\n{report}",
        std::thread::available_parallelism().map_or(0, usize::from),
        impulse_benches::proc::cpu_model(),
        setup.run_id,
        started.elapsed(),
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn replica(
    setup: &Setup,
    target: &Target,
    side: Side,
    topic: &str,
    batch_size: u32,
    records: u64,
    index: usize,
) -> anyhow::Result<Replica> {
    // Rounding keeps the warm-up mark at 1 or more: the first record starts nothing.
    let warm = ((records as f64 * setup.warmup).round() as u64).clamp(1, records);
    let mut marks = target.reset(&[warm, records]).into_iter();
    let (Some(warm_rx), Some(done_rx)) = (marks.next(), marks.next()) else {
        anyhow::bail!("the target armed no marks");
    };
    let group = format!(
        "bench-s1-{}-b{batch_size}-{}{index}",
        setup.run_id,
        if side == Side::A { "a" } else { "b" }
    );
    let load = loadavg();
    // Generous: 60 s plus 2 ms per record (500 events/s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60 + records / 500);

    let r1_config = BaselineConfig {
        bootstrap: setup.bootstrap.clone(),
        topic: topic.to_owned(),
        group: group.clone(),
        partitions: setup.partitions,
        batch_size: batch_size as usize,
        endpoint: setup.endpoint.clone(),
    };
    // `process`: the side's own process (impulse, or R1 in its own); `baseline`: R1 in-bench.
    let (process, baseline) = match (side, setup.r1) {
        (Side::A, R1Placement::InBench) => {
            let (stop_tx, stop_rx) = oneshot::channel();
            let task = tokio::spawn(baseline(
                r1_config,
                // A fresh pool per replica: its connections close with it, so the target's
                // connection count belongs to one side.
                impulse_benches::Poster::new(&setup.endpoint)?,
                stop_rx,
            ));
            (None, Some((stop_tx, task)))
        }
        (Side::A, R1Placement::Process) => (Some(spawn_r1(&r1_config)?), None),
        (Side::B, _) => {
            let mut config = impulse_config(setup, topic, &group, batch_size);
            let queue = match &setup.cluster_redis {
                Some(url) => {
                    config.push_str("\n[limits]\nscope = \"cluster\"\n");
                    format!("backend = \"redis\"\n\n[queue.redis]\nurl = \"{url}\"\nstream = \"{group}\"\n")
                }
                None => String::new(),
            };
            let process =
                SideProcess::impulse_with_queue(&setup.impulse_bin, &queue, &config).await?;
            (Some(process), None)
        }
    };
    let side_pid = process.as_ref().map(SideProcess::pid);
    let side_stat = side_pid.map(process_stat);
    let snapshot = |at: Instant| Snapshot {
        at,
        process: optional_cpu_time(side_stat.as_deref()).unwrap_or_default(),
        bench: cpu_time(&setup.bench_stat).unwrap_or_default(),
        target: cpu_time(target.thread_stat()).unwrap_or_default(),
        kafka: optional_cpu_time(setup.kafka_stat.as_deref()),
        machine: machine_ticks(),
        rss_kib: rss_kib(side_pid.unwrap_or_else(std::process::id)),
    };

    let waited = async {
        let at = warm_rx.await.context("the target dropped a mark")?;
        let first = snapshot(at);
        let at = done_rx.await.context("the target dropped a mark")?;
        let last = snapshot(at);
        anyhow::Ok((first, last))
    };
    let outcome = tokio::time::timeout_at(deadline, waited).await;
    let rss_mib = process
        .as_ref()
        .and_then(|p| peak_rss_kib(p.pid()))
        .map(|kib| kib as f64 / 1024.0);

    // Stop the side, whatever happened.
    let mut exit = None;
    if let Some((stop, task)) = baseline {
        stop.send(()).ok();
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => anyhow::bail!("R1 failed: {e:#}"),
            Ok(Err(e)) => anyhow::bail!("R1 panicked: {e}"),
            Err(_) => anyhow::bail!("R1 did not stop within 60 s"),
        }
    }
    if let Some(mut process) = process {
        let status = process.terminate(Duration::from_secs(60)).await;
        let failed = status.as_ref().map_or(true, |s| !s.success());
        if failed {
            eprintln!("{side:?} log tail:\n{}", process.log_tail(40));
        }
        match side {
            Side::B => {
                exit = Some(match &status {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("{e:#}"),
                });
            }
            Side::A if failed => anyhow::bail!("R1 failed: {status:?}"),
            Side::A => {}
        }
    }
    let (first, last) = match outcome {
        Ok(result) => result?,
        Err(_) => anyhow::bail!(
            "{side:?} replica {index} at batch {batch_size} timed out: the target has {:?} of {records}",
            target.tally()
        ),
    };

    let (committed, dlq) = if side == Side::B {
        (
            Some(kafka::committed_total(&setup.bootstrap, &group, topic, setup.partitions).await?),
            Some(kafka::high_watermarks_total(&setup.bootstrap, &setup.dlq, 1).await?),
        )
    } else {
        (None, None)
    };
    let events = (records - warm) as f64;
    let seconds = (last.at - first.at).as_secs_f64();
    let per_event = |from: Duration, to: Duration| {
        to.saturating_sub(from).as_secs_f64() * 1e6 / events.max(1.0)
    };
    let target_us = per_event(first.target, last.target);
    let cpu_us = match (side, setup.r1) {
        (Side::A, R1Placement::InBench) => {
            (per_event(first.bench, last.bench) - target_us).max(0.0)
        }
        _ => per_event(first.process, last.process),
    };
    let kafka_us = first
        .kafka
        .zip(last.kafka)
        .map(|(from, to)| per_event(from, to));
    Ok(Replica {
        side,
        load,
        rate: events / seconds.max(1e-9),
        cpu_us,
        target_us,
        kafka_us,
        busy: busy_fraction(first.machine, last.machine),
        tally: target.tally(),
        committed,
        dlq,
        exit,
        rss_mib,
        rss_end_mib: last.rss_kib.map(|kib| kib as f64 / 1024.0),
    })
}

fn print_replica(batch_size: u32, label: &str, r: &Replica, records: u64) {
    let mut line = format!(
        "batch {batch_size:>3} {label} load {:.2} busy {:.0}% iowait {:.0}% · {:>8.0} ev/s · cpu {:6.1} µs/ev · target {:5.1} µs/ev · kafka {} µs/ev · distinct {}/{records} dups {} bad {} · {:.1} records/request · max connections {} · RSS at end {:.0} MiB",
        r.load,
        100.0 * r.busy.map_or(f64::NAN, |b| b.0),
        100.0 * r.busy.map_or(f64::NAN, |b| b.1),
        r.rate,
        r.cpu_us,
        r.target_us,
        r.kafka_us.map_or("-".to_owned(), |k| format!("{k:.1}")),
        r.tally.distinct,
        r.tally.duplicates,
        r.tally.bad_requests,
        r.tally.records as f64 / r.tally.requests.max(1) as f64,
        r.tally.max_connections,
        r.rss_end_mib.unwrap_or(f64::NAN),
    );
    if r.side == Side::B {
        put_inline!(
            line,
            " · committed {} dlq {} exit {} peak RSS {:.0} MiB",
            r.committed.unwrap_or(-1),
            r.dlq.unwrap_or(-1),
            r.exit.as_deref().unwrap_or("?"),
            r.rss_mib.unwrap_or(f64::NAN),
        );
    }
    eprintln!("{line}");
}

fn summarize(batch_size: u32, records: u64, setup: &Setup, pairs: &[(Replica, Replica)]) -> String {
    let cap = setup.partitions;
    let target = setup.target_ratio();
    let col = |f: &dyn Fn(&Replica) -> f64, side: Side| -> Option<Summary> {
        let values: Vec<f64> = pairs
            .iter()
            .map(|(a, b)| if side == Side::A { f(a) } else { f(b) })
            .collect();
        Summary::of(&values)
    };
    let show = |s: Option<Summary>, d: usize| s.map_or("n/a".to_owned(), |s| s.display(d));
    let ratios: Vec<f64> = pairs.iter().map(|(a, b)| b.rate / a.rate).collect();
    let ratio = Summary::of(&ratios);
    let cpu_ratios: Vec<f64> = pairs.iter().map(|(a, b)| b.cpu_us / a.cpu_us).collect();
    let cpu_ratio = Summary::of(&cpu_ratios);
    let loads: Vec<f64> = pairs.iter().flat_map(|(a, b)| [a.load, b.load]).collect();
    let load = Summary::of(&loads);
    let pass = ratio.is_some_and(|r| r.median >= target);
    let spread_ok = ratio.is_some_and(|r| r.within(0.10));
    let cpu_flag = cpu_ratio.is_some_and(|r| r.median > CPU_FLAG);

    let mut out = String::new();
    put!(
        out,
        "\n== batch {batch_size}: {records} records/replica, {} ABAB pairs ==",
        pairs.len()
    );
    put!(
        out,
        "| pair | load A/B | machine busy A/B | R1 ev/s | Impulse ev/s | B/A | CPU µs/ev R1 | CPU µs/ev Impulse | target µs/ev A/B | Kafka µs/ev A/B | delivered A/B (dups) | committed B | DLQ | RSS MiB at end A/B (peak B) |"
    );
    put!(
        out,
        "|---:|---|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|"
    );
    for (i, (a, b)) in pairs.iter().enumerate() {
        let kafka = |r: &Replica| r.kafka_us.map_or("-".to_owned(), |k| format!("{k:.1}"));
        put!(
            out,
            "| {} | {:.2}/{:.2} | {:.0}%/{:.0}% | {:.0} | {:.0} | {:.3} | {:.1} | {:.1} | {:.1}/{:.1} | {}/{} | {}/{} ({}/{}) | {} | {} | {:.0}/{:.0} ({:.0}) |",
            i + 1,
            a.load,
            b.load,
            100.0 * a.busy.map_or(f64::NAN, |b| b.0),
            100.0 * b.busy.map_or(f64::NAN, |b| b.0),
            a.rate,
            b.rate,
            b.rate / a.rate,
            a.cpu_us,
            b.cpu_us,
            a.target_us,
            b.target_us,
            kafka(a),
            kafka(b),
            a.tally.distinct,
            b.tally.distinct,
            a.tally.duplicates,
            b.tally.duplicates,
            b.committed.unwrap_or(-1),
            b.dlq.unwrap_or(-1),
            a.rss_end_mib.unwrap_or(f64::NAN),
            b.rss_end_mib.unwrap_or(f64::NAN),
            b.rss_mib.unwrap_or(f64::NAN),
        );
    }
    put!(
        out,
        "rate:       R1 {} ev/s · Impulse {} ev/s",
        show(col(&|r| r.rate, Side::A), 0),
        show(col(&|r| r.rate, Side::B), 0)
    );
    put!(
        out,
        "ratio:      {} of {} ABAB pairs · target ≥ {target:.2} · {}{}",
        show(ratio, 3),
        pairs.len(),
        if pass { "PASS" } else { "FAIL" },
        if spread_ok {
            ""
        } else {
            " · spread beyond ±10% of the median: machine busy, rerun"
        }
    );
    put!(
        out,
        "CPU/event:  Impulse {} µs (R1 {} µs; Impulse/R1 {}{}) · target {} µs (A) / {} µs (B) · Kafka broker {} µs (A) / {} µs (B)",
        show(col(&|r| r.cpu_us, Side::B), 1),
        show(col(&|r| r.cpu_us, Side::A), 1),
        show(cpu_ratio, 2),
        if cpu_flag { " FLAG > 1.25" } else { "" },
        show(col(&|r| r.target_us, Side::A), 1),
        show(col(&|r| r.target_us, Side::B), 1),
        show(col(&|r| r.kafka_us.unwrap_or(f64::NAN), Side::A), 1),
        show(col(&|r| r.kafka_us.unwrap_or(f64::NAN), Side::B), 1),
    );
    // The target does the same work per request whoever calls it, so this takes the speed of
    // the VM at that moment out of a side's CPU per event: steadier than the rates on a busy
    // machine. Context, not the gate.
    put!(
        out,
        "CPU/target: R1 {} · Impulse {} (CPU per event over the target's, same replica)",
        show(col(&|r| r.cpu_us / r.target_us, Side::A), 2),
        show(col(&|r| r.cpu_us / r.target_us, Side::B), 2),
    );
    put!(
        out,
        "RSS:        Impulse peak {} MiB, at the end of the window {} MiB (R1 at the end: {} MiB; its whole bench process, target included, with --r1 in-bench) · loadavg before replicas {}",
        show(col(&|r| r.rss_mib.unwrap_or(f64::NAN), Side::B), 0),
        show(col(&|r| r.rss_end_mib.unwrap_or(f64::NAN), Side::B), 0),
        show(col(&|r| r.rss_end_mib.unwrap_or(f64::NAN), Side::A), 0),
        show(load, 2)
    );
    let all_exact = pairs
        .iter()
        .all(|(a, b)| a.tally.distinct == records && b.tally.distinct == records);
    let dups: u64 = pairs
        .iter()
        .map(|(a, b)| a.tally.duplicates + b.tally.duplicates)
        .sum();
    let b_dups: u64 = pairs.iter().map(|(_, b)| b.tally.duplicates).sum();
    let committed_ok = pairs
        .iter()
        .all(|(_, b)| b.committed == Some(i64::try_from(records).unwrap_or(-1)));
    let dlq = pairs.last().and_then(|(_, b)| b.dlq).unwrap_or(-1);
    let max_connections = pairs
        .iter()
        .map(|(a, b)| a.tally.max_connections.max(b.tally.max_connections))
        .max()
        .unwrap_or(0);
    let bad: u64 = pairs
        .iter()
        .map(|(a, b)| a.tally.bad_requests + b.tally.bad_requests)
        .sum();
    let exits_ok = pairs
        .iter()
        .all(|(_, b)| b.exit.as_deref() == Some("exit status: 0"));
    put!(
        out,
        "invariants: produced {records} = delivered (distinct) in every replica: {} · dups {dups} (Impulse {b_dups}) · DLQ total {dlq} · Impulse committed {records} every time: {} · exit 0 every time: {} · bad requests {bad} · max connections open at the target {max_connections} (one request in flight per partition, {cap} partitions; a pool may open a spare connection while one is being returned)",
        yes(all_exact),
        yes(committed_ok),
        yes(exits_ok),
    );
    if batch_size == 1 {
        if let Some(rate) = col(&|r| r.rate, Side::B) {
            let wall_us = 1e6 / rate.median;
            let cpu = col(&|r| r.cpu_us, Side::B).map_or(f64::NAN, |s| s.median);
            put!(
                out,
                "limiter:    one admission per event; {:.2}–{:.2} µs each (BENCHMARKS.md) against {wall_us:.1} µs of wall time per event = {:.2}–{:.2}% ({:.2}–{:.2}% of Impulse's {cpu:.1} µs CPU per event); target < 2%",
                LIMITER_US.0,
                LIMITER_US.1,
                100.0 * LIMITER_US.0 / wall_us,
                100.0 * LIMITER_US.1 / wall_us,
                100.0 * LIMITER_US.0 / cpu,
                100.0 * LIMITER_US.1 / cpu,
            );
        }
    }
    out
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO"
    }
}

// === B: the impulse process ===

fn impulse_config(setup: &Setup, topic: &str, group: &str, batch_size: u32) -> String {
    format!(
        r#"[functions.target]
target = {{ type = "http", endpoint = "{endpoint}" }}
timeout = "{timeout}s"
# On, never binding: 1,000,000/s against at most a few 10,000/s.
rate = {{ per_second = 1000000 }}

[triggers.s1]
type = "kafka"
function = "target"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{group}"
starting_position = "earliest"
batch_size = {batch_size}
batch_window = "0s"
max_retry_attempts = 2
on_failure = {{ type = "kafka", bootstrap_servers = "{bootstrap}", topic = "{dlq}" }}
"#,
        endpoint = setup.endpoint,
        timeout = FUNCTION_TIMEOUT.as_secs(),
        bootstrap = setup.bootstrap,
        dlq = setup.dlq,
    )
}

/// Starts R1 in a process of its own: this binary with `--r1-child`. It reads from the start at
/// once (the warm-up covers its start-up, as it covers Impulse's group join).
fn spawn_r1(config: &BaselineConfig) -> anyhow::Result<SideProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("--r1-child")
        .arg(serde_json::to_string(config)?);
    SideProcess::spawn(work_dir("impulse-bench-r1-")?, &mut command, "R1's process")
}

// === A: R1, the raw loop ===

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BaselineConfig {
    bootstrap: String,
    topic: String,
    group: String,
    partitions: i32,
    batch_size: usize,
    endpoint: String,
}

/// A record copied out of librdkafka.
#[derive(Debug)]
struct RawRecord {
    offset: i64,
    timestamp: i64,
    timestamp_type: &'static str,
    key: Option<Bytes>,
    value: Option<Bytes>,
    /// The record's headers: a correct consumer must read them to write the event (librdkafka
    /// parses them on first access, which costs even a record without any).
    headers: Vec<(String, Option<Bytes>)>,
}

/// R1's consumer: offsets neither stored nor committed, and librdkafka's prefetch bounded as
/// Impulse's source bounds it by default (`CONSUMER_DEFAULTS`). Without the bound, librdkafka
/// prefetches up to 64 MB per partition: the whole pre-filled topic (19 MB per partition at
/// batch size 1) arrives before the measured window, and R1 then never fetches during it,
/// while Impulse does.
fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in impulse_connectors::kafka::CONSUMER_DEFAULTS {
        config.set(*key, *value);
    }
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    config
}

/// R1's process (`--r1-child`): R1 until SIGTERM.
async fn r1_child(config: BaselineConfig) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(async move {
        terminate.recv().await;
        stop_tx.send(()).ok();
    });
    let poster = impulse_benches::Poster::new(&config.endpoint)?;
    baseline(config, poster, stop_rx).await
}

/// Reads every partition of the topic from the start until `stop`, one POSTing task per
/// partition.
///
/// As Impulse's source does, each partition gets its own librdkafka queue
/// (`split_partition_queue`), so a partition whose task is busy never holds the others up; the
/// main queue is still served (it carries no records, only librdkafka's events). Partitions
/// are assigned directly (`assign`, from the beginning) rather than through a group join: the
/// group only names the client, nothing is committed.
async fn baseline(
    config: BaselineConfig,
    poster: impulse_benches::Poster,
    mut stop: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let consumer: Arc<StreamConsumer> =
        Arc::new(consumer_config(&config.bootstrap, &config.group).create()?);
    let mut assignment = TopicPartitionList::new();
    let mut queues = Vec::new();
    for partition in 0..config.partitions {
        assignment.add_partition_offset(&config.topic, partition, Offset::Beginning)?;
        queues.push(
            consumer
                .split_partition_queue(&config.topic, partition)
                .context("split_partition_queue")?,
        );
    }
    consumer.assign(&assignment)?;
    let shared = Arc::new(config);
    let (stopping, stopped) = watch::channel(false);
    let mut workers = JoinSet::new();
    for (partition, queue) in (0..).zip(queues) {
        workers.spawn(post_partition(
            queue,
            poster.clone(),
            shared.clone(),
            partition,
            stopped.clone(),
        ));
    }
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            message = consumer.recv() => {
                // Only errors and events arrive here: every partition has its own queue.
                if let Err(e) = message {
                    eprintln!("R1: {e}");
                }
            }
            Some(result) = workers.join_next() => {
                result??;
                anyhow::bail!("a partition task ended early");
            }
        }
    }
    stopping.send(true).ok();
    while let Some(result) = workers.join_next().await {
        result??;
    }
    Ok(())
}

/// One partition: wait for a record, take what else is already fetched (up to the batch size),
/// POST it, wait for the answer; until `stop`.
async fn post_partition(
    queue: StreamPartitionQueue<DefaultConsumerContext>,
    poster: impulse_benches::Poster,
    config: Arc<BaselineConfig>,
    partition: i32,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(config.batch_size);
    let mut stream = queue.stream();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return Ok(()),
            message = stream.next() => {
                let message = message.context("a Kafka stream ended")??;
                batch.push(RawRecord::copy(&message));
            }
        }
        while batch.len() < config.batch_size {
            match stream.next().now_or_never() {
                Some(Some(message)) => batch.push(RawRecord::copy(&message?)),
                _ => break,
            }
        }
        let body = lambda_kafka_event(&config.bootstrap, &config.topic, partition, &batch);
        batch.clear();
        poster.post_event(body, FUNCTION_TIMEOUT).await?;
    }
}

impl RawRecord {
    fn copy(message: &BorrowedMessage<'_>) -> Self {
        let (timestamp, timestamp_type) = match message.timestamp() {
            Timestamp::NotAvailable => (-1, "NO_TIMESTAMP_TYPE"),
            Timestamp::CreateTime(t) => (t, "CREATE_TIME"),
            Timestamp::LogAppendTime(t) => (t, "LOG_APPEND_TIME"),
        };
        Self {
            offset: message.offset(),
            timestamp,
            timestamp_type,
            key: message.key().map(Bytes::copy_from_slice),
            value: message.payload().map(Bytes::copy_from_slice),
            headers: message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), h.value.map(Bytes::copy_from_slice)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Lambda's Kafka event for one partition's records, written byte by byte as Impulse's
/// `encode_event` writes it (topic and bootstrap servers need no escaping; header names are
/// escaped by serde_json).
fn lambda_kafka_event(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    records: &[RawRecord],
) -> Bytes {
    let per_record: usize = records
        .iter()
        .map(|r| {
            200 + topic.len()
                + r.key.as_ref().map_or(4, |k| k.len().div_ceil(3) * 4 + 2)
                + r.value.as_ref().map_or(4, |v| v.len().div_ceil(3) * 4 + 2)
        })
        .sum();
    let mut out = Vec::with_capacity(100 + bootstrap.len() + topic.len() + per_record);
    out.extend_from_slice(b"{\"eventSource\":\"aws:SelfManagedKafka\",\"bootstrapServers\":\"");
    out.extend_from_slice(bootstrap.as_bytes());
    out.extend_from_slice(b"\",\"records\":{\"");
    out.extend_from_slice(topic.as_bytes());
    out.push(b'-');
    push_decimal(&mut out, i64::from(partition));
    out.extend_from_slice(b"\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"topic\":\"");
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(b"\",\"partition\":");
        push_decimal(&mut out, i64::from(partition));
        out.extend_from_slice(b",\"offset\":");
        push_decimal(&mut out, record.offset);
        out.extend_from_slice(b",\"timestamp\":");
        push_decimal(&mut out, record.timestamp);
        out.extend_from_slice(b",\"timestampType\":\"");
        out.extend_from_slice(record.timestamp_type.as_bytes());
        out.extend_from_slice(b"\",\"key\":");
        push_base64(&mut out, record.key.as_deref());
        out.extend_from_slice(b",\"value\":");
        push_base64(&mut out, record.value.as_deref());
        out.extend_from_slice(b",\"headers\":[");
        for (i, (name, value)) in record.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'{');
            // Writing a `&str` into a Vec cannot fail.
            serde_json::to_writer(&mut out, name).ok();
            out.push(b':');
            // Signed bytes, and a null value as an empty one, as Lambda's event has them.
            out.push(b'[');
            for (j, b) in value.as_deref().unwrap_or_default().iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                push_decimal(&mut out, i64::from(i8::from_ne_bytes([*b])));
            }
            out.push(b']');
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}}");
    Bytes::from(out)
}

fn push_decimal(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    let mut digits = [0u8; 20];
    let mut v = n.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        // One decimal digit: the cast cannot truncate.
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_base64(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.extend_from_slice(b"null"),
        Some(bytes) => {
            out.push(b'"');
            let start = out.len();
            out.resize(start + bytes.len().div_ceil(3) * 4, 0);
            // The space is exactly the encoded length.
            if STANDARD.encode_slice(bytes, &mut out[start..]).is_err() {
                out.truncate(start);
            }
            out.push(b'"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R1's event is byte for byte what Impulse's `encode_event` writes for the same records.
    #[test]
    fn baseline_event_matches_impulse_shape() {
        let records = [
            RawRecord {
                offset: 15,
                timestamp: 1_545_084_650_987,
                timestamp_type: "CREATE_TIME",
                key: Some(Bytes::from_static(b"recordKey")),
                value: Some(Bytes::from_static(br#"{"key":"value"}"#)),
                headers: Vec::new(),
            },
            RawRecord {
                offset: 16,
                timestamp: -1,
                timestamp_type: "NO_TIMESTAMP_TYPE",
                key: None,
                value: Some(Bytes::new()),
                headers: vec![
                    ("h\"1".to_owned(), Some(Bytes::from_static(b"ab"))),
                    ("h2".to_owned(), None),
                ],
            },
        ];
        let event = lambda_kafka_event("k1:9092", "orders", 3, &records);
        let expected = concat!(
            r#"{"eventSource":"aws:SelfManagedKafka","bootstrapServers":"k1:9092","#,
            r#""records":{"orders-3":[{"topic":"orders","partition":3,"offset":15,"#,
            r#""timestamp":1545084650987,"timestampType":"CREATE_TIME","#,
            r#""key":"cmVjb3JkS2V5","value":"eyJrZXkiOiJ2YWx1ZSJ9","headers":[]},"#,
            r#"{"topic":"orders","partition":3,"offset":16,"timestamp":-1,"#,
            r#""timestampType":"NO_TIMESTAMP_TYPE","key":null,"value":"","#,
            r#""headers":[{"h\"1":[97,98]},{"h2":[]}]}]}}"#
        );
        assert_eq!(std::str::from_utf8(&event).unwrap(), expected);
    }

    #[test]
    fn baseline_event_is_impulses_event_byte_for_byte() {
        use impulse_connectors::kafka::{encode_event, KafkaRecord, CREATE_TIME};
        let mut rng = fastrand::Rng::with_seed(1);
        let raw: Vec<RawRecord> = (0..100)
            .map(|i| RawRecord {
                offset: 1_000 + i,
                timestamp: 1_764_000_000_000 + i,
                timestamp_type: "CREATE_TIME",
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(impulse_benches::kafka::value(
                    &mut rng, i as u64,
                ))),
                headers: (0..i % 3)
                    .map(|h| {
                        (
                            format!("h{h}"),
                            // A null value, and bytes on both sides of 128.
                            (h > 0).then(|| Bytes::from(vec![h as u8, 0x80 + h as u8, 0xff])),
                        )
                    })
                    .collect(),
            })
            .collect();
        let impulse: Vec<KafkaRecord> = raw
            .iter()
            .map(|r| KafkaRecord {
                topic: "bench-s1-x-b100".into(),
                partition: 11,
                offset: r.offset,
                timestamp: Some(r.timestamp),
                timestamp_type: CREATE_TIME,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            })
            .collect();
        for n in [1, 100] {
            assert_eq!(
                lambda_kafka_event("127.0.0.1:9092", "bench-s1-x-b100", 11, &raw[..n]),
                encode_event("127.0.0.1:9092", &impulse[..n]),
            );
        }
    }
}
