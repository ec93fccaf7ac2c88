//! The Redis async-invocation queue: a stream read through consumer group `impulse`, with
//! delayed events in a sorted set beside it.
//!
//! - `enqueue` is `XADD <stream> * e <encoded event>`; it resolves once Redis replied.
//! - `next` first reads this consumer's own pending entries (`XREADGROUP … 0`), so a restart
//!   under the same consumer name resumes its leases at once, then new entries (`>`) with
//!   `BLOCK` on a dedicated connection whose response timeout exceeds the block time.
//! - `reschedule` atomically (one Lua script) acknowledges and deletes the entry and adds the
//!   re-encoded event to `<stream>:delayed`, scored by its due time in unix milliseconds. A
//!   mover script (`ZRANGEBYSCORE` → `XADD` → `ZREM`, atomic) brings due events back into the
//!   stream: before every blocking read, and periodically.
//! - `complete` is `XACK` + `XDEL`, atomically.
//! - A janitor task claims (`XAUTOCLAIM`) entries idle longer than the lease timeout, left by
//!   dead consumers, and keeps this process's own leases fresh (`XCLAIM … JUSTID`) so that a
//!   slow invocation is not taken over while this process lives.
//!
//! Entries whose event does not decode are moved to `<stream>:corrupt` rather than delivered.
//! Delivery is at least once: an entry is acknowledged only by `complete` or `reschedule`.
//! The stream and its sorted set are two keys: under Redis Cluster, name the stream with a
//! hash tag (`{async}`) so that both land in one slot.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{ErrorKind, RedisError, Script, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{
    advances, is_transient, parse_entries, parse_read_reply, redact_url, RawEntry, MAX_BACKOFF,
};
use crate::contract::{unix_millis, Delivery, LeaseId, Queue, QueueError, QueuedEvent};

/// The consumer group every Impulse instance reads the queue stream through.
pub const GROUP: &str = "impulse";

/// The field of a stream entry holding the encoded event.
pub(super) const EVENT_FIELD: &[u8] = b"e";
/// The longest a blocking read waits server-side before the mover runs again.
const MAX_BLOCK: Duration = Duration::from_secs(2);
/// Response timeout of the reading connection: longer than any `BLOCK`, with a margin.
const READ_RESPONSE_TIMEOUT: Duration = Duration::from_secs(7);
/// New entries taken per read; they wait in memory (leased to this consumer) for `next`.
const READ_COUNT: usize = 16;
/// Entries per page when reading pending entries, claiming, or moving due events.
const PAGE: usize = 100;
/// Bounds of the reconnect backoff of the reading connection (up to [`MAX_BACKOFF`]).
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Attempts of an idempotent settle command over transient errors.
const SETTLE_ATTEMPTS: u32 = 3;

/// `KEYS[1]` stream; `ARGV[1]` group, `ARGV[2]` entry id.
const COMPLETE_LUA: &str = r"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
";

/// `KEYS[1]` stream, `KEYS[2]` delayed set; `ARGV[1]` group, `ARGV[2]` entry id, `ARGV[3]` due
/// unix ms, `ARGV[4]` encoded event. Adds the event only if the entry was still pending, so a
/// retry after an ambiguous error cannot add it twice. Returns 1 if it was, else 0.
const RESCHEDULE_LUA: &str = r"
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
end
redis.call('XDEL', KEYS[1], ARGV[2])
return acked
";

/// `KEYS[1]` stream, `KEYS[2]` delayed set; `ARGV[1]` now (unix ms), `ARGV[2]` limit. Moves up
/// to `limit` due events into the stream. Returns `{moved, score of the earliest left or ''}`.
const MOVE_LUA: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', 'e', member)
  redis.call('ZREM', KEYS[2], member)
end
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {#due, head[2] or ''}
";

/// The Redis queue (see the module documentation). Cheap to clone; clones share connections,
/// leases and the janitor, which stops when the last clone is dropped. [`Queue::next`] may be
/// called by several tasks at once; each gets a different event.
#[derive(Clone)]
pub struct RedisQueue {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    /// Non-blocking commands; reconnects in the background (and returns the error to the
    /// command that hit a broken connection: we retry only idempotent ones).
    manager: ConnectionManager,
    stream: String,
    delayed: String,
    corrupt: String,
    consumer: String,
    lease_timeout: Duration,
    url: String,
    local: Mutex<Local>,
    /// One blocking reader at a time: the others wait here, then find what it buffered.
    reader: tokio::sync::Mutex<Reader>,
    janitor: Mutex<Option<JoinHandle<()>>>,
    /// Signalled when the janitor buffers claimed entries.
    claimed: Notify,
    scripts: Scripts,
}

struct Scripts {
    complete: Script,
    reschedule: Script,
    mover: Script,
}

/// Entries this process holds: read but not yet handed out (`buffer`), or leased to a caller.
#[derive(Default)]
struct Local {
    buffer: VecDeque<(String, QueuedEvent)>,
    /// Ids in `buffer` or leased: skipped when pending entries are read or claimed again.
    held: HashSet<String>,
}

struct Reader {
    conn: Option<MultiplexedConnection>,
    /// Whether this consumer's pending entries were read since the (re)connect.
    recovered: bool,
    backoff: Duration,
}

// === impl RedisQueue ===

impl RedisQueue {
    /// Connects to Redis at `url`, creates group [`GROUP`] on `stream` if missing (`MKSTREAM`),
    /// and starts the janitor. `consumer` names this instance in the group: keep it stable
    /// across restarts so that its leases resume at once. Entries idle for longer than
    /// `lease_timeout` in a consumer that stopped refreshing them (a dead instance) are claimed
    /// and delivered again; it MUST exceed the longest time an instance may stall.
    pub async fn connect(
        url: &str,
        stream: &str,
        consumer: &str,
        lease_timeout: Duration,
    ) -> Result<Self, QueueError> {
        let shown = redact_url(url);
        let error = |message: String| QueueError {
            operation: "connect",
            message,
        };
        if stream.is_empty() || consumer.is_empty() {
            return Err(error(
                "stream and consumer names must not be empty".to_owned(),
            ));
        }
        if lease_timeout < Duration::from_millis(10) {
            return Err(error("the lease timeout must be at least 10ms".to_owned()));
        }
        let client = redis::Client::open(url)
            .map_err(|e| error(format!("invalid Redis URL {shown}: {e}")))?;
        let config = super::manager_config();
        let manager = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| error(format!("connecting to {shown}: {e}")))?;
        let inner = Arc::new(Inner {
            client,
            manager,
            stream: stream.to_owned(),
            delayed: format!("{stream}:delayed"),
            corrupt: format!("{stream}:corrupt"),
            consumer: consumer.to_owned(),
            lease_timeout,
            url: shown,
            local: Mutex::new(Local::default()),
            reader: tokio::sync::Mutex::new(Reader {
                conn: None,
                recovered: false,
                backoff: MIN_BACKOFF,
            }),
            janitor: Mutex::new(None),
            claimed: Notify::new(),
            scripts: Scripts {
                complete: Script::new(COMPLETE_LUA),
                reschedule: Script::new(RESCHEDULE_LUA),
                mover: Script::new(MOVE_LUA),
            },
        });
        inner
            .ensure_group()
            .await
            .map_err(|e| error(format!("creating group {GROUP} on {stream}: {e}")))?;
        let janitor = tokio::spawn(run_janitor(
            Arc::downgrade(&inner),
            janitor_period(lease_timeout),
        ));
        *lock(&inner.janitor) = Some(janitor);
        Ok(Self { inner })
    }

    async fn enqueue_event(&self, event: QueuedEvent) -> Result<(), QueueError> {
        let inner = &self.inner;
        // Not retried: XADD is not idempotent, and after an ambiguous error the caller must
        // hear an error (no `202`) rather than risk a silent duplicate or loss.
        let added: Result<String, RedisError> = redis::cmd("XADD")
            .arg(&inner.stream)
            .arg("*")
            .arg(EVENT_FIELD)
            .arg(event.encode())
            .query_async(&mut inner.manager.clone())
            .await;
        added.map(drop).map_err(|e| QueueError {
            operation: "enqueue",
            message: format!("XADD to {} at {}: {e}", inner.stream, inner.url),
        })
    }

    /// [`Queue::count_for`]: reads the whole stream and the delayed set, a page at a time. An
    /// event the mover brings back into the stream during the scan may be counted twice or
    /// not at all; a refusal that depends on the count errs on neither side for long.
    async fn count_events_for(&self, function: &str) -> Result<Option<u64>, QueueError> {
        let inner = &self.inner;
        let mut connection = inner.manager.clone();
        let failed = |key: &str, e: RedisError| QueueError {
            operation: "count",
            message: format!("reading {key} at {}: {e}", inner.url),
        };
        let counts = |encoded: &[u8]| {
            QueuedEvent::decode(encoded)
                .is_ok_and(|event| crate::contract::names_function(&event.function, function))
        };
        let mut count = 0u64;
        let mut start = "-".to_owned();
        loop {
            let page: Value = redis::cmd("XRANGE")
                .arg(&inner.stream)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut connection)
                .await
                .map_err(|e| failed(&inner.stream, e))?;
            let entries = parse_entries(page);
            for entry in &entries {
                if entry.field(EVENT_FIELD).is_some_and(counts) {
                    count += 1;
                }
            }
            match entries.last() {
                Some(last) if entries.len() == PAGE => start = format!("({}", last.id),
                _ => break,
            }
        }
        let mut offset = 0;
        loop {
            let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                .arg(&inner.delayed)
                .arg(offset)
                .arg(offset + PAGE - 1)
                .query_async(&mut connection)
                .await
                .map_err(|e| failed(&inner.delayed, e))?;
            count += members.iter().filter(|member| counts(member)).count() as u64;
            if members.len() < PAGE {
                break;
            }
            offset += PAGE;
        }
        Ok(Some(count))
    }

    async fn next_delivery(&self) -> Result<Delivery, QueueError> {
        let inner = &self.inner;
        loop {
            if let Some(delivery) = inner.take_buffered() {
                return Ok(delivery);
            }
            let mut reader = inner.reader.lock().await;
            if let Some(delivery) = inner.take_buffered() {
                return Ok(delivery);
            }
            // The janitor may buffer claimed entries while we block on Redis: it wakes us, and
            // the abandoned read's connection is dropped (see `fetch`).
            let claimed = inner.claimed.notified();
            tokio::pin!(claimed);
            claimed.as_mut().enable();
            let fetched = tokio::select! {
                fetched = inner.fetch(&mut reader) => fetched,
                () = &mut claimed => continue,
            };
            match fetched {
                Ok(()) => reader.backoff = MIN_BACKOFF,
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The stream or group vanished (deleted, or Redis lost its data).
                    tracing::warn!(stream = %inner.stream, "Queue consumer group missing; recreating it.");
                    inner
                        .ensure_group()
                        .await
                        .map_err(|e| next_error(inner, &e))?;
                }
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, stream = %inner.stream, backoff = ?reader.backoff, "Reading the Redis queue failed; reconnecting.");
                    tokio::time::sleep(reader.backoff).await;
                    reader.backoff = (reader.backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(next_error(inner, &e)),
            }
        }
    }

    async fn complete_entry(&self, lease: LeaseId) -> Result<(), QueueError> {
        let inner = &self.inner;
        let result = inner
            .settle(|| {
                let mut invocation = inner.scripts.complete.key(&inner.stream);
                invocation.arg(GROUP).arg(&lease.0);
                invocation
            })
            .await;
        // Whatever happened, this process no longer holds the lease: on failure the entry stays
        // pending and is claimed again once idle for the lease timeout.
        lock(&inner.local).held.remove(&lease.0);
        result.map(drop).map_err(|e| QueueError {
            operation: "complete",
            message: format!("XACK/XDEL of {} on {}: {e}", lease.0, inner.stream),
        })
    }

    async fn reschedule_entry(
        &self,
        lease: LeaseId,
        event: QueuedEvent,
        not_before: SystemTime,
    ) -> Result<(), QueueError> {
        let inner = &self.inner;
        let encoded = event.encode();
        let due = unix_millis(not_before);
        let result = inner
            .settle(|| {
                let mut invocation = inner.scripts.reschedule.key(&inner.stream);
                invocation
                    .key(&inner.delayed)
                    .arg(GROUP)
                    .arg(&lease.0)
                    .arg(due)
                    .arg(encoded.as_slice());
                invocation
            })
            .await;
        lock(&inner.local).held.remove(&lease.0);
        let error = |message: String| QueueError {
            operation: "reschedule",
            message,
        };
        match result {
            // Pending, now acknowledged and delayed; or no longer pending on a retry, which
            // means an earlier attempt whose reply was lost did it.
            Ok((1, _)) | Ok((_, true)) => Ok(()),
            Ok(_) => Err(error(format!(
                "entry {} of {} is no longer pending (settled elsewhere)",
                lease.0, inner.stream
            ))),
            Err(e) => Err(error(format!(
                "moving {} of {} to {}: {e}",
                lease.0, inner.stream, inner.delayed
            ))),
        }
    }
}

impl Queue for RedisQueue {
    fn enqueue(&self, event: QueuedEvent) -> BoxFuture<'_, Result<(), QueueError>> {
        self.enqueue_event(event).boxed()
    }

    fn next(&self) -> BoxFuture<'_, Result<Delivery, QueueError>> {
        self.next_delivery().boxed()
    }

    fn count_for<'a>(
        &'a self,
        function: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, QueueError>> {
        self.count_events_for(function).boxed()
    }

    fn complete(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), QueueError>> {
        self.complete_entry(lease).boxed()
    }

    fn reschedule(
        &self,
        lease: LeaseId,
        event: QueuedEvent,
        not_before: SystemTime,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        self.reschedule_entry(lease, event, not_before).boxed()
    }
}

impl fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueue")
            .field("url", &self.inner.url)
            .field("stream", &self.inner.stream)
            .field("consumer", &self.inner.consumer)
            .field("lease_timeout", &self.inner.lease_timeout)
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

impl Inner {
    async fn ensure_group(&self) -> Result<(), RedisError> {
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            // From the start: entries added before the group existed are delivered too.
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.manager.clone())
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    fn take_buffered(&self) -> Option<Delivery> {
        // The id stays in `held`: it is now a lease.
        let (id, event) = lock(&self.local).buffer.pop_front()?;
        Some(Delivery {
            lease: LeaseId(id),
            event,
        })
    }

    /// One round of reading into the buffer: this consumer's pending entries after a
    /// (re)connect, else due delayed events moved in and one blocking read of new entries.
    ///
    /// The connection is out of `reader` while a read runs. If the read is abandoned (its
    /// `next` was cancelled) or fails, the connection is dropped; the next round connects
    /// again and first re-reads this consumer's pending entries, which recovers any entries
    /// the lost reply had delivered.
    async fn fetch(&self, reader: &mut Reader) -> Result<(), RedisError> {
        let mut conn = match reader.conn.take() {
            Some(conn) => conn,
            None => {
                let conn = super::dedicated_connection(&self.client, READ_RESPONSE_TIMEOUT).await?;
                reader.recovered = false;
                conn
            }
        };
        let result = self.fetch_on(&mut conn, reader).await;
        // Keep the connection unless it failed (a server error reply leaves it usable).
        if !result.as_ref().is_err_and(is_transient) {
            reader.conn = Some(conn);
        }
        result
    }

    async fn fetch_on(
        &self,
        conn: &mut MultiplexedConnection,
        reader: &mut Reader,
    ) -> Result<(), RedisError> {
        if !reader.recovered {
            // Our own pending entries, oldest first: a restart resumes its leases at once.
            let mut after = "0".to_owned();
            loop {
                let reply: Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(PAGE)
                    .arg("STREAMS")
                    .arg(&self.stream)
                    .arg(&after)
                    .query_async(conn)
                    .await?;
                let entries = parse_read_reply(reply);
                let Some(last) = entries.last() else {
                    break;
                };
                if !advances(&after, &last.id) {
                    return Err(RedisError::from((
                        ErrorKind::Parse,
                        "pending entries that do not advance",
                        format!("after {after}, the last entry was {}", last.id),
                    )));
                }
                after.clone_from(&last.id);
                self.accept(entries).await;
            }
            reader.recovered = true;
            return Ok(());
        }

        let next_due = self.move_due().await?;
        let block = match next_due {
            Some(due) => {
                let wait = due.saturating_sub(unix_millis(SystemTime::now()));
                // BLOCK 0 would wait forever.
                Duration::from_millis(u64::try_from(wait).unwrap_or(0).max(1)).min(MAX_BLOCK)
            }
            None => MAX_BLOCK,
        };
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(1))
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(conn)
            .await?;
        self.accept(parse_read_reply(reply)).await;
        Ok(())
    }

    /// Buffers the entries not already held here; acknowledges deleted ones and moves
    /// undecodable ones aside.
    async fn accept(&self, entries: Vec<RawEntry>) {
        let mut deleted = Vec::new();
        let mut corrupt = Vec::new();
        {
            let mut local = lock(&self.local);
            for entry in entries {
                if local.held.contains(&entry.id) {
                    continue;
                }
                if entry.fields.is_none() {
                    deleted.push(entry.id);
                    continue;
                }
                match entry.field(EVENT_FIELD).map(QueuedEvent::decode) {
                    Some(Ok(event)) => {
                        local.held.insert(entry.id.clone());
                        local.buffer.push_back((entry.id, event));
                    }
                    Some(Err(e)) => corrupt.push((entry, e.to_string())),
                    None => corrupt.push((entry, "no `e` field".to_owned())),
                }
            }
        }
        for id in deleted {
            // Pending but deleted from the stream (trimmed, or deleted by hand): nothing to
            // deliver; drop it from the pending list.
            tracing::warn!(stream = %self.stream, id = %id, "A pending queue entry was deleted from the stream; acknowledging it.");
            let acked: Result<i64, RedisError> = redis::cmd("XACK")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&id)
                .query_async(&mut self.manager.clone())
                .await;
            if let Err(e) = acked {
                tracing::warn!(error = %e, id = %id, "Acknowledging a deleted queue entry failed.");
            }
        }
        for (entry, why) in corrupt {
            tracing::error!(stream = %self.stream, id = %entry.id, error = %why, corrupt = %self.corrupt, "Moving an undecodable queue entry aside.");
            if let Err(e) = self.quarantine(&entry).await {
                tracing::error!(error = %e, id = %entry.id, "Moving an undecodable queue entry aside failed; it stays pending.");
            }
        }
    }

    /// Copies `entry` to `<stream>:corrupt` (with its original id) and removes it, atomically.
    async fn quarantine(&self, entry: &RawEntry) -> Result<(), RedisError> {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.corrupt).arg("*").arg("id").arg(&entry.id);
        for (k, v) in entry.fields.iter().flatten() {
            xadd.arg(k.as_slice()).arg(v.as_slice());
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .add_command(xadd)
            .ignore()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&entry.id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(&entry.id)
            .ignore();
        pipe.query_async(&mut self.manager.clone()).await
    }

    /// Moves due delayed events into the stream; returns the due time of the earliest left.
    async fn move_due(&self) -> Result<Option<i64>, RedisError> {
        loop {
            let (moved, head): (usize, String) = self
                .scripts
                .mover
                .key(&self.stream)
                .key(&self.delayed)
                .arg(unix_millis(SystemTime::now()))
                .arg(PAGE)
                .invoke_async(&mut self.manager.clone())
                .await?;
            if moved < PAGE {
                // Scores are whole milliseconds, but Redis may print them as doubles.
                return Ok(head.parse::<f64>().ok().map(|score| score as i64));
            }
        }
    }

    /// Runs an idempotent settle script, retrying transient errors. Returns its reply and
    /// whether an earlier attempt may have been applied (its reply was lost).
    async fn settle<'a>(
        &'a self,
        invocation: impl Fn() -> redis::ScriptInvocation<'a>,
    ) -> Result<(i64, bool), RedisError> {
        let mut backoff = MIN_BACKOFF;
        let mut attempt = 1;
        loop {
            let result: Result<i64, RedisError> =
                invocation().invoke_async(&mut self.manager.clone()).await;
            match result {
                Ok(reply) => return Ok((reply, attempt > 1)),
                Err(e) if is_transient(&e) && attempt < SETTLE_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "Settling a Redis queue entry failed; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One janitor round: move due events, refresh this process's leases, claim entries idle
    /// past the lease timeout.
    async fn janitor_round(&self) -> Result<(), RedisError> {
        self.move_due().await?;
        self.refresh_leases().await?;
        self.claim_idle().await
    }

    /// Resets the idle time of every entry this process holds, so that other instances' janitors
    /// leave them alone. `JUSTID` leaves delivery counters alone; the minimum idle time (half
    /// the lease timeout) keeps us from taking back an entry another instance claimed recently.
    async fn refresh_leases(&self) -> Result<(), RedisError> {
        let held: Vec<String> = lock(&self.local).held.iter().cloned().collect();
        let min_idle = self.lease_timeout.as_millis() / 2;
        for ids in held.chunks(PAGE) {
            let refreshed: Result<Value, RedisError> = redis::cmd("XCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(u64::try_from(min_idle).unwrap_or(u64::MAX))
                .arg(ids)
                .arg("JUSTID")
                .query_async(&mut self.manager.clone())
                .await;
            refreshed?;
        }
        Ok(())
    }

    /// Claims, for this consumer, entries idle for longer than the lease timeout (`XAUTOCLAIM`,
    /// looping on the cursor until `0-0`).
    async fn claim_idle(&self) -> Result<(), RedisError> {
        let min_idle = u64::try_from(self.lease_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut cursor = "0-0".to_owned();
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(min_idle)
                .arg(&cursor)
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut self.manager.clone())
                .await?;
            let Value::Array(parts) = reply else {
                return Ok(());
            };
            let mut parts = parts.into_iter();
            let next = parts
                .next()
                .and_then(super::value_bytes)
                .and_then(|b| String::from_utf8(b).ok());
            let entries = parts.next().map(parse_entries).unwrap_or_default();
            if !entries.is_empty() {
                tracing::info!(stream = %self.stream, claimed = entries.len(), "Claimed idle queue entries from a stopped consumer.");
                self.accept(entries).await;
                self.claimed.notify_waiters();
            }
            match next {
                // `0-0` ends the scan; a cursor that does not advance would never end it.
                Some(next) if next != "0-0" && advances(&cursor, &next) => cursor = next,
                _ => return Ok(()),
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(janitor) = lock(&self.janitor).take() {
            janitor.abort();
        }
    }
}

fn janitor_period(lease_timeout: Duration) -> Duration {
    (lease_timeout / 3).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

async fn run_janitor(inner: Weak<Inner>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(e) = inner.janitor_round().await {
            tracing::warn!(error = %e, stream = %inner.stream, "Redis queue janitor round failed.");
        }
    }
}

fn next_error(inner: &Inner, e: &RedisError) -> QueueError {
    QueueError {
        operation: "next",
        message: format!("reading {} at {}: {e}", inner.stream, inner.url),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned one still holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
