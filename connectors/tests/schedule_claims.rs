//! Schedule ticks claimed on the shared Redis queue (`RedisSchedules`), against the Redis that
//! `scripts/services.sh up redis` runs, a unique stream per test: claimers racing on one tick,
//! an enqueue that fails, retries after a lost reply, the shared state record, and two schedule
//! sources on one schedule queueing each tick once.

#![cfg(all(feature = "redis", feature = "schedule"))]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::{join_all, BoxFuture};
use impulse_connectors::contract::{Ack, QueueError, QueuedEvent};
use impulse_connectors::redis::RedisSchedules;
use impulse_connectors::schedule::{event_id, Handled, ScheduleSource, ScheduleState, TickHandler};
use impulse_test_support::services::require_redis;
use impulse_test_support::wait::eventually;
use tokio::sync::oneshot;
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(60);

/// An XRANGE reply: entry ids and their field-value pairs.
type Entries = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

/// A unique queue stream, deleted with its claim and state keys on drop of the test.
struct Stream {
    url: String,
    name: String,
}

impl Stream {
    async fn new() -> Self {
        Self {
            url: require_redis().await,
            name: format!("impulse-schedule-test-{}", Uuid::new_v4()),
        }
    }

    async fn instance(&self, name: &str) -> RedisSchedules {
        RedisSchedules::connect(&self.url, &self.name, name)
            .await
            .expect("connects")
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("a valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connects")
    }

    async fn len(&self) -> usize {
        redis::cmd("XLEN")
            .arg(&self.name)
            .query_async(&mut self.conn().await)
            .await
            .expect("XLEN")
    }

    /// The ids of the events in the stream, in stream order.
    async fn event_ids(&self) -> Vec<String> {
        let entries: Entries = redis::cmd("XRANGE")
            .arg(&self.name)
            .arg("-")
            .arg("+")
            .query_async(&mut self.conn().await)
            .await
            .expect("XRANGE");
        entries
            .into_iter()
            .map(|(_, fields)| {
                let (_, encoded) = fields
                    .into_iter()
                    .find(|(name, _)| name == b"e")
                    .expect("the queue's event field");
                QueuedEvent::decode(&encoded).expect("decodes").id
            })
            .collect()
    }

    async fn cleanup(self) {
        let mut conn = self.conn().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.name))
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
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

fn tick_event(tick: &str) -> QueuedEvent {
    QueuedEvent::new(
        event_id("heartbeat", utc(tick)).into(),
        "beat".to_owned(),
        "heartbeat".to_owned(),
        Bytes::from_static(b"{}"),
    )
}

#[tokio::test]
async fn claimers_racing_on_each_tick_queue_it_exactly_once() {
    let stream = Stream::new().await;
    let claimers = [
        stream.instance("a").await,
        stream.instance("b").await,
        stream.instance("c").await,
    ];
    let ticks: Vec<String> = (0..50)
        .map(|s| format!("2026-01-01T10:00:{s:02}Z"))
        .collect();
    for tick in &ticks {
        let event = tick_event(tick);
        let results = join_all(
            claimers
                .iter()
                .map(|claimer| claimer.claim_and_enqueue(&event, TTL)),
        )
        .await;
        let queued = results
            .iter()
            .filter(|r| matches!(r, Ok(Handled::Queued)))
            .count();
        let elsewhere = results
            .iter()
            .filter(|r| matches!(r, Ok(Handled::ClaimedElsewhere)))
            .count();
        assert_eq!((queued, elsewhere), (1, 2), "{tick}: {results:?}");
    }
    let expected: Vec<String> = ticks.iter().map(|tick| tick_event(tick).id).collect();
    assert_eq!(stream.event_ids().await, expected);
    stream.cleanup().await;
}

#[tokio::test]
async fn a_retry_by_the_claimer_does_not_queue_twice() {
    let stream = Stream::new().await;
    let a = stream.instance("a").await;
    let b = stream.instance("b").await;
    let event = tick_event("2026-01-01T10:00:00Z");
    assert_eq!(
        a.claim_and_enqueue(&event, TTL).await.ok(),
        Some(Handled::Queued)
    );
    // As after a lost reply: the claimer tries again and learns that its event is queued.
    assert_eq!(
        a.claim_and_enqueue(&event, TTL).await.ok(),
        Some(Handled::Queued)
    );
    assert_eq!(
        b.claim_and_enqueue(&event, TTL).await.ok(),
        Some(Handled::ClaimedElsewhere)
    );
    assert_eq!(stream.len().await, 1);
    // The claim expires: it lives for the TTL given, no longer.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(a.claim_key(&event.id))
        .query_async(&mut stream.conn().await)
        .await
        .expect("PTTL");
    assert!(pttl > 0 && pttl <= 60_000, "PTTL {pttl}");
    stream.cleanup().await;
}

#[tokio::test]
async fn an_enqueue_that_fails_leaves_the_tick_unclaimed() {
    let stream = Stream::new().await;
    let a = stream.instance("a").await;
    let b = stream.instance("b").await;
    let event = tick_event("2026-01-01T10:00:00Z");
    // The stream key holds a string: XADD fails inside the script.
    let _: () = redis::cmd("SET")
        .arg(&stream.name)
        .arg("not a stream")
        .query_async(&mut stream.conn().await)
        .await
        .expect("SET");
    let err = a
        .claim_and_enqueue(&event, TTL)
        .await
        .expect_err("XADD fails");
    assert_eq!(err.operation, "enqueue");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(a.claim_key(&event.id))
        .query_async(&mut stream.conn().await)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 0, "a failed enqueue claims nothing");

    // Once the queue works again, the tick is still there to claim, by any instance.
    let _: () = redis::cmd("DEL")
        .arg(&stream.name)
        .query_async(&mut stream.conn().await)
        .await
        .expect("DEL");
    assert_eq!(
        b.claim_and_enqueue(&event, TTL).await.ok(),
        Some(Handled::Queued)
    );
    assert_eq!(
        a.claim_and_enqueue(&event, TTL).await.ok(),
        Some(Handled::ClaimedElsewhere)
    );
    assert_eq!(stream.event_ids().await, [event.id]);
    stream.cleanup().await;
}

#[tokio::test]
async fn the_shared_state_record_only_moves_forward() {
    let stream = Stream::new().await;
    let a = stream.instance("a").await;
    let b = stream.instance("b").await;
    assert_eq!(a.last_fired("heartbeat").await, Ok(None));
    a.record_fired("heartbeat", utc("2026-01-01T10:00:05Z"))
        .await
        .expect("records");
    // An instance behind the others records an older tick: the record stays.
    b.record_fired("heartbeat", utc("2026-01-01T10:00:03Z"))
        .await
        .expect("records");
    assert_eq!(
        b.last_fired("heartbeat").await,
        Ok(Some(utc("2026-01-01T10:00:05Z")))
    );
    b.record_fired("heartbeat", utc("2026-01-01T10:00:06.250Z"))
        .await
        .expect("records");
    assert_eq!(
        a.last_fired("heartbeat").await,
        Ok(Some(utc("2026-01-01T10:00:06.250Z")))
    );
    assert_eq!(a.last_fired("other").await, Ok(None));
    stream.cleanup().await;
}

/// The broker's claiming handler, as the broker builds it on the Redis queue.
struct Claiming {
    schedules: Arc<RedisSchedules>,
}

impl TickHandler for Claiming {
    fn handle(&self, event: QueuedEvent, ack: Ack) -> BoxFuture<'_, Result<Handled, QueueError>> {
        drop(ack);
        Box::pin(async move { self.schedules.claim_and_enqueue(&event, TTL).await })
    }
}

#[tokio::test]
async fn two_sources_on_one_schedule_queue_each_tick_once() {
    let stream = Stream::new().await;
    let config = impulse_config::ScheduleTriggerConfig {
        function: "beat".to_owned(),
        expression: "rate(1 second)".parse().expect("a sub-minute rate"),
        timezone: "UTC".to_owned(),
        flexible_window: None,
        catch_up: impulse_config::CatchUp::None,
        catch_up_limit: 100,
        overlap: impulse_config::Overlap::Allow,
        input: None,
    };
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for instance in ["a", "b"] {
        let schedules = Arc::new(stream.instance(instance).await);
        let source = ScheduleSource::new("heartbeat".to_owned(), config.clone(), schedules.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        tasks.push(tokio::spawn(source.run(
            Arc::new(Claiming { schedules }),
            async move {
                stopped.await.ok();
            },
        )));
    }
    // Three ticks fire (real time: one a second).
    eventually(
        "three ticks",
        Duration::from_secs(15),
        async || match stream.len().await {
            n if n >= 3 => Ok(()),
            n => Err(format!("{n} queued")),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for stop in stops {
        stop.send(()).ok();
    }
    for task in tasks {
        task.await.expect("no panic").expect("clean stop");
    }
    let ids = stream.event_ids().await;
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "no tick queued twice: {ids:?}");
    // Consecutive seconds: no tick lost between the first and the last.
    let mut seconds: Vec<i64> = ids
        .iter()
        .map(|id| {
            id.rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("schedule/<name>/<seconds>")
        })
        .collect();
    seconds.sort_unstable();
    assert!(
        seconds.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{seconds:?}"
    );
    // Every tick but the newest is recorded: a source moves on to the next tick only after
    // recording this one, and the newest's queuer may have been stopped before it recorded.
    let second_newest = DateTime::from_timestamp(seconds[seconds.len() - 2], 0).expect("a time");
    let recorded = stream
        .instance("c")
        .await
        .last_fired("heartbeat")
        .await
        .expect("readable")
        .expect("recorded");
    assert!(recorded >= second_newest, "{recorded} < {second_newest}");
    stream.cleanup().await;
}
