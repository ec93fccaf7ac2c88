//! `[limits] scope = "cluster"`: three `impulse` processes sharing one Redis admit, together,
//! no more than one function's reserved concurrency and rate; a killed instance's slots come
//! back within the lease time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::{Impulse, Instance};
use impulse_tests::services;
use impulse_tests::wait::{eventually, wait_until};
use serde_json::{json, Value};

const INSTANCES: usize = 3;
/// The lease time of these clusters: short, so that the kill test is quick.
const LEASE_TIME: Duration = Duration::from_secs(2);
const SETTLE: Duration = Duration::from_secs(90);

/// Three instances of one cluster, and the stream that names it (its keys are removed on drop).
struct Cluster {
    instances: Vec<Impulse>,
    _dirs: Vec<Instance>,
    url: String,
    stream: String,
}

impl Cluster {
    /// Starts three instances of a cluster on a stream of its own, with `functions` (TOML).
    async fn start(functions: &str) -> Self {
        let url = services::require_redis().await;
        let stream = format!("impulse-cluster-limits-{}", uuid::Uuid::new_v4());
        let dirs: Vec<Instance> = (0..INSTANCES).map(|_| Instance::new()).collect();
        let mut instances = Vec::new();
        for dir in &dirs {
            let config = format!(
                r#"
[limits]
scope = "cluster"
lease_time = "{lease}s"

[queue]
backend = "redis"
data_dir = {data:?}

[queue.redis]
url = "{url}"
stream = "{stream}"

{functions}
"#,
                lease = LEASE_TIME.as_secs(),
                data = dir.data_dir(),
            );
            instances.push(Impulse::start_in(dir, &config).await);
        }
        Self {
            instances,
            _dirs: dirs,
            url,
            stream,
        }
    }

    fn invoke_url(&self, instance: usize, function: &str) -> String {
        self.instances[instance].url(&format!("/2015-03-31/functions/{function}/invocations"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for instance in &mut self.instances {
            instance.kill9();
        }
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        if let Ok(mut conn) = client.get_connection() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.stream))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query::<()>(&mut conn).ok();
            }
        }
    }
}

/// Counts the requests a slow target is serving at once, and the most it ever served.
#[derive(Debug, Default)]
struct Concurrency {
    now: AtomicUsize,
    peak: AtomicUsize,
    async_done: AtomicUsize,
}

/// What one synchronous call came back with.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Throttled,
}

async fn invoke_sync(client: &reqwest::Client, url: &str, body: &Value) -> Answer {
    let response = client
        .post(url)
        .header("x-amz-invocation-type", "RequestResponse")
        .json(body)
        .send()
        .await
        .expect("request");
    match response.status().as_u16() {
        200 => Answer::Ok,
        429 => {
            assert_eq!(
                response.headers()["x-amzn-errortype"],
                "TooManyRequestsException"
            );
            Answer::Throttled
        }
        other => panic!(
            "unexpected {other}: {}",
            response.text().await.unwrap_or_default()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserved_concurrency_holds_across_three_instances_under_tenfold_overload() {
    let seen = Arc::new(Concurrency::default());
    let target = seen.clone();
    let function = FunctionServer::start(move |event: Value| {
        let seen = target.clone();
        async move {
            let now = seen.now.fetch_add(1, SeqCst) + 1;
            seen.peak.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen.now.fetch_sub(1, SeqCst);
            if event["kind"] == "async" {
                seen.async_done.fetch_add(1, SeqCst);
            }
            axum::Json(json!({}))
        }
    })
    .await;
    let cluster = Cluster::start(&format!(
        r#"
[functions.capped]
target = {{ type = "http", endpoint = "{}" }}
reserved_concurrency = 5
"#,
        function.endpoint()
    ))
    .await;
    let client = reqwest::Client::new();

    // Asynchronous: 100 events, spread over the instances, all run eventually.
    const EVENTS: usize = 100;
    for i in 0..EVENTS {
        let response = client
            .post(cluster.invoke_url(i % INSTANCES, "capped"))
            .header("x-amz-invocation-type", "Event")
            .json(&json!({ "kind": "async", "i": i }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 202);
    }

    // Synchronous: 50 callers (10 × the cap) over the three instances for 3 s, beside the
    // queued events.
    let answers = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + Duration::from_secs(3);
    let callers: Vec<_> = (0..50)
        .map(|caller| {
            let (client, answers) = (client.clone(), answers.clone());
            let url = cluster.invoke_url(caller % INSTANCES, "capped");
            tokio::spawn(async move {
                while Instant::now() < until {
                    let answer = invoke_sync(&client, &url, &json!({ "kind": "sync" })).await;
                    answers.lock().expect("lock").push(answer);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
    wait_until("every queued event to run", SETTLE, || {
        seen.async_done.load(SeqCst) >= EVENTS
    })
    .await;

    let answers = answers.lock().expect("lock");
    let ok = answers.iter().filter(|a| **a == Answer::Ok).count();
    let throttled = answers.len() - ok;
    assert!(
        ok > 0 && throttled > 0,
        "{ok} admitted, {throttled} throttled"
    );
    let peak = seen.peak.load(SeqCst);
    assert!(
        peak <= 5,
        "the target saw {peak} at once with reserved_concurrency = 5 across the cluster"
    );
    assert_eq!(peak, 5, "the cap is used, not undershot");
    assert_eq!(seen.async_done.load(SeqCst), EVENTS, "each event ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_holds_across_three_instances_within_five_percent() {
    const RATE: usize = 50;
    const WINDOW: Duration = Duration::from_secs(20);
    let arrivals = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let recorded = arrivals.clone();
    let function = FunctionServer::start(move |_event: Value| {
        recorded.lock().expect("lock").push(Instant::now());
        async { axum::Json(json!({})) }
    })
    .await;
    let cluster = Cluster::start(&format!(
        r#"
[functions.paced]
target = {{ type = "http", endpoint = "{}" }}
rate = {{ per_second = {RATE} }}
"#,
        function.endpoint()
    ))
    .await;
    let client = reqwest::Client::new();

    // About 10 × the rate: 9 callers, each calling every 20 ms, three per instance; for the
    // window and a second on either side.
    let until = Instant::now() + WINDOW + Duration::from_secs(3);
    let callers: Vec<_> = (0..9)
        .map(|caller| {
            let client = client.clone();
            let url = cluster.invoke_url(caller % INSTANCES, "paced");
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut throttled = 0_usize;
                while Instant::now() < until {
                    tick.tick().await;
                    if invoke_sync(&client, &url, &json!({})).await == Answer::Throttled {
                        throttled += 1;
                    }
                }
                throttled
            })
        })
        .collect();
    let mut throttled = 0;
    for caller in callers {
        throttled += caller.await.expect("caller");
    }
    assert!(throttled > 0, "the callers overloaded the rate");

    // The first second may carry the burst; count a whole window after it.
    let arrivals = arrivals.lock().expect("lock");
    let first = *arrivals.first().expect("arrivals");
    let from = first + Duration::from_secs(1);
    let to = from + WINDOW;
    let counted = arrivals.iter().filter(|t| **t >= from && **t < to).count();
    let expected = RATE * usize::try_from(WINDOW.as_secs()).expect("small");
    let error = counted.abs_diff(expected) * 100;
    assert!(
        error <= expected * 5,
        "{counted} arrivals in {WINDOW:?} at {RATE}/s across the cluster; expected {expected} ± 5%"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_instances_slots_come_back_within_the_lease_time() {
    let holding = Arc::new(AtomicUsize::new(0));
    let hold = Arc::new(AtomicBool::new(true));
    let (counter, held) = (holding.clone(), hold.clone());
    let function = FunctionServer::start(move |event: Value| {
        let (counter, held) = (counter.clone(), held.clone());
        async move {
            if event["hold"] == true && held.load(SeqCst) {
                // Held until the test ends (or the caller goes away).
                counter.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            axum::Json(json!({}))
        }
    })
    .await;
    let mut cluster = Cluster::start(&format!(
        r#"
[functions.capped]
target = {{ type = "http", endpoint = "{}" }}
reserved_concurrency = 5
timeout = "120s"
"#,
        function.endpoint()
    ))
    .await;
    let client = reqwest::Client::new();

    // Instance 0 holds all five slots.
    let victim_url = cluster.invoke_url(0, "capped");
    let held_calls: Vec<_> = (0..5)
        .map(|_| {
            let (client, url) = (client.clone(), victim_url.clone());
            tokio::spawn(async move {
                // Never answered before the victim dies: the outcome does not matter.
                client
                    .post(url)
                    .header("x-amz-invocation-type", "RequestResponse")
                    .json(&json!({ "hold": true }))
                    .send()
                    .await
                    .ok();
            })
        })
        .collect();
    wait_until("the victim to hold every slot", SETTLE, || {
        holding.load(SeqCst) == 5
    })
    .await;
    let survivor = cluster.invoke_url(1, "capped");
    assert_eq!(
        invoke_sync(&client, &survivor, &json!({})).await,
        Answer::Throttled,
        "the survivor sees the victim's slots in use"
    );

    cluster.instances[0].kill9();
    let killed = Instant::now();
    hold.store(false, SeqCst);
    eventually(
        "a slot on the survivor",
        SETTLE,
        async || match invoke_sync(&client, &survivor, &json!({})).await {
            Answer::Ok => Ok(()),
            Answer::Throttled => Err("throttled".to_owned()),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let back_after = killed.elapsed();
    assert!(
        back_after <= LEASE_TIME + Duration::from_secs(1),
        "the victim's slots came back after {back_after:?}; the lease time is {LEASE_TIME:?}"
    );
    for call in held_calls {
        call.abort();
    }
}
