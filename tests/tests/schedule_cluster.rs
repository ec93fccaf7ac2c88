//! Three `impulse` processes from `examples/cluster.toml` share a Redis queue and a
//! `rate(1 second)` schedule; the instance that queued the newest tick is killed with SIGKILL
//! half-way. Every tick from the first to the last must reach the function exactly once.
//!
//! The issue asks for 60 s with the kill at 30 s; this runs 20 s with the kill at 10 s, which
//! exercises the same transitions (three claimers, then two, one of them taking over the
//! killed instance's ticks) in a third of the time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::{cli, Impulse, Instance};
use impulse_tests::services;
use impulse_tests::wait::eventually;
use serde_json::{json, Value};

/// How long each phase (three instances, then two) runs.
const PHASE: Duration = Duration::from_secs(10);
/// How long the ticks of the whole run may take to arrive: the phases, plus the queue's lease
/// timeout (the function's 3 s timeout + 60 s) in case the killed instance had leased a tick
/// that another instance must take over.
const SETTLE: Duration = Duration::from_secs(100);

/// Ticks the function received: tick time → the event ids it was invoked with.
type Ticks = Arc<Mutex<BTreeMap<DateTime<Utc>, Vec<String>>>>;

fn workspace_file(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

fn newest(ticks: &Ticks) -> Option<DateTime<Utc>> {
    ticks.lock().expect("lock").keys().next_back().copied()
}

async fn until_tick_at_or_after(ticks: &Ticks, at: DateTime<Utc>) {
    eventually(
        "a tick at or after the phase's end",
        PHASE * 2,
        async || match newest(ticks) {
            Some(tick) if tick >= at => Ok(()),
            other => Err(format!("newest tick {other:?}")),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

async fn redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connects")
}

#[test]
fn validate_accepts_the_cluster_example() {
    let out = cli(&[
        "validate",
        "--config",
        &workspace_file("examples/cluster.toml"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn three_instances_fire_each_tick_once_across_a_kill9() {
    let url = services::require_redis().await;
    let ticks: Ticks = Arc::default();
    let recorded = ticks.clone();
    let function = FunctionServer::start(move |event: Value| {
        let recorded = recorded.clone();
        async move {
            let time = event["time"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            let id = event["id"].as_str().map(str::to_owned);
            if let (Some(time), Some(id)) = (time, id) {
                recorded
                    .lock()
                    .expect("lock")
                    .entry(time)
                    .or_default()
                    .push(id);
            }
            axum::Json(json!({}))
        }
    })
    .await;

    let example =
        std::fs::read_to_string(workspace_file("examples/cluster.toml")).expect("the example");
    let stream = format!("impulse-cluster-test-{}", uuid::Uuid::new_v4());
    let config = example.replace(
        "stream = \"impulse:cluster\"",
        &format!("stream = \"{stream}\""),
    );
    assert_ne!(config, example, "the example names its stream");

    let instances: Vec<Instance> = (0..3).map(|_| Instance::new()).collect();
    let mut running = Vec::new();
    for instance in &instances {
        let data_dir = instance.data_dir();
        let data_dir = data_dir.to_str().expect("a UTF-8 path");
        let env = [
            ("IMPULSE_QUEUE_REDIS_URL", url.as_str()),
            ("IMPULSE_FUNCTION_HEARTBEAT_ENDPOINT", &function.endpoint()),
            ("IMPULSE_DATA_DIR", data_dir),
        ];
        running.push(Some(
            Impulse::start_in_with_env(instance, &config, &env).await,
        ));
    }

    // Phase 1: three instances.
    until_tick_at_or_after(&ticks, Utc::now() + PHASE).await;

    // Kill the instance that queued the newest tick: the claim holds its consumer name,
    // `<host>-<listen port>`.
    let last = newest(&ticks).expect("ticks arrived");
    let claim = format!("{stream}:claim:schedule/every_second/{}", last.timestamp());
    let holder: String = redis::cmd("GET")
        .arg(&claim)
        .query_async(&mut redis(&url).await)
        .await
        .expect("the newest tick is claimed");
    let victim = instances
        .iter()
        .position(|i| holder.ends_with(&format!("-{}", i.listen.port())))
        .unwrap_or_else(|| panic!("{holder} is one of the instances"));
    running[victim].as_mut().expect("running").kill9();
    let killed_at = Utc::now();

    // Phase 2: the other two.
    until_tick_at_or_after(&ticks, killed_at + PHASE).await;
    let first = *ticks.lock().expect("lock").keys().next().expect("ticks");
    let end = newest(&ticks).expect("ticks");

    // Every tick of the run arrives (one leased by the killed instance arrives once its lease
    // is taken over).
    let expected: BTreeSet<DateTime<Utc>> = (first.timestamp()..=end.timestamp())
        .map(|s| DateTime::from_timestamp(s, 0).expect("a time"))
        .collect();
    eventually("every tick of the run", SETTLE, async || {
        let received = ticks.lock().expect("lock");
        let missing: Vec<_> = expected
            .iter()
            .filter(|t| !received.contains_key(t))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let received = ticks.lock().expect("lock").clone();
    let doubled: Vec<_> = received
        .iter()
        .filter(|(tick, ids)| expected.contains(tick) && ids.len() != 1)
        .collect();
    assert!(
        doubled.is_empty(),
        "ticks invoked more than once: {doubled:?}"
    );
    let ids: BTreeSet<&String> = received.values().flatten().collect();
    assert_eq!(
        ids.len(),
        received.values().map(Vec::len).sum::<usize>(),
        "each tick has its own id"
    );
    assert!(
        expected.len() >= 18,
        "the run covered about 20 ticks: {}",
        expected.len()
    );

    drop(running);
    let mut conn = redis(&url).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{stream}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
}
