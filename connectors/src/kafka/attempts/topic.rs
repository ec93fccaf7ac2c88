//! Attempt counts in a compacted Kafka topic (`attempts_topic`) shared by every instance of a
//! trigger's group, so that a count survives a restart **and** a rebalance to an instance with
//! another disk.
//!
//! Records: key `<group_id>/<topic>-<partition>@<offset>`, value the count as a decimal string;
//! a tombstone (null value) clears a count. The group prefix lets several triggers and groups
//! share one topic; a store keeps only its own group's counts in memory.
//!
//! - **Topic.** Created when missing with 1 partition (counts are tiny and written only on
//!   failures), `cleanup.policy=compact` and the broker's default replication factor.
//!   `TopicAlreadyExists` is fine, and so is an existing topic with more partitions: records are
//!   keyed, so each key's records stay in one partition, in order. When creating is refused
//!   (no `Create` ACL) but the topic exists, it is used. Partitions are found on open:
//!   partitions added to the topic later are not read until a restart (their counts are
//!   missed, which only allows more retries), so do not add any.
//! - **Reads.** A consumer assigned every partition by hand, from the beginning, loads the topic
//!   to its high watermark on open, then keeps tailing it on its own thread: an instance that
//!   takes a partition over after a rebalance sees the counts the previous owner wrote. `get`
//!   first asks for the current high watermarks and waits (bounded) until the tail has applied
//!   everything below them; on timeout it warns and answers with what it has. A lost count only
//!   allows more retries; it never loses records.
//!   librdkafka's `assign()` needs a `group.id`: the consumer carries the trigger's own group
//!   id (already authorised) but never subscribes, so it never joins the group or heartbeats,
//!   and with auto-commit and the offset store off it commits nothing.
//! - **Writes.** An idempotent (`acks=all`) producer; `set` and `clear` return once the
//!   delivery report confirms the write, or it failed (logged; the count is kept in memory).
//! - **Shutdown.** Destroying librdkafka handles can hang while Kafka is unreachable
//!   (fede1024/rust-rdkafka#611): clients are destroyed on a detached thread that nothing waits
//!   for, and blocking librdkafka calls run on threads of their own, not on the runtime's
//!   blocking pool (which a runtime shutdown waits for).
//!
//! Only the trigger's connection and security options (`security.protocol`, `sasl.*`, `ssl.*`,
//! `socket.*`, …) pass through from `librdkafka_options`, so SASL/TLS clusters work.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use impulse_config::{redact_secret_values, KafkaTriggerConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::{oneshot, watch};

use super::counts::{Counts, CountsGuard};
use super::AttemptStoreError;
use crate::kafka::ReportingProducer;

/// Partitions of a topic this store creates.
const NEW_TOPIC_PARTITIONS: i32 = 1;
/// Bound on opening: creating the topic, finding its partitions and loading it to its end.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on `get`'s catch-up: the watermark query plus waiting for the tail consumer.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one metadata or watermark request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest wait given to a request, even past a deadline (librdkafka needs some time).
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// The producer's `message.timeout.ms`: a write not confirmed by then has failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write waits for room in librdkafka's local queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the tail thread checks whether it should stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Least time between two warnings from the tail consumer.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// The attempt store backed by a compacted topic.
pub(super) struct TopicStore {
    shared: Arc<Shared>,
    /// The topic's partitions, as found on open.
    partitions: Vec<i32>,
    /// `None` only while dropping (the clients go to a background thread).
    clients: Option<Arc<Clients>>,
}

/// What the store and its tail thread share.
struct Shared {
    trigger: String,
    topic: String,
    /// `triggers.<name>.attempts_topic`, for messages.
    option: String,
    /// `<group_id>/`: the prefix of this group's record keys.
    prefix: String,
    /// This group's counts, by attempts key (without the prefix).
    counts: Counts,
    /// Per partition (indexed by id), the offset below which every record has been applied.
    applied: watch::Sender<Vec<i64>>,
    /// The tail consumer's last error, for catch-up messages.
    last_error: Mutex<Option<String>>,
    stop: AtomicBool,
}

/// The librdkafka handles, shared with the tail thread.
struct Clients {
    consumer: BaseConsumer<AttemptsContext>,
    producer: ReportingProducer<AttemptsContext>,
}

impl TopicStore {
    /// Opens the store of `trigger` on `topic`: creates the topic if missing, reads it to its
    /// end, and starts tailing it.
    pub(super) async fn open(
        trigger: &str,
        config: &KafkaTriggerConfig,
        topic: &str,
    ) -> Result<Self, AttemptStoreError> {
        Self::open_within(trigger, config, topic, OPEN_TIMEOUT).await
    }

    /// [`Self::open`], failing after about `limit`.
    pub(super) async fn open_within(
        trigger: &str,
        config: &KafkaTriggerConfig,
        topic: &str,
        limit: Duration,
    ) -> Result<Self, AttemptStoreError> {
        let started = Instant::now();
        let deadline = started + limit;
        let option = format!("triggers.{trigger}.attempts_topic");
        let servers = &config.bootstrap_servers;
        // librdkafka's messages may quote an option's value: hide the secret ones.
        let fail = |what: String| {
            AttemptStoreError::new(format!(
                "{option}: {}",
                redact_secret_values(&what, &config.librdkafka_options)
            ))
        };
        let group = config.consumer_group(trigger);
        let context = AttemptsContext {
            trigger: Arc::from(trigger),
            topic: Arc::from(topic),
        };
        let base = base_config(trigger, config);
        let invalid = |e: KafkaError| fail(format!("invalid Kafka client configuration: {e}"));
        let admin: AdminClient<AttemptsContext> =
            base.create_with_context(context.clone()).map_err(invalid)?;
        let consumer: BaseConsumer<AttemptsContext> = consumer_config(&base, &group)
            .create_with_context(context.clone())
            .map_err(invalid)?;
        let producer = ReportingProducer::new(
            &producer_config(&base),
            context,
            &format!("attempts-{trigger}"),
        )
        .map_err(invalid)?;
        let clients = Arc::new(Clients { consumer, producer });

        let created = create_topic(&admin, topic, deadline).await;
        let partitions = match &created {
            // A new topic takes a moment to show up in the metadata.
            Ok(_) => partitions_of(&clients, topic, deadline).await,
            // Creating was refused or failed: an existing topic still does.
            Err(_) => {
                let soon = deadline.min(Instant::now() + REQUEST_TIMEOUT);
                partitions_of(&clients, topic, soon).await
            }
        };
        let partitions = match (created, partitions) {
            (Ok(_), Ok(partitions)) => partitions,
            (Err(create), Ok(partitions)) => {
                tracing::warn!(
                    trigger, attempts_topic = topic, error = %redact_secret_values(&create, &config.librdkafka_options),
                    "{option}: cannot create the topic; using the existing one."
                );
                partitions
            }
            (Err(create), Err(_)) => {
                close_in_background(admin);
                close_in_background(clients);
                return Err(fail(format!(
                    "cannot create topic \"{topic}\" on {servers}: {create}"
                )));
            }
            (Ok(_), Err(metadata)) => {
                close_in_background(admin);
                close_in_background(clients);
                return Err(fail(format!(
                    "topic \"{topic}\" on {servers} has no partitions in the metadata: {metadata}"
                )));
            }
        };
        warn_unless_compacted(&admin, trigger, &option, topic, deadline).await;
        close_in_background(admin);

        let mut assignment = TopicPartitionList::new();
        let assigned = partitions
            .iter()
            .try_for_each(|&p| assignment.add_partition_offset(topic, p, Offset::Beginning))
            .and_then(|()| clients.consumer.assign(&assignment));
        if let Err(e) = assigned {
            close_in_background(clients);
            return Err(fail(format!("cannot assign topic \"{topic}\": {e}")));
        }
        let slots = partitions
            .iter()
            .max()
            .and_then(|&max| usize::try_from(max).ok())
            .map_or(0, |max| max + 1);
        let shared = Arc::new(Shared {
            trigger: trigger.to_owned(),
            topic: topic.to_owned(),
            option: option.clone(),
            prefix: format!("{group}/"),
            counts: Counts::default(),
            applied: watch::Sender::new(vec![0; slots]),
            last_error: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let spawned = std::thread::Builder::new()
            .name("impulse-attempts".to_owned())
            .spawn({
                let (shared, clients) = (Arc::clone(&shared), Arc::clone(&clients));
                move || tail(&shared, &clients)
            });
        if let Err(e) = spawned {
            close_in_background(clients);
            return Err(fail(format!("cannot start the tail consumer thread: {e}")));
        }
        // From here on, dropping the store stops the thread and closes the clients.
        let store = Self {
            shared,
            partitions,
            clients: Some(clients),
        };
        if let Err(reason) = store.catch_up(deadline).await {
            return Err(fail(format!(
                "cannot read topic \"{topic}\" on {servers} to its end: {reason}"
            )));
        }
        tracing::info!(
            trigger,
            attempts_topic = topic,
            group = %group,
            partitions = store.partitions.len(),
            counts = store.shared.counts().len(),
            elapsed_ms = started.elapsed().as_millis(),
            "Attempt counts loaded from the topic."
        );
        Ok(store)
    }

    /// Whether this group has no count at all (in memory; no I/O).
    pub(super) fn is_empty(&self) -> bool {
        self.shared.counts.is_empty()
    }

    /// The count for `key`, after catching up with the topic's current end (bounded).
    pub(super) async fn get(&self, key: &str) -> u32 {
        if let Err(reason) = self.catch_up(Instant::now() + CATCH_UP_TIMEOUT).await {
            tracing::warn!(
                trigger = %self.shared.trigger, attempts_topic = %self.shared.topic, key,
                "{}: attempt counts may be stale ({reason}); using those read so far \
                 (at worst the batch gets more retries).",
                self.shared.option
            );
        }
        self.shared.counts().get(key).copied().unwrap_or(0)
    }

    /// Writes `attempts` for `key` and waits for the delivery report.
    pub(super) async fn set(&self, key: &str, attempts: u32) {
        let value = attempts.to_string();
        if let Err(e) = self.write(key, Some(&value)).await {
            tracing::warn!(
                trigger = %self.shared.trigger, attempts_topic = %self.shared.topic, key, attempts,
                error = %e,
                "{}: cannot record the attempt count; it is kept in memory only.",
                self.shared.option
            );
        }
        self.shared.counts().insert(key.to_owned(), attempts);
    }

    /// Writes a tombstone for `key` (when this store holds a count for it) and waits for the
    /// delivery report.
    pub(super) async fn clear(&self, key: &str) {
        if !self.shared.counts().contains_key(key) {
            return;
        }
        if let Err(e) = self.write(key, None).await {
            tracing::warn!(
                trigger = %self.shared.trigger, attempts_topic = %self.shared.topic, key,
                error = %e,
                "{}: cannot clear the attempt count; a later run may start from it.",
                self.shared.option
            );
        }
        self.shared.counts().remove(key);
    }

    /// Produces `<group>/<key>` = `value` (a tombstone for `None`).
    async fn write(&self, key: &str, value: Option<&str>) -> Result<(), String> {
        let Some(clients) = &self.clients else {
            return Err("the store is closed".to_owned());
        };
        let record_key = format!("{}{key}", self.shared.prefix);
        clients
            .producer
            .send(
                &self.shared.topic,
                record_key.as_bytes(),
                value.map(str::as_bytes),
                QUEUE_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Waits until the tail consumer has applied every record below the topic's high
    /// watermarks as they are now, or `deadline` passes.
    async fn catch_up(&self, deadline: Instant) -> Result<(), String> {
        let Some(clients) = self.clients.clone() else {
            return Err("the store is closed".to_owned());
        };
        let topic = self.shared.topic.clone();
        let partitions = self.partitions.clone();
        let wait = request_timeout(deadline);
        let marks = off_thread(move || {
            partitions
                .iter()
                .map(|&p| {
                    let (low, high) = clients.consumer.fetch_watermarks(&topic, p, wait)?;
                    Ok((p, low, high))
                })
                .collect::<Result<Vec<_>, KafkaError>>()
        })
        .await
        .ok_or_else(|| "the watermark query thread failed".to_owned())?
        .map_err(|e| format!("querying the high watermark: {e}"))?;
        let caught_up = |applied: &Vec<i64>| {
            marks.iter().all(|&(partition, low, high)| {
                // An empty partition has nothing to read.
                low >= high || position(applied, partition) >= high
            })
        };
        let mut applied = self.shared.applied.subscribe();
        let waited = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            applied.wait_for(caught_up),
        )
        .await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err("the tail consumer stopped".to_owned()),
            Err(_) => {
                let applied = self.shared.applied.borrow().clone();
                let behind: Vec<String> = marks
                    .iter()
                    .map(|&(p, _, high)| format!("{p}: {} of {high}", position(&applied, p)))
                    .collect();
                let last = self
                    .shared
                    .last_error
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone()
                    .map(|e| format!("; last consumer error: {e}"))
                    .unwrap_or_default();
                Err(format!(
                    "the tail consumer did not reach the topic's end in time (partition: \
                     applied of end offsets {}){last}",
                    behind.join(", ")
                ))
            }
        }
    }
}

impl Drop for TopicStore {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(clients) = self.clients.take() {
            close_in_background(clients);
        }
    }
}

impl fmt::Debug for TopicStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicStore")
            .field("trigger", &self.shared.trigger)
            .field("topic", &self.shared.topic)
            .field("prefix", &self.shared.prefix)
            .field("partitions", &self.partitions)
            .field("counts", &self.shared.counts().len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn counts(&self) -> CountsGuard<'_> {
        self.counts.lock()
    }

    /// Applies one record of the topic: this group's counts and tombstones; others are skipped.
    fn apply(&self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
            return;
        };
        let Some(key) = own_key(&self.prefix, key) else {
            return;
        };
        let Some(value) = value else {
            self.counts().remove(key);
            return;
        };
        match parse_count(value) {
            Some(attempts) => {
                self.counts().insert(key.to_owned(), attempts);
            }
            None => tracing::warn!(
                trigger = %self.trigger, attempts_topic = %self.topic, key,
                "{}: ignoring a record whose value is not an attempt count.",
                self.option
            ),
        }
    }

    /// Marks every record of `partition` below `next` as applied.
    fn advance(&self, partition: i32, next: i64) {
        self.applied.send_if_modified(|applied| {
            match usize::try_from(partition)
                .ok()
                .and_then(|i| applied.get_mut(i))
            {
                Some(at) if *at < next => {
                    *at = next;
                    true
                }
                _ => false,
            }
        });
    }
}

/// The tail thread: applies the topic's records as they arrive until the store is dropped.
fn tail(shared: &Shared, clients: &Clients) {
    let mut warned: Option<Instant> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        match clients.consumer.poll(POLL_INTERVAL) {
            Some(Ok(message)) => {
                shared.apply(message.key(), message.payload());
                shared.advance(message.partition(), message.offset() + 1);
                continue;
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => {
                let text = e.to_string();
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        trigger = %shared.trigger, attempts_topic = %shared.topic, error = %text,
                        "{}: reading attempt counts failed; retrying.",
                        shared.option
                    );
                    warned = Some(Instant::now());
                }
                *shared
                    .last_error
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(text);
            }
        }
        // Idle: count offsets librdkafka consumed without handing over a record (control
        // records) as applied too.
        if let Ok(positions) = clients.consumer.position() {
            for element in positions.elements() {
                if let Offset::Offset(next) = element.offset() {
                    shared.advance(element.partition(), next);
                }
            }
        }
    }
}

/// The attempts key of a record key of this group (`<group>/<key>`), or `None` for another
/// group's record. Attempts keys never contain `/` (topic names cannot), which tells group
/// `a` apart from a group `a/b`.
fn own_key<'a>(prefix: &str, record_key: &'a str) -> Option<&'a str> {
    record_key
        .strip_prefix(prefix)
        .filter(|key| !key.is_empty() && !key.contains('/'))
}

/// A count as written by `set`: a decimal string.
fn parse_count(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// The applied position of `partition` (0 when unknown).
fn position(applied: &[i64], partition: i32) -> i64 {
    usize::try_from(partition)
        .ok()
        .and_then(|i| applied.get(i))
        .copied()
        .unwrap_or(0)
}

/// Creates `topic` (compacted); `Ok(true)` when created, `Ok(false)` when it already existed.
async fn create_topic(
    admin: &AdminClient<AttemptsContext>,
    topic: &str,
    deadline: Instant,
) -> Result<bool, String> {
    // -1: the broker's `default.replication.factor`.
    let new_topic = NewTopic::new(topic, NEW_TOPIC_PARTITIONS, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact");
    let wait = remaining(deadline).max(MIN_REQUEST_TIMEOUT);
    let options = AdminOptions::new()
        .operation_timeout(Some(wait))
        .request_timeout(Some(wait));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .map_err(|e| e.to_string())?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, code))) => Err(code.to_string()),
        None => Err("CreateTopics returned no result".to_owned()),
    }
}

/// Warns when `topic` is not compacted: then counts expire with the retention (which only
/// allows more retries). Best effort: reading topic configs needs `DescribeConfigs`.
async fn warn_unless_compacted(
    admin: &AdminClient<AttemptsContext>,
    trigger: &str,
    option: &str,
    topic: &str,
    deadline: Instant,
) {
    let options = AdminOptions::new().request_timeout(Some(request_timeout(deadline)));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await;
    let policy = match described.map(|results| results.into_iter().next()) {
        Ok(Some(Ok(resource))) => resource
            .get("cleanup.policy")
            .and_then(|entry| entry.value.clone())
            .unwrap_or_default(),
        Ok(Some(Err(code))) => {
            tracing::debug!(trigger, attempts_topic = topic, error = %code, "Cannot read the topic's cleanup.policy.");
            return;
        }
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(trigger, attempts_topic = topic, error = %e, "Cannot read the topic's cleanup.policy.");
            return;
        }
    };
    if !policy.split(',').any(|p| p.trim() == "compact") {
        tracing::warn!(
            trigger, attempts_topic = topic, cleanup_policy = %policy,
            "{option}: the topic is not compacted: counts older than its retention are lost \
             (and more retries allowed); set cleanup.policy=compact."
        );
    }
}

/// The ids of `topic`'s partitions, retried until they show up in the metadata or `deadline`.
async fn partitions_of(
    clients: &Arc<Clients>,
    topic: &str,
    deadline: Instant,
) -> Result<Vec<i32>, String> {
    let (clients, topic) = (Arc::clone(clients), topic.to_owned());
    off_thread(move || loop {
        let found = match clients
            .consumer
            .fetch_metadata(Some(&topic), request_timeout(deadline))
        {
            Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                    ids.sort_unstable();
                    Ok(ids)
                }
                Some(t) => Err(t.error().map_or_else(
                    || "no partitions".to_owned(),
                    |e| RDKafkaErrorCode::from(e).to_string(),
                )),
                None => Err("not in the metadata".to_owned()),
            },
            Err(e) => Err(e.to_string()),
        };
        if found.is_ok() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    })
    .await
    .unwrap_or_else(|| Err("the metadata query thread failed".to_owned()))
}

/// Client settings every handle shares: the servers, and the trigger's connection and
/// security options.
fn base_config(trigger: &str, config: &KafkaTriggerConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", format!("impulse-{trigger}-attempts"));
    for (key, value) in &config.librdkafka_options {
        if is_connection_option(key) {
            client.set(key, value);
        }
    }
    client
}

/// The tail consumer: manual assignment, nothing stored or committed.
fn consumer_config(base: &ClientConfig, group: &str) -> ClientConfig {
    let mut client = base.clone();
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    client
}

/// The idempotent producer (`acks=all` implied, and set) of counts and tombstones.
fn producer_config(base: &ClientConfig) -> ClientConfig {
    let mut client = base.clone();
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .set("linger.ms", "0");
    client
}

/// Whether a trigger's librdkafka option is about reaching and authenticating to the cluster,
/// and so passes through to the attempt store's clients.
fn is_connection_option(key: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "security.",
        "sasl.",
        "ssl.",
        "socket.",
        "reconnect.backoff.",
    ];
    const KEYS: &[&str] = &[
        "reconnect.backoff.ms",
        "client.dns.lookup",
        "broker.address.family",
        "broker.address.ttl",
        "connections.max.idle.ms",
        "enable.ssl.certificate.verification",
        "enable.sasl.oauthbearer.unsecure.jwt",
        "https.ca.location",
        "https.ca.pem",
    ];
    PREFIXES.iter().any(|prefix| key.starts_with(prefix)) || KEYS.contains(&key)
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The time one request may take before `deadline`, within sane bounds.
fn request_timeout(deadline: Instant) -> Duration {
    remaining(deadline).clamp(MIN_REQUEST_TIMEOUT, REQUEST_TIMEOUT)
}

/// Runs blocking librdkafka work on a thread of its own, so that neither an async worker nor
/// the runtime's blocking pool waits on it. `None` if the thread could not run it.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name("impulse-attempts-io".to_owned())
        .spawn(move || {
            // The caller may have stopped waiting.
            done.send(work()).ok();
        })
        .ok()?;
    result.await.ok()
}

/// Drops `value` (librdkafka handles) on a detached thread: destroying a client can hang while
/// Kafka is unreachable, and nothing should wait for it (correctness survives `kill -9`).
fn close_in_background<T: Send + 'static>(value: T) {
    let spawned = std::thread::Builder::new()
        .name("impulse-attempts-close".to_owned())
        .spawn(move || drop(value));
    if let Err(e) = spawned {
        // The value was dropped here, on the caller's thread.
        tracing::warn!(error = %e, "Cannot start a thread to close the attempt store's Kafka clients.");
    }
}

/// librdkafka callbacks: log lines and errors as tracing events naming the trigger.
#[derive(Clone)]
struct AttemptsContext {
    trigger: Arc<str>,
    topic: Arc<str>,
}

impl ClientContext for AttemptsContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let (trigger, attempts_topic) = (&*self.trigger, &*self.topic);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", trigger, attempts_topic, fac, "{log_message}");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", trigger, attempts_topic, fac, "{log_message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", trigger, attempts_topic, fac, "{log_message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", trigger, attempts_topic, fac, "{log_message}");
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(
            target: "librdkafka", trigger = %self.trigger, attempts_topic = %self.topic,
            error = %error, "{reason}"
        );
    }
}

impl ConsumerContext for AttemptsContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_groups_keys_are_kept() {
        assert_eq!(own_key("g/", "g/orders-3@1500"), Some("orders-3@1500"));
        assert_eq!(own_key("g/", "h/orders-3@1500"), None);
        assert_eq!(own_key("g/", "gg/orders-3@1500"), None);
        // Group `g/x` shares the prefix `g/` but is another group.
        assert_eq!(own_key("g/", "g/x/orders-3@1500"), None);
        assert_eq!(own_key("g/", "g/"), None);
    }

    #[test]
    fn counts_are_decimal_strings() {
        assert_eq!(parse_count(b"3"), Some(3));
        assert_eq!(parse_count(b" 42\n"), Some(42));
        assert_eq!(parse_count(b""), None);
        assert_eq!(parse_count(b"-1"), None);
        assert_eq!(parse_count(b"three"), None);
        assert_eq!(parse_count(&[0xff]), None);
    }

    #[test]
    fn applying_records_follows_the_last_write_and_tombstones() {
        let shared = Shared {
            trigger: "orders".to_owned(),
            topic: "attempts".to_owned(),
            option: "triggers.orders.attempts_topic".to_owned(),
            prefix: "g/".to_owned(),
            counts: Counts::default(),
            applied: watch::Sender::new(vec![0; 2]),
            last_error: Mutex::new(None),
            stop: AtomicBool::new(false),
        };
        shared.apply(Some(b"g/orders-0@5"), Some(b"1"));
        shared.apply(Some(b"g/orders-0@5"), Some(b"2"));
        shared.apply(Some(b"other/orders-0@5"), Some(b"9"));
        shared.apply(None, Some(b"9"));
        shared.apply(Some(b"g/orders-0@6"), Some(b"not a number"));
        assert_eq!(shared.counts().get("orders-0@5"), Some(&2));
        assert_eq!(shared.counts().len(), 1);
        shared.apply(Some(b"g/orders-0@5"), None);
        assert!(shared.counts().is_empty());

        shared.advance(1, 10);
        shared.advance(1, 4); // never backwards
        shared.advance(7, 3); // unknown partition: ignored
        assert_eq!(*shared.applied.borrow(), vec![0, 10]);
        assert_eq!(position(&shared.applied.borrow(), 1), 10);
        assert_eq!(position(&shared.applied.borrow(), 5), 0);
    }

    #[test]
    fn only_connection_and_security_options_pass_through() {
        for key in [
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "sasl.password",
            "ssl.ca.location",
            "ssl.endpoint.identification.algorithm",
            "socket.timeout.ms",
            "client.dns.lookup",
            "broker.address.family",
            "reconnect.backoff.max.ms",
        ] {
            assert!(is_connection_option(key), "{key}");
        }
        for key in [
            "fetch.max.bytes",
            "session.timeout.ms",
            "group.instance.id",
            "max.poll.interval.ms",
            "compression.type",
            "socket_cb",
            "ssl_key",
        ] {
            assert!(!is_connection_option(key), "{key}");
        }
    }

    #[test]
    fn secrets_are_redacted_from_messages() {
        let options: std::collections::BTreeMap<String, String> =
            [("sasl.password", "canary-pw"), ("sasl.username", "impulse")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        assert_eq!(
            redact_secret_values("bad canary-pw for impulse", &options),
            "bad *** for impulse"
        );
    }
}
