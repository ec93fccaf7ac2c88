//! The Kafka source: the consumer side of Lambda's Kafka event source mapping.
//!
//! Here: [`KafkaSource`] (the consumer's configuration, starting and closing it) and the
//! state its parts share. One record's way through them: `partition` reads it from the
//! partition's queue and filters it, `batcher` puts it in a batch, `partition` runs the
//! handler on the batch and gives the outcome back to `batcher`, whose watermark `partition`
//! stores. `rebalance` starts and stops the partitions' tasks.

mod batcher;
mod partition;
mod rebalance;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use impulse_config::{
    redact_secret_values, DebugSecretMap, KafkaTriggerConfig, Ordering, StartingPosition,
    SYNC_PAYLOAD_LIMIT,
};
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;
use tokio::sync::{mpsc, oneshot};

use self::rebalance::{poll_main_queue, SourceContext};
use super::event::envelope_len;
use super::filter::KafkaFilter;
use super::offsets::{store_list, Assignments, TopicPartition};
use super::stop::{Stop, StopSender};
use super::KafkaBatch;
use crate::contract::BatchHandler;
use crate::contract::SourceError;
use crate::telemetry::KafkaSourceMetrics;

// The sans-IO parts, for the unit tests in `kafka/tests.rs`.
#[cfg(test)]
pub(crate) use self::batcher::PartitionBatcher;
#[cfg(test)]
pub(crate) use self::partition::{UpkeepPacer, STORE_INTERVAL};

/// How long a revoke or shutdown waits for in-flight acks by default. Records still unresolved
/// then are redelivered by the next owner. Must stay below `session.timeout.ms` (45 s).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Batches in flight per partition with `ordering = "key"`, by default.
pub const KEY_MODE_MAX_IN_FLIGHT: usize = 8;

/// Largest event, in bytes: Lambda's 6 MB synchronous payload.
pub const MAX_EVENT_BYTES: usize = SYNC_PAYLOAD_LIMIT;

/// How often librdkafka reports statistics (the lag gauge), unless the options say otherwise.
const STATISTICS_INTERVAL_MS: &str = "5000";

/// How long a stopped partition task may take to exit after its drain.
const TASK_EXIT_GRACE: Duration = Duration::from_secs(5);

/// Bound on the final commit and on closing the consumer: `drop` can hang while Kafka is down
/// (fede1024/rust-rdkafka#611); correctness never depends on finishing it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// Defaults the caller's options may override. librdkafka prefetches per partition up to
/// `queued.max.messages.kbytes` (64 MB by default), which with a backlog and many partitions
/// adds up to gigabytes; 8 MB still holds many batches of the largest event (6 MB) or of
/// `batch_size` records. Once a partition's queue is full, librdkafka postpones its next fetch
/// by `fetch.queue.backoff.ms` (1 s by default), which with the smaller queue starves
/// partitions; 20 ms does not (see BENCHMARKS.md).
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("queued.max.messages.kbytes", "8192"),
    ("fetch.queue.backoff.ms", "20"),
];

/// Properties the source sets after the caller's options: without them, offsets would be
/// stored for records that were never processed.
const OWNED: &[(&str, &str)] = &[
    ("enable.auto.offset.store", "false"),
    ("enable.auto.commit", "true"),
    // Stored offsets are committed every second (librdkafka's default is 5 s): after a crash,
    // at most about a second of finished work is redelivered.
    ("auto.commit.interval.ms", "1000"),
    ("auto.offset.reset", "earliest"),
    ("enable.partition.eof", "false"),
];

type SourceConsumer = StreamConsumer<SourceContext>;
type PartitionQueue = StreamPartitionQueue<SourceContext>;

// === KafkaSource ===

/// Reads a Kafka trigger's topics and hands out per-partition batches.
///
/// # Shape
///
/// - One consumer group member per [`KafkaSource`] (`group_id`, default `impulse-<trigger>`),
///   `cooperative-sticky` assignment, offsets stored by hand (`enable.auto.offset.store=false`)
///   and committed in the background (`enable.auto.commit=true`) plus synchronously on every
///   revoke and at shutdown (RELIABILITY.md §2).
/// - A dedicated thread awaits the consumer's main queue, which serves rebalances, statistics
///   and errors. The rebalance callback runs there, so it may block: on revoke it drains.
/// - Each assigned partition gets its own queue (split in the assign callback, before the
///   partition is assigned) and its own task, which reads records, filters them, batches them,
///   runs the [`BatchHandler`] on each batch (polling its future itself: no hand-off between
///   tasks) and moves the watermark with each [`BatchOutcome`]. A partition whose buffer is
///   full (a batch in flight) stops reading its queue; librdkafka then stops fetching it once
///   `queued.max.messages.kbytes` is reached (8 MB here unless the options say otherwise), and
///   no other partition stalls.
/// - `librdkafka_options` pass through (security, fetch sizes, `group.instance.id`,
///   `heartbeat.interval.ms`, …); the offset settings above are always the source's. With
///   `group.protocol = "consumer"` (KIP-848) no client-side assignment strategy is set.
/// - Seen with librdkafka 2.12: a member that closes while its cooperative assignment is
///   **empty** may send no LeaveGroup, and the others then wait up to `session.timeout.ms`.
///
/// # Batches
///
/// Per partition, a batch is sent when it holds `batch_size` records, when `batch_window` has
/// passed since its first record, or when the next record would make the event larger than
/// 6 MB (Lambda's payload limit; a single larger record goes alone).
///
/// - `ordering = "partition"` (Lambda): at most **one** batch in flight per partition; the
///   next is sent once the handler finished the previous one.
/// - `ordering = "key"`: up to [`KEY_MODE_MAX_IN_FLIGHT`] batches in flight per partition.
///   A batch may hold several records of one key, in offset order; a record whose key has a
///   record in an **earlier batch still in flight** waits (and so does every later record of
///   that key). Records with a null key have no order among themselves.
///
/// # Offsets
///
/// Per partition, a watermark stores the lowest unresolved offset with `store_offsets`
/// (as is: the next record to read). Only a final outcome resolves a record; an abandoned one
/// (no outcome in the batch's [`BatchOutcome`]) is logged and never resolved, so the
/// partition stops advancing and a restart redelivers it. Filtered-out records resolve at once (as
/// `Outcome::Dropped`) and are counted. Each assignment has an epoch; stores from an ended
/// epoch are refused. On revoke: stop dispatching, wait up to the drain timeout for in-flight
/// batches (their handlers' futures), store, commit synchronously, end the epoch. A lost assignment is not committed.
///
/// # Starting position
///
/// Applies only to partitions for which the group has **no committed offset**, looked up in
/// the assign callback: `earliest` starts at the beginning, `latest` at the end, and
/// `at_timestamp` at the first record at or after `starting_timestamp` (the end if there is
/// none). `auto.offset.reset` is always `earliest`, so a committed offset that fell out of
/// retention — or a failed lookup — resumes at the oldest record: duplicates, never a skip.
pub struct KafkaSource {
    trigger: String,
    group_id: String,
    bootstrap_servers: String,
    topics: Vec<String>,
    client: ClientConfig,
    /// The caller's options, kept for `Debug` (redacted there).
    options: BTreeMap<String, String>,
    start: Start,
    settings: Settings,
    filter: KafkaFilter,
    drain_timeout: Duration,
}

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    /// Milliseconds since the Unix epoch.
    AtTimestamp(i64),
}

/// Batching rules of one source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) batch_size: usize,
    pub(crate) window: Duration,
    pub(crate) max_bytes: usize,
    pub(crate) ordering: Ordering,
    pub(crate) max_in_flight: usize,
}

impl KafkaSource {
    /// A source for trigger `trigger`. Checks the librdkafka options and filter patterns; does
    /// not connect.
    pub fn new(trigger: &str, config: &KafkaTriggerConfig) -> Result<Self, SourceError> {
        let fail = |message: String| SourceError {
            trigger: trigger.to_owned(),
            message,
        };
        let filter = KafkaFilter::new(config.filter.parse().map_err(|e| fail(e.to_string()))?);
        let start = match config.starting_position {
            StartingPosition::Earliest => Start::Earliest,
            StartingPosition::Latest => Start::Latest,
            StartingPosition::AtTimestamp => Start::AtTimestamp(
                config
                    .starting_timestamp
                    .ok_or_else(|| {
                        fail("starting_position = \"at_timestamp\" needs starting_timestamp".into())
                    })?
                    .timestamp_millis(),
            ),
        };
        let group_id = config.consumer_group(trigger);

        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("group.id", &group_id)
            .set("client.id", format!("impulse-{trigger}"))
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        for (key, value) in CONSUMER_DEFAULTS {
            client.set(*key, *value);
        }
        for (key, value) in &config.librdkafka_options {
            client.set(key, value);
        }
        for (key, value) in OWNED {
            client.set(*key, *value);
        }
        // Only partitions that move are revoked. The KIP-848 protocol has no client-side
        // strategy (the broker assigns, incrementally), and refuses the property.
        let next_gen_protocol = config
            .librdkafka_options
            .get("group.protocol")
            .is_some_and(|p| p.eq_ignore_ascii_case("consumer"));
        if !next_gen_protocol {
            client.set("partition.assignment.strategy", "cooperative-sticky");
        }
        client.create_native_config().map_err(|e| {
            // librdkafka's message may quote the offending property's value.
            fail(redact_secret_values(
                &format!("invalid Kafka consumer configuration: {e}"),
                &config.librdkafka_options,
            ))
        })?;

        Ok(Self {
            trigger: trigger.to_owned(),
            group_id,
            bootstrap_servers: config.bootstrap_servers.clone(),
            topics: config.topics.clone(),
            client,
            options: config.librdkafka_options.clone(),
            start,
            settings: Settings {
                batch_size: usize::try_from(config.batch_size).unwrap_or(1).max(1),
                window: config.batch_window,
                max_bytes: MAX_EVENT_BYTES,
                ordering: config.ordering,
                max_in_flight: KEY_MODE_MAX_IN_FLIGHT,
            },
            filter,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        })
    }

    /// How long a revoke or shutdown waits for in-flight acks (default
    /// [`DEFAULT_DRAIN_TIMEOUT`]). Keep it below `session.timeout.ms`.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Batches in flight per partition with `ordering = "key"` (default
    /// [`KEY_MODE_MAX_IN_FLIGHT`], at least 1). Ignored with `ordering = "partition"`.
    pub fn with_max_in_flight_per_partition(mut self, batches: usize) -> Self {
        self.settings.max_in_flight = batches.max(1);
        self
    }

    /// The largest event a batch may make, in bytes (default [`MAX_EVENT_BYTES`]).
    pub fn with_max_event_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_bytes = bytes;
        self
    }

    /// The consumer group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The trigger's bootstrap servers, as the event's `bootstrapServers` names them.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Runs until `shutdown` resolves, handing each batch to `handler` from its partition's
    /// task. On shutdown it drains in-flight batches (up to the drain timeout), commits what is
    /// final and leaves the group. An error means the source cannot go on (the consumer could
    /// not be created, a record reached the wrong queue); what was not committed is
    /// redelivered when it runs again.
    pub async fn run(
        self,
        handler: Arc<dyn BatchHandler<KafkaBatch>>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), SourceError> {
        let fail = |message: String| SourceError {
            trigger: self.trigger.clone(),
            message,
        };
        let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            trigger: Arc::from(self.trigger.as_str()),
            envelope: envelope_len(&self.bootstrap_servers),
            settings: self.settings,
            filter: self.filter,
            start: self.start,
            drain_timeout: self.drain_timeout,
            runtime: tokio::runtime::Handle::current(),
            handler,
            metrics: KafkaSourceMetrics::new(&self.trigger),
            consumer: OnceLock::new(),
            state: Mutex::new(State::default()),
            fatal: fatal_tx,
        });
        let consumer: Arc<SourceConsumer> = Arc::new(
            self.client
                .create_with_context(SourceContext {
                    shared: Arc::clone(&shared),
                })
                .map_err(|e| {
                    fail(redact_secret_values(
                        &format!("creating the Kafka consumer: {e}"),
                        &self.options,
                    ))
                })?,
        );
        // The rebalance callback splits partition queues, which needs the `Arc`.
        if shared.consumer.set(Arc::downgrade(&consumer)).is_err() {
            unreachable!("the consumer cell of a new source is empty");
        }
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| fail(format!("subscribing to {topics:?}: {e}")))?;

        let (stop_poll, stop_poll_rx) = oneshot::channel();
        let poller = std::thread::Builder::new()
            .name(format!("kafka-{}", self.trigger))
            .spawn({
                let consumer = Arc::clone(&consumer);
                let shared = Arc::clone(&shared);
                move || poll_main_queue(&consumer, &shared, stop_poll_rx)
            })
            .map_err(|e| fail(format!("starting the consumer thread: {e}")))?;
        tracing::info!(trigger = %self.trigger, group = %self.group_id, topics = ?self.topics, "Kafka source started.");

        let outcome = tokio::select! {
            () = shutdown => Ok(()),
            Some(message) = fatal_rx.recv() => Err(fail(message)),
        };
        close(&shared, consumer, poller, stop_poll).await;
        tracing::info!(trigger = %self.trigger, "Kafka source stopped.");
        outcome
    }
}

impl fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSource")
            .field("trigger", &self.trigger)
            .field("group_id", &self.group_id)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topics", &self.topics)
            .field("librdkafka_options", &DebugSecretMap(&self.options))
            .field("start", &self.start)
            .field("settings", &self.settings)
            .field("filter", &self.filter)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

/// Stops every partition (draining), the consumer thread, commits and closes.
async fn close(
    shared: &Arc<Shared>,
    consumer: Arc<SourceConsumer>,
    poller: std::thread::JoinHandle<()>,
    stop_poll: oneshot::Sender<()>,
) {
    let tasks: Vec<(TopicPartition, TaskHandle)> = {
        let mut state = shared.lock();
        state.shutting_down = true;
        state.tasks.drain().collect()
    };
    for (_, task) in &tasks {
        task.tell(Stop::Drain(shared.drain_timeout));
    }
    let wait = shared.drain_timeout + TASK_EXIT_GRACE;
    let trigger = Arc::clone(&shared.trigger);
    let waited = tokio::task::spawn_blocking(move || wait_for_tasks(&trigger, tasks, wait)).await;
    if let Err(e) = waited {
        tracing::error!(trigger = %shared.trigger, error = %e, "Waiting for partition tasks failed.");
    }

    // A rebalance callback in progress finishes first; none starts after this.
    if stop_poll.send(()).is_err() {
        tracing::debug!(trigger = %shared.trigger, "The consumer thread had already stopped.");
    }
    let joined = tokio::time::timeout(
        CLOSE_TIMEOUT,
        tokio::task::spawn_blocking(move || poller.join()),
    )
    .await;
    if !matches!(joined, Ok(Ok(Ok(())))) {
        tracing::error!(trigger = %shared.trigger, "The Kafka consumer thread did not stop cleanly.");
    }

    let stored = shared.lock().assignments.revoke_all();
    if !stored.is_empty() {
        let committer = Arc::clone(&consumer);
        let list = store_list(&stored);
        let commit = tokio::task::spawn_blocking(move || committer.commit(&list, CommitMode::Sync));
        match tokio::time::timeout(CLOSE_TIMEOUT, commit).await {
            Ok(Ok(Ok(()))) => {
                tracing::debug!(trigger = %shared.trigger, offsets = ?stored, "Committed offsets at shutdown.");
            }
            Ok(Ok(Err(e))) => {
                tracing::warn!(trigger = %shared.trigger, error = %e, "Final commit failed; uncommitted records will be redelivered.");
            }
            _ => {
                tracing::warn!(trigger = %shared.trigger, "Final commit timed out; uncommitted records will be redelivered.");
            }
        }
    }
    // Dropping the last handle leaves the group (and may hang while Kafka is unreachable).
    let closing = tokio::task::spawn_blocking(move || drop(consumer));
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::warn!(trigger = %shared.trigger, "Closing the Kafka consumer timed out.");
    }
}

/// Waits, blocking, until every task has exited or `wait` has passed.
fn wait_for_tasks(trigger: &str, tasks: Vec<(TopicPartition, TaskHandle)>, wait: Duration) {
    let deadline = std::time::Instant::now() + wait;
    for ((topic, partition), task) in tasks {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if task.done.recv_timeout(left) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            tracing::error!(
                trigger, topic = %topic, partition,
                "A partition task did not stop in time; its completions will be discarded."
            );
        }
    }
}

// === shared state ===

/// What the consumer thread, the rebalance callback and the partition tasks share.
struct Shared {
    trigger: Arc<str>,
    /// Event bytes outside the records: envelope and one partition group (added per task).
    envelope: usize,
    settings: Settings,
    filter: KafkaFilter,
    start: Start,
    drain_timeout: Duration,
    runtime: tokio::runtime::Handle,
    handler: Arc<dyn BatchHandler<KafkaBatch>>,
    metrics: KafkaSourceMetrics,
    /// Set right after the consumer is created; weak, as the consumer owns this (its context).
    consumer: OnceLock<Weak<SourceConsumer>>,
    state: Mutex<State>,
    /// Reasons the source must stop.
    fatal: mpsc::UnboundedSender<String>,
}

#[derive(Default)]
struct State {
    shutting_down: bool,
    assignments: Assignments,
    tasks: HashMap<TopicPartition, TaskHandle>,
}

/// The rebalance callback's handle on a partition task.
struct TaskHandle {
    stop: StopSender,
    /// Disconnects when the task has exited, its queue dropped.
    done: std::sync::mpsc::Receiver<()>,
}

impl TaskHandle {
    fn tell(&self, stop: Stop) {
        // A task that has exited already has nothing left to stop: nobody reads it.
        self.stop.send(stop);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; carrying on is safe because
        // a store needs a live epoch, and a lost store only means redelivery.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fail(&self, message: String) {
        tracing::error!(trigger = %self.trigger, "{message}");
        // No receiver: the source is already stopping.
        if self.fatal.send(message).is_err() {
            tracing::debug!(trigger = %self.trigger, "The source was already stopping.");
        }
    }

    /// Stores `offset` for `tp` if `epoch` is still its live epoch.
    fn store(&self, consumer: &SourceConsumer, tp: &TopicPartition, epoch: u64, offset: i64) {
        let mut state = self.lock();
        if !state.assignments.is_current(tp, epoch) {
            tracing::debug!(trigger = %self.trigger, topic = %tp.0, partition = tp.1, offset, "Discarded a store from an ended assignment.");
            return;
        }
        let list = store_list(&[(tp.clone(), offset)]);
        match consumer.store_offsets(&list) {
            Ok(()) => state.assignments.stored(tp, epoch, offset),
            // Expected right after a revoke (confluentinc/librdkafka#3774): not stored, the
            // next owner redelivers.
            Err(KafkaError::StoreOffset(
                RDKafkaErrorCode::State | RDKafkaErrorCode::UnknownPartition,
            )) => {
                tracing::debug!(trigger = %self.trigger, topic = %tp.0, partition = tp.1, offset, "Offset not stored: the partition is no longer assigned.");
            }
            Err(e) => {
                tracing::warn!(trigger = %self.trigger, topic = %tp.0, partition = tp.1, offset, error = %e, "Offset not stored.");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Hooks for the unit tests in `kafka/tests.rs`.

    use super::*;

    pub(crate) fn settings(batch_size: usize, window: Duration, ordering: Ordering) -> Settings {
        Settings {
            batch_size,
            window,
            max_bytes: MAX_EVENT_BYTES,
            ordering,
            max_in_flight: KEY_MODE_MAX_IN_FLIGHT,
        }
    }

    pub(crate) fn with_limits(
        mut settings: Settings,
        max_bytes: usize,
        max_in_flight: usize,
    ) -> Settings {
        settings.max_bytes = max_bytes;
        settings.max_in_flight = max_in_flight;
        settings
    }

    pub(crate) fn is_secret(key: &str) -> bool {
        impulse_config::is_secret_key(key)
    }
}
