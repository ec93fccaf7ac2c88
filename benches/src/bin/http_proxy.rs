//! S5 (HTTP trigger → HTTP function) and S2 (Invoke API, `RequestResponse`) against an nginx
//! reverse proxy in front of the same target, in the same run (issue 20).
//!
//! ```text
//! cargo build --release -p impulse-broker -p impulse-benches
//! target/release/http_proxy [--help]
//! ```
//!
//! - **Target**: an nginx (Debian's `nginx-light`, `/usr/sbin/nginx`), one process
//!   (`master_process off`), `return 200 '{"ok":true}'` for every path and method; both sides
//!   proxy to it.
//! - **A = nginx reverse proxy**: another single nginx process, `proxy_pass` to an upstream
//!   with `keepalive 64` (HTTP/1.1, `Connection: ""`), no access log.
//! - **R5 = a minimal hyper reverse proxy** ([`impulse_benches::hyper_proxy`], this binary in a
//!   process of its own; `--no-r5` leaves it out): a hyper HTTP/1 server on a multi-thread
//!   runtime passing each request's body to the target through Impulse's own `http` target.
//!   It splits Impulse's gap to nginx into what the stack costs (R5/nginx) and what Impulse
//!   adds (Impulse/R5).
//! - **B = Impulse**: `target/release/impulse run` (`IMPULSE_BIN` overrides) with one `http`
//!   function on the target (its limiter on, never binding: `rate.per_second = 1000000`), an
//!   HTTP trigger `/hello` (sync; S5) and the Invoke API (S2: `POST` of a 50-byte JSON
//!   document, `RequestResponse`), no `[auth]`. The nginx side serves the same paths.
//! - **Closed loop** (throughput): `wrk -t1 -c32` (`--wrk-threads`, `--connections`) for
//!   `--secs` per replica, after one discarded warm-up run per side; replicas A R5 B, A R5 B…
//!   (ABAB… without R5). CPU per request of the proxying process (the nginx process or the
//!   whole impulse process) and of the target over the run, from `/proc`. Every replica must
//!   answer only 2xx.
//! - **Open loop** (latency): a constant-rate generator in this process sends at
//!   `--open-loop-fraction` (0.5) of the median nginx saturation rate just measured, over
//!   `--connections` keep-alive HTTP/1.1 connections (prebuilt request bytes, minimal answer
//!   parsing: the generator must not be the bottleneck); each request has an intended send time
//!   (`start + i / rate`), and its latency is measured from that time, not from when a
//!   connection was free, so queueing is never hidden (no coordinated omission). Every answer
//!   is checked (`200`, body `{"ok":true}`). A run whose answers end more than 1 s after the
//!   planned duration fell behind (the generator or the side could not keep the rate) and is
//!   marked invalid.
//! - **Event** (202 after a durable enqueue): `wrk` against the Invoke API with
//!   `X-Amz-Invocation-Type: Event`, Impulse only; compare with S9's enqueue rate.
//! - **Goals** (issue 20): rate ratio B/A ≥ 1.0, CPU per request ≤ 1.2 × nginx's, open-loop
//!   p99 ≤ 1.3 × nginx's.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use impulse_benches::proc::{cpu_time, loadavg, process_stat};
use impulse_benches::side::{free_addr, work_dir, SideProcess};
use impulse_benches::stats::Summary;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NGINX: &str = "/usr/sbin/nginx";
const WRK: &str = "/usr/bin/wrk";
/// What the target answers, and so what both sides must return.
const TARGET_BODY: &[u8] = br#"{"ok":true}"#;
/// The Invoke API's payload (S2): 50 bytes of JSON.
const INVOKE_PAYLOAD: &str = r#"{"order":"A-1042","amount":1299,"currency":"EUR"}"#;
const HELLO_PATH: &str = "/hello";
const INVOKE_PATH: &str = "/2015-03-31/functions/target/invocations";

#[derive(Debug, Parser)]
#[command(about = "S5/S2: Impulse's HTTP path against an nginx reverse proxy, same target")]
struct Args {
    /// ABAB pairs per scenario (closed and open loop).
    #[arg(long, default_value_t = 5)]
    replicas: usize,
    /// Seconds per closed-loop replica.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Seconds of each discarded warm-up run.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Connections of wrk and of the open-loop generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// wrk's threads.
    #[arg(long, default_value_t = 1)]
    wrk_threads: usize,
    /// Seconds per open-loop replica.
    #[arg(long, default_value_t = 10)]
    open_loop_secs: u64,
    /// The open-loop rate as a fraction of nginx's median closed-loop rate.
    #[arg(long, default_value_t = 0.5)]
    open_loop_fraction: f64,
    /// Scenarios to run: s5 (HTTP trigger), s2 (Invoke API), event (Invoke API, 202).
    #[arg(long, value_delimiter = ',', default_value = "s5,s2,event")]
    scenarios: Vec<String>,
    /// Skip the open-loop latency runs.
    #[arg(long)]
    no_open_loop: bool,
    /// Start everything, print the URLs and wait for Ctrl-C (for `perf record` by hand).
    #[arg(long)]
    serve_only: bool,
    /// Leave out R5, the minimal hyper proxy (then only nginx and Impulse run).
    #[arg(long)]
    no_r5: bool,
    /// Internal: run R5 alone, `<listen> <target>`, until killed.
    #[arg(long, hide = true, num_args = 2)]
    r5_child: Vec<std::net::SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let [listen, target] = args.r5_child[..] {
        return impulse_benches::hyper_proxy::serve(listen, target);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// S5: `GET /hello`, an HTTP trigger (sync).
    Trigger,
    /// S2: the Invoke API, `RequestResponse`, 50-byte body.
    Invoke,
    /// The Invoke API, `Event`: 202 after a durable enqueue (Impulse only).
    Event,
}

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Self::Trigger => "S5 HTTP trigger (sync), GET /hello",
            Self::Invoke => "S2 Invoke API, RequestResponse, POST 50 B",
            Self::Event => "Invoke API, Event (202 after enqueue), POST 50 B",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Trigger => HELLO_PATH,
            Self::Invoke | Self::Event => INVOKE_PATH,
        }
    }

    /// A wrk Lua script setting method, body and headers; `None` for a plain GET.
    fn wrk_script(self) -> Option<String> {
        let headers = match self {
            Self::Trigger => return None,
            Self::Invoke => "",
            Self::Event => "wrk.headers[\"X-Amz-Invocation-Type\"] = \"Event\"\n",
        };
        Some(format!(
            "wrk.method = \"POST\"\nwrk.body = '{INVOKE_PAYLOAD}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n{headers}"
        ))
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let scenarios: Vec<Scenario> = args
        .scenarios
        .iter()
        .map(|s| match s.as_str() {
            "s5" => Ok(Scenario::Trigger),
            "s2" => Ok(Scenario::Invoke),
            "event" => Ok(Scenario::Event),
            other => Err(anyhow::anyhow!("unknown scenario {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    let impulse_bin = impulse_benches::build_impulse()?;
    let target = Nginx::target()?;
    let proxy = Nginx::proxy(target.addr)?;
    let impulse = start_impulse(&impulse_bin, target.addr).await?;
    let r5 = if args.no_r5 {
        None
    } else {
        Some(R5::start(target.addr)?)
    };
    eprintln!(
        "target nginx pid {} on {}, proxy nginx pid {} on {}, impulse pid {} on {}{}",
        target.pid(),
        target.addr,
        proxy.pid(),
        proxy.addr,
        impulse.pid(),
        impulse.listen(),
        r5.as_ref().map_or(String::new(), |r5| format!(
            ", R5 pid {} on {}",
            r5.pid(),
            r5.addr
        ))
    );
    for scenario in &scenarios {
        if *scenario != Scenario::Event {
            check_answer(proxy.addr, *scenario).await?;
            if let Some(r5) = &r5 {
                check_answer(r5.addr, *scenario).await?;
            }
        }
        check_answer(impulse.listen(), *scenario).await?;
    }
    if args.serve_only {
        eprintln!("serving; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }
    let machine = impulse_benches::proc::cpu_model();
    let mut report = format!(
        "\n# http_proxy: {} pairs of {} s, wrk -t{} -c{}, {machine}, {} CPUs\n",
        args.replicas,
        args.secs,
        args.wrk_threads,
        args.connections,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let sides = |scenario: Scenario| -> Vec<(&'static str, std::net::SocketAddr, u32)> {
        let mut sides = Vec::new();
        if scenario != Scenario::Event {
            sides.push(("nginx", proxy.addr, proxy.pid()));
            if let Some(r5) = &r5 {
                sides.push(("R5 hyper", r5.addr, r5.pid()));
            }
        }
        sides.push(("impulse", impulse.listen(), impulse.pid()));
        sides
    };
    for scenario in scenarios {
        let sides = sides(scenario);
        eprintln!("== {} ==", scenario.label());
        for (name, addr, pid) in &sides {
            let warm = wrk(&args, args.warmup_secs, *addr, scenario, *pid, target.pid())?;
            eprintln!("warm-up {name}: {:.0} req/s", warm.rate);
        }
        let mut runs: Vec<Vec<WrkRun>> = vec![Vec::new(); sides.len()];
        for replica in 0..args.replicas {
            for (i, (name, addr, pid)) in sides.iter().enumerate() {
                let run = wrk(&args, args.secs, *addr, scenario, *pid, target.pid())?;
                eprintln!(
                    "replica {} {name}: {:.0} req/s, {:.1} µs CPU/req (target {:.1}), p50 {:.2} ms p99 {:.2} ms, load {:.2}",
                    replica + 1,
                    run.rate,
                    run.cpu_us,
                    run.target_us,
                    run.p50_ms,
                    run.p99_ms,
                    run.load
                );
                runs[i].push(run);
            }
        }
        report.push_str(&closed_loop_summary(scenario, &sides, &runs));
        if args.no_open_loop || scenario == Scenario::Event {
            continue;
        }
        let Some(nginx_rate) = Summary::of(&runs[0].iter().map(|r| r.rate).collect::<Vec<_>>())
        else {
            continue;
        };
        let rate = nginx_rate.median * args.open_loop_fraction;
        let mut open: Vec<Vec<OpenLoopRun>> = vec![Vec::new(); sides.len()];
        for replica in 0..args.replicas {
            for (i, (name, addr, pid)) in sides.iter().enumerate() {
                let run = open_loop(*addr, scenario, rate, &args, *pid).await?;
                eprintln!(
                    "open loop {} {name}: {:.0}/s sent, p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms, {:.1} µs CPU/req, {} bad",
                    replica + 1,
                    run.rate,
                    run.p50_ms,
                    run.p99_ms,
                    run.p999_ms,
                    run.cpu_us,
                    run.bad
                );
                open[i].push(run);
            }
        }
        report.push_str(&open_loop_summary(scenario, rate, &sides, &open));
    }
    println!("{report}");
    Ok(())
}

// === Closed loop: wrk ===

#[derive(Debug, Clone)]
struct WrkRun {
    rate: f64,
    requests: u64,
    /// µs of CPU of the proxying process per request.
    cpu_us: f64,
    /// µs of CPU of the target per request.
    target_us: f64,
    p50_ms: f64,
    p99_ms: f64,
    load: f64,
}

fn wrk(
    args: &Args,
    secs: u64,
    addr: std::net::SocketAddr,
    scenario: Scenario,
    pid: u32,
    target_pid: u32,
) -> anyhow::Result<WrkRun> {
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(WRK);
    command
        .arg(format!("-t{}", args.wrk_threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{secs}s"))
        .arg("--latency");
    if let Some(script) = scenario.wrk_script() {
        let path = dir.path().join("request.lua");
        std::fs::write(&path, script)?;
        command.arg("-s").arg(path);
    }
    command.arg(format!("http://{addr}{}", scenario.path()));
    let load = loadavg();
    let (cpu0, target0) = (
        cpu_time(&process_stat(pid))?,
        cpu_time(&process_stat(target_pid))?,
    );
    let output = command.output().context("running wrk")?;
    let (cpu1, target1) = (
        cpu_time(&process_stat(pid))?,
        cpu_time(&process_stat(target_pid))?,
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(output.status.success(), "wrk failed:\n{text}");
    anyhow::ensure!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw errors:\n{text}"
    );
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .with_context(|| format!("no request count in wrk's output:\n{text}"))?;
    let rate: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no rate in wrk's output:\n{text}"))?;
    let percentile = |p: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .map_or(f64::NAN, |v| wrk_duration_ms(v.trim()))
    };
    let per_request = |d: Duration| d.as_secs_f64() * 1e6 / requests.max(1) as f64;
    Ok(WrkRun {
        rate,
        requests,
        cpu_us: per_request(cpu1.saturating_sub(cpu0)),
        target_us: per_request(target1.saturating_sub(target0)),
        p50_ms: percentile("50%"),
        p99_ms: percentile("99%"),
        load,
    })
}

/// wrk's `1.23ms`, `456.00us`, `1.01s` in milliseconds.
fn wrk_duration_ms(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => f64::NAN,
    }
}

fn closed_loop_summary(
    scenario: Scenario,
    sides: &[(&'static str, std::net::SocketAddr, u32)],
    runs: &[Vec<WrkRun>],
) -> String {
    let mut out = format!("\n## {} — closed loop (wrk)\n\n", scenario.label());
    out.push_str("| replica | side | load | req/s | CPU µs/req | target µs/req | p50 ms | p99 ms | requests |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let replicas = runs.iter().map(Vec::len).min().unwrap_or(0);
    for replica in 0..replicas {
        for (i, (name, _, _)) in sides.iter().enumerate() {
            let Some(r) = runs[i].get(replica) else {
                continue;
            };
            out.push_str(&format!(
                "| {} | {name} | {:.2} | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} | {} |\n",
                replica + 1,
                r.load,
                r.rate,
                r.cpu_us,
                r.target_us,
                r.p50_ms,
                r.p99_ms,
                r.requests
            ));
        }
    }
    let show =
        |values: Vec<f64>, d: usize| Summary::of(&values).map_or("n/a".into(), |s| s.display(d));
    for (i, (name, _, _)) in sides.iter().enumerate() {
        out.push_str(&format!(
            "\n{name}: {} req/s, {} µs CPU/req, p99 {} ms",
            show(runs[i].iter().map(|r| r.rate).collect(), 0),
            show(runs[i].iter().map(|r| r.cpu_us).collect(), 1),
            show(runs[i].iter().map(|r| r.p99_ms).collect(), 2),
        ));
    }
    // Impulse (the last side) against nginx (the first), with the goals; then, with R5 between
    // them, what the stack costs (R5 against nginx) and what Impulse adds (against R5).
    let ratio = |a: usize, b: usize, f: fn(&WrkRun) -> f64| -> Option<Summary> {
        let pairs: Vec<f64> = runs[a]
            .iter()
            .zip(&runs[b])
            .map(|(a, b)| f(b) / f(a))
            .collect();
        Summary::of(&pairs)
    };
    let steadiness = |rate: Option<Summary>| {
        if rate.is_some_and(|s| s.within(0.10)) {
            "steady"
        } else {
            "unsteady"
        }
    };
    let last = sides.len() - 1;
    if last > 0 {
        let rate = ratio(0, last, |r| r.rate);
        let cpu = ratio(0, last, |r| r.cpu_us);
        out.push_str(&format!(
            "\nImpulse/nginx rate {} (goal ≥ 1.0: {}), CPU per request {} (goal ≤ 1.2: {}); {}",
            rate.map_or("n/a".into(), |s| s.display(3)),
            verdict(rate.is_some_and(|s| s.median >= 1.0)),
            cpu.map_or("n/a".into(), |s| s.display(3)),
            verdict(cpu.is_some_and(|s| s.median <= 1.2)),
            steadiness(rate)
        ));
    }
    if last == 2 {
        for (a, b) in [(0, 1), (1, 2)] {
            let rate = ratio(a, b, |r| r.rate);
            let cpu = ratio(a, b, |r| r.cpu_us);
            out.push_str(&format!(
                "\n{}/{} rate {}, CPU per request {}; {}",
                sides[b].0,
                sides[a].0,
                rate.map_or("n/a".into(), |s| s.display(3)),
                cpu.map_or("n/a".into(), |s| s.display(3)),
                steadiness(rate)
            ));
        }
    }
    out.push('\n');
    out
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

// === Open loop: constant rate, latency from the intended send time ===

#[derive(Debug, Clone)]
struct OpenLoopRun {
    /// Requests answered per second of the run.
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    cpu_us: f64,
    /// Answers other than `200 {"ok":true}`, and failed requests.
    bad: u64,
    /// The generator (or the side) fell behind: fewer than 95 % of the requests were answered
    /// within the run's time plus one second.
    behind: bool,
}

/// Sends `rate` requests per second for `--open-loop-secs` over `--connections` connections.
///
/// A pacer thread releases one permit per intended send time (`start + i / rate`, woken at
/// most every 100 µs); each connection's task takes the next permit, so a request waits for a
/// free connection when all are busy, and its latency counts from its intended time.
async fn open_loop(
    addr: std::net::SocketAddr,
    scenario: Scenario,
    rate: f64,
    args: &Args,
    pid: u32,
) -> anyhow::Result<OpenLoopRun> {
    let total = (rate * args.open_loop_secs as f64) as u64;
    let period = Duration::from_secs_f64(1.0 / rate);
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    if total == 0 {
        permits.close();
    }
    let next = Arc::new(AtomicU64::new(0));
    let mut connections = Vec::new();
    for _ in 0..args.connections {
        connections.push(RawConnection::open(addr, scenario).await?);
    }
    let cpu0 = cpu_time(&process_stat(pid))?;
    let start = Instant::now() + Duration::from_millis(20);
    let pacer_permits = permits.clone();
    let pacer = std::thread::spawn(move || {
        let mut released = 0u64;
        while released < total {
            let now = Instant::now();
            if now >= start {
                let due =
                    (((now - start).as_secs_f64() / period.as_secs_f64()) as u64 + 1).min(total);
                if due > released {
                    pacer_permits.add_permits((due - released) as usize);
                    released = due;
                }
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    });
    let mut tasks = Vec::new();
    for mut connection in connections {
        let permits = permits.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut bad = 0u64;
            loop {
                let Ok(permit) = permits.acquire().await else {
                    break;
                };
                permit.forget();
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if i + 1 == total {
                    // The last request: the other tasks stop on the closed semaphore.
                    permits.close();
                }
                let intended = start + period.mul_f64(i as f64);
                let ok = connection.exchange().await;
                latencies.push(intended.elapsed());
                if !ok {
                    bad += 1;
                }
            }
            (latencies, bad)
        }));
    }
    // The task that takes the last index closes the semaphore, which ends the others. (Joining
    // the pacer first would block this runtime's only thread; it has finished once the last
    // permit was taken.)
    let mut latencies = Vec::with_capacity(total as usize);
    let mut bad = 0;
    let finished = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks))
        .await
        .map_err(|_| anyhow::anyhow!("the open loop did not finish"))?;
    pacer.join().ok();
    for task in finished {
        let (l, b) = task?;
        latencies.extend(l);
        bad += b;
    }
    let elapsed = start.elapsed();
    let cpu1 = cpu_time(&process_stat(pid))?;
    latencies.sort_unstable();
    let at = |q: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let planned = Duration::from_secs(args.open_loop_secs);
    Ok(OpenLoopRun {
        behind: elapsed > planned + Duration::from_secs(1),
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        cpu_us: cpu1.saturating_sub(cpu0).as_secs_f64() * 1e6 / latencies.len().max(1) as f64,
        bad,
    })
}

/// A keep-alive HTTP/1.1 connection sending one prebuilt request at a time and checking each
/// answer with as little work as possible, so that the generator is not the bottleneck of a
/// 2-core machine (hyper's client costs several times more per request).
struct RawConnection {
    stream: tokio::net::TcpStream,
    request: Bytes,
    buffer: bytes::BytesMut,
    scenario: Scenario,
}

impl RawConnection {
    async fn open(addr: std::net::SocketAddr, scenario: Scenario) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let path = scenario.path();
        let request = match scenario {
            Scenario::Trigger => format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
            Scenario::Invoke | Scenario::Event => format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{INVOKE_PAYLOAD}",
                INVOKE_PAYLOAD.len(),
                if scenario == Scenario::Event {
                    "X-Amz-Invocation-Type: Event\r\n"
                } else {
                    ""
                }
            ),
        };
        Ok(Self {
            stream,
            request: Bytes::from(request),
            buffer: bytes::BytesMut::with_capacity(4096),
            scenario,
        })
    }

    /// Sends the request and reads one answer; whether it is what the target answers
    /// (`200 {"ok":true}`; `202` for `Event`).
    async fn exchange(&mut self) -> bool {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        if self.stream.write_all(&self.request).await.is_err() {
            return false;
        }
        loop {
            if let Some(answer) = self.parse() {
                return answer;
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    }

    /// One complete answer off the buffer (whether it is the expected one), or `None` when
    /// more bytes are needed.
    fn parse(&mut self) -> Option<bool> {
        let head_end = self.buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&self.buffer[..head_end]).ok()?;
        let length: usize = head
            .split("\r\n")
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())
                    .flatten()
            })
            .unwrap_or(0);
        if self.buffer.len() < head_end + length {
            return None;
        }
        let expected = match self.scenario {
            Scenario::Event => head.starts_with("HTTP/1.1 202"),
            _ => {
                head.starts_with("HTTP/1.1 200")
                    && &self.buffer[head_end..head_end + length] == TARGET_BODY
            }
        };
        bytes::Buf::advance(&mut self.buffer, head_end + length);
        Some(expected)
    }
}

/// Fails unless `addr` answers one request of `scenario` as the target would.
async fn check_answer(addr: std::net::SocketAddr, scenario: Scenario) -> anyhow::Result<()> {
    let mut connection = RawConnection::open(addr, scenario).await?;
    anyhow::ensure!(
        connection.exchange().await,
        "{addr} did not answer {} as the target does",
        scenario.label()
    );
    Ok(())
}

fn open_loop_summary(
    scenario: Scenario,
    rate: f64,
    sides: &[(&'static str, std::net::SocketAddr, u32)],
    runs: &[Vec<OpenLoopRun>],
) -> String {
    let mut out = format!(
        "\n## {} — open loop at {rate:.0} req/s (latency from the intended send time)\n\n",
        scenario.label()
    );
    out.push_str("| replica | side | answered/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | bad | fell behind |\n|---:|---|---:|---:|---:|---:|---:|---:|---|\n");
    let replicas = runs.iter().map(Vec::len).min().unwrap_or(0);
    for replica in 0..replicas {
        for (i, (name, _, _)) in sides.iter().enumerate() {
            let Some(r) = runs[i].get(replica) else {
                continue;
            };
            out.push_str(&format!(
                "| {} | {name} | {:.0} | {:.3} | {:.3} | {:.3} | {:.1} | {} | {} |\n",
                replica + 1,
                r.rate,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.cpu_us,
                r.bad,
                if r.behind { "YES: invalid" } else { "no" }
            ));
        }
    }
    let last = sides.len() - 1;
    if last > 0 {
        let ratios: Vec<f64> = runs[0]
            .iter()
            .zip(&runs[last])
            .map(|(a, b)| b.p99_ms / a.p99_ms)
            .collect();
        let p99 = Summary::of(&ratios);
        out.push_str(&format!(
            "\nImpulse/nginx p99 {} (goal ≤ 1.3: {})\n",
            p99.map_or("n/a".into(), |s| s.display(3)),
            verdict(p99.is_some_and(|s| s.median <= 1.3))
        ));
    }
    out
}

// === The processes ===

/// One nginx process (`master_process off`: the worker is the process), killed on drop.
struct Nginx {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// The target: `200 {"ok":true}` for everything.
    fn target() -> anyhow::Result<Self> {
        Self::start(
            "location / {\n    default_type application/json;\n    return 200 '{\"ok\":true}';\n}",
            "",
        )
    }

    /// The baseline: a reverse proxy to `target` with pooled keep-alive connections.
    fn proxy(target: std::net::SocketAddr) -> anyhow::Result<Self> {
        Self::start(
            "location / {\n    proxy_pass http://target;\n    proxy_http_version 1.1;\n    proxy_set_header Connection \"\";\n}",
            &format!("upstream target {{\n    server {target};\n    keepalive 64;\n}}"),
        )
    }

    fn start(location: &str, http_extra: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr = free_addr()?;
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{\n    worker_connections 4096;\n}}\nhttp {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    keepalive_requests 1000000;\n    {http_extra}\n    server {{\n        listen {addr} backlog=4096;\n        {location}\n    }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new(NGINX)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Self {
            child,
            addr,
            _dir: dir,
        };
        wait_listening(addr, || nginx.child.try_wait(), "nginx")?;
        Ok(nginx)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// R5 ([`impulse_benches::hyper_proxy`]): this binary again, in a process of its own as
/// Impulse and nginx are.
struct R5 {
    process: SideProcess,
    addr: std::net::SocketAddr,
}

impl R5 {
    fn start(target: std::net::SocketAddr) -> anyhow::Result<Self> {
        let addr = free_addr()?;
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["--r5-child", &addr.to_string(), &target.to_string()]);
        let mut process = SideProcess::spawn(work_dir("impulse-bench-r5-")?, &mut command, "R5")?;
        wait_listening(addr, || process.try_wait(), "R5")?;
        Ok(Self { process, addr })
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// `impulse run` with the function, the HTTP trigger and the Invoke API.
async fn start_impulse(binary: &Path, target: std::net::SocketAddr) -> anyhow::Result<SideProcess> {
    let config = format!(
        r#"[functions.target]
target = {{ type = "http", endpoint = "http://{target}/" }}
timeout = "10s"
# On, never binding.
rate = {{ per_second = 1000000 }}

[triggers.hello]
type = "http"
function = "target"
path = "{HELLO_PATH}"
"#
    );
    SideProcess::impulse(binary, &config).await
}

/// Waits until `addr` accepts connections, failing if the process exits first (`exited`).
fn wait_listening(
    addr: std::net::SocketAddr,
    mut exited: impl FnMut() -> std::io::Result<Option<std::process::ExitStatus>>,
    what: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = exited()? {
            anyhow::bail!("{what} exited with {status}");
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{what} did not listen on {addr} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::wrk_duration_ms;

    #[test]
    fn wrk_durations() {
        assert!((wrk_duration_ms("456.00us") - 0.456).abs() < 1e-9);
        assert!((wrk_duration_ms("1.23ms") - 1.23).abs() < 1e-9);
        assert!((wrk_duration_ms("1.01s") - 1010.0).abs() < 1e-9);
        assert!(wrk_duration_ms("abc").is_nan());
    }
}
