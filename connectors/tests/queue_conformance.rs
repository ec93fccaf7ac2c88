//! The async-queue conformance suite: one set of checks of the `Queue` contract, run against
//! every backend — the embedded queue (a temp dir) and the Redis queue (the Redis that
//! `scripts/services.sh up redis` runs, a unique stream per test).

#![cfg(all(feature = "embedded", feature = "redis"))]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::future::join_all;
use impulse_connectors::contract::{Delivery, PendingDestination, Queue, QueuedEvent};
use impulse_connectors::embedded::EmbeddedQueue;
use impulse_connectors::redis::RedisQueue;
use impulse_test_support::services::require_redis;
use uuid::Uuid;

/// Bound on anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(5);
/// How long "nothing is delivered" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// Redis lease timeout in the generic suite: long enough that the janitor never takes over a
/// lease during a test (the Redis-only test below shortens it).
const LEASE: Duration = Duration::from_secs(30);

/// A queue backend under test.
trait Backend: Send {
    type Q: Queue + Clone;

    /// The queue, connected to fresh storage the first time.
    fn open(&mut self) -> impl Future<Output = Self::Q> + Send;

    /// The same storage after a restart: `old` is dropped first.
    fn reopen(&mut self, old: Self::Q) -> impl Future<Output = Self::Q> + Send;

    /// Removes what the test left behind.
    fn cleanup(&mut self) -> impl Future<Output = ()> + Send;
}

struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }
}

impl Backend for Embedded {
    type Q = EmbeddedQueue;

    async fn open(&mut self) -> EmbeddedQueue {
        EmbeddedQueue::open(self.dir.path()).expect("the embedded queue opens")
    }

    async fn reopen(&mut self, old: EmbeddedQueue) -> EmbeddedQueue {
        // Dropping the last handle closes (and unlocks) the file.
        drop(old);
        self.open().await
    }

    async fn cleanup(&mut self) {}
}

struct Redis {
    url: String,
    stream: String,
    consumer: String,
}

impl Redis {
    async fn new() -> Self {
        let url = require_redis().await;
        Self {
            url,
            stream: format!("impulse-queue-test-{}", Uuid::new_v4()),
            consumer: "instance-1".to_owned(),
        }
    }
}

impl Backend for Redis {
    type Q = RedisQueue;

    async fn open(&mut self) -> RedisQueue {
        RedisQueue::connect(&self.url, &self.stream, &self.consumer, LEASE)
            .await
            .expect("the Redis queue connects")
    }

    async fn reopen(&mut self, old: RedisQueue) -> RedisQueue {
        // A restart: a new process with the same consumer name.
        drop(old);
        self.open().await
    }

    async fn cleanup(&mut self) {
        delete_stream(&self.url, &self.stream).await;
    }
}

async fn delete_stream(url: &str, stream: &str) {
    let deleted = async {
        let client = ::redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        ::redis::cmd("DEL")
            .arg(stream)
            .arg(format!("{stream}:delayed"))
            .arg(format!("{stream}:corrupt"))
            .query_async::<()>(&mut conn)
            .await
    }
    .await;
    if let Err(e) = deleted {
        eprintln!("cleaning up {stream}: {e}");
    }
}

// === helpers ===

fn event(id: &str) -> QueuedEvent {
    QueuedEvent::new(
        id.to_owned(),
        "resize".to_owned(),
        "uploads".to_owned(),
        Bytes::from(format!(r#"{{"id":"{id}","pad":"{}"}}"#, "x".repeat(64))),
    )
}

async fn next_within<Q: Queue>(queue: &Q, within: Duration) -> Delivery {
    tokio::time::timeout(within, queue.next())
        .await
        .expect("an event is delivered in time")
        .expect("next succeeds")
}

async fn assert_quiet<Q: Queue>(queue: &Q, why: &str) {
    if let Ok(delivered) = tokio::time::timeout(QUIET, queue.next()).await {
        panic!("{why}, but got {delivered:?}");
    }
}

/// Equality up to the millisecond truncation of `enqueued_at` by the encoding.
fn assert_same_event(got: &QueuedEvent, want: &QueuedEvent) {
    let millis = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis()
    };
    assert_eq!(millis(got.enqueued_at), millis(want.enqueued_at));
    let mut aligned = got.clone();
    aligned.enqueued_at = want.enqueued_at;
    assert_eq!(&aligned, want);
}

// === the suite ===

async fn enqueue_next_complete(mut backend: impl Backend) {
    let queue = backend.open().await;
    let events: Vec<QueuedEvent> = ["a", "b", "c"].into_iter().map(event).collect();
    for e in &events {
        queue.enqueue(e.clone()).await.expect("durable");
    }
    for want in &events {
        let delivery = next_within(&queue, PROMPT).await;
        assert_same_event(&delivery.event, want);
        queue.complete(delivery.lease).await.expect("completes");
    }
    assert_quiet(&queue, "every event was completed").await;

    let queue = backend.reopen(queue).await;
    assert_quiet(&queue, "completed events stay completed after a restart").await;
    backend.cleanup().await;
}

async fn reschedule_waits_for_its_delay(mut backend: impl Backend) {
    let queue = backend.open().await;
    queue.enqueue(event("slow")).await.expect("durable");
    let delivery = next_within(&queue, PROMPT).await;
    let mut retried = delivery.event.clone();
    retried.attempts += 1;
    retried.function_retries += 1;

    let delay = Duration::from_millis(700);
    let rescheduled_at = Instant::now();
    queue
        .reschedule(delivery.lease, retried.clone(), SystemTime::now() + delay)
        .await
        .expect("reschedules");
    let early = tokio::time::timeout(Duration::from_millis(500), queue.next()).await;
    assert!(early.is_err(), "delivered early: {early:?}");

    let again = next_within(&queue, PROMPT).await;
    let waited = rescheduled_at.elapsed();
    // Due times are whole milliseconds.
    assert!(
        waited + Duration::from_millis(2) >= delay,
        "delivered after {waited:?}, before its {delay:?} delay"
    );
    assert_same_event(&again.event, &retried);
    queue.complete(again.lease).await.expect("completes");
    assert_quiet(&queue, "the rescheduled event was completed").await;
    backend.cleanup().await;
}

async fn concurrent_callers_get_different_events(mut backend: impl Backend) {
    let queue = backend.open().await;
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move { next_within(&queue, PROMPT).await })
        })
        .collect();
    for i in 0..8 {
        queue
            .enqueue(event(&format!("e{i}")))
            .await
            .expect("durable");
    }
    let mut ids = HashSet::new();
    for caller in callers {
        let delivery = caller.await.expect("the caller finishes");
        assert!(
            ids.insert(delivery.event.id.clone()),
            "{} delivered twice",
            delivery.event.id
        );
        queue.complete(delivery.lease).await.expect("completes");
    }
    assert_eq!(ids.len(), 8);
    assert_quiet(&queue, "all eight were completed").await;
    backend.cleanup().await;
}

async fn unsettled_leases_are_redelivered_after_a_restart(mut backend: impl Backend) {
    let queue = backend.open().await;
    for id in ["done", "leased", "delayed"] {
        queue.enqueue(event(id)).await.expect("durable");
    }
    let done = next_within(&queue, PROMPT).await;
    assert_eq!(done.event.id, "done");
    queue.complete(done.lease).await.expect("completes");
    let leased = next_within(&queue, PROMPT).await;
    assert_eq!(leased.event.id, "leased");
    let delayed = next_within(&queue, PROMPT).await;
    assert_eq!(delayed.event.id, "delayed");
    let mut retried = delayed.event.clone();
    retried.attempts = 3;
    retried.function_retries = 2;
    retried.pending_destination = Some(PendingDestination {
        succeeded: false,
        record: Bytes::from_static(br#"{"responsePayload":{"errorType":"Boom"}}"#),
    });
    let delay = Duration::from_millis(400);
    queue
        .reschedule(delayed.lease, retried.clone(), SystemTime::now() + delay)
        .await
        .expect("reschedules");
    // The process dies with `leased` unsettled.

    let queue = backend.reopen(queue).await;
    let again = next_within(&queue, PROMPT).await;
    assert_same_event(&again.event, &leased.event);
    let later = next_within(&queue, PROMPT).await;
    assert_same_event(&later.event, &retried);
    queue.complete(again.lease).await.expect("completes");
    queue.complete(later.lease).await.expect("completes");
    assert_quiet(&queue, "`done` stays completed; the others are settled").await;
    backend.cleanup().await;
}

async fn a_thousand_concurrent_enqueues_are_durable_and_delivered_once(mut backend: impl Backend) {
    const N: usize = 1_000;
    let queue = backend.open().await;
    let enqueues = (0..N).map(|i| {
        let queue = queue.clone();
        tokio::spawn(async move { queue.enqueue(event(&format!("bulk-{i}"))).await })
    });
    for enqueued in join_all(enqueues).await {
        enqueued
            .expect("the producer finishes")
            .expect("every enqueue is durable");
    }
    // Durable: a restart loses none of them.
    let queue = backend.reopen(queue).await;

    let consumers = (0..4).map(|_| {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let Ok(delivery) = tokio::time::timeout(QUIET, queue.next()).await else {
                    return seen;
                };
                let delivery = delivery.expect("next succeeds");
                queue.complete(delivery.lease).await.expect("completes");
                seen.push(delivery.event.id);
            }
        })
    });
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    for seen in join_all(consumers).await {
        for id in seen.expect("the consumer finishes") {
            *deliveries.entry(id).or_default() += 1;
        }
    }
    assert_eq!(deliveries.len(), N, "every event delivered");
    let duplicated: Vec<_> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "delivered more than once: {duplicated:?}"
    );
    for i in 0..N {
        assert!(deliveries.contains_key(&format!("bulk-{i}")));
    }
    backend.cleanup().await;
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn enqueue_next_complete() {
                super::enqueue_next_complete($make).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reschedule_waits_for_its_delay() {
                super::reschedule_waits_for_its_delay($make).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_callers_get_different_events() {
                super::concurrent_callers_get_different_events($make).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unsettled_leases_are_redelivered_after_a_restart() {
                super::unsettled_leases_are_redelivered_after_a_restart($make).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_thousand_concurrent_enqueues_are_durable_and_delivered_once() {
                super::a_thousand_concurrent_enqueues_are_durable_and_delivered_once($make).await;
            }
        }
    };
}

conformance!(embedded, Embedded::new());
conformance!(redis, Redis::new().await);

// === Redis only ===

/// A consumer that dies with a lease: another instance's janitor claims the entry once it has
/// been idle for the lease timeout, and delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_dead_consumers_lease_is_claimed_after_the_lease_timeout() {
    let url = require_redis().await;
    let stream = format!("impulse-queue-test-{}", Uuid::new_v4());
    let lease = Duration::from_millis(600);
    let dying = RedisQueue::connect(&url, &stream, "instance-a", lease)
        .await
        .expect("connects");
    dying.enqueue(event("orphan")).await.expect("durable");
    // Redis counts idle time from the delivery, which comes after this instant.
    let leased_at = Instant::now();
    let orphan = next_within(&dying, PROMPT).await;
    drop(dying);

    let survivor = RedisQueue::connect(&url, &stream, "instance-b", lease)
        .await
        .expect("connects");
    let claimed = next_within(&survivor, PROMPT).await;
    assert!(
        leased_at.elapsed() >= lease,
        "claimed after {:?}, before the {lease:?} lease timeout",
        leased_at.elapsed()
    );
    assert_same_event(&claimed.event, &orphan.event);
    survivor.complete(claimed.lease).await.expect("completes");
    assert_quiet(&survivor, "the orphan was completed").await;
    drop(survivor);
    delete_stream(&url, &stream).await;
}

/// A live consumer keeps its leases while it works for longer than the lease timeout: another
/// instance's janitor leaves them alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_live_consumers_lease_is_not_claimed() {
    let url = require_redis().await;
    let stream = format!("impulse-queue-test-{}", Uuid::new_v4());
    let lease = Duration::from_millis(600);
    let busy = RedisQueue::connect(&url, &stream, "instance-a", lease)
        .await
        .expect("connects");
    busy.enqueue(event("slow")).await.expect("durable");
    let slow = next_within(&busy, PROMPT).await;

    let other = RedisQueue::connect(&url, &stream, "instance-b", lease)
        .await
        .expect("connects");
    let stolen = tokio::time::timeout(lease * 4, other.next()).await;
    assert!(stolen.is_err(), "a live lease was claimed: {stolen:?}");
    busy.complete(slow.lease).await.expect("completes");
    drop((busy, other));
    delete_stream(&url, &stream).await;
}
