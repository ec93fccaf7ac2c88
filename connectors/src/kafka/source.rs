//! The Kafka source: the consumer side of Lambda's Kafka event source mapping.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::{poll_fn, Future};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use impulse_config::{
    redact_secret_values, DebugSecretMap, KafkaTriggerConfig, Ordering, StartingPosition,
    SYNC_BODY_LIMIT,
};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, Timestamp, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::event::{
    envelope_len, group_envelope_len, json_str_len, record_len_in, KafkaBatch, KafkaRecord,
    CREATE_TIME, LOG_APPEND_TIME, NO_TIMESTAMP_TYPE,
};
use super::filter::KafkaFilter;
use super::handler::{BatchHandler, BatchOutcome};
use super::in_flight::InFlight;
use super::offsets::{store_list, Assignments, TopicPartition, Watermark};
use super::stop::{stop_channel, Stop, StopReceiver, StopSender};
use crate::contract::{Name, SourceError};
use crate::telemetry::{KafkaPartitionCounts, KafkaSourceMetrics};

/// How long a revoke or shutdown waits for in-flight acks by default. Records still unresolved
/// then are redelivered by the next owner. Must stay below `session.timeout.ms` (45 s).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Batches in flight per partition with `ordering = "key"`, by default.
pub const KEY_MODE_MAX_IN_FLIGHT: usize = 8;

/// Largest event, in bytes: Lambda's 6 MB synchronous payload.
pub const MAX_EVENT_BYTES: usize = SYNC_BODY_LIMIT as usize;

/// With `ordering = "key"`, the fewest records a partition buffers before it stops reading:
/// records held back by an in-flight key must not keep other keys from being read.
const KEY_MODE_MIN_BUFFERED_RECORDS: usize = 1_000;

/// How often librdkafka reports statistics (the lag gauge), unless the options say otherwise.
const STATISTICS_INTERVAL_MS: &str = "5000";

/// Bound on the metadata look-ups in the assign callback (committed offsets, offsets for a
/// timestamp).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest time between two upkeeps of a partition (offset store, count flush); see
/// `UpkeepPacer`.
pub(crate) const STORE_INTERVAL: Duration = Duration::from_millis(100);

/// How long a stopped partition task may take to exit after its drain.
const TASK_EXIT_GRACE: Duration = Duration::from_secs(5);

/// Bound on the final commit and on closing the consumer: `drop` can hang while Kafka is down
/// (fede1024/rust-rdkafka#611); correctness never depends on finishing it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// Defaults the caller's options may override. librdkafka prefetches per partition up to
/// `queued.max.messages.kbytes` (64 MB by default): with a backlog, 16 partitions held 1.5 GB.
/// 8 MB still holds many batches of the largest event (6 MB) or of `batch_size` records. Once
/// a partition's queue is full, librdkafka postpones its next fetch by
/// `fetch.queue.backoff.ms` (1 s by default): with the smaller queue that starved partitions
/// (the machine idled at 40% at batch size 100), so it is 20 ms here.
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
        handler: Arc<dyn BatchHandler>,
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
    handler: Arc<dyn BatchHandler>,
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

    /// Assign callback: starting positions, then one split queue and task per partition.
    fn on_assign(
        self: &Arc<Self>,
        base: &BaseConsumer<SourceContext>,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions = partitions_of(tpl);
        if partitions.is_empty() || self.lock().shutting_down {
            return;
        }
        tracing::info!(trigger = %self.trigger, partitions = ?partitions, "Partitions assigned.");
        self.apply_start(base, tpl);
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            self.fail("the Kafka consumer is gone during an assignment".to_owned());
            return;
        };
        for tp in partitions {
            // A task of an earlier assignment must be gone before the queue is split again:
            // dropping its queue would switch off the new queue's wake-ups (vector#26438).
            let previous = self.lock().tasks.remove(&tp);
            if let Some(previous) = previous {
                previous.tell(Stop::Abort);
                wait_for_tasks(&self.trigger, vec![(tp.clone(), previous)], TASK_EXIT_GRACE);
            }
            let mut state = self.lock();
            if state.shutting_down {
                return;
            }
            let epoch = state.assignments.assign(&tp);
            let Some(queue) = consumer.split_partition_queue(&tp.0, tp.1) else {
                drop(state);
                self.fail(format!("could not split the queue of {}-{}", tp.0, tp.1));
                continue;
            };
            let (stop, stop_rx) = stop_channel();
            let (done_tx, done) = std::sync::mpsc::channel();
            let task = PartitionTask {
                shared: Arc::clone(self),
                consumer: Arc::clone(&consumer),
                tp: tp.clone(),
                epoch,
            };
            self.runtime.spawn(task.run(queue, stop_rx, done_tx));
            state.tasks.insert(tp, TaskHandle { stop, done });
        }
    }

    /// Sets the start offset of partitions the group has no committed offset for.
    fn apply_start(&self, base: &BaseConsumer<SourceContext>, tpl: &mut TopicPartitionList) {
        let committed = match base.committed_offsets(tpl.clone(), LOOKUP_TIMEOUT) {
            Ok(committed) => committed,
            Err(e) => {
                tracing::warn!(trigger = %self.trigger, error = %e, "Could not read committed offsets; partitions without one start at the earliest record.");
                return;
            }
        };
        let fresh: Vec<TopicPartition> = committed
            .elements()
            .iter()
            .filter(|e| e.offset() == Offset::Invalid)
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        if fresh.is_empty() {
            return;
        }
        let starts: Vec<(TopicPartition, Offset)> = match self.start {
            Start::Earliest => fresh
                .into_iter()
                .map(|tp| (tp, Offset::Beginning))
                .collect(),
            Start::Latest => fresh.into_iter().map(|tp| (tp, Offset::End)).collect(),
            Start::AtTimestamp(millis) => {
                let mut query = TopicPartitionList::new();
                for (topic, partition) in &fresh {
                    if let Err(e) =
                        query.add_partition_offset(topic, *partition, Offset::Offset(millis))
                    {
                        tracing::warn!(trigger = %self.trigger, error = %e, "Invalid starting_timestamp.");
                    }
                }
                match base.offsets_for_times(query, LOOKUP_TIMEOUT) {
                    Ok(found) => found
                        .elements()
                        .iter()
                        .filter(|e| e.error().is_ok())
                        .map(|e| {
                            let offset = match e.offset() {
                                Offset::Offset(o) => Offset::Offset(o),
                                // No record at or after the timestamp.
                                _ => Offset::End,
                            };
                            ((e.topic().to_owned(), e.partition()), offset)
                        })
                        .collect(),
                    Err(e) => {
                        tracing::warn!(trigger = %self.trigger, error = %e, "Could not look up offsets for starting_timestamp; starting at the earliest record.");
                        return;
                    }
                }
            }
        };
        for ((topic, partition), offset) in starts {
            tracing::info!(trigger = %self.trigger, topic = %topic, partition, start = ?offset, "No committed offset: applying starting_position.");
            if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                tracing::warn!(trigger = %self.trigger, error = %e, "Could not set a start offset.");
            }
        }
    }

    /// Revoke callback: stop, drain, store, commit, end the epochs.
    fn on_revoke(
        &self,
        base: &BaseConsumer<SourceContext>,
        partitions: &[TopicPartition],
        lost: bool,
    ) {
        if partitions.is_empty() {
            return;
        }
        tracing::info!(trigger = %self.trigger, partitions = ?partitions, lost, "Partitions revoked.");
        let tasks: Vec<(TopicPartition, TaskHandle)> = {
            let mut state = self.lock();
            partitions
                .iter()
                .filter_map(|tp| state.tasks.remove(tp).map(|t| (tp.clone(), t)))
                .collect()
        };
        let (stop, wait) = if lost {
            (Stop::Abort, TASK_EXIT_GRACE)
        } else {
            (
                Stop::Drain(self.drain_timeout),
                self.drain_timeout + TASK_EXIT_GRACE,
            )
        };
        for (_, task) in &tasks {
            task.tell(stop);
        }
        wait_for_tasks(&self.trigger, tasks, wait);
        let stored: Vec<(TopicPartition, i64)> = {
            let mut state = self.lock();
            partitions
                .iter()
                .filter_map(|tp| state.assignments.revoke(tp).map(|o| (tp.clone(), o)))
                .collect()
        };
        if lost {
            // Someone else may own them already: committing could move their offsets.
            tracing::warn!(trigger = %self.trigger, "Assignment lost; nothing committed, unfinished records will be redelivered.");
            return;
        }
        if stored.is_empty() {
            return;
        }
        match base.commit(&store_list(&stored), CommitMode::Sync) {
            Ok(()) => {
                tracing::debug!(trigger = %self.trigger, offsets = ?stored, "Committed offsets on revoke.")
            }
            Err(e) => {
                tracing::warn!(trigger = %self.trigger, error = %e, "Commit on revoke failed; uncommitted records will be redelivered.")
            }
        }
    }

    fn on_unexpected_message(&self, topic: &str, partition: i32) {
        if self.lock().shutting_down {
            return;
        }
        self.fail(format!(
            "a record of {topic}-{partition} reached the consumer's main queue instead of its \
             partition queue; stopping so that it is redelivered"
        ));
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// The consumer thread: awaits the main queue, which serves rebalances (running the callbacks
/// below on this thread), statistics and errors. Records never arrive here: every assigned
/// partition has its own queue.
fn poll_main_queue(consumer: &SourceConsumer, shared: &Shared, mut stop: oneshot::Receiver<()>) {
    futures::executor::block_on(async {
        loop {
            let next = consumer.recv();
            futures::pin_mut!(next);
            match futures::future::select(next, &mut stop).await {
                futures::future::Either::Left((Ok(message), _)) => {
                    shared.on_unexpected_message(message.topic(), message.partition());
                }
                futures::future::Either::Left((Err(e), _)) => {
                    tracing::warn!(trigger = %shared.trigger, error = %e, "Kafka consumer error.");
                }
                futures::future::Either::Right(_) => return,
            }
        }
    });
}

// === context ===

/// The consumer's callbacks: rebalances and statistics.
struct SourceContext {
    shared: Arc<Shared>,
}

impl ClientContext for SourceContext {
    /// librdkafka's log lines, as tracing events (target `librdkafka`). A consumer that
    /// exceeded `max.poll.interval.ms` leaves its group with only a log line
    /// (fede1024/rust-rdkafka#433): it is raised to an error here.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let trigger = &*self.shared.trigger;
        match level {
            _ if fac == "MAXPOLL" => {
                tracing::error!(target: "librdkafka", trigger, fac, "{log_message}");
            }
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", trigger, fac, "{log_message}");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", trigger, fac, "{log_message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", trigger, fac, "{log_message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", trigger, fac, "{log_message}");
            }
        }
    }

    fn stats(&self, statistics: Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|topic| topic.partitions.values())
            .filter(|p| p.partition >= 0 && p.desired)
            .filter_map(|p| {
                let position = [p.stored_offset, p.committed_offset]
                    .into_iter()
                    .find(|o| *o >= 0)?;
                (p.hi_offset >= 0).then(|| (p.hi_offset - position).max(0))
            })
            .sum();
        self.shared.metrics.offset_lag(lag);
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result: KafkaResult<()> = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.shared.on_assign(base, tpl);
                if cooperative {
                    base.incremental_assign(tpl)
                } else {
                    base.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = base.assignment_lost();
                self.shared.on_revoke(base, &partitions_of(tpl), lost);
                if cooperative {
                    base.incremental_unassign(tpl)
                } else {
                    base.unassign()
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::error!(trigger = %self.shared.trigger, error = %code, "Rebalance error; dropping the assignment.");
                let owned: Vec<TopicPartition> = self.shared.lock().tasks.keys().cloned().collect();
                self.shared.on_revoke(base, &owned, true);
                base.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(trigger = %self.shared.trigger, error = %e, "Applying a rebalance failed.");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(trigger = %self.shared.trigger, error = %e, "Offset commit failed; it is retried with the next one.");
            }
        }
    }
}

// === partition task ===

struct PartitionTask {
    shared: Arc<Shared>,
    consumer: Arc<SourceConsumer>,
    tp: TopicPartition,
    epoch: u64,
}

impl PartitionTask {
    async fn run(
        self,
        queue: PartitionQueue,
        mut stop: StopReceiver,
        done: std::sync::mpsc::Sender<()>,
    ) {
        let (topic, partition) = self.tp.clone();
        let shared = Arc::clone(&self.shared);
        let mut dispatcher = Dispatcher::new(
            shared.settings,
            // The partition's own copy: every batch holds one, and a count that every
            // partition updated moved between cores per batch.
            Arc::from(&*shared.trigger),
            Arc::from(topic.as_str()),
            partition,
            shared.envelope + group_envelope_len(&topic, partition),
        );
        let mut in_flight = InFlight::new(shared.settings.ordering == Ordering::Key);
        let mut counts = KafkaPartitionCounts::new(&shared.metrics);
        let mut pacer = UpkeepPacer::default();
        // A long-lived timer, polled on every turn of the loop: creating one per turn
        // registers it each time. (The stop receiver is polled in place: it registers the
        // task's waker only once.)
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        // Without a batch window, batching never depends on the time: the dispatcher is given
        // the same instant on every turn, which saves reading the clock (the timer's turn still
        // reads it, for the upkeep pacer).
        let started = Instant::now();
        let batching_clock = || {
            if shared.settings.window.is_zero() {
                started
            } else {
                Instant::now()
            }
        };
        let stopped = {
            let mut stream = queue.stream();
            self.dispatch(&mut dispatcher, &mut in_flight, &mut counts, started);
            loop {
                let deadline = earliest(dispatcher.deadline(), pacer.due());
                if deadline != armed {
                    if let Some(deadline) = deadline {
                        timer.as_mut().reset(deadline);
                    }
                    armed = deadline;
                }
                tokio::select! {
                    // Stop first, then finished batches (they free capacity and move the
                    // watermark), then the timers, and reading last: a partition whose
                    // buffer is full stops reading, which bounds its memory.
                    biased;
                    // The source gone without a word: nothing more may be stored.
                    stopped = poll_fn(|cx| stop.poll_recv(cx)) => {
                        break stopped.unwrap_or(Stop::Abort);
                    }
                    Some((batch, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                        let now = batching_clock();
                        self.complete(&mut dispatcher, &batch, &outcome, now);
                        // Take every other finished batch before storing once.
                        while let Some(Some((batch, outcome))) = in_flight.next().now_or_never() {
                            self.complete(&mut dispatcher, &batch, &outcome, now);
                        }
                        self.dispatch(&mut dispatcher, &mut in_flight, &mut counts, now);
                        self.upkeep(&mut dispatcher, &mut counts, &mut pacer);
                    }
                    () = &mut timer, if armed.is_some() => {
                        armed = None;
                        let now = Instant::now();
                        pacer.wake(now);
                        self.dispatch(&mut dispatcher, &mut in_flight, &mut counts, now);
                        self.upkeep(&mut dispatcher, &mut counts, &mut pacer);
                    }
                    message = stream.next(), if dispatcher.has_room() => {
                        let now = batching_clock();
                        let mut read = 0;
                        if let Some(message) = message {
                            read += self.receive(&mut dispatcher, &mut counts, message, now);
                        }
                        // Take what is already fetched, so a batch fills before its window.
                        while dispatcher.has_room() {
                            match stream.next().now_or_never() {
                                Some(Some(message)) => {
                                    read += self.receive(&mut dispatcher, &mut counts, message, now);
                                }
                                _ => break,
                            }
                        }
                        counts.records_received(read);
                        self.dispatch(&mut dispatcher, &mut in_flight, &mut counts, now);
                        self.upkeep(&mut dispatcher, &mut counts, &mut pacer);
                    }
                }
            }
        };

        if let Stop::Drain(timeout) = stopped {
            let deadline = Instant::now() + timeout;
            while !in_flight.is_empty() {
                tokio::select! {
                    biased;
                    next = stop.recv() => {
                        if matches!(next, None | Some(Stop::Abort)) {
                            break;
                        }
                    }
                    Some((batch, outcome)) = in_flight.next() => {
                        self.complete(&mut dispatcher, &batch, &outcome, Instant::now());
                    }
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.store_now(&mut dispatcher);
        }
        counts.flush();
        // Handlers still running are dropped: their records stay unresolved.
        drop(in_flight);
        let unresolved = dispatcher.watermark.unresolved();
        if unresolved > 0 {
            tracing::info!(
                trigger = %shared.trigger, topic = %topic, partition, unresolved,
                position = ?dispatcher.watermark.position(),
                "Partition stopped with unresolved records; they will be redelivered."
            );
        }
        // The queue goes before `done` disconnects: a new queue for this partition must not
        // be split while this one still exists.
        drop(queue);
        drop(done);
    }

    /// Starts the handler on every batch that may go now. Every turn of the partition loop
    /// that can make a batch ready (a record read, a batch finished, a window ended) ends here.
    fn dispatch<'t>(
        &'t self,
        dispatcher: &mut Dispatcher,
        in_flight: &mut InFlight<'t>,
        counts: &mut KafkaPartitionCounts,
        now: Instant,
    ) {
        while dispatcher.ready(now) {
            let Some(batch) = dispatcher.take_batch(now) else {
                break;
            };
            counts.batch_sent(batch.records.len());
            in_flight.push(self.shared.handler.handle(batch));
        }
    }

    /// Takes one record (filtering it, or buffering it for a batch); returns how many
    /// records it read (0 for a fetch error).
    fn receive(
        &self,
        dispatcher: &mut Dispatcher,
        counts: &mut KafkaPartitionCounts,
        message: KafkaResult<BorrowedMessage<'_>>,
        now: Instant,
    ) -> u64 {
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(trigger = %self.shared.trigger, topic = %self.tp.0, partition = self.tp.1, error = %e, "Kafka fetch error.");
                return 0;
            }
        };
        let key = message.key();
        let value = message.payload();
        // Copied before the headers are read: the copy streams through the record in order,
        // so the headers, stored after the value, are in cache when librdkafka parses them
        // (read first, they cost a second round of cache misses per record; a filtered
        // record's copy is wasted, which the filter's own matching outweighs).
        let key_copy = key.map(Bytes::copy_from_slice);
        let value_copy = value.map(Bytes::copy_from_slice);
        let headers: Vec<(String, Option<Bytes>)> = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(Bytes::copy_from_slice)))
                    .collect()
            })
            .unwrap_or_default();
        if !self.shared.filter.matches(key, value, &headers) {
            // Final at once (`Outcome::Dropped`): it commits with its neighbours.
            counts.record_filtered();
            dispatcher.filtered(message.offset());
            return 1;
        }
        let (timestamp, timestamp_type) = match message.timestamp() {
            Timestamp::NotAvailable => (None, NO_TIMESTAMP_TYPE),
            Timestamp::CreateTime(t) => (Some(t), CREATE_TIME),
            Timestamp::LogAppendTime(t) => (Some(t), LOG_APPEND_TIME),
        };
        let record = KafkaRecord {
            topic: dispatcher.topic(),
            partition: self.tp.1,
            offset: message.offset(),
            timestamp,
            timestamp_type,
            key: key_copy,
            value: value_copy,
            headers,
        };
        dispatcher.push(record, now);
        1
    }

    fn complete(
        &self,
        dispatcher: &mut Dispatcher,
        batch: &KafkaBatch,
        outcome: &BatchOutcome,
        now: Instant,
    ) {
        let abandoned = dispatcher.complete(batch, outcome, now);
        if let Some(first) = abandoned {
            tracing::error!(
                trigger = %self.shared.trigger, topic = %self.tp.0, partition = self.tp.1,
                offset = first, records = outcome.abandoned(),
                "Records were abandoned without a final outcome; the partition will not commit past them until they are redelivered."
            );
        }
    }

    /// Stores the watermark if it moved and flushes the partition's counts, unless the
    /// partition is resting from its last upkeep (then the timer's turn does it).
    fn upkeep(
        &self,
        dispatcher: &mut Dispatcher,
        counts: &mut KafkaPartitionCounts,
        pacer: &mut UpkeepPacer,
    ) {
        if pacer.may_run() {
            let stored = self.store_now(dispatcher);
            if counts.flush() || stored {
                pacer.ran(Instant::now());
            }
        }
    }

    /// Stores the watermark if it moved; returns whether it did.
    fn store_now(&self, dispatcher: &mut Dispatcher) -> bool {
        let Some(offset) = dispatcher.watermark.take_store() else {
            return false;
        };
        self.shared
            .store(&self.consumer, &self.tp, self.epoch, offset);
        true
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Paces a partition's upkeep: `store_offsets` and flushing its counts. librdkafka commits
/// stored offsets once a second anyway, and each store is a lock and a call into librdkafka,
/// which at one record per batch showed in profiles. A revoke or shutdown always stores at
/// once.
///
/// After an upkeep that did something, the partition rests for [`STORE_INTERVAL`]: upkeep
/// asked for meanwhile waits for the loop's timer to end the rest. A busy partition so reads
/// the clock once per rest, not on every turn.
#[derive(Debug, Default)]
pub(crate) struct UpkeepPacer {
    resting_until: Option<Instant>,
}

impl UpkeepPacer {
    pub(crate) fn may_run(&self) -> bool {
        self.resting_until.is_none()
    }

    pub(crate) fn ran(&mut self, now: Instant) {
        self.resting_until = Some(now + STORE_INTERVAL);
    }

    /// Ends the rest if it is over (the loop's timer fired).
    pub(crate) fn wake(&mut self, now: Instant) {
        if self.resting_until.is_some_and(|until| now >= until) {
            self.resting_until = None;
        }
    }

    /// When the rest ends: the loop's timer must fire then.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.resting_until
    }
}

// === Dispatcher ===

/// A record read and not yet sent.
struct Pending {
    record: KafkaRecord,
    /// Its bytes in the event.
    len: usize,
}

/// One partition's batching and ordering rules, without I/O: what to send, and when.
pub(crate) struct Dispatcher {
    settings: Settings,
    trigger: Arc<str>,
    /// The batches' copy of the topic.
    topic: Arc<str>,
    /// The records' copy of the topic (one interned name per topic the source is assigned).
    topic_name: Name,
    /// The topic's length as a JSON string, part of every record's length.
    topic_len: usize,
    partition: i32,
    /// Event bytes outside the records.
    envelope: usize,
    /// Read, not yet in a batch (in key mode, possibly held back by an in-flight key).
    waiting: VecDeque<Pending>,
    /// The batch being filled: its records become the batch as they are, without a copy.
    current: Vec<KafkaRecord>,
    /// The current batch's records' bytes in the event, a comma each included.
    current_bytes: usize,
    current_since: Option<Instant>,
    /// The batch is full (count or bytes): send it as soon as allowed.
    closed: bool,
    /// Bytes in `waiting` and `current`.
    buffered_bytes: usize,
    /// Batches handed to the handler and not finished.
    in_flight: usize,
    /// Key mode: records in flight per key.
    in_flight_keys: HashMap<Bytes, usize>,
    pub(crate) watermark: Watermark,
}

impl Dispatcher {
    pub(crate) fn new(
        settings: Settings,
        trigger: Arc<str>,
        topic: Arc<str>,
        partition: i32,
        envelope: usize,
    ) -> Self {
        Self {
            settings,
            trigger,
            topic_len: json_str_len(&topic),
            topic_name: Name::new(&topic),
            topic,
            partition,
            envelope,
            waiting: VecDeque::new(),
            current: Vec::new(),
            current_bytes: 0,
            current_since: None,
            closed: false,
            buffered_bytes: 0,
            in_flight: 0,
            in_flight_keys: HashMap::new(),
            watermark: Watermark::new(),
        }
    }

    /// The partition's topic, for its records.
    pub(crate) fn topic(&self) -> Name {
        self.topic_name
    }

    /// Whether the partition may read more records (bounded memory).
    ///
    /// In partition order without a batch window, it reads only the batch it can send now: a
    /// record read while a batch is in flight would only be copied out of librdkafka's own
    /// prefetch queue earlier, and encoded later, once its bytes have left the CPU's cache
    /// (which showed in profiles at one record per batch). With a window it reads the next
    /// batch while one is in flight, so that batch's window starts when its first record
    /// arrives, not when the partition is free again. Key mode reads further ahead, past records
    /// held back by an in-flight key.
    pub(crate) fn has_room(&self) -> bool {
        let max_records = match self.settings.ordering {
            Ordering::Partition if self.settings.window.is_zero() => {
                if self.in_flight > 0 {
                    0
                } else {
                    self.settings.batch_size
                }
            }
            Ordering::Partition => 2 * self.settings.batch_size,
            Ordering::Key => (2 * self.settings.batch_size).max(KEY_MODE_MIN_BUFFERED_RECORDS),
        };
        self.waiting.len() + self.current.len() < max_records
            && self.buffered_bytes < 2 * self.settings.max_bytes
    }

    /// A record to send.
    pub(crate) fn push(&mut self, record: KafkaRecord, now: Instant) {
        self.watermark.track(record.offset);
        let len = record_len_in(&record, self.topic_len);
        self.buffered_bytes += len;
        // In partition order a record that nothing waits before joins the batch directly
        // (each move of a record copies it whole).
        if self.settings.ordering == Ordering::Partition
            && self.waiting.is_empty()
            && !self.closed
            && self.has_room_for(len)
        {
            self.append(record, len, now);
            return;
        }
        self.waiting.push_back(Pending { record, len });
        self.fill(now);
    }

    /// A record that matched no filter: final at once.
    pub(crate) fn filtered(&mut self, offset: i64) {
        self.watermark.track(offset);
        self.watermark.resolve(offset);
    }

    fn can_send(&self) -> bool {
        match self.settings.ordering {
            Ordering::Partition => self.in_flight == 0,
            Ordering::Key => self.in_flight < self.settings.max_in_flight,
        }
    }

    /// Whether the current batch should go now.
    pub(crate) fn ready(&self, now: Instant) -> bool {
        !self.current.is_empty()
            && self.can_send()
            && (self.closed
                || self
                    .current_since
                    .is_some_and(|since| now >= since + self.settings.window))
    }

    /// When the current batch's window ends, if it is waiting for it and could then be sent.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.current.is_empty() || self.closed || !self.can_send() {
            return None;
        }
        self.current_since.map(|since| since + self.settings.window)
    }

    /// Moves waiting records into the current batch, as far as the rules allow.
    fn fill(&mut self, now: Instant) {
        // Key mode: keys of records left waiting in this pass (created on the first one).
        let mut held_back: Option<HashSet<Bytes>> = None;
        let mut i = 0;
        while i < self.waiting.len() && !self.closed {
            let key = self.waiting[i].record.key.as_ref();
            let eligible = match (self.settings.ordering, key) {
                (Ordering::Partition, _) | (Ordering::Key, None) => true,
                (Ordering::Key, Some(key)) => {
                    !self.in_flight_keys.contains_key(key)
                        && !held_back.as_ref().is_some_and(|held| held.contains(key))
                }
            };
            if !eligible {
                // Later records of this key must wait too, or they would overtake it.
                if let Some(key) = key {
                    let key = key.clone();
                    held_back.get_or_insert_with(HashSet::new).insert(key);
                }
                i += 1;
                continue;
            }
            if !self.has_room_for(self.waiting[i].len) {
                break;
            }
            let Some(pending) = self.waiting.remove(i) else {
                break;
            };
            self.append(pending.record, pending.len, now);
        }
    }

    /// Whether a record of `len` bytes fits in the current batch; closes the batch when it
    /// does not. A record alone always fits (the lead's side judges it).
    fn has_room_for(&mut self, len: usize) -> bool {
        // +1 for the comma.
        if !self.current.is_empty()
            && self.envelope + self.current_bytes + len + 1 > self.settings.max_bytes
        {
            self.closed = true;
            return false;
        }
        true
    }

    /// Adds a record of `len` bytes to the current batch, closing it once it is full.
    fn append(&mut self, record: KafkaRecord, len: usize, now: Instant) {
        if self.current.is_empty() {
            self.current_since = Some(now);
        }
        self.current_bytes += len + 1;
        self.current.push(record);
        // Full by count, or by size (a record too big for any batch goes alone at once).
        if self.current.len() >= self.settings.batch_size
            || self.envelope + self.current_bytes >= self.settings.max_bytes
        {
            self.closed = true;
        }
    }

    /// Takes the current batch, if any: it is in flight until [`Dispatcher::complete`].
    pub(crate) fn take_batch(&mut self, now: Instant) -> Option<KafkaBatch> {
        if self.current.is_empty() {
            return None;
        }
        // The next batch is likely the size of this one: room for it now saves growing the
        // vector record by record (each growth copies every record so far).
        let next = Vec::with_capacity(self.current.len());
        let mut records = std::mem::replace(&mut self.current, next);
        // Key mode may let a held-back record join after later ones: restore offset order
        // (records of one key are already in order, so this never reorders a key).
        if self.settings.ordering == Ordering::Key {
            records.sort_by_key(|r| r.offset);
            for record in &records {
                if let Some(key) = &record.key {
                    *self.in_flight_keys.entry(key.clone()).or_default() += 1;
                }
            }
        }
        // `current_bytes` counts a comma per record; `buffered_bytes` does not.
        let bytes = self.current_bytes - records.len();
        self.buffered_bytes = self.buffered_bytes.saturating_sub(bytes);
        self.closed = false;
        self.current_bytes = 0;
        self.current_since = None;
        self.in_flight += 1;
        self.fill(now);
        Some(KafkaBatch {
            trigger: Arc::clone(&self.trigger),
            topic: Arc::clone(&self.topic),
            partition: self.partition,
            records,
        })
    }

    /// A batch taken with [`Dispatcher::take_batch`] finished: final outcomes move the
    /// watermark; records without one only free their keys. Returns the offset of the first
    /// record without an outcome, if any.
    pub(crate) fn complete(
        &mut self,
        batch: &KafkaBatch,
        outcome: &BatchOutcome,
        now: Instant,
    ) -> Option<i64> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let key_mode = self.settings.ordering == Ordering::Key;
        let mut first_abandoned = None;
        for (i, record) in batch.records.iter().enumerate() {
            if key_mode {
                self.release_key(record.key.as_ref());
            }
            if outcome.get(i).is_some() {
                self.watermark.resolve(record.offset);
            } else {
                first_abandoned.get_or_insert(record.offset);
            }
        }
        self.fill(now);
        first_abandoned
    }

    fn release_key(&mut self, key: Option<&Bytes>) {
        let Some(key) = key else {
            return;
        };
        if let Some(count) = self.in_flight_keys.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.in_flight_keys.remove(key);
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
