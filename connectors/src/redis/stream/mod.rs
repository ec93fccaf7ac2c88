//! The Redis stream source: a consumer group read in batches, each batch taken to final
//! outcomes by a [`BatchHandler`] and acknowledged (`XACK`) entry by entry only then.
//!
//! - The group is created when missing (`XGROUP CREATE … MKSTREAM`) at the configured starting
//!   position; an existing group keeps its own.
//! - After every (re)connect the consumer first reads its own pending entries (`XREADGROUP …
//!   0`): a restart under the same consumer name resumes them at once. Then new entries (`>`),
//!   `COUNT` up to the batch size, blocking on a dedicated connection whose response timeout
//!   exceeds the block time (redis-rs applies its response timeout to blocking reads too).
//! - A batch ends at `batch_size` entries, at about 6 MB of event, or when `batch_window` has
//!   passed since its first entry (0: what one read returns).
//! - Up to `maximum_concurrency` batches are in flight, each in a task of its own. The reader
//!   waits for a free slot before reading, and reads up to one batch per slot at once (at most
//!   [`READ_AHEAD_LIMIT`] entries): one `XREADGROUP` then feeds several batches. Entries read
//!   ahead wait in memory already leased to this consumer, their leases kept fresh.
//! - Final outcomes are acknowledged by one task, which sends everything that finished while
//!   its previous `XACK` was in flight as one `XACK`; a batch's slot is free once its outcome
//!   is handed over. At shutdown the task acknowledges what it was given before the source
//!   returns.
//! - A janitor keeps the leases of entries in flight fresh (`XCLAIM … JUSTID`, which leaves
//!   delivery counts alone) and sets the lag gauge. Entries idle for longer than the
//!   visibility timeout (their consumer stopped) are claimed (`XAUTOCLAIM`) by the reader.
//! - An entry's delivery count (`XPENDING`) is its attempt count: it survives restarts and
//!   moves between instances. [`RedisAttempts`] reads and sets it for the batch policy.
//!
//! Delivery is at least once: an entry without a final outcome (shutdown, a crash, a lost
//! `XACK` reply) stays pending and is delivered again.

mod event;
#[cfg(test)]
mod tests;

pub use event::{encode_event, RedisBatch, RedisEntry, EVENT_SOURCE};

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use impulse_config::{redact_url, RedisTriggerConfig, StartingPosition, SYNC_PAYLOAD_LIMIT};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{RedisError, Value};
use tokio::sync::{mpsc, OnceCell, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{is_transient, parse_entries, parse_read_reply, value_bytes, RawEntry, MAX_BACKOFF};
use crate::contract::{BatchHandler, BatchOutcome, SourceError};
use crate::telemetry::RedisSourceMetrics;

/// The longest a blocking read waits server-side, so that claims and shutdown are looked at.
const MAX_BLOCK: Duration = Duration::from_secs(1);
/// Response timeout of the reading connection: longer than any `BLOCK`, with a margin.
const READ_RESPONSE_TIMEOUT: Duration = Duration::from_secs(6);
/// Entries per page when reading this consumer's pending entries or claiming.
const PAGE: usize = 100;
/// Bounds of the reconnect backoff (up to [`MAX_BACKOFF`]).
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Attempts of `XACK` over transient errors; after them the entries stay pending (delivered
/// again: a duplicate, never a loss).
const ACK_ATTEMPTS: u32 = 5;
/// The most entries one read fetches ahead of the batch it fills, so that large batches times
/// many slots do not pile up in memory.
const READ_AHEAD_LIMIT: usize = 1000;
/// The most finished batches the acker takes at once.
const ACK_GROUP: usize = 256;
/// The most ids in one `XACK`, so that large batches finishing together make several
/// commands of a bounded size rather than one huge one.
const ACK_IDS: usize = 1000;

/// Mutex helpers: nothing panics while these locks are held.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The settings of one Redis stream source.
#[derive(Clone)]
pub struct RedisStreamSettings {
    /// The trigger's name, for metrics and logs.
    pub trigger: String,
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Stream key.
    pub stream: String,
    /// Consumer group.
    pub group: String,
    /// This instance's consumer name: unique per instance, stable across its restarts.
    pub consumer: String,
    /// Where a new group starts: `$`, `0` or `<ms>-0`.
    pub start_id: String,
    /// Most entries per batch.
    pub batch_size: usize,
    /// Longest wait to fill a batch from its first entry.
    pub batch_window: Duration,
    /// Batches in flight at once.
    pub maximum_concurrency: usize,
    /// Idle time after which another consumer's pending entries are claimed.
    pub visibility_timeout: Duration,
}

impl RedisStreamSettings {
    /// Settings for trigger `trigger` from its configuration.
    pub fn new(
        trigger: &str,
        config: &RedisTriggerConfig,
        consumer: &str,
        visibility_timeout: Duration,
    ) -> Self {
        let start_id = match (config.starting_position, config.starting_timestamp) {
            (StartingPosition::Earliest, _) => "0".to_owned(),
            (StartingPosition::AtTimestamp, Some(at)) => {
                // Entries from that millisecond on: the group's last delivered id is just below.
                let millis = at.timestamp_millis().max(1) - 1;
                format!("{millis}-18446744073709551615")
            }
            _ => "$".to_owned(),
        };
        Self {
            trigger: trigger.to_owned(),
            url: config.url.clone(),
            stream: config.stream.clone(),
            group: config.consumer_group(trigger),
            consumer: consumer.to_owned(),
            start_id,
            batch_size: usize::try_from(config.batch_size).unwrap_or(1).max(1),
            batch_window: config.batch_window,
            maximum_concurrency: usize::try_from(config.maximum_concurrency)
                .unwrap_or(1)
                .max(1),
            visibility_timeout,
        }
    }

    /// Entries one read asks for when `filled` of the batch being built are there: what the
    /// batch lacks, plus a batch for each other slot (within [`READ_AHEAD_LIMIT`]).
    fn read_count(&self, filled: usize) -> usize {
        let ahead = (self.batch_size * self.maximum_concurrency).min(READ_AHEAD_LIMIT);
        ahead.max(self.batch_size) - filled
    }
}

impl fmt::Debug for RedisStreamSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamSettings")
            .field("trigger", &self.trigger)
            .field("url", &redact_url(&self.url))
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("batch_size", &self.batch_size)
            .field("batch_window", &self.batch_window)
            .field("maximum_concurrency", &self.maximum_concurrency)
            .field("visibility_timeout", &self.visibility_timeout)
            .finish_non_exhaustive()
    }
}

/// What the source, its batch tasks, its janitor and [`RedisAttempts`] share.
struct Shared {
    settings: RedisStreamSettings,
    /// The URL without its password, for messages.
    shown_url: String,
    client: redis::Client,
    /// Non-blocking commands; created on first use, then reconnects in the background (and
    /// returns the error to the command that hit a broken connection: only idempotent commands
    /// are retried).
    manager: OnceCell<ConnectionManager>,
    /// Ids of entries in flight here: their leases are kept fresh, and reading this consumer's
    /// pending entries again skips them.
    held: Mutex<HashSet<String>>,
    /// Whether the last command to Redis succeeded.
    connected: Arc<AtomicBool>,
    metrics: RedisSourceMetrics,
}

impl Shared {
    async fn manager(&self) -> Result<ConnectionManager, RedisError> {
        self.manager
            .get_or_try_init(|| async {
                ConnectionManager::new_with_config(self.client.clone(), super::manager_config())
                    .await
            })
            .await
            .cloned()
    }

    async fn ensure_group(&self) -> Result<(), RedisError> {
        let s = &self.settings;
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&s.stream)
            .arg(&s.group)
            .arg(&s.start_id)
            .arg("MKSTREAM")
            .query_async(&mut self.manager().await?)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Delivery counts of `ids`, from the group's pending list (one pipelined `XPENDING` per
    /// id). An id not pending any more is left out.
    async fn delivery_counts(&self, ids: &[&str]) -> Result<HashMap<String, u32>, RedisError> {
        let s = &self.settings;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XPENDING")
                .arg(&s.stream)
                .arg(&s.group)
                .arg(*id)
                .arg(*id)
                .arg(1);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.manager().await?).await?;
        let mut counts = HashMap::with_capacity(ids.len());
        for reply in replies {
            // [[id, consumer, idle ms, deliveries]] or [].
            let Value::Array(rows) = reply else { continue };
            for row in rows {
                let Value::Array(fields) = row else { continue };
                let mut fields = fields.into_iter();
                let id = fields
                    .next()
                    .and_then(value_bytes)
                    .and_then(|b| String::from_utf8(b).ok());
                let deliveries = fields.nth(2).and_then(|v| match v {
                    Value::Int(n) => u32::try_from(n).ok(),
                    _ => None,
                });
                if let (Some(id), Some(deliveries)) = (id, deliveries) {
                    counts.insert(id, deliveries);
                }
            }
        }
        Ok(counts)
    }

    /// Acknowledges `ids`, retrying transient errors (`XACK` is idempotent).
    async fn ack(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let s = &self.settings;
        let mut backoff = MIN_BACKOFF;
        for attempt in 1..=ACK_ATTEMPTS {
            let acked: Result<i64, RedisError> = match self.manager().await {
                Ok(mut manager) => {
                    redis::cmd("XACK")
                        .arg(&s.stream)
                        .arg(&s.group)
                        .arg(ids)
                        .query_async(&mut manager)
                        .await
                }
                Err(e) => Err(e),
            };
            match acked {
                Ok(_) => return,
                Err(e) if is_transient(&e) && attempt < ACK_ATTEMPTS => {
                    tracing::warn!(trigger = %s.trigger, error = %e, attempt, "Acknowledging Redis stream entries failed; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    tracing::error!(
                        trigger = %s.trigger, error = %e, entries = ids.len(),
                        "Cannot acknowledge Redis stream entries; they stay pending and will be delivered again."
                    );
                    return;
                }
            }
        }
    }

    /// Resets the idle time of the entries in flight here, so that other instances leave them
    /// alone. `JUSTID` leaves delivery counts alone; the minimum idle time (half the
    /// visibility timeout) keeps us from taking back an entry another instance claimed
    /// recently.
    async fn refresh_leases(&self) -> Result<(), RedisError> {
        let held: Vec<String> = lock(&self.held).iter().cloned().collect();
        if held.is_empty() {
            return Ok(());
        }
        let s = &self.settings;
        let min_idle = u64::try_from(s.visibility_timeout.as_millis() / 2).unwrap_or(u64::MAX);
        let mut manager = self.manager().await?;
        for ids in held.chunks(PAGE) {
            let _: Value = redis::cmd("XCLAIM")
                .arg(&s.stream)
                .arg(&s.group)
                .arg(&s.consumer)
                .arg(min_idle)
                .arg(ids)
                .arg("JUSTID")
                .query_async(&mut manager)
                .await?;
        }
        Ok(())
    }

    /// The group's pending plus not yet delivered entries (`XINFO GROUPS`).
    async fn lag(&self) -> Result<Option<u64>, RedisError> {
        let s = &self.settings;
        let reply: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&s.stream)
            .query_async(&mut self.manager().await?)
            .await?;
        let Value::Array(groups) = reply else {
            return Ok(None);
        };
        for group in groups {
            let pairs: Vec<(Value, Value)> = match group {
                Value::Map(map) => map,
                Value::Array(flat) => {
                    let mut flat = flat.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                        pairs.push((k, v));
                    }
                    pairs
                }
                _ => continue,
            };
            let field = |name: &[u8]| {
                pairs
                    .iter()
                    .find(|(k, _)| value_bytes(k.clone()).as_deref() == Some(name))
                    .map(|(_, v)| v.clone())
            };
            if field(b"name").and_then(value_bytes).as_deref() != Some(s.group.as_bytes()) {
                continue;
            }
            let number = |v: Option<Value>| match v {
                Some(Value::Int(n)) => u64::try_from(n).ok(),
                _ => None,
            };
            let pending = number(field(b"pending")).unwrap_or(0);
            // `lag` is nil when Redis cannot tell (after deletions); count pending only then.
            let lag = number(field(b"lag")).unwrap_or(0);
            return Ok(Some(pending + lag));
        }
        Ok(None)
    }

    fn set_connected(&self, connected: bool) {
        if self.connected.swap(connected, Ordering::AcqRel) != connected && connected {
            tracing::info!(trigger = %self.settings.trigger, url = %self.shown_url, "Redis stream trigger connected.");
        }
    }
}

/// Reads and sets the delivery counts of a trigger's pending entries: the batch policy's
/// attempt counts, kept in Redis so that they survive restarts and moves.
#[derive(Clone)]
pub struct RedisAttempts {
    shared: Arc<Shared>,
}

impl RedisAttempts {
    /// The entry's delivery count now; `None` if Redis cannot tell (unreachable, or the entry
    /// is not pending).
    pub async fn delivery_count(&self, id: &str) -> Option<u32> {
        match self.shared.delivery_counts(&[id]).await {
            Ok(counts) => counts.get(id).copied(),
            Err(e) => {
                tracing::warn!(trigger = %self.shared.settings.trigger, error = %e, "Cannot read a Redis stream entry's delivery count.");
                None
            }
        }
    }

    /// Sets the entry's delivery count (`XCLAIM … RETRYCOUNT`), which also renews this
    /// consumer's lease on it. A failure is logged: the count then lags by the attempts since.
    pub async fn set_delivery_count(&self, id: &str, count: u32) {
        let s = &self.shared.settings;
        let result: Result<Value, RedisError> = match self.shared.manager().await {
            Ok(mut manager) => {
                redis::cmd("XCLAIM")
                    .arg(&s.stream)
                    .arg(&s.group)
                    .arg(&s.consumer)
                    .arg(0)
                    .arg(id)
                    .arg("RETRYCOUNT")
                    .arg(count)
                    .arg("JUSTID")
                    .query_async(&mut manager)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(trigger = %s.trigger, error = %e, "Cannot store a Redis stream entry's delivery count.");
        }
    }
}

impl fmt::Debug for RedisAttempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAttempts")
            .field("settings", &self.shared.settings)
            .finish()
    }
}

/// The Redis stream source (see the module documentation).
pub struct RedisStreamSource {
    shared: Arc<Shared>,
}

/// The reading side's state: its connection, and entries read but not yet batched.
struct Reader {
    conn: Option<MultiplexedConnection>,
    /// Whether this consumer's pending entries were read since the (re)connect.
    recovered: bool,
    /// Entries read (pending ones, claimed ones, read ahead, or past a batch's 6 MB) waiting
    /// for the next batches; already leased to this consumer and in `held`.
    carry: VecDeque<RedisEntry>,
    next_claim: Instant,
    backoff: Duration,
}

impl RedisStreamSource {
    /// A source with `settings`; it connects when run.
    ///
    /// # Errors
    ///
    /// The URL does not parse.
    pub fn new(settings: RedisStreamSettings) -> Result<Self, SourceError> {
        let shown_url = redact_url(&settings.url);
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| SourceError {
            trigger: settings.trigger.clone(),
            message: format!("invalid Redis URL {shown_url}: {e}"),
        })?;
        let metrics = RedisSourceMetrics::new(&settings.trigger);
        Ok(Self {
            shared: Arc::new(Shared {
                settings,
                shown_url,
                client,
                manager: OnceCell::new(),
                held: Mutex::new(HashSet::new()),
                connected: Arc::new(AtomicBool::new(false)),
                metrics,
            }),
        })
    }

    /// The handle the batch policy counts attempts with.
    pub fn attempts(&self) -> RedisAttempts {
        RedisAttempts {
            shared: self.shared.clone(),
        }
    }

    /// True while the source can talk to Redis (false until it first did).
    pub fn connected(&self) -> Arc<AtomicBool> {
        self.shared.connected.clone()
    }

    /// Reads batches and runs `handler` on each until `shutdown` resolves, then waits for the
    /// batches in flight (the handler stops them at shutdown, leaving their unfinished entries
    /// pending). Redis being unreachable is retried with backoff, never an error.
    ///
    /// # Errors
    ///
    /// None today; the signature leaves room for a source that cannot go on.
    pub async fn run<H>(
        self,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), SourceError>
    where
        H: BatchHandler<RedisBatch> + ?Sized,
    {
        let shared = self.shared;
        let slots = Arc::new(Semaphore::new(shared.settings.maximum_concurrency));
        let janitor = tokio::spawn(run_janitor(
            shared.clone(),
            janitor_period(shared.settings.visibility_timeout),
        ));
        let (acks, ack_queue) = mpsc::unbounded_channel();
        let acker = tokio::spawn(run_acker(shared.clone(), ack_queue));
        let mut in_flight = JoinSet::new();
        let mut reader = Reader {
            conn: None,
            recovered: false,
            carry: VecDeque::new(),
            next_claim: Instant::now(),
            backoff: MIN_BACKOFF,
        };
        tokio::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break, // the semaphore is never closed
                },
            };
            // A read abandoned at shutdown loses nothing: what it delivered stays pending
            // to this consumer, read again at the next start.
            let read = tokio::select! {
                biased;
                () = &mut shutdown => break,
                read = next_batch(&shared, &mut reader) => read,
            };
            let entries = match read {
                Ok(entries) => {
                    shared.set_connected(true);
                    reader.backoff = MIN_BACKOFF;
                    entries
                }
                Err(e) => {
                    shared.set_connected(false);
                    reader.conn = None;
                    if e.code() == Some("NOGROUP") {
                        tracing::warn!(trigger = %shared.settings.trigger, stream = %shared.settings.stream, "Redis stream or consumer group missing; creating it.");
                    } else {
                        tracing::warn!(trigger = %shared.settings.trigger, error = %e, backoff = ?reader.backoff, "Reading the Redis stream failed; reconnecting.");
                    }
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(reader.backoff) => {}
                    }
                    reader.backoff = (reader.backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if entries.is_empty() {
                continue;
            }
            shared.metrics.batch_sent(entries.len());
            let handler = handler.clone();
            let shared = shared.clone();
            let acks = acks.clone();
            in_flight.spawn(async move {
                let batch = RedisBatch {
                    stream: Arc::from(shared.settings.stream.as_str()),
                    entries,
                };
                let (batch, outcome) = handler.handle(batch).await;
                settle(&shared, &acks, batch, &outcome);
                drop(slot);
            });
        }
        while in_flight.join_next().await.is_some() {}
        // The acker ends once it has acknowledged everything handed over.
        drop(acks);
        if let Err(e) = acker.await {
            tracing::error!(trigger = %shared.settings.trigger, error = %e, "The Redis stream acknowledging task failed; unacknowledged entries will be delivered again.");
        }
        janitor.abort();
        Ok(())
    }
}

impl fmt::Debug for RedisStreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamSource")
            .field("settings", &self.shared.settings)
            .finish()
    }
}

/// Hands the entries of `batch` with a final outcome to the acker; the others stay pending
/// (this consumer reads them again after a restart, another claims them after the visibility
/// timeout) and are no longer held.
fn settle(
    shared: &Shared,
    acks: &mpsc::UnboundedSender<Vec<String>>,
    batch: RedisBatch,
    outcome: &BatchOutcome,
) {
    let mut finished = Vec::with_capacity(batch.entries.len());
    let mut unfinished = Vec::new();
    for (i, entry) in batch.entries.into_iter().enumerate() {
        if outcome.get(i).is_some() {
            finished.push(entry.id);
        } else {
            unfinished.push(entry.id);
        }
    }
    if !unfinished.is_empty() {
        let mut held = lock(&shared.held);
        for id in &unfinished {
            held.remove(id);
        }
    }
    if !finished.is_empty() && acks.send(finished).is_err() {
        // The acker lives until every batch task has ended.
        tracing::error!(trigger = %shared.settings.trigger, "Redis stream entries finished after the acknowledging task stopped; they will be delivered again.");
    }
}

/// Acknowledges finished entries in groups: whatever finished while the previous `XACK` was in
/// flight goes in the next one. The entries stay held (their leases fresh) until acknowledged.
/// Ends when every sender is gone and the queue is empty.
async fn run_acker(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<Vec<String>>) {
    let mut finished = Vec::new();
    while queue.recv_many(&mut finished, ACK_GROUP).await > 0 {
        let ids: Vec<String> = finished.drain(..).flatten().collect();
        for chunk in ids.chunks(ACK_IDS) {
            shared.ack(chunk).await;
        }
        let mut held = lock(&shared.held);
        for id in &ids {
            held.remove(id);
        }
    }
}

/// The next batch: pending entries of this consumer after a (re)connect, claimed entries,
/// then new ones; empty when nothing came within the block time.
async fn next_batch(shared: &Shared, reader: &mut Reader) -> Result<Vec<RedisEntry>, RedisError> {
    let s = &shared.settings;
    let mut conn = match reader.conn.take() {
        Some(conn) => conn,
        None => {
            let conn = super::dedicated_connection(&shared.client, READ_RESPONSE_TIMEOUT).await?;
            shared.ensure_group().await?;
            reader.recovered = false;
            conn
        }
    };
    if !reader.recovered {
        recover_pending(shared, &mut conn, reader).await?;
        reader.recovered = true;
    }
    if Instant::now() >= reader.next_claim {
        claim_idle(shared, reader).await?;
        reader.next_claim = Instant::now() + janitor_period(s.visibility_timeout);
    }

    let mut batch = Vec::new();
    let mut bytes = 0;
    take_carried(reader, &mut batch, &mut bytes, s.batch_size);
    let deadline = Instant::now() + s.batch_window;
    while batch.len() < s.batch_size && reader.carry.is_empty() {
        let block = if batch.is_empty() {
            MAX_BLOCK
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            left.min(MAX_BLOCK)
        };
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&s.group)
            .arg(&s.consumer)
            .arg("COUNT")
            .arg(s.read_count(batch.len()))
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(1).max(1))
            .arg("STREAMS")
            .arg(&s.stream)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        let read: Vec<RedisEntry> = parse_read_reply(reply)
            .into_iter()
            .filter_map(|raw| into_entry(raw, 1))
            .collect();
        if read.is_empty() && (batch.is_empty() || s.batch_window.is_zero()) {
            break;
        }
        shared.metrics.entries_received(read.len(), 0);
        hold(shared, &read);
        reader.carry.extend(read);
        take_carried(reader, &mut batch, &mut bytes, s.batch_size);
        if s.batch_window.is_zero() {
            break;
        }
    }
    reader.conn = Some(conn);
    Ok(batch)
}

/// Moves carried entries into `batch` while it has room (count and 6 MB of event).
fn take_carried(reader: &mut Reader, batch: &mut Vec<RedisEntry>, bytes: &mut usize, size: usize) {
    while batch.len() < size {
        let Some(next) = reader.carry.front() else {
            break;
        };
        let len = next.event_len();
        // One entry alone always goes: the function decides what it can take.
        if !batch.is_empty() && *bytes + len > SYNC_PAYLOAD_LIMIT {
            break;
        }
        *bytes += len;
        if let Some(entry) = reader.carry.pop_front() {
            batch.push(entry);
        }
    }
}

fn hold(shared: &Shared, entries: &[RedisEntry]) {
    let mut held = lock(&shared.held);
    for entry in entries {
        held.insert(entry.id.clone());
    }
}

/// An entry to deliver, or `None` for one deleted from the stream while pending.
fn into_entry(raw: RawEntry, delivery_count: u32) -> Option<RedisEntry> {
    let fields = raw.fields?;
    Some(RedisEntry {
        id: raw.id,
        fields: fields
            .into_iter()
            .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
            .collect(),
        delivery_count,
    })
}

/// Reads this consumer's pending entries (left by its previous run) into the carry, skipping
/// those in flight here; acknowledges ones deleted from the stream (nothing to deliver).
async fn recover_pending(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    reader: &mut Reader,
) -> Result<(), RedisError> {
    let s = &shared.settings;
    let mut after = "0".to_owned();
    loop {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&s.group)
            .arg(&s.consumer)
            .arg("COUNT")
            .arg(PAGE)
            .arg("STREAMS")
            .arg(&s.stream)
            .arg(&after)
            .query_async(conn)
            .await?;
        let raw = parse_read_reply(reply);
        let Some(last) = raw.last() else {
            return Ok(());
        };
        after.clone_from(&last.id);
        let fresh: Vec<RawEntry> = {
            let held = lock(&shared.held);
            raw.into_iter().filter(|e| !held.contains(&e.id)).collect()
        };
        accept_pending(shared, reader, fresh, 0).await?;
    }
}

/// Claims entries idle past the visibility timeout (`XAUTOCLAIM`, looping on the cursor until
/// `0-0`) into the carry.
async fn claim_idle(shared: &Shared, reader: &mut Reader) -> Result<(), RedisError> {
    let s = &shared.settings;
    let min_idle = u64::try_from(s.visibility_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut cursor = "0-0".to_owned();
    // Claim no more than a few batches' worth at a time: the rest stays for later rounds or
    // other instances.
    let mut budget = s.batch_size * s.maximum_concurrency * 2;
    loop {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&s.stream)
            .arg(&s.group)
            .arg(&s.consumer)
            .arg(min_idle)
            .arg(&cursor)
            .arg("COUNT")
            .arg(PAGE.min(budget.max(1)))
            .query_async(&mut shared.manager().await?)
            .await?;
        let Value::Array(parts) = reply else {
            return Ok(());
        };
        let mut parts = parts.into_iter();
        let next = parts
            .next()
            .and_then(value_bytes)
            .and_then(|b| String::from_utf8(b).ok());
        let raw = parts.next().map(parse_entries).unwrap_or_default();
        // An entry held here whose lease refresh was late may come back to this consumer:
        // it is in flight already. (Redis 7 lists ids deleted from the stream while pending
        // in a third element; the claim itself drops them from the pending list.)
        let raw: Vec<RawEntry> = {
            let held = lock(&shared.held);
            raw.into_iter().filter(|e| !held.contains(&e.id)).collect()
        };
        if !raw.is_empty() {
            let claimed = raw.len();
            budget = budget.saturating_sub(claimed);
            tracing::info!(trigger = %s.trigger, claimed, "Claimed Redis stream entries idle past the visibility timeout.");
            accept_pending(shared, reader, raw, claimed).await?;
        }
        match next {
            Some(next) if next != "0-0" && budget > 0 => cursor = next,
            _ => return Ok(()),
        }
    }
}

/// Adds pending entries (recovered or claimed) to the carry with their delivery counts.
async fn accept_pending(
    shared: &Shared,
    reader: &mut Reader,
    raw: Vec<RawEntry>,
    claimed: usize,
) -> Result<(), RedisError> {
    let mut deleted = Vec::new();
    let mut entries = Vec::with_capacity(raw.len());
    for entry in raw {
        let id = entry.id.clone();
        match into_entry(entry, 1) {
            Some(entry) => entries.push(entry),
            None => deleted.push(id),
        }
    }
    if !deleted.is_empty() {
        tracing::warn!(trigger = %shared.settings.trigger, entries = deleted.len(), "Pending Redis stream entries were deleted from the stream; acknowledging them.");
        shared.ack(&deleted).await;
    }
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let counts = shared.delivery_counts(&ids).await?;
    for entry in &mut entries {
        entry.delivery_count = counts.get(&entry.id).copied().unwrap_or(1).max(1);
    }
    shared.metrics.entries_received(entries.len(), claimed);
    hold(shared, &entries);
    reader.carry.extend(entries);
    Ok(())
}

fn janitor_period(visibility_timeout: Duration) -> Duration {
    (visibility_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Keeps this instance's leases fresh and the lag gauge current.
async fn run_janitor(shared: Arc<Shared>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = shared.refresh_leases().await {
            tracing::warn!(trigger = %shared.settings.trigger, error = %e, "Refreshing Redis stream leases failed.");
            shared.set_connected(false);
            continue;
        }
        match shared.lag().await {
            Ok(Some(lag)) => shared.metrics.lag(lag),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(trigger = %shared.settings.trigger, error = %e, "Reading the Redis stream lag failed.");
            }
        }
    }
}
