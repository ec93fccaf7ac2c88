//! S6, Redis stream → HTTP function throughput, against R6 in the same run
//! (BENCHMARKING.md §2).
//!
//! ```text
//! scripts/services.sh up redis
//! cargo run --release -p impulse-benches --bin redis_http [-- --help]
//! ```
//!
//! - **Target**: [`impulse_benches::target`], one worker thread, `200 {}`; it counts distinct
//!   entry ids of the events it receives, and duplicates.
//! - **Stream**: one fresh stream per batch size, pre-filled once with N entries (one field
//!   `value`, 1 KB JSON, fixed seed) under explicit ids `<now ms>-1 … <now ms>-N`. Every replica
//!   reads it from the start with a **fresh consumer group**.
//! - **A = R6**, in a process of its own (this binary, started with `--r6-child`), as Impulse
//!   runs in its own: `--concurrency` loops, each on a connection of its own, each
//!   `XREADGROUP … COUNT <batch> BLOCK 1000 STREAMS <stream> >`, the event written by Impulse's
//!   own encoder (`impulse_connectors::redis::encode_event`, so that both sides write the same
//!   bytes at the same cost), POSTed through Impulse's own `http` target
//!   ([`impulse_benches::Poster`]: the same client and headers), then `XACK` of the batch: no
//!   limiter, no lease refresh, no retries.
//! - **B = Impulse**: `target/release/impulse run` (built first; `IMPULSE_BIN` overrides) with one
//!   `http` function and one Redis trigger on the stream: a fresh group, `starting_position =
//!   "earliest"`, the batch size, `maximum_concurrency = --concurrency`, the limiter on but not
//!   binding. Stopped with SIGTERM once the target has every entry.
//! - **Both sides** must leave the group with no pending entry: every entry acknowledged.
//! - **Replicas**: per batch size, one discarded Impulse replica, then ABAB… (`--replicas`
//!   pairs). A replica's rate is taken between the instants the target's distinct count reaches
//!   `warmup × N` and N. CPU per event over the same window: the side's whole process, the
//!   target's thread, and `redis-server` (from the services script's pid file).
//! - **Gate**: the median of the B/A ratios ≥ 0.90 at every batch size.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use impulse_benches::proc::{
    cpu_time, loadavg, optional_cpu_time, peak_rss_kib, process_stat, service_stat,
};
use impulse_benches::side::{work_dir, SideProcess};
use impulse_benches::stats::Summary;
use impulse_benches::target::{Tally, Target};
use impulse_connectors::redis::{encode_event, RedisEntry};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands as _;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The allocator `impulse` uses, so that R6 (this binary) is not slowed down by a worse one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The gate: median B/A at every batch size.
const TARGET_RATIO: f64 = 0.90;
/// The function timeout in Impulse, also announced by the baseline's deadline header.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(about = "S6: Redis stream → HTTP function throughput, Impulse (B) against R6 (A), ABAB")]
struct Args {
    /// A/B pairs per batch size.
    #[arg(long, default_value_t = 5)]
    replicas: usize,
    /// Batch sizes, in order.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 10])]
    batch_sizes: Vec<u32>,
    /// Entries per replica at batch size 1.
    #[arg(long, default_value_t = 200_000)]
    entries_batch1: u64,
    /// Entries per replica at larger batch sizes.
    #[arg(long, default_value_t = 600_000)]
    entries_batched: u64,
    /// Batches in flight: Impulse's `maximum_concurrency`, R6's loops.
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// Fraction of each replica's entries before the measured window.
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    /// Impulse replicas run, and discarded, before each batch size's pairs.
    #[arg(long, default_value_t = 1)]
    warmup_replicas: usize,
    /// Redis, as `scripts/services.sh up redis` starts it.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Internal: run R6 with this JSON configuration until SIGTERM.
    #[arg(long, hide = true)]
    r6_child: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// What R6's process is told to do.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BaselineConfig {
    url: String,
    stream: String,
    group: String,
    batch_size: usize,
    concurrency: u32,
    endpoint: String,
}

/// One measured replica.
#[derive(Debug)]
struct Replica {
    side: Side,
    load: f64,
    rate: f64,
    cpu_us: f64,
    target_us: f64,
    redis_us: Option<f64>,
    rss_mib: Option<f64>,
    tally: Tally,
    pending: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match &args.r6_child {
        Some(config) => runtime.block_on(r6_child(serde_json::from_str(config)?)),
        None => runtime.block_on(bench(&args)),
    }
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let mut redis = connect(&args.redis_url).await.with_context(|| {
        format!(
            "Redis is not reachable at {}: start it with `scripts/services.sh up redis`",
            args.redis_url
        )
    })?;
    let impulse_bin = impulse_benches::build_impulse()?;
    let target = Target::start()?;
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    println!(
        "S6 Redis stream → HTTP: {} pairs per batch size, concurrency {}, CPU {}, load {:.2}",
        args.replicas,
        args.concurrency,
        impulse_benches::proc::cpu_model(),
        loadavg()
    );
    let mut verdicts = Vec::new();
    for &batch_size in &args.batch_sizes {
        let entries = if batch_size == 1 {
            args.entries_batch1
        } else {
            args.entries_batched
        };
        let stream = format!("bench:s6:{run_id}:b{batch_size}");
        fill(&mut redis, &stream, entries).await?;
        let setup = ReplicaSetup {
            args,
            impulse_bin: &impulse_bin,
            target: &target,
            stream: &stream,
            batch_size,
            entries,
        };
        for i in 0..args.warmup_replicas {
            let r = replica(&setup, Side::B, 100 + i).await?;
            println!("  b{batch_size} warm-up (discarded): {:.0}/s", r.rate);
        }
        let mut ratios = Vec::new();
        let mut pairs = Vec::new();
        for i in 0..args.replicas {
            let a = replica(&setup, Side::A, i).await?;
            print_replica(batch_size, &format!("A{}", i + 1), &a, entries);
            let b = replica(&setup, Side::B, i).await?;
            print_replica(batch_size, &format!("B{}", i + 1), &b, entries);
            ratios.push(b.rate / a.rate);
            pairs.push((a, b));
        }
        redis.del::<_, ()>(&stream).await?;
        verdicts.push(summarize(batch_size, &pairs, &ratios));
    }
    println!();
    for line in &verdicts {
        println!("{}", line.0);
    }
    anyhow::ensure!(
        verdicts.iter().all(|v| v.1),
        "S6 misses its gate (median B/A ≥ {TARGET_RATIO}) or lost entries"
    );
    Ok(())
}

/// What every replica of one batch size shares.
struct ReplicaSetup<'a> {
    args: &'a Args,
    impulse_bin: &'a std::path::Path,
    target: &'a Target,
    stream: &'a str,
    batch_size: u32,
    entries: u64,
}

/// A connection whose response timeout exceeds R6's blocking reads (redis-rs's default, 500 ms,
/// would fail them) and the pipelined fill.
async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// Writes `entries` entries under ids `<now ms>-1 …`, pipelined.
async fn fill(redis: &mut MultiplexedConnection, stream: &str, entries: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let mut rng = fastrand::Rng::with_seed(6);
    let mut next = 1;
    while next <= entries {
        let mut pipe = redis::pipe();
        let end = (next + 999).min(entries);
        for seq in next..=end {
            pipe.cmd("XADD")
                .arg(stream)
                .arg(format!("{ms}-{seq}"))
                .arg("value")
                .arg(impulse_benches::kafka::value(&mut rng, seq))
                .ignore();
        }
        pipe.query_async::<()>(redis).await?;
        next = end + 1;
    }
    println!(
        "  {stream}: {entries} entries written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn replica(setup: &ReplicaSetup<'_>, side: Side, index: usize) -> anyhow::Result<Replica> {
    let entries = setup.entries;
    let warm = ((entries as f64 * setup.args.warmup).round() as u64).clamp(1, entries);
    let mut marks = setup.target.reset(&[warm, entries]).into_iter();
    let (Some(warm_rx), Some(done_rx)) = (marks.next(), marks.next()) else {
        anyhow::bail!("the target armed no marks");
    };
    let group = format!(
        "{}-{}{index}",
        setup.stream,
        if side == Side::A { "a" } else { "b" }
    );
    let mut redis = connect(&setup.args.redis_url).await?;
    let load = loadavg();
    // Generous: 60 s plus 2 ms per entry (500 events/s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60 + entries / 500);
    let mut process = match side {
        Side::A => {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(setup.stream)
                .arg(&group)
                .arg("0")
                .query_async::<()>(&mut redis)
                .await?;
            spawn_r6(&BaselineConfig {
                url: setup.args.redis_url.clone(),
                stream: setup.stream.to_owned(),
                group: group.clone(),
                batch_size: setup.batch_size as usize,
                concurrency: setup.args.concurrency,
                endpoint: setup.target.endpoint(),
            })?
        }
        Side::B => {
            let config = impulse_config(setup, &group);
            SideProcess::impulse(setup.impulse_bin, &config).await?
        }
    };
    let side_stat = process_stat(process.pid());
    let redis_stat = service_stat("redis/redis.pid");
    let snapshot = |at: Instant| {
        (
            at,
            cpu_time(&side_stat).unwrap_or_default(),
            cpu_time(setup.target.thread_stat()).unwrap_or_default(),
            optional_cpu_time(redis_stat.as_deref()),
        )
    };
    let waited = async {
        let first = snapshot(warm_rx.await.context("the target dropped a mark")?);
        let last = snapshot(done_rx.await.context("the target dropped a mark")?);
        anyhow::Ok((first, last))
    };
    let outcome = tokio::time::timeout_at(deadline, waited).await;
    let rss_mib = peak_rss_kib(process.pid()).map(|kib| kib as f64 / 1024.0);
    let status = process.terminate(Duration::from_secs(60)).await;
    if !status.as_ref().is_ok_and(|s| s.success()) {
        eprintln!("{side:?} log tail:\n{}", process.log_tail(40));
        anyhow::bail!("{side:?} did not stop cleanly: {status:?}");
    }
    let (first, last) = match outcome {
        Ok(result) => result?,
        Err(_) => anyhow::bail!(
            "{side:?} replica {index} at batch {} timed out: the target has {:?} of {entries}",
            setup.batch_size,
            setup.target.tally()
        ),
    };
    let pending = pending(&mut redis, setup.stream, &group).await?;
    redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(setup.stream)
        .arg(&group)
        .query_async::<()>(&mut redis)
        .await?;

    let events = (entries - warm) as f64;
    let per_event =
        |from: Duration, to: Duration| to.saturating_sub(from).as_secs_f64() * 1e6 / events;
    Ok(Replica {
        side,
        load,
        rate: events / (last.0 - first.0).as_secs_f64().max(1e-9),
        cpu_us: per_event(first.1, last.1),
        target_us: per_event(first.2, last.2),
        redis_us: first.3.zip(last.3).map(|(from, to)| per_event(from, to)),
        rss_mib,
        tally: setup.target.tally(),
        pending,
    })
}

/// Entries of `group` delivered and not acknowledged.
async fn pending(
    redis: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> anyhow::Result<u64> {
    let summary: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(redis)
        .await?;
    Ok(summary.0)
}

fn impulse_config(setup: &ReplicaSetup<'_>, group: &str) -> String {
    format!(
        r#"[functions.target]
target = {{ type = "http", endpoint = "{endpoint}" }}
timeout = "{timeout}s"
# On, never binding: 1,000,000/s against at most a few 10,000/s.
rate = {{ per_second = 1000000 }}

[triggers.s6]
type = "redis"
function = "target"
url = "{url}"
stream = "{stream}"
group = "{group}"
starting_position = "earliest"
batch_size = {batch_size}
maximum_concurrency = {concurrency}
"#,
        endpoint = setup.target.endpoint(),
        timeout = FUNCTION_TIMEOUT.as_secs(),
        url = setup.args.redis_url,
        stream = setup.stream,
        batch_size = setup.batch_size,
        concurrency = setup.args.concurrency,
    )
}

fn print_replica(batch_size: u32, name: &str, r: &Replica, entries: u64) {
    println!(
        "  b{batch_size} {name} ({:?}): {:>8.0}/s  cpu {:>6.1} µs/event  target {:>5.1}  redis {}  rss {}  load {:.2}  distinct {}/{entries}  dup {}  pending {}",
        r.side,
        r.rate,
        r.cpu_us,
        r.target_us,
        r.redis_us.map_or("-".to_owned(), |u| format!("{u:.1}")),
        r.rss_mib.map_or("-".to_owned(), |m| format!("{m:.0} MiB")),
        r.load,
        r.tally.distinct,
        r.tally.duplicates,
        r.pending,
    );
}

/// The batch size's summary line, and whether it passes: the ratio gate, every entry delivered
/// and acknowledged by both sides.
fn summarize(batch_size: u32, pairs: &[(Replica, Replica)], ratios: &[f64]) -> (String, bool) {
    let median = |values: Vec<f64>| Summary::of(&values).map_or(f64::NAN, |s| s.median);
    let ratio = median(ratios.to_vec());
    let a_rate = median(pairs.iter().map(|(a, _)| a.rate).collect());
    let b_rate = median(pairs.iter().map(|(_, b)| b.rate).collect());
    let a_cpu = median(pairs.iter().map(|(a, _)| a.cpu_us).collect());
    let b_cpu = median(pairs.iter().map(|(_, b)| b.cpu_us).collect());
    let complete = pairs
        .iter()
        .flat_map(|(a, b)| [a, b])
        .all(|r| r.pending == 0 && r.tally.bad_requests == 0);
    let pass = ratio >= TARGET_RATIO && complete;
    let line = format!(
        "S6 batch {batch_size}: B/A median {ratio:.3} (ratios {}) — R6 {a_rate:.0}/s {a_cpu:.1} µs/event, Impulse {b_rate:.0}/s {b_cpu:.1} µs/event, all acknowledged: {} → {}",
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
        if complete { "yes" } else { "NO" },
        if pass { "PASS" } else { "FAIL" }
    );
    (line, pass)
}

// === A: R6, the raw loop ===

/// Starts R6 in a process of its own: this binary with `--r6-child`.
fn spawn_r6(config: &BaselineConfig) -> anyhow::Result<SideProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("--r6-child")
        .arg(serde_json::to_string(config)?);
    SideProcess::spawn(work_dir("impulse-bench-r6-")?, &mut command, "R6's process")
}

/// R6's process: `concurrency` read-POST-ack loops until SIGTERM; then each loop finishes the
/// batch it holds, so that R6 leaves nothing pending, as Impulse does.
async fn r6_child(config: BaselineConfig) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let config = Arc::new(config);
    let poster = impulse_benches::Poster::new(&config.endpoint)?;
    let (stop, stopped) = watch::channel(false);
    let mut loops = JoinSet::new();
    for consumer in 0..config.concurrency {
        loops.spawn(read_post_ack(
            config.clone(),
            poster.clone(),
            consumer,
            stopped.clone(),
        ));
    }
    tokio::select! {
        _ = terminate.recv() => {}
        Some(ended) = loops.join_next() => anyhow::bail!("an R6 loop ended: {ended:?}"),
    }
    stop.send(true).ok();
    while let Some(ended) = loops.join_next().await {
        ended??;
    }
    Ok(())
}

async fn read_post_ack(
    config: Arc<BaselineConfig>,
    poster: impulse_benches::Poster,
    consumer: u32,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // A connection of its own: a blocking read holds it.
    let mut redis = connect(&config.url).await?;
    let options = StreamReadOptions::default()
        .group(&config.group, format!("r6-{consumer}"))
        .count(config.batch_size)
        .block(1000);
    while !*stopped.borrow() {
        let reply: StreamReadReply = redis
            .xread_options(&[&config.stream], &[">"], &options)
            .await?;
        let entries: Vec<RedisEntry> = reply
            .keys
            .into_iter()
            .flat_map(|key| key.ids)
            .map(|entry| RedisEntry {
                fields: entry
                    .map
                    .into_iter()
                    .map(|(name, value)| {
                        let value = match value {
                            redis::Value::BulkString(bytes) => Bytes::from(bytes),
                            _ => Bytes::new(),
                        };
                        (Bytes::from(name), value)
                    })
                    .collect(),
                id: entry.id,
                delivery_count: 1,
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        let body = encode_event(&config.stream, &config.group, &entries);
        poster.post_event(body, FUNCTION_TIMEOUT).await?;
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        redis
            .xack::<_, _, _, ()>(&config.stream, &config.group, &ids)
            .await?;
    }
    Ok(())
}
