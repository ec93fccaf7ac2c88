//! Durable enqueue throughput of the embedded queue: group commit (one transaction and one
//! fsync for everything pending) against `Commit::PerEvent` (one transaction per event), with
//! N concurrent producers of 1 KB payloads (BENCHMARKING.md §1: ABAB, 5 replicas, median of the
//! per-pair ratios).
//!
//! Run: `cargo bench -p impulse-connectors --bench queue_enqueue`. Knobs (environment):
//! `IMPULSE_BENCH_SECS` (measured seconds per run, default 20), `IMPULSE_BENCH_WARMUP_SECS`
//! (default 5), `IMPULSE_BENCH_PRODUCERS` (default 64), `IMPULSE_BENCH_REPLICAS` (default 5).
//! Files go under Cargo's target tmp dir: a real disk, never tmpfs (fsync must cost).
//!
//! Every run also checks correctness: after it, the queue is reopened and must hold exactly the
//! events whose enqueue resolved `Ok`.

use std::error::Error;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use impulse_connectors::contract::{Queue, QueuedEvent};
use impulse_connectors::embedded::{Commit, EmbeddedQueue};

type BoxError = Box<dyn Error + Send + Sync>;

struct Settings {
    measured: Duration,
    warmup: Duration,
    producers: usize,
    replicas: usize,
}

/// One run's result.
struct Run {
    events_per_sec: f64,
    cpu_us_per_event: f64,
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let settings = Settings {
        measured: Duration::from_secs(env_u64("IMPULSE_BENCH_SECS", 20)?),
        warmup: Duration::from_secs(env_u64("IMPULSE_BENCH_WARMUP_SECS", 5)?),
        producers: usize::try_from(env_u64("IMPULSE_BENCH_PRODUCERS", 64)?)?,
        replicas: usize::try_from(env_u64("IMPULSE_BENCH_REPLICAS", 5)?)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let root = tempfile::Builder::new()
        .prefix("queue-enqueue-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!(
        "embedded queue enqueue: {} producers, 1 KB payloads, {:?} measured after {:?} warm-up, \
         {} ABAB replicas (A = one fsync per event, B = group commit); dir {}",
        settings.producers,
        settings.measured,
        settings.warmup,
        settings.replicas,
        root.path().display()
    );
    println!("machine: {} vCPU {}", cpus(), cpu_model());

    let mut pairs = Vec::new();
    for replica in 1..=settings.replicas {
        let load = loadavg();
        let a = runtime.block_on(run(
            &root.path().join(format!("a{replica}")),
            Commit::PerEvent,
            &settings,
        ))?;
        let b = runtime.block_on(run(
            &root.path().join(format!("b{replica}")),
            Commit::Group,
            &settings,
        ))?;
        let ratio = b.events_per_sec / a.events_per_sec;
        println!(
            "replica {replica}: loadavg {load} · A per-event {:.0} ev/s ({:.1} µs CPU/ev) · \
             B group {:.0} ev/s ({:.1} µs CPU/ev) · ratio {ratio:.1}",
            a.events_per_sec, a.cpu_us_per_event, b.events_per_sec, b.cpu_us_per_event
        );
        pairs.push((a, b, ratio));
    }

    let summary = |values: Vec<f64>| -> String {
        let (median, min, max) = median_min_max(values);
        format!("{median:.1} [{min:.1}–{max:.1}]")
    };
    println!(
        "A per-event: {} ev/s · CPU {} µs/ev",
        summary(pairs.iter().map(|p| p.0.events_per_sec).collect()),
        summary(pairs.iter().map(|p| p.0.cpu_us_per_event).collect()),
    );
    println!(
        "B group:     {} ev/s · CPU {} µs/ev",
        summary(pairs.iter().map(|p| p.1.events_per_sec).collect()),
        summary(pairs.iter().map(|p| p.1.cpu_us_per_event).collect()),
    );
    println!(
        "ratio B/A:   {} (median [min–max] of {} pairs)",
        summary(pairs.iter().map(|p| p.2).collect()),
        pairs.len()
    );
    Ok(())
}

async fn run(dir: &Path, commit: Commit, settings: &Settings) -> Result<Run, BoxError> {
    let queue = EmbeddedQueue::open_with(dir, commit)?;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let payload = payload();
    let producers: Vec<_> = (0..settings.producers)
        .map(|p| {
            let queue = queue.clone();
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let event = QueuedEvent::new(
                        format!("p{p}-{i}"),
                        "bench".to_owned(),
                        "invoke".to_owned(),
                        payload.clone(),
                    );
                    queue.enqueue(event).await?;
                    acked.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok::<(), BoxError>(())
            })
        })
        .collect();

    tokio::time::sleep(settings.warmup).await;
    let (start_count, start_time, start_cpu) = (
        acked.load(Ordering::Relaxed),
        Instant::now(),
        cpu_seconds()?,
    );
    tokio::time::sleep(settings.measured).await;
    let (end_count, elapsed, end_cpu) = (
        acked.load(Ordering::Relaxed),
        start_time.elapsed(),
        cpu_seconds()?,
    );
    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        producer.await??;
    }

    // Correctness: every acknowledged enqueue is on disk, and nothing else.
    let total = acked.load(Ordering::Relaxed);
    drop(queue);
    let reopened = EmbeddedQueue::open(dir)?;
    let stored = reopened.len() as u64;
    drop(reopened);
    if stored != total {
        return Err(
            format!("{commit:?}: {total} enqueues acknowledged but {stored} stored").into(),
        );
    }
    std::fs::remove_dir_all(dir)?;

    let events = (end_count - start_count) as f64;
    Ok(Run {
        events_per_sec: events / elapsed.as_secs_f64(),
        cpu_us_per_event: (end_cpu - start_cpu) * 1e6 / events.max(1.0),
    })
}

/// A 1 KB JSON document from a fixed seed.
fn payload() -> Bytes {
    let mut state: u32 = 0x1234_5678;
    let mut text = String::with_capacity(1024);
    text.push_str("{\"data\":\"");
    while text.len() < 1022 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        text.push(char::from(b'a' + (state % 26) as u8));
    }
    text.push_str("\"}");
    Bytes::from(text)
}

fn median_min_max(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

/// User + system CPU seconds of this process (fields 14 and 15 of `/proc/self/stat`).
fn cpu_seconds() -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unexpected /proc/self/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, BoxError> {
        Ok(fields
            .get(i)
            .ok_or("short /proc/self/stat")?
            .parse::<f64>()?)
    };
    // Field 14 is index 11 after field 2 (fields 3.. start at index 0).
    let clock_ticks = 100.0; // USER_HZ on Linux
    Ok((ticks(11)? + ticks(12)?) / clock_ticks)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn env_u64(name: &str, default: u64) -> Result<u64, BoxError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v.parse().map_err(|e| format!("{name}={v}: {e}"))?),
        _ => Ok(default),
    }
}
