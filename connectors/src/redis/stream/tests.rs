//! The Redis stream source against the real Redis: group creation, batching, acknowledgement
//! only of final outcomes, and claiming entries a stopped consumer left pending.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use impulse_test_support::services::require_redis;
use impulse_test_support::wait::{eventually, wait_until};
use redis::aio::MultiplexedConnection;
use tokio::sync::oneshot;

use super::*;
use crate::contract::Outcome;

const WAIT: Duration = Duration::from_secs(20);

/// Records every batch and answers with `decide`'s outcome for each entry.
struct Recorder {
    seen: Mutex<Vec<Vec<RedisEntry>>>,
    decide: fn(&RedisEntry) -> Option<Outcome>,
}

impl BatchHandler<RedisBatch> for Recorder {
    fn handle(&self, batch: RedisBatch) -> BoxFuture<'_, (RedisBatch, BatchOutcome)> {
        Box::pin(async move {
            let mut outcome = BatchOutcome::unresolved(batch.entries.len());
            for (i, entry) in batch.entries.iter().enumerate() {
                if let Some(o) = (self.decide)(entry) {
                    outcome.resolve(i..i + 1, o);
                }
            }
            lock(&self.seen).push(batch.entries.clone());
            (batch, outcome)
        })
    }
}

impl Recorder {
    fn new(decide: fn(&RedisEntry) -> Option<Outcome>) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Vec::new()),
            decide,
        })
    }

    fn ids(&self) -> Vec<String> {
        lock(&self.seen)
            .iter()
            .flatten()
            .map(|e| e.id.clone())
            .collect()
    }
}

fn settings(url: &str, stream: &str, consumer: &str) -> RedisStreamSettings {
    RedisStreamSettings {
        trigger: "t".to_owned(),
        url: url.to_owned(),
        stream: stream.to_owned(),
        group: "g".to_owned(),
        consumer: consumer.to_owned(),
        start_id: "$".to_owned(),
        batch_size: 10,
        batch_window: Duration::ZERO,
        maximum_concurrency: 1,
        visibility_timeout: Duration::from_secs(60),
    }
}

async fn conn(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn add(conn: &mut MultiplexedConnection, stream: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("n")
            .arg(i)
            .query_async(conn)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn pending(conn: &mut MultiplexedConnection, stream: &str) -> i64 {
    let reply: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("g")
        .query_async(conn)
        .await
        .unwrap();
    match reply {
        Value::Array(parts) => match parts.first() {
            Some(Value::Int(n)) => *n,
            _ => -1,
        },
        _ => -1,
    }
}

async fn group_exists(conn: &mut MultiplexedConnection, stream: &str) -> bool {
    let groups: Result<Value, RedisError> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await;
    matches!(groups, Ok(Value::Array(g)) if !g.is_empty())
}

/// Runs `source` with `handler` until the returned sender fires.
fn spawn(
    source: RedisStreamSource,
    handler: Arc<Recorder>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        source
            .run(handler, async {
                // A dropped sender stops the source too.
                stopped.await.ok();
            })
            .await
            .unwrap();
    });
    (stop, task)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_starts_at_latest_and_batches_are_acked_after_their_outcome() {
    let url = require_redis().await;
    let stream = unique("impulse-src");
    let mut c = conn(&url).await;
    let before = add(&mut c, &stream, 3).await;
    let handler = Recorder::new(|_| Some(Outcome::Delivered));
    let source = RedisStreamSource::new(settings(&url, &stream, "a")).unwrap();
    let connected = source.connected();
    let (stop, task) = spawn(source, handler.clone());
    wait_until("the group exists", WAIT, || {
        connected.load(Ordering::Acquire)
    })
    .await;
    assert!(group_exists(&mut c, &stream).await);
    let after = add(&mut c, &stream, 25).await;
    wait_until("25 entries delivered", WAIT, || handler.ids().len() >= 25).await;
    let ids = handler.ids();
    assert_eq!(ids, after, "only entries added after the group, in order");
    assert!(!ids.iter().any(|id| before.contains(id)));
    assert!(
        lock(&handler.seen).iter().all(|b| b.len() <= 10),
        "batch_size holds"
    );
    assert!(lock(&handler.seen)
        .iter()
        .flatten()
        .all(|e| e.delivery_count == 1));
    eventually(
        "every delivered entry to be acknowledged",
        Duration::from_secs(5),
        async || match pending(&mut c, &stream).await {
            0 => Ok(()),
            n => Err(format!("{n} pending")),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    stop.send(()).unwrap();
    task.await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolved_entries_stay_pending_and_a_restart_reads_them_again() {
    let url = require_redis().await;
    let stream = unique("impulse-src");
    let mut c = conn(&url).await;
    let mut first = settings(&url, &stream, "a");
    first.start_id = "0".to_owned();
    let ids = add(&mut c, &stream, 4).await;
    // Odd entries get no outcome (as at shutdown): they must stay pending.
    let handler = Recorder::new(|e| {
        let n: u32 = std::str::from_utf8(&e.fields[0].1)
            .unwrap()
            .parse()
            .unwrap();
        n.is_multiple_of(2).then_some(Outcome::Delivered)
    });
    let (stop, task) = spawn(
        RedisStreamSource::new(first.clone()).unwrap(),
        handler.clone(),
    );
    wait_until("4 entries seen", WAIT, || handler.ids().len() >= 4).await;
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(pending(&mut c, &stream).await, 2, "the unresolved two");

    // The same consumer restarted resumes its pending entries at once, with their counts.
    let again = Recorder::new(|_| Some(Outcome::Delivered));
    let (stop, task) = spawn(RedisStreamSource::new(first).unwrap(), again.clone());
    wait_until("2 entries redelivered", WAIT, || again.ids().len() >= 2).await;
    assert_eq!(again.ids(), [ids[1].clone(), ids[3].clone()]);
    assert!(lock(&again.seen)
        .iter()
        .flatten()
        .all(|e| e.delivery_count == 2));
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(pending(&mut c, &stream).await, 0);
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_stopped_consumer_are_claimed_after_the_visibility_timeout() {
    let url = require_redis().await;
    let stream = unique("impulse-src");
    let mut c = conn(&url).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await
        .unwrap();
    let ids = add(&mut c, &stream, 3).await;
    // A consumer that reads and dies.
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("dead")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut live = settings(&url, &stream, "live");
    live.visibility_timeout = Duration::from_millis(500);
    let handler = Recorder::new(|_| Some(Outcome::Delivered));
    let source = RedisStreamSource::new(live).unwrap();
    let attempts = source.attempts();
    let (stop, task) = spawn(source, handler.clone());
    wait_until("3 entries claimed", WAIT, || handler.ids().len() >= 3).await;
    assert_eq!(handler.ids(), ids);
    assert!(
        lock(&handler.seen)
            .iter()
            .flatten()
            .all(|e| e.delivery_count == 2),
        "read once by the dead consumer, once by the claim"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(pending(&mut c, &stream).await, 0);
    assert_eq!(attempts.delivery_count(&ids[0]).await, None, "acked");
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_counts_are_set_in_redis() {
    let url = require_redis().await;
    let stream = unique("impulse-src");
    let mut c = conn(&url).await;
    let ids = add(&mut c, &stream, 1).await;
    let mut s = settings(&url, &stream, "a");
    s.start_id = "0".to_owned();
    let source = RedisStreamSource::new(s).unwrap();
    source.shared.ensure_group().await.unwrap();
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("a")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    let attempts = source.attempts();
    assert_eq!(attempts.delivery_count(&ids[0]).await, Some(1));
    attempts.set_delivery_count(&ids[0], 7).await;
    assert_eq!(attempts.delivery_count(&ids[0]).await, Some(7));
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_pending_plus_undelivered_entries() {
    let url = require_redis().await;
    let stream = unique("impulse-src");
    let mut c = conn(&url).await;
    add(&mut c, &stream, 5).await;
    let mut s = settings(&url, &stream, "a");
    s.start_id = "0".to_owned();
    let source = RedisStreamSource::new(s).unwrap();
    source.shared.ensure_group().await.unwrap();
    assert_eq!(
        source.shared.lag().await.unwrap(),
        Some(5),
        "none delivered"
    );
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("a")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        source.shared.lag().await.unwrap(),
        Some(5),
        "2 pending + 3 undelivered"
    );
    let first: Value = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    let id = parse_entries(first).remove(0).id;
    source.shared.ack(&[id]).await;
    assert_eq!(
        source.shared.lag().await.unwrap(),
        Some(4),
        "one acknowledged"
    );
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[test]
fn a_batch_stops_short_of_6_mb_of_event() {
    let big = |id: &str| RedisEntry {
        id: id.to_owned(),
        fields: vec![(Bytes::from_static(b"v"), Bytes::from(vec![b'x'; 2_000_000]))],
        delivery_count: 1,
    };
    let mut reader = Reader {
        conn: None,
        recovered: true,
        carry: ["1-0", "2-0", "3-0", "4-0"].into_iter().map(big).collect(),
        next_claim: Instant::now(),
        backoff: MIN_BACKOFF,
    };
    let (mut batch, mut bytes) = (Vec::new(), 0);
    take_carried(&mut reader, &mut batch, &mut bytes, 10);
    // 2 MB of text counts as up to 2.67 MB of event: two fit under 6 MB, a third does not.
    assert_eq!(batch.len(), 2);
    assert_eq!(reader.carry.len(), 2, "the rest waits for the next batch");
    let (mut batch, mut bytes) = (Vec::new(), 0);
    take_carried(&mut reader, &mut batch, &mut bytes, 1);
    assert_eq!(batch.len(), 1, "batch_size holds");
}

#[test]
fn a_read_fetches_a_batch_per_slot_within_the_read_ahead_limit() {
    let mut s = settings("redis://127.0.0.1", "s", "a");
    s.batch_size = 10;
    s.maximum_concurrency = 4;
    assert_eq!(s.read_count(0), 40, "a batch for each slot");
    assert_eq!(s.read_count(3), 37, "less what the batch being built has");
    s.maximum_concurrency = 1000;
    assert_eq!(s.read_count(0), READ_AHEAD_LIMIT);
    s.batch_size = 5000;
    assert_eq!(
        s.read_count(0),
        5000,
        "a batch larger than the limit is read whole"
    );
    assert_eq!(s.read_count(4999), 1);
}
