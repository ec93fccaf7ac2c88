//! Schedules shared by the instances of one Redis queue: each tick claimed and queued in one
//! atomic step, and the newest handled tick of every schedule kept beside the queue.
//!
//! - [`RedisSchedules::claim_and_enqueue`] runs one Lua script: if the tick's claim key
//!   `<stream>:claim:<event id>` exists, nothing happens; otherwise the event is added to the
//!   queue stream (`XADD`, exactly as [`RedisQueue`](super::RedisQueue) does) and the claim key
//!   is set to this instance's name, with a TTL. A script runs atomically, and its only
//!   writes come after every check that can fail, with `XADD` first: a claim without its event
//!   cannot exist, so no crash point loses a tick, and while the claim lives no instance queues
//!   the tick again. The claim holds this instance's name, so a retry after an ambiguous error
//!   (the reply was lost) recognises its own earlier claim instead of losing or doubling it.
//! - As a [`ScheduleState`], the newest handled tick of each schedule is a field of the hash
//!   `<stream>:schedule-state` (unix milliseconds), and a record only ever moves forward (a Lua
//!   compare-and-set), since every instance records the ticks it has seen handled.
//!
//! The stream and the claim keys are different keys: under Redis Cluster, name the stream with
//! a hash tag (`{async}`) so that all of them land in the stream's slot.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

use super::queue::EVENT_FIELD;
use super::redact_url;
use crate::contract::{QueueError, QueuedEvent};
use crate::schedule::{Handled, ScheduleState};

/// `KEYS[1]` stream, `KEYS[2]` claim key; `ARGV[1]` event field, `ARGV[2]` encoded event,
/// `ARGV[3]` this instance, `ARGV[4]` claim TTL in ms. Returns 1 if this instance queued the
/// event (now, or in an earlier attempt whose reply was lost), 0 if another instance did.
const CLAIM_LUA: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder then
  if holder == ARGV[3] then return 1 end
  return 0
end
redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
";

/// `KEYS[1]` state hash; `ARGV[1]` schedule, `ARGV[2]` tick in unix ms. Moves the record
/// forward only. Returns 1 if it moved.
const RECORD_LUA: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(current) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Tick claims and the shared schedule state on the Redis queue (see the module
/// documentation). Cheap to share behind an `Arc`; commands go over one multiplexed connection
/// that reconnects in the background.
pub struct RedisSchedules {
    manager: ConnectionManager,
    stream: String,
    state_key: String,
    instance: String,
    url: String,
    claim: Script,
    record: Script,
}

impl RedisSchedules {
    /// Connects to Redis at `url` for the queue stream `stream`. `instance` names this
    /// instance in the claims: unique among the instances, and stable across its restarts
    /// (the queue's consumer name is both).
    pub async fn connect(url: &str, stream: &str, instance: &str) -> Result<Self, QueueError> {
        let shown = redact_url(url);
        let error = |message: String| QueueError {
            operation: "connect",
            message,
        };
        if stream.is_empty() || instance.is_empty() {
            return Err(error(
                "stream and instance names must not be empty".to_owned(),
            ));
        }
        let client = redis::Client::open(url)
            .map_err(|e| error(format!("invalid Redis URL {shown}: {e}")))?;
        let config = super::manager_config();
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| error(format!("connecting to {shown}: {e}")))?;
        Ok(Self {
            manager,
            stream: stream.to_owned(),
            state_key: format!("{stream}:schedule-state"),
            instance: instance.to_owned(),
            url: shown,
            claim: Script::new(CLAIM_LUA),
            record: Script::new(RECORD_LUA),
        })
    }

    /// The claim key of the event with id `event_id`.
    pub fn claim_key(&self, event_id: &str) -> String {
        format!("{}:claim:{event_id}", self.stream)
    }

    /// Queues `event` on the shared queue unless its tick was claimed already, claiming it for
    /// `ttl` in the same atomic step (keyed by the event's id, which is the tick's). An error
    /// means nothing was written by this call; calling again is safe, even after an ambiguous
    /// error.
    ///
    /// `ttl` MUST exceed the longest time after a tick in which any instance may still try to
    /// queue it (late, held up, or catching up): an expired claim lets the tick fire again.
    pub async fn claim_and_enqueue(
        &self,
        event: &QueuedEvent,
        ttl: Duration,
    ) -> Result<Handled, QueueError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let claimed: Result<i64, RedisError> = self
            .claim
            .key(&self.stream)
            .key(self.claim_key(&event.id))
            .arg(EVENT_FIELD)
            .arg(event.encode())
            .arg(&self.instance)
            .arg(ttl_ms)
            .invoke_async(&mut self.manager.clone())
            .await;
        match claimed {
            Ok(1) => Ok(Handled::Queued),
            Ok(_) => Ok(Handled::ClaimedElsewhere),
            Err(e) => Err(QueueError {
                operation: "enqueue",
                message: format!(
                    "claiming and queueing {} on {} at {}: {e}",
                    event.id, self.stream, self.url
                ),
            }),
        }
    }

    async fn read(&self, schedule: &str) -> Result<Option<DateTime<Utc>>, String> {
        let millis: Option<i64> = redis::cmd("HGET")
            .arg(&self.state_key)
            .arg(schedule)
            .query_async(&mut self.manager.clone())
            .await
            .map_err(|e| format!("HGET {} at {}: {e}", self.state_key, self.url))?;
        millis
            .map(|millis| {
                Utc.timestamp_millis_opt(millis).single().ok_or_else(|| {
                    format!(
                        "{} holds {millis} for {schedule}, not a time",
                        self.state_key
                    )
                })
            })
            .transpose()
    }

    async fn write(&self, schedule: &str, tick: DateTime<Utc>) -> Result<(), String> {
        let moved: Result<i64, RedisError> = self
            .record
            .key(&self.state_key)
            .arg(schedule)
            .arg(tick.timestamp_millis())
            .invoke_async(&mut self.manager.clone())
            .await;
        moved
            .map(drop)
            .map_err(|e| format!("recording in {} at {}: {e}", self.state_key, self.url))
    }
}

impl ScheduleState for RedisSchedules {
    fn last_fired<'a>(
        &'a self,
        schedule: &'a str,
    ) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, String>> {
        Box::pin(self.read(schedule))
    }

    fn record_fired<'a>(
        &'a self,
        schedule: &'a str,
        tick: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.write(schedule, tick))
    }
}

impl fmt::Debug for RedisSchedules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSchedules")
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}
