//! S7 (BENCHMARKING.md): warm invocations of a `process` target — the `lambda_worker` bin, built
//! on the official `lambda_runtime` crate — with 1, 2 and 4 environments, against an `http`
//! target (`HttpFunction` posting to an in-process axum echo server) measured in the same run,
//! interleaved (ABAB…), with the same in-flight bound (= the number of environments) and the
//! same 1 KB JSON event. Also the 10 ms-handler scaling check (4 environments vs 1).
//!
//! ```text
//! cargo build -p impulse-tests --bin lambda_worker --release
//! cargo bench -p impulse-invoker --bench process
//! ```
//!
//! `BENCH_SECS` (measured seconds per run, default 20), `BENCH_WARMUP_SECS` (default 5) and
//! `BENCH_REPLICAS` (default 5) tune the run. Every run also checks correctness: each answer
//! echoes its event and request id, and a process run never uses more than its environments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use impulse_config::ProcessTargetConfig;
use impulse_invoker::http::HttpFunction;
use impulse_invoker::process::ProcessFunction;
use impulse_invoker::{Invocation, InvocationResponse, InvokeError, Name};
use serde_json::{json, Value};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

const ENVIRONMENTS: [usize; 3] = [1, 2, 4];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let worker = worker_binary();
    let measured = Duration::from_secs(env_or("BENCH_SECS", 20));
    let warmup = Duration::from_secs(env_or("BENCH_WARMUP_SECS", 5));
    let replicas = env_or("BENCH_REPLICAS", 5) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench(worker, measured, warmup, replicas));
}

/// The release `lambda_worker`, built first if missing.
fn worker_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let worker = target.join("release/lambda_worker");
    if !worker.exists() {
        eprintln!(
            "building the worker: cargo build -p impulse-tests --bin lambda_worker --release"
        );
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "impulse-tests",
                "--bin",
                "lambda_worker",
                "--release",
            ])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building lambda_worker failed");
    }
    worker
}

/// One measured run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU-seconds per invocation, in µs: this process (client, servers, pool) and the workers.
    cpu_self_us: f64,
    cpu_workers_us: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    Http(usize),
    Process(usize),
    Process10ms(usize),
}

impl Case {
    fn name(self) -> String {
        match self {
            Self::Http(n) => format!("http     n={n}"),
            Self::Process(n) => format!("process  n={n}"),
            Self::Process10ms(n) => format!("process10 n={n}"),
        }
    }
}

async fn bench(worker: PathBuf, measured: Duration, warmup: Duration, replicas: usize) {
    let event = event_1kb();
    let endpoint = echo_server().await;
    let http = HttpFunction::new(HttpFunction::default_client(), &endpoint).expect("endpoint");
    let mut processes = BTreeMap::new();
    for n in ENVIRONMENTS {
        processes.insert(n, process_function(&worker, n));
    }
    let tick = clock_ticks();
    let mut results: BTreeMap<Case, Vec<Run>> = BTreeMap::new();
    for replica in 0..replicas {
        eprintln!("replica {}/{replicas}, loadavg {}", replica + 1, loadavg());
        for n in ENVIRONMENTS {
            let cases = [
                (Case::Http(n), Target::Http(http.clone()), event.clone()),
                (
                    Case::Process(n),
                    Target::Process(processes[&n].clone()),
                    event.clone(),
                ),
            ];
            for (case, target, event) in cases {
                let run = measure(&target, n, &event, warmup, measured, tick).await;
                eprintln!(
                    "  {:<16} {:>9.0} inv/s  p50 {:>7.0} µs  p99 {:>7.0} µs",
                    case.name(),
                    run.rate,
                    run.p50_us,
                    run.p99_us
                );
                results.entry(case).or_default().push(run);
            }
        }
        for n in [1, 4] {
            let slow = Bytes::from(json!({ "sleep_ms": 10, "echo": "x" }).to_string());
            let target = Target::Process(processes[&n].clone());
            let run = measure(&target, n, &slow, warmup, measured, tick).await;
            eprintln!(
                "  {:<16} {:>9.0} inv/s",
                Case::Process10ms(n).name(),
                run.rate
            );
            results.entry(Case::Process10ms(n)).or_default().push(run);
        }
    }
    for process in processes.values() {
        process.shutdown().await;
    }
    report(&results, replicas);
}

fn process_function(worker: &std::path::Path, n: usize) -> ProcessFunction {
    let config = ProcessTargetConfig {
        command: worker.display().to_string(),
        args: vec![],
        handler: None,
        environment: BTreeMap::new(),
        working_dir: None,
        memory_size: 128,
        min_warm: 0,
        idle_timeout: Duration::from_secs(3600),
    };
    ProcessFunction::new("bench", &config, Duration::from_secs(30), n).expect("valid target")
}

#[derive(Clone)]
enum Target {
    Http(HttpFunction),
    Process(ProcessFunction),
}

impl Target {
    async fn call(&self, invocation: Invocation) -> Result<InvocationResponse, InvokeError> {
        match self {
            Self::Http(f) => f.clone().oneshot(invocation).await,
            Self::Process(f) => {
                let mut f = f.clone();
                f.call(invocation).await
            }
        }
    }
}

/// A closed loop with `in_flight` callers: `warmup` discarded, then `measured` counted.
async fn measure(
    target: &Target,
    in_flight: usize,
    event: &Bytes,
    warmup: Duration,
    measured: Duration,
    tick: f64,
) -> Run {
    // Warm-up: also brings a process target to all its environments.
    let pids = run_loops(target, in_flight, event, warmup).await.pids;
    let cpu_before = (cpu_seconds("self", tick), workers_cpu(&pids, tick));
    let outcome = run_loops(target, in_flight, event, measured).await;
    let cpu_after = (cpu_seconds("self", tick), workers_cpu(&outcome.pids, tick));
    if let Target::Process(_) = target {
        assert!(
            outcome.pids.len() <= in_flight,
            "{} environments for a cap of {in_flight}",
            outcome.pids.len()
        );
    }
    let count = outcome.latencies.len() as f64;
    let mut latencies = outcome.latencies;
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    Run {
        rate: count / outcome.elapsed.as_secs_f64(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        cpu_self_us: (cpu_after.0 - cpu_before.0) / count * 1e6,
        cpu_workers_us: (cpu_after.1 - cpu_before.1).max(0.0) / count * 1e6,
    }
}

struct Outcome {
    latencies: Vec<Duration>,
    elapsed: Duration,
    pids: BTreeSet<u32>,
}

async fn run_loops(target: &Target, in_flight: usize, event: &Bytes, length: Duration) -> Outcome {
    // The event's `echo`, as JSON text: what a process answer must carry back.
    let sent: Value = serde_json::from_slice(event).expect("a JSON event");
    let echo = Bytes::from(sent["echo"].to_string());
    let start = Instant::now();
    let stop = start + length;
    let loops = (0..in_flight).map(|worker| {
        let target = target.clone();
        let event = event.clone();
        let echo = echo.clone();
        async move {
            let mut latencies = Vec::new();
            let mut pids = BTreeSet::new();
            let mut i = 0u64;
            while Instant::now() < stop {
                let request_id = format!("{worker}-{i}");
                i += 1;
                let invocation = Invocation {
                    request_id: request_id.clone(),
                    function: Name::new("bench"),
                    trigger: Name::new("bench"),
                    payload: event.clone(),
                    deadline: None,
                    client_context: None,
                    log_tail: None,
                };
                let sent = Instant::now();
                let response = target.call(invocation).await.expect("invocation succeeds");
                latencies.push(sent.elapsed());
                check(
                    &target,
                    &response.payload,
                    &event,
                    &echo,
                    &request_id,
                    &mut pids,
                );
            }
            (latencies, pids)
        }
    });
    let mut latencies = Vec::new();
    let mut pids = BTreeSet::new();
    for (l, p) in futures::future::join_all(loops).await {
        latencies.extend(l);
        pids.extend(p);
    }
    Outcome {
        latencies,
        elapsed: start.elapsed(),
        pids,
    }
}

/// What the worker answers, parsed without copying the echoed text.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    request_id: &'a str,
    pid: u32,
    #[serde(borrow)]
    echo: &'a serde_json::value::RawValue,
}

/// Correctness in every run: the answer is this invocation's and echoes its event. (Cheap
/// checks: the bench's own CPU counts in both targets' figures.)
fn check(
    target: &Target,
    payload: &[u8],
    event: &[u8],
    echo: &[u8],
    request_id: &str,
    pids: &mut BTreeSet<u32>,
) {
    match target {
        Target::Http(_) => assert_eq!(payload, event, "the echo server returns the event"),
        Target::Process(_) => {
            let answer: Answer<'_> = serde_json::from_slice(payload).expect("the worker's answer");
            assert_eq!(
                answer.request_id, request_id,
                "the answer is this invocation's"
            );
            assert_eq!(
                answer.echo.get().as_bytes(),
                echo,
                "the answer echoes the event"
            );
            pids.insert(answer.pid);
        }
    }
}

/// `{"echo": "<≈1 KB of text>"}` from a fixed seed.
fn event_1kb() -> Bytes {
    let mut rng = fastrand::Rng::with_seed(7);
    let text: String = (0..1000).map(|_| rng.alphanumeric()).collect();
    Bytes::from(json!({ "echo": text }).to_string())
}

async fn echo_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Router::new().route("/fn", post(|body: Bytes| async move { body }));
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/fn")
}

// === CPU and load ===

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `/proc/<pid>/stat`, in seconds (0 if the process is gone).
fn cpu_seconds(pid: &str, tick: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command; utime and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / tick
}

fn workers_cpu(pids: &BTreeSet<u32>, tick: f64) -> f64 {
    pids.iter()
        .map(|pid| cpu_seconds(&pid.to_string(), tick))
        .sum()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// === report ===

fn median(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let mid = values[values.len() / 2];
    (mid, values[0], values[values.len() - 1])
}

fn report(results: &BTreeMap<Case, Vec<Run>>, replicas: usize) {
    println!();
    println!(
        "S7 process target vs http target, median [min–max] of {replicas} interleaved replicas"
    );
    for n in ENVIRONMENTS {
        let http = &results[&Case::Http(n)];
        let process = &results[&Case::Process(n)];
        let ratios: Vec<f64> = http
            .iter()
            .zip(process)
            .map(|(h, p)| p.rate / h.rate)
            .collect();
        let stat = |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
        let (hr, hr0, hr1) = stat(http, |r| r.rate);
        let (pr, pr0, pr1) = stat(process, |r| r.rate);
        let (ratio, r0, r1) = median(ratios);
        println!("n={n}: http {hr:.0} [{hr0:.0}–{hr1:.0}] inv/s · process {pr:.0} [{pr0:.0}–{pr1:.0}] inv/s · ratio {ratio:.2} [{r0:.2}–{r1:.2}]");
        println!(
            "     latency p50/p99 µs: http {:.0}/{:.0} · process {:.0}/{:.0}",
            stat(http, |r| r.p50_us).0,
            stat(http, |r| r.p99_us).0,
            stat(process, |r| r.p50_us).0,
            stat(process, |r| r.p99_us).0
        );
        println!(
            "     CPU µs/invocation: http (bench process) {:.0} · process (bench process) {:.0} + workers {:.0}",
            stat(http, |r| r.cpu_self_us).0,
            stat(process, |r| r.cpu_self_us).0,
            stat(process, |r| r.cpu_workers_us).0
        );
    }
    let overhead: Vec<f64> = results[&Case::Http(1)]
        .iter()
        .zip(&results[&Case::Process(1)])
        .map(|(h, p)| p.p50_us - h.p50_us)
        .collect();
    let (o, o0, o1) = median(overhead);
    println!("warm invocation overhead over http (p50, 1 in flight): {o:.0} [{o0:.0}–{o1:.0}] µs");
    let four_vs_http: Vec<f64> = results[&Case::Http(4)]
        .iter()
        .zip(&results[&Case::Process(4)])
        .map(|(h, p)| p.rate / h.rate)
        .collect();
    let (r, _, _) = median(four_vs_http);
    println!(
        "gate: 4 environments ≥ 0.4 × http: {r:.2} → {}",
        if r >= 0.4 { "PASS" } else { "FAIL" }
    );
    let scaling: Vec<f64> = results[&Case::Process10ms(1)]
        .iter()
        .zip(&results[&Case::Process10ms(4)])
        .map(|(one, four)| four.rate / one.rate)
        .collect();
    let (s, s0, s1) = median(scaling);
    let (one, _, _) = median(
        results[&Case::Process10ms(1)]
            .iter()
            .map(|r| r.rate)
            .collect(),
    );
    let (four, _, _) = median(
        results[&Case::Process10ms(4)]
            .iter()
            .map(|r| r.rate)
            .collect(),
    );
    println!(
        "gate: 10 ms handler, 4 environments ≥ 3.2 × 1: {four:.0} / {one:.0} inv/s = {s:.2} [{s0:.2}–{s1:.2}] → {}",
        if s >= 3.2 { "PASS" } else { "FAIL" }
    );
}
