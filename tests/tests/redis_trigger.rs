//! Redis stream triggers end to end against the real Redis and real `impulse` processes:
//! delivery in the documented event shape, partial batch responses, poison entries at
//! `on_failure` exactly once, `max_retry_attempts`, readiness while Redis is unreachable, and
//! several instances sharing a stream through one group while one of them is killed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use impulse_connectors::redis::read_stream;
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::{Impulse, Instance};
use impulse_tests::services::require_redis;
use impulse_tests::wait::{eventually, wait_until};
use redis::aio::MultiplexedConnection;
use redis::Value as RedisValue;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// Adds `n` entries `{n: i}` (plus `extra(i)` fields) to `stream`; returns their ids.
async fn add(
    conn: &mut MultiplexedConnection,
    stream: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let mut pipe = redis::pipe();
    for i in range {
        pipe.cmd("XADD").arg(stream).arg("*").arg("n").arg(i);
    }
    pipe.query_async(conn).await.expect("XADD")
}

/// Entries of `group` on `stream` delivered but not acknowledged.
async fn pending(conn: &mut MultiplexedConnection, stream: &str, group: &str) -> i64 {
    let reply: RedisValue = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
        .expect("XPENDING");
    match reply {
        RedisValue::Array(parts) => match parts.first() {
            Some(RedisValue::Int(n)) => *n,
            _ => -1,
        },
        _ => -1,
    }
}

async fn wait_settled(conn: &mut MultiplexedConnection, stream: &str, group: &str) {
    eventually("no entry left pending", WAIT, async || {
        match pending(conn, stream, group).await {
            0 => Ok(()),
            n => Err(format!("{n} pending")),
        }
    })
    .await
    .expect("settled");
}

/// The `n` field of each record of a Redis stream event, with its entry id.
fn entries(event: &Value) -> Vec<(String, usize)> {
    event["Records"]
        .as_array()
        .expect("Records")
        .iter()
        .map(|r| {
            let n = r["fields"]["n"]
                .as_str()
                .and_then(|n| n.parse().ok())
                .expect("field n");
            (r["id"].as_str().expect("id").to_owned(), n)
        })
        .collect()
}

/// One `http` function at `endpoint` and trigger `orders` on `stream` from the start;
/// `extra` lines end the trigger's table.
fn config(endpoint: &str, url: &str, stream: &str, extra: &str) -> String {
    format!(
        r#"
[functions.consumer]
target = {{ type = "http", endpoint = "{endpoint}" }}
timeout = "2s"   # below the visibility timeouts some tests set, which must exceed it

[triggers.orders]
type = "redis"
function = "consumer"
url = "{url}"
stream = "{stream}"
group = "{stream}-group"
starting_position = "earliest"
{extra}
"#
    )
}

#[tokio::test]
async fn entries_are_delivered_as_documented_and_acknowledged() {
    let url = require_redis().await;
    let stream = unique("orders");
    let group = format!("{stream}-group");
    let mut conn = connect(&url).await;
    let ids = add(&mut conn, &stream, 0..30).await;
    let binary: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("n")
        .arg("30")
        .arg("raw")
        .arg(&b"\xff\x00"[..])
        .query_async(&mut conn)
        .await
        .expect("XADD");
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let s = seen.clone();
    let function = FunctionServer::start(move |event: Value| {
        s.lock().expect("lock").push(event);
        async { axum::Json(json!({})) }
    })
    .await;
    let _impulse = Impulse::start(&config(
        &function.endpoint(),
        &url,
        &stream,
        "batch_size = 7",
    ))
    .await;

    wait_until("31 entries delivered", WAIT, || {
        seen.lock()
            .expect("lock")
            .iter()
            .map(|e| e["Records"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
            >= 31
    })
    .await;
    wait_settled(&mut conn, &stream, &group).await;
    let events = seen.lock().expect("lock").clone();
    assert!(events
        .iter()
        .all(|e| e["Records"].as_array().is_some_and(|r| r.len() <= 7)));
    let delivered: Vec<String> = events
        .iter()
        .flat_map(|e| e["Records"].as_array().cloned().unwrap_or_default())
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    let mut expected = ids.clone();
    expected.push(binary.clone());
    assert_eq!(delivered, expected, "every entry once, in stream order");
    let first = &events[0]["Records"][0];
    let millis: u64 = ids[0].split('-').next().unwrap().parse().unwrap();
    assert_eq!(
        first,
        &json!({
            "eventSource": "impulse:redis", "eventSourceARN": format!("impulse:redis:{stream}"),
            "stream": stream, "group": group, "id": ids[0], "timestamp": millis,
            "encoding": "utf-8", "fields": {"n": "0"},
        })
    );
    let last = events
        .iter()
        .flat_map(|e| e["Records"].as_array().cloned().unwrap_or_default())
        .last()
        .expect("a record");
    assert_eq!(last["id"], json!(binary));
    assert_eq!(last["encoding"], "base64");
    assert_eq!(last["fields"], json!({"bg==": "MzA=", "cmF3": "/wA="}));
}

#[tokio::test]
async fn poison_entries_reach_on_failure_once_after_max_retry_attempts_and_are_acknowledged() {
    let url = require_redis().await;
    let stream = unique("orders");
    let dlq = format!("{stream}-dlq");
    let group = format!("{stream}-group");
    let mut conn = connect(&url).await;
    let ids = add(&mut conn, &stream, 0..40).await;
    let poison: BTreeSet<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 == 3)
        .map(|(_, id)| id.clone())
        .collect();
    let invocations: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let (inv, bad) = (invocations.clone(), poison.clone());
    let function = FunctionServer::start(move |event: Value| {
        let (id, _) = entries(&event).remove(0);
        *inv.lock().expect("lock").entry(id.clone()).or_default() += 1;
        let fail = bad.contains(&id);
        async move {
            if fail {
                (StatusCode::INTERNAL_SERVER_ERROR, "poison").into_response()
            } else {
                axum::Json(json!({})).into_response()
            }
        }
    })
    .await;
    let extra = format!(
        r#"batch_size = 1
maximum_concurrency = 4
max_retry_attempts = 2
on_failure = {{ type = "redis", url = "{url}", stream = "{dlq}" }}"#
    );
    let impulse = Impulse::start(&config(&function.endpoint(), &url, &stream, &extra)).await;

    let dead = eventually("every poison entry at on_failure", WAIT, async || {
        let dead = read_stream(&url, &dlq, 100)
            .await
            .map_err(|e| e.to_string())?;
        if dead.len() >= poison.len() {
            Ok(dead)
        } else {
            Err(format!("{} of {}", dead.len(), poison.len()))
        }
    })
    .await
    .expect("dead letters");
    wait_settled(&mut conn, &stream, &group).await;
    let mut dead_ids = BTreeSet::new();
    for (_, _, record) in &dead {
        let context = &record["requestContext"];
        assert_eq!(context["condition"], "RetryAttemptsExhausted");
        assert_eq!(context["approximateInvokeCount"], 3);
        assert!(
            context["functionArn"]
                .as_str()
                .is_some_and(|arn| arn.contains(":function:consumer")),
            "{context}"
        );
        let info = &record["RedisStreamBatchInfo"];
        assert_eq!(info["stream"], json!(stream));
        assert_eq!(info["startId"], info["endId"]);
        let payload_ids: Vec<String> = entries(&record["payload"])
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(payload_ids, [info["startId"].as_str().unwrap().to_owned()]);
        assert!(
            dead_ids.insert(payload_ids[0].clone()),
            "dead-lettered twice"
        );
    }
    assert_eq!(dead_ids, poison, "exactly the poison entries, once each");
    let invocations = invocations.lock().expect("lock").clone();
    for id in &ids {
        let expected = if poison.contains(id) { 3 } else { 1 };
        assert_eq!(invocations.get(id), Some(&expected), "invocations of {id}");
    }
    let metrics = reqwest::get(impulse.admin_url("/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains(r#"impulse_redis_entries_received_total{trigger="orders"} 40"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_partial_batch_response_with_bisect_dead_letters_only_the_reported_entries() {
    let url = require_redis().await;
    let stream = unique("orders");
    let dlq = format!("{stream}-dlq");
    let group = format!("{stream}-group");
    let mut conn = connect(&url).await;
    let ids = add(&mut conn, &stream, 0..50).await;
    let poison: BTreeSet<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 == 4)
        .map(|(_, id)| id.clone())
        .collect();
    let delivered: Arc<Mutex<Vec<String>>> = Arc::default();
    let (d, bad) = (delivered.clone(), poison.clone());
    let function = FunctionServer::start(move |event: Value| {
        let batch = entries(&event);
        let failed: Vec<Value> = batch
            .iter()
            .filter(|(id, _)| bad.contains(id))
            .map(|(id, _)| json!({ "itemIdentifier": id }))
            .collect();
        // Entries before the first reported failure count as processed (Lambda's stream
        // checkpoint): record those only.
        let mut d = d.lock().expect("lock");
        for (id, _) in batch.iter().take_while(|(id, _)| !bad.contains(id)) {
            d.push(id.clone());
        }
        async move { axum::Json(json!({ "batchItemFailures": failed })) }
    })
    .await;
    let extra = format!(
        r#"batch_size = 10
report_batch_item_failures = true
bisect_batch_on_error = true
max_retry_attempts = 1
on_failure = {{ type = "redis", url = "{url}", stream = "{dlq}" }}"#
    );
    let _impulse = Impulse::start(&config(&function.endpoint(), &url, &stream, &extra)).await;

    let dead = eventually("every reported entry at on_failure", WAIT, async || {
        let dead = read_stream(&url, &dlq, 100)
            .await
            .map_err(|e| e.to_string())?;
        if dead.len() >= poison.len() {
            Ok(dead)
        } else {
            Err(format!("{} of {}", dead.len(), poison.len()))
        }
    })
    .await
    .expect("dead letters");
    wait_settled(&mut conn, &stream, &group).await;
    let dead_ids: Vec<String> = dead
        .iter()
        .map(|(_, _, r)| {
            r["RedisStreamBatchInfo"]["startId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        dead_ids.iter().cloned().collect::<BTreeSet<_>>(),
        poison,
        "only the reported entries"
    );
    assert_eq!(dead_ids.len(), poison.len(), "each once");
    let delivered: BTreeSet<String> = delivered.lock().expect("lock").iter().cloned().collect();
    let healthy: BTreeSet<String> = ids
        .iter()
        .filter(|id| !poison.contains(*id))
        .cloned()
        .collect();
    assert_eq!(delivered, healthy, "every other entry processed");
}

#[tokio::test]
async fn readyz_names_a_redis_trigger_whose_redis_is_unreachable() {
    let function = FunctionServer::start(|_| async { axum::Json(json!({})) }).await;
    let instance = Instance::new();
    let config = config(&function.endpoint(), "redis://127.0.0.1:1", "nowhere", "");
    let text = format!(
        "[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n\n[queue]\ndata_dir = {:?}\n{config}",
        instance.listen,
        instance.admin,
        instance.data_dir(),
    );
    std::fs::write(instance.config_path(), text).expect("write config");
    let mut child = std::process::Command::new(impulse_tests::impulse::binary())
        .arg("run")
        .arg("--config")
        .arg(instance.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn impulse");
    let readyz = format!("http://{}/readyz", instance.admin);
    let answer = eventually("/readyz to answer", WAIT, async || {
        let response = reqwest::get(&readyz).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.text().await.map_err(|e| e.to_string())?;
        if body.contains("triggers.orders") {
            Ok((status, body))
        } else {
            Err(format!("{status}: {body}"))
        }
    })
    .await;
    child.kill().ok();
    child.wait().ok();
    let (status, body) = answer.expect("readyz");
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("Redis is unreachable"), "{body}");
}

#[tokio::test]
async fn three_instances_share_a_stream_and_a_killed_one_loses_nothing() {
    const N: usize = 10_000;
    let url = require_redis().await;
    let stream = unique("orders");
    let group = format!("{stream}-group");
    let mut conn = connect(&url).await;
    let deliveries: Arc<Mutex<Vec<usize>>> = Arc::default();
    let d = deliveries.clone();
    let function = FunctionServer::start(move |event: Value| {
        let batch = entries(&event);
        d.lock()
            .expect("lock")
            .extend(batch.into_iter().map(|(_, n)| n));
        // A little work per batch, so that the killed instance has batches in flight.
        async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            axum::Json(json!({}))
        }
    })
    .await;
    // Each instance its own consumer name (its port) and a short visibility timeout, so
    // that the killed one's entries are claimed within the test.
    let trigger = config(
        &function.endpoint(),
        &url,
        &stream,
        "batch_size = 50\nmaximum_concurrency = 2\nvisibility_timeout = \"3s\"",
    );
    let instances: Vec<Instance> = (0..3).map(|_| Instance::new()).collect();
    let with_queue = |i: &Instance| format!("[queue]\ndata_dir = {:?}\n{trigger}", i.data_dir());
    let mut running = Vec::new();
    for instance in &instances {
        running.push(Impulse::start_in(instance, &with_queue(instance)).await);
    }
    let mut added = 0;
    while added < N {
        let next = (added + 1000).min(N);
        add(&mut conn, &stream, added..next).await;
        added = next;
        if added == 4000 {
            wait_until("deliveries under way", WAIT, || {
                deliveries.lock().expect("lock").len() >= 2000
            })
            .await;
            running[0].kill9();
        }
    }
    // The survivors claim what the killed instance held, once idle for the visibility timeout.
    let distinct = || {
        deliveries
            .lock()
            .expect("lock")
            .iter()
            .collect::<BTreeSet<_>>()
            .len()
    };
    wait_until("every entry delivered", WAIT, || distinct() >= N).await;
    // Nothing stays pending, the killed consumer's entries included: only a claim by a
    // survivor can acknowledge those while it is down.
    wait_settled(&mut conn, &stream, &group).await;
    let mut claimed = 0.0;
    for survivor in &running[1..] {
        let metrics = reqwest::get(survivor.admin_url("/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        claimed += metrics
            .lines()
            .find(|l| l.starts_with("impulse_redis_entries_claimed_total{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    // The killed instance comes back under the same consumer name, with nothing of its own
    // left pending, and joins the group again.
    running[0] = Impulse::start_in(&instances[0], &with_queue(&instances[0])).await;
    wait_settled(&mut conn, &stream, &group).await;
    let deliveries = deliveries.lock().expect("lock").clone();
    let distinct: BTreeSet<usize> = deliveries.iter().copied().collect();
    let lost = N - distinct.len();
    let duplicates = deliveries.len() - distinct.len();
    println!(
        "redis trigger, 3 instances, kill -9 of one: {N} entries, {} deliveries, lost {lost}, \
         duplicates {duplicates}, claimed by the survivors {claimed}",
        deliveries.len()
    );
    assert_eq!(lost, 0);
    // At most what the killed instance had in flight: its concurrency × batch size, plus
    // a batch of each read-ahead.
    assert!(duplicates <= 2 * 50 * 2, "{duplicates} duplicates");
    assert!(
        duplicates as f64 <= claimed,
        "only entries the killed instance held come twice"
    );
}

/// A Redis server of this test's own (the shared one must stay up for the other tests), with
/// every write fsynced to its append-only file.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = impulse_tests::impulse::free_addr().port();
        let mut redis = Self {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server on its port and directory (reloading the append-only file).
    fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (install it with `scripts/services.sh up redis`)");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    async fn connect(&self) -> MultiplexedConnection {
        let url = self.url();
        eventually("the private Redis to answer", WAIT, async || {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let _: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(conn)
        })
        .await
        .expect("private redis")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test]
async fn a_redis_restart_mid_stream_loses_nothing_and_readyz_tells() {
    const N: usize = 2000;
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let mut conn = redis.connect().await;
    let stream = "orders";
    let group = "orders-group";
    let deliveries: Arc<Mutex<Vec<usize>>> = Arc::default();
    let d = deliveries.clone();
    let function = FunctionServer::start(move |event: Value| {
        d.lock()
            .expect("lock")
            .extend(entries(&event).into_iter().map(|(_, n)| n));
        async { axum::Json(json!({})) }
    })
    .await;
    let impulse = Impulse::start(&config(
        &function.endpoint(),
        &url,
        stream,
        "batch_size = 20\nvisibility_timeout = \"5s\"",
    ))
    .await;
    add(&mut conn, stream, 0..N / 2).await;
    wait_until("deliveries under way", WAIT, || {
        !deliveries.lock().expect("lock").is_empty()
    })
    .await;
    redis.kill9();
    let readyz = impulse.admin_url("/readyz");
    let unready = eventually("/readyz to name the trigger", WAIT, async || {
        let response = reqwest::get(&readyz).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.text().await.map_err(|e| e.to_string())?;
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && body.contains("triggers.orders") {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    })
    .await;
    redis.restart();
    let mut conn = redis.connect().await;
    unready.expect("not ready while Redis is down");
    add(&mut conn, stream, N / 2..N).await;
    wait_until("every entry delivered", WAIT, || {
        deliveries
            .lock()
            .expect("lock")
            .iter()
            .collect::<BTreeSet<_>>()
            .len()
            >= N
    })
    .await;
    wait_settled(&mut conn, stream, group).await;
    eventually("/readyz to answer 200 again", WAIT, async || {
        let response = reqwest::get(&readyz).await.map_err(|e| e.to_string())?;
        match response.status() {
            reqwest::StatusCode::OK => Ok(()),
            status => Err(status.to_string()),
        }
    })
    .await
    .expect("ready again");
    let deliveries = deliveries.lock().expect("lock").clone();
    let distinct: BTreeSet<usize> = deliveries.iter().copied().collect();
    println!(
        "redis trigger, Redis killed and restarted (AOF, fsync always): {N} entries, {} \
         deliveries, lost {}, duplicates {}",
        deliveries.len(),
        N - distinct.len(),
        deliveries.len() - distinct.len()
    );
    assert_eq!(distinct.len(), N);
}
