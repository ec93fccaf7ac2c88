//! Kafka helpers for integration tests: topics, producing, and reading a topic to the end.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use impulse_connectors::contract::Outcome;
use impulse_connectors::kafka::{BatchHandler, BatchOutcome, KafkaBatch};
use tokio::sync::{mpsc, oneshot};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// Bound on each Kafka step.
const STEP: Duration = Duration::from_secs(30);

/// The config of one `http` function `consumer` at `endpoint` (with `timeout`, e.g. `"10s"`)
/// and one Kafka trigger `orders` reading `topic` from the earliest offset with the group
/// `<topic>-group`, on the broker of `scripts/services.sh`; `extra` lines end the trigger's
/// table.
pub fn orders_trigger_config(endpoint: &str, timeout: &str, topic: &str, extra: &str) -> String {
    format!(
        r#"
[functions.consumer]
target = {{ type = "http", endpoint = "{endpoint}" }}
timeout = "{timeout}"

[triggers.orders]
type = "kafka"
function = "consumer"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{topic}-group"
starting_position = "earliest"
{extra}
"#,
        bootstrap = crate::services::kafka_bootstrap(),
    )
}

/// Creates `topic` with `partitions` partitions on `bootstrap`.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic_with(bootstrap, topic, partitions, &[]).await;
}

/// [`create_topic`] with topic configs, e.g. `("cleanup.policy", "compact")`.
pub async fn create_topic_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(STEP));
    let new_topic = configs.iter().fold(
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        |new_topic, (key, value)| new_topic.set(key, value),
    );
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .expect("CreateTopics");
    for result in results {
        result.expect("topic created");
    }
}

/// An idempotent `acks=all` producer.
pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", STEP.as_millis().to_string())
        .create()
        .expect("producer")
}

/// Produces `value` with `key` to `partition` of `topic`, waiting for the delivery report.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: &[u8],
) {
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(value);
    producer
        .send(record, STEP)
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
}

/// Reads `topic` from the beginning until `count` records arrived (or `timeout` passed) and
/// returns their values.
pub async fn read_values(
    bootstrap: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("impulse-test-reader-{}", uuid::Uuid::new_v4()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut values = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while values.len() < count {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => values.push(message.payload().unwrap_or_default().to_vec()),
            Ok(Err(err)) => panic!("reading {topic}: {err}"),
            Err(_) => break,
        }
    }
    values
}

/// The sum over `topic`'s partitions of the offsets `group` has committed (0 for none).
/// Reads with a consumer that never joins the group.
pub async fn committed_total(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let (bootstrap, group, topic) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .create()
            .expect("consumer");
        let mut list = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(&topic, p);
        }
        let committed = consumer.committed_offsets(list, STEP).expect("OffsetFetch");
        committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                rdkafka::Offset::Offset(n) => n,
                _ => 0,
            })
            .sum()
    })
    .await
    .expect("join")
}

/// Waits until `group` has committed an offset on one of the first `partitions` partitions of
/// `topic`; panics, naming `what`, after `timeout`.
pub async fn wait_for_a_commit(
    what: &str,
    timeout: Duration,
    (bootstrap, group, topic): (&str, &str, &str),
    partitions: i32,
) {
    crate::wait::eventually(what, timeout, async || {
        match committed_total(bootstrap, group, topic, partitions).await {
            0 => Err("nothing committed".to_owned()),
            _ => Ok(()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A batch the Kafka source handed to a test through [`ChannelHandler`]. Answer it with
/// [`Delivery::resolve`] or [`Delivery::deliver`]; dropping it abandons every record.
#[derive(Debug)]
pub struct Delivery {
    /// The batch.
    pub batch: Arc<KafkaBatch>,
    reply: oneshot::Sender<BatchOutcome>,
}

impl Delivery {
    /// Every record was delivered.
    pub fn deliver(self) {
        let outcome = BatchOutcome::all(self.batch.records.len(), Outcome::Delivered);
        self.resolve(outcome);
    }

    /// Reports `outcome` to the source.
    pub fn resolve(self, outcome: BatchOutcome) {
        // The source stopped waiting (a revoke or shutdown timed out): nothing to tell.
        let _gone = self.reply.send(outcome);
    }
}

/// A [`BatchHandler`] that hands each batch to the test on a channel and waits for its answer.
#[derive(Debug)]
pub struct ChannelHandler(mpsc::Sender<Delivery>);

impl ChannelHandler {
    /// The handler for `KafkaSource::run`, and the test's end.
    pub fn channel(capacity: usize) -> (Arc<dyn BatchHandler>, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Arc::new(Self(tx)), rx)
    }
}

impl BatchHandler for ChannelHandler {
    fn handle(&self, batch: KafkaBatch) -> BoxFuture<'_, (KafkaBatch, BatchOutcome)> {
        Box::pin(async move {
            let len = batch.records.len();
            let batch = Arc::new(batch);
            let (reply, answer) = oneshot::channel();
            let delivery = Delivery {
                batch: Arc::clone(&batch),
                reply,
            };
            let outcome = match self.0.send(delivery).await {
                Ok(()) => answer
                    .await
                    .unwrap_or_else(|_dropped| BatchOutcome::unresolved(len)),
                Err(_closed) => BatchOutcome::unresolved(len),
            };
            // The test may still hold its copy of the batch.
            let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
            (batch, outcome)
        })
    }
}
