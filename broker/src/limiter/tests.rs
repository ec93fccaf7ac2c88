//! Limiter tests: caps under overload, each throttle, rates on tokio's paused clock, waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use impulse_config::{Config, FunctionConfig, RateConfig};
use impulse_test_support::metrics::RecordedMetrics;
use serde_json::json;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready, task};

use super::{Limiter, Throttle};

// === helpers ===

/// A function with the given limits (its target is never called). Built from JSON so that the
/// other fields keep their serde defaults.
fn function(reserved: Option<u32>, rate: Option<RateConfig>) -> FunctionConfig {
    let mut function = json!({ "target": { "type": "http", "endpoint": "http://127.0.0.1:9/" } });
    if let Some(reserved) = reserved {
        function["reserved_concurrency"] = json!(reserved);
    }
    if let Some(RateConfig { per_second, burst }) = rate {
        function["rate"] = json!({ "per_second": per_second, "burst": burst });
    }
    serde_json::from_value(function).expect("a valid function config")
}

/// A rate no test reaches.
fn ample_rate() -> Option<RateConfig> {
    rate(1_000_000, 1_000_000)
}

fn rate(per_second: u32, burst: u32) -> Option<RateConfig> {
    Some(RateConfig {
        per_second,
        burst: Some(burst),
    })
}

fn limiter(account: u32, functions: Vec<(&str, FunctionConfig)>) -> Limiter {
    let mut config = Config::default();
    config.limits.account_concurrency = account;
    config.functions = functions
        .into_iter()
        .map(|(name, f)| (name.to_owned(), f))
        .collect();
    Limiter::new(&config)
}

/// In-flight attempts: the current count and the highest seen.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl InFlight {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// Spawns `tasks` attempts of `function` that acquire, hold for 10 ms (tokio time) and release,
/// each counted in every one of `gauges`. Returns when all have finished.
async fn overload(
    limiter: &Limiter,
    function: &'static str,
    tasks: usize,
    gauges: &[Arc<InFlight>],
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|_| {
            let limiter = limiter.clone();
            let gauges = gauges.to_vec();
            tokio::spawn(async move {
                let permit = limiter
                    .acquire(function)
                    .await
                    .expect("function is enabled");
                gauges.iter().for_each(|g| g.enter());
                tokio::time::sleep(Duration::from_millis(10)).await;
                gauges.iter().for_each(|g| g.leave());
                drop(permit);
            })
        })
        .collect()
}

async fn join_all(handles: Vec<tokio::task::JoinHandle<()>>) {
    for handle in handles {
        handle.await.expect("task does not panic");
    }
}

// === concurrency ===

#[tokio::test(start_paused = true)]
async fn reserved_concurrency_holds_under_tenfold_overload() {
    let limiter = limiter(1000, vec![("f", function(Some(5), ample_rate()))]);
    let in_flight = Arc::new(InFlight::default());
    let handles = overload(&limiter, "f", 50, &[Arc::clone(&in_flight)]).await;
    join_all(handles).await;
    assert_eq!(
        in_flight.max(),
        5,
        "never above the cap, and the cap is used"
    );
    assert_eq!(in_flight.now.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn unreserved_pool_is_shared_and_account_cap_holds() {
    // Account 10: `a` reserves 4, so `b` and `c` share a pool of 6.
    let limiter = limiter(
        10,
        vec![
            ("a", function(Some(4), ample_rate())),
            ("b", function(None, ample_rate())),
            ("c", function(None, ample_rate())),
        ],
    );
    let account = Arc::new(InFlight::default());
    let a = Arc::new(InFlight::default());
    let pool = Arc::new(InFlight::default());
    let mut handles = overload(&limiter, "a", 40, &[Arc::clone(&account), Arc::clone(&a)]).await;
    handles.extend(
        overload(
            &limiter,
            "b",
            30,
            &[Arc::clone(&account), Arc::clone(&pool)],
        )
        .await,
    );
    handles.extend(
        overload(
            &limiter,
            "c",
            30,
            &[Arc::clone(&account), Arc::clone(&pool)],
        )
        .await,
    );
    join_all(handles).await;
    assert_eq!(a.max(), 4);
    assert_eq!(
        pool.max(),
        6,
        "b and c together stay within the unreserved pool"
    );
    assert_eq!(account.max(), 10);
}

#[tokio::test(start_paused = true)]
async fn reserved_slots_are_guaranteed_while_the_pool_is_full() {
    let limiter = limiter(
        3,
        vec![
            ("a", function(Some(1), ample_rate())),
            ("b", function(None, ample_rate())),
        ],
    );
    let _b1 = limiter.try_acquire("b").expect("pool slot 1");
    let _b2 = limiter.try_acquire("b").expect("pool slot 2");
    assert_eq!(
        limiter.try_acquire("b").map(|_| ()),
        Err(Throttle::AccountConcurrency)
    );
    let _a = limiter
        .try_acquire("a")
        .expect("a's reserved slot is its own");
}

// === try_acquire ===

#[tokio::test(start_paused = true)]
async fn try_acquire_reports_each_throttle() {
    let limiter = limiter(
        4,
        vec![
            ("reserved", function(Some(1), ample_rate())),
            ("disabled", function(Some(0), None)),
            ("shared", function(None, ample_rate())),
            ("slow", function(Some(1), rate(1, 1))),
        ],
    );
    let refuse = |name: &str| limiter.try_acquire(name).map(|_| ()).unwrap_err();

    let held = limiter.try_acquire("reserved").expect("a free slot");
    assert_eq!(refuse("reserved"), Throttle::ReservedConcurrency);
    drop(held);
    let held = limiter.try_acquire("reserved").expect("the released slot");
    drop(held);

    // The pool is 4 − 1 − 0 − 1 = 2.
    let one = limiter.try_acquire("shared").expect("pool slot 1");
    let _two = limiter.try_acquire("shared").expect("pool slot 2");
    assert_eq!(refuse("shared"), Throttle::AccountConcurrency);
    drop(one);
    let _three = limiter
        .try_acquire("shared")
        .expect("the released pool slot");

    drop(limiter.try_acquire("slow").expect("the burst of 1"));
    assert_eq!(refuse("slow"), Throttle::Rate);
    tokio::time::advance(Duration::from_secs(1)).await;
    drop(limiter.try_acquire("slow").expect("a second later"));

    assert_eq!(refuse("disabled"), Throttle::Disabled);
    assert!(
        limiter.admission("nope").is_none(),
        "no admission for an unknown name"
    );

    let expected = [
        (
            Throttle::ReservedConcurrency,
            "ReservedFunctionConcurrentInvocationLimitExceeded",
        ),
        (
            Throttle::AccountConcurrency,
            "ConcurrentInvocationLimitExceeded",
        ),
        (Throttle::Rate, "CallerRateLimitExceeded"),
        (
            Throttle::Disabled,
            "ReservedFunctionConcurrentInvocationLimitExceeded",
        ),
    ];
    for (throttle, reason) in expected {
        assert_eq!(throttle.reason(), reason);
        assert_eq!(throttle.message(), "Rate Exceeded.");
        assert_eq!(throttle.error_type(), "TooManyRequestsException");
    }
}

#[tokio::test(start_paused = true)]
async fn rate_refusal_gives_the_slot_back() {
    let limiter = limiter(1000, vec![("f", function(Some(1), rate(1, 1)))]);
    drop(limiter.try_acquire("f").expect("the burst"));
    assert_eq!(
        limiter.try_acquire("f").map(|_| ()),
        Err(Throttle::Rate),
        "refused by the rate, not by the slot the first call released"
    );
    assert_eq!(
        limiter.try_acquire("f").map(|_| ()),
        Err(Throttle::Rate),
        "the refused call did not keep the slot"
    );
}

// === disabled and impossible ===

#[tokio::test]
async fn disabled_function_is_refused_by_both() {
    let limiter = limiter(10, vec![("off", function(Some(0), None))]);
    assert_eq!(
        limiter.try_acquire("off").map(|_| ()),
        Err(Throttle::Disabled)
    );
    assert_eq!(
        limiter.acquire("off").await.map(|_| ()),
        Err(Throttle::Disabled)
    );
}

#[tokio::test]
async fn acquire_from_an_empty_pool_fails_instead_of_hanging() {
    // Reserved concurrency takes the whole account: `b` can never run.
    let limiter = limiter(
        2,
        vec![("a", function(Some(2), None)), ("b", function(None, None))],
    );
    assert_eq!(
        limiter.acquire("b").await.map(|_| ()),
        Err(Throttle::AccountConcurrency)
    );
    let _a = limiter.acquire("a").await.expect("a has its own slots");
}

// === rates ===

#[tokio::test(start_paused = true)]
async fn acquire_rate_is_within_two_percent_over_ten_seconds() {
    let limiter = limiter(1000, vec![("f", function(Some(50), rate(100, 10)))]);
    let start = Instant::now();
    let mut admitted = 0_u32;
    while start.elapsed() < Duration::from_secs(10) {
        drop(limiter.acquire("f").await.expect("enabled"));
        admitted += 1;
    }
    assert_within_two_percent(admitted, 1000 + 10);
}

#[tokio::test(start_paused = true)]
async fn try_acquire_rate_is_within_two_percent_over_ten_seconds() {
    let limiter = limiter(1000, vec![("f", function(Some(50), rate(100, 10)))]);
    let start = Instant::now();
    let mut admitted = 0_u32;
    while start.elapsed() < Duration::from_secs(10) {
        match limiter.try_acquire("f") {
            Ok(permit) => {
                drop(permit);
                admitted += 1;
            }
            Err(Throttle::Rate) => tokio::time::advance(Duration::from_micros(100)).await,
            Err(other) => panic!("unexpected throttle {other:?}"),
        }
    }
    assert_within_two_percent(admitted, 1000 + 10);
}

fn assert_within_two_percent(admitted: u32, expected: u32) {
    let error = (f64::from(admitted) - f64::from(expected)).abs() / f64::from(expected);
    assert!(
        error <= 0.02,
        "admitted {admitted}, expected {expected} ± 2%"
    );
}

#[tokio::test(start_paused = true)]
async fn default_rate_is_ten_times_concurrency_with_equal_burst() {
    // Reserved 2: 20 per second, burst 20. Unreserved pool 1000 − 2: 9980 per second.
    let limiter = limiter(
        1000,
        vec![("r", function(Some(2), None)), ("u", function(None, None))],
    );
    for _ in 0..20 {
        drop(limiter.try_acquire("r").expect("within the burst"));
    }
    assert_eq!(limiter.try_acquire("r").map(|_| ()), Err(Throttle::Rate));
    tokio::time::advance(Duration::from_millis(50)).await;
    drop(limiter.try_acquire("r").expect("one cell per 50 ms"));

    for _ in 0..9980 {
        drop(limiter.try_acquire("u").expect("within the burst"));
    }
    assert_eq!(limiter.try_acquire("u").map(|_| ()), Err(Throttle::Rate));
}

#[tokio::test(start_paused = true)]
async fn burst_defaults_to_the_configured_rate() {
    let limiter = limiter(
        1000,
        vec![(
            "f",
            function(
                Some(100),
                Some(RateConfig {
                    per_second: 5,
                    burst: None,
                }),
            ),
        )],
    );
    for _ in 0..5 {
        drop(limiter.try_acquire("f").expect("within the burst"));
    }
    assert_eq!(limiter.try_acquire("f").map(|_| ()), Err(Throttle::Rate));
}

// === waiting ===

#[tokio::test]
async fn acquire_waits_while_full_and_proceeds_on_release() {
    let limiter = limiter(1000, vec![("f", function(Some(1), ample_rate()))]);
    let held = limiter.acquire("f").await.expect("a free slot");

    let mut waiting = task::spawn(limiter.acquire("f"));
    assert_pending!(waiting.poll());
    drop(held);
    assert!(waiting.is_woken(), "the release wakes the waiter");
    assert!(assert_ready!(waiting.poll()).is_ok(), "admitted");
}

#[tokio::test]
async fn acquire_admits_waiters_in_order() {
    let limiter = limiter(1000, vec![("f", function(Some(1), ample_rate()))]);
    let held = limiter.acquire("f").await.expect("a free slot");
    let mut first = task::spawn(limiter.acquire("f"));
    let mut second = task::spawn(limiter.acquire("f"));
    assert_pending!(first.poll());
    assert_pending!(second.poll());

    drop(held);
    assert_pending!(second.poll(), "the slot goes to the first waiter");
    assert_eq!(
        limiter.try_acquire("f").map(|_| ()),
        Err(Throttle::ReservedConcurrency),
        "nor can try_acquire take it"
    );
    let permit = assert_ready!(first.poll()).expect("admitted");
    drop(permit);
    assert!(assert_ready!(second.poll()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn acquire_waits_for_the_rate_and_gives_the_slot_back_if_cancelled() {
    let limiter = limiter(1000, vec![("f", function(Some(1), rate(1, 1)))]);
    drop(limiter.acquire("f").await.expect("the burst"));

    let mut waiting = task::spawn(limiter.acquire("f"));
    assert_pending!(waiting.poll(), "the rate is spent");
    assert_eq!(
        limiter.try_acquire("f").map(|_| ()),
        Err(Throttle::ReservedConcurrency),
        "the waiter holds the slot while it waits for the rate"
    );
    drop(waiting);
    assert_eq!(
        limiter.try_acquire("f").map(|_| ()),
        Err(Throttle::Rate),
        "the cancelled waiter gave the slot back"
    );

    let mut waiting = task::spawn(limiter.acquire("f"));
    assert_pending!(waiting.poll());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(waiting.is_woken());
    assert!(assert_ready!(waiting.poll()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn rate_waiters_are_admitted_in_order_one_interval_apart() {
    let limiter = limiter(1000, vec![("f", function(Some(10), rate(10, 1)))]);
    let start = Instant::now();
    let order = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..5_u32)
        .map(|i| {
            let limiter = limiter.clone();
            let order = Arc::clone(&order);
            tokio::spawn(async move {
                let _permit = limiter.acquire("f").await.expect("enabled");
                order
                    .lock()
                    .expect("not poisoned")
                    .push((i, start.elapsed()));
            })
        })
        .collect();
    join_all(handles).await;
    let order = order.lock().expect("not poisoned").clone();
    let expected: Vec<_> = (0..5_u32)
        .map(|i| (i, Duration::from_millis(100) * i))
        .collect();
    assert_eq!(order, expected);
}

// === telemetry ===

/// The metrics the test recorded.
#[derive(Debug, Default)]
struct Recorded(RecordedMetrics);

impl Recorded {
    fn get(&self, series: &str) -> Option<f64> {
        self.0.value(series)
    }

    fn series(&self) -> Vec<String> {
        self.0.series()
    }
}

const GAUGE: &str = "impulse_concurrent_executions{function=f}";
const CONCURRENCY: &str = "impulse_throttles_total{function=f,limit=concurrency}";
const RATE: &str = "impulse_throttles_total{function=f,limit=rate}";

#[tokio::test(start_paused = true)]
async fn try_acquire_counts_refusals_and_tracks_executions() {
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    let limiter = limiter(
        1000,
        vec![
            ("f", function(Some(2), rate(1, 3))),
            ("off", function(Some(0), None)),
        ],
    );

    let one = limiter.try_acquire("f").expect("slot 1");
    let two = limiter.try_acquire("f").expect("slot 2");
    assert_eq!(recorder.get(GAUGE), Some(2.0));
    assert!(limiter.try_acquire("f").is_err());
    assert_eq!(recorder.get(CONCURRENCY), Some(1.0));
    drop(one);
    assert_eq!(recorder.get(GAUGE), Some(1.0));
    drop(two);
    assert_eq!(recorder.get(GAUGE), Some(0.0));

    drop(limiter.try_acquire("f").expect("the burst's third cell"));
    assert!(limiter.try_acquire("f").is_err());
    assert_eq!(recorder.get(RATE), Some(1.0));
    assert_eq!(
        recorder.get(GAUGE),
        Some(0.0),
        "a rate refusal holds no slot"
    );

    assert!(limiter.try_acquire("off").is_err());
    assert!(limiter.admission("never-configured").is_none());
    assert_eq!(
        recorder.series(),
        [
            "impulse_concurrency_limit{function=f}",
            "impulse_concurrency_limit{function=off}",
            "impulse_concurrent_executions{function=f}",
            "impulse_concurrent_executions{function=off}",
            "impulse_max_event_age_seconds{function=f}",
            "impulse_max_event_age_seconds{function=off}",
            "impulse_throttles_total{function=f,limit=concurrency}",
            "impulse_throttles_total{function=f,limit=rate}",
            "impulse_throttles_total{function=off,limit=concurrency}",
        ],
        "unknown names never become labels"
    );
}

#[test]
fn each_functions_limits_are_published_for_dashboards() {
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    let mut aged = function(None, None);
    aged.max_event_age = Duration::from_secs(60);
    let _limiter = limiter(
        100,
        vec![("reserved", function(Some(30), None)), ("shared", aged)],
    );
    assert_eq!(
        recorder.get("impulse_concurrency_limit{function=reserved}"),
        Some(30.0)
    );
    assert_eq!(
        recorder.get("impulse_concurrency_limit{function=shared}"),
        Some(70.0),
        "an unreserved function can reach the account's unreserved pool"
    );
    assert_eq!(
        recorder.get("impulse_max_event_age_seconds{function=shared}"),
        Some(60.0)
    );
    assert_eq!(
        recorder.get("impulse_max_event_age_seconds{function=reserved}"),
        Some(21600.0),
        "Lambda's default, 6 h"
    );
}

#[tokio::test(start_paused = true)]
async fn acquire_counts_one_throttle_per_limit_it_waits_for() {
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    let limiter = limiter(1000, vec![("f", function(Some(1), rate(1, 1)))]);

    let held = limiter
        .acquire("f")
        .await
        .expect("a free slot and the burst");
    assert_eq!(recorder.get(CONCURRENCY), None);
    assert_eq!(recorder.get(RATE), None);

    // Waits for the slot, then for the rate: one throttle of each.
    let mut waiting = task::spawn(limiter.acquire("f"));
    assert_pending!(waiting.poll());
    drop(held);
    assert_pending!(waiting.poll());
    tokio::time::advance(Duration::from_secs(1)).await;
    let permit = assert_ready!(waiting.poll()).expect("admitted");
    assert_eq!(recorder.get(CONCURRENCY), Some(1.0));
    assert_eq!(recorder.get(RATE), Some(1.0));
    assert_eq!(recorder.get(GAUGE), Some(1.0));
    drop(permit);
    assert_eq!(recorder.get(GAUGE), Some(0.0));
}

// === cluster scope, Redis unreachable ===

/// A TCP proxy in front of the real Redis that a test cuts (every connection and the listener)
/// and restores on the same address, to make Redis unreachable for the limiter alone.
struct Proxy {
    addr: std::net::SocketAddr,
    upstream: String,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(Self::serve(listener, upstream.to_owned()));
        Self {
            addr,
            upstream: upstream.to_owned(),
            task,
        }
    }

    async fn serve(listener: tokio::net::TcpListener, upstream: String) {
        // Dropped with the task: aborts every proxied connection.
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            connections.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                        .await
                        .ok();
                }
            });
        }
    }

    async fn cut(&self) {
        self.task.abort();
        // Wait until the listener is closed: connecting is refused.
        impulse_test_support::wait::eventually("the proxy to close", WAIT, async || {
            match tokio::net::TcpStream::connect(self.addr).await {
                Err(_) => Ok(()),
                Ok(_) => Err("still accepting".to_owned()),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn restore(&mut self) {
        let listener =
            impulse_test_support::wait::eventually("the address again", WAIT, async || {
                tokio::net::TcpListener::bind(self.addr)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.task = tokio::spawn(Self::serve(listener, self.upstream.clone()));
    }
}

const WAIT: Duration = Duration::from_secs(20);
const UNAVAILABLE: &str = "impulse_cluster_limits_unavailable_total{function=f}";

/// A cluster-scoped limiter whose Redis is behind a proxy; function `f` has 2 reserved slots.
async fn cluster_limiter(on_unavailable: &str) -> (Limiter, Proxy) {
    let url = impulse_test_support::services::require_redis().await;
    let upstream = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .expect("host:port")
        .to_owned();
    let proxy = Proxy::start(&upstream).await;
    let config = json!({
        "limits": {
            "scope": "cluster",
            "lease_time": "1s",
            "on_redis_unavailable": on_unavailable,
        },
        "queue": {
            "backend": "redis",
            "redis": {
                "url": format!("redis://{}", proxy.addr),
                "stream": format!("limiter-test-{}", uuid::Uuid::new_v4()),
            },
        },
        "functions": {
            "f": {
                "target": { "type": "http", "endpoint": "http://127.0.0.1:9/" },
                "reserved_concurrency": 2,
            },
        },
    });
    let config: Config = serde_json::from_value(config).expect("a valid config");
    let limiter = Limiter::connect(&config, "test")
        .await
        .expect("Redis is reachable");
    (limiter, proxy)
}

#[tokio::test]
async fn cluster_scope_denies_while_redis_is_unreachable_and_recovers() {
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    let (limiter, mut proxy) = cluster_limiter("deny").await;
    let f = limiter.admission("f").expect("configured");
    drop(f.try_acquire().await.expect("admitted on Redis"));

    proxy.cut().await;
    // A slot this instance still leases may be reused for a moment; then every call is refused.
    impulse_test_support::wait::eventually("a refusal without Redis", WAIT, async || {
        match f.try_acquire().await.map(drop) {
            Err(Throttle::ReservedConcurrency) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(recorder.get(UNAVAILABLE).unwrap_or(0.0) >= 1.0);
    // A queued caller waits rather than failing.
    let queued = tokio::spawn({
        let f = f.clone();
        async move { f.acquire().await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!queued.is_finished(), "a queued caller waits for Redis");

    proxy.restore().await;
    assert_eq!(
        tokio::time::timeout(WAIT, queued)
            .await
            .expect("admitted once Redis is back")
            .expect("join"),
        Ok(())
    );
    drop(f.try_acquire().await.expect("admitted on Redis again"));
}

#[tokio::test]
async fn cluster_scope_falls_back_to_local_limits_while_redis_is_unreachable() {
    let (limiter, proxy) = cluster_limiter("local").await;
    let f = limiter.admission("f").expect("configured");
    drop(f.try_acquire().await.expect("admitted on Redis"));

    proxy.cut().await;
    let one = f
        .try_acquire()
        .await
        .expect("admitted under the local limits");
    let two = f
        .try_acquire()
        .await
        .expect("admitted under the local limits");
    assert_eq!(
        f.try_acquire().await.map(drop),
        Err(Throttle::ReservedConcurrency),
        "the local limits still cap"
    );
    drop((one, two));
    drop(f.acquire().await.expect("a queued caller too"));
}
