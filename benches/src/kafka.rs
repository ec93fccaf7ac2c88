//! Kafka for the benches: the services script's broker, topics, a fixed-seed producer, and
//! offset look-ups.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Bound on each Kafka administrative step.
const STEP: Duration = Duration::from_secs(30);

/// Bytes of each produced value (BENCHMARKING.md: 1 KB JSON payloads).
pub const VALUE_BYTES: usize = 1024;

/// Bootstrap servers: `IMPULSE_TEST_KAFKA`, default `127.0.0.1:9092` (the services script's
/// broker, as in the integration tests).
pub fn bootstrap() -> String {
    match std::env::var("IMPULSE_TEST_KAFKA") {
        Ok(v) if !v.is_empty() => v,
        _ => "127.0.0.1:9092".to_owned(),
    }
}

/// Fails, naming the command that starts Kafka, unless a broker answers a metadata request.
pub async fn require(bootstrap: &str) -> anyhow::Result<()> {
    let servers = bootstrap.to_owned();
    let checked = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("socket.timeout.ms", "5000")
            .create()
            .map_err(|e| e.to_string())?;
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        if metadata.brokers().is_empty() {
            return Err("the metadata response lists no broker".to_owned());
        }
        Ok(())
    })
    .await?;
    checked.map_err(|e| {
        anyhow::anyhow!(
            "Kafka is not reachable at {bootstrap}: {e}. Start it with: scripts/services.sh up kafka"
        )
    })
}

fn admin(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?)
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let options = AdminOptions::new().operation_timeout(Some(STEP));
    let results = admin(bootstrap)?
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &options,
        )
        .await?;
    for result in results {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }
    Ok(())
}

/// Deletes `topics` (best effort: the bench's own topics, at the end of a run).
pub async fn delete_topics(bootstrap: &str, topics: &[&str]) -> anyhow::Result<()> {
    let options = AdminOptions::new().operation_timeout(Some(STEP));
    for result in admin(bootstrap)?.delete_topics(topics, &options).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("deleting {topic}: {code}"))?;
    }
    Ok(())
}

/// The value of record `i`: a JSON object of exactly [`VALUE_BYTES`] bytes, padded with
/// characters drawn from `rng`.
pub fn value(rng: &mut fastrand::Rng, i: u64) -> Vec<u8> {
    let head = format!("{{\"id\":{i},\"pad\":\"");
    let tail = "\"}";
    let pad = VALUE_BYTES.saturating_sub(head.len() + tail.len());
    let mut out = Vec::with_capacity(VALUE_BYTES);
    out.extend_from_slice(head.as_bytes());
    out.extend((0..pad).map(|_| rng.alphanumeric() as u8));
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Produces `count` records (keys `k<i>`, 1 KB values from `seed`) round-robin over
/// `partitions` partitions of `topic`, and waits until every one is acknowledged (`acks=all`,
/// idempotent).
pub async fn fill(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "none")
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000")
        .create()?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut pending = Vec::new();
    for i in 0..count {
        let key = format!("k{i}");
        let value = value(&mut rng, i);
        let partition = i32::try_from(i % u64::try_from(partitions)?)?;
        loop {
            let record = FutureRecord::to(topic)
                .partition(partition)
                .key(&key)
                .payload(&value);
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The local queue is full: wait for what is already sent.
                    for delivery in join_all(pending.drain(..)).await {
                        delivery?.map_err(|(e, _)| e)?;
                    }
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    for delivery in join_all(pending).await {
        delivery?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// The sum over `topic`'s partitions of the offsets `group` has committed (0 for none), read
/// without joining the group.
pub async fn committed_total(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<i64> {
    let (bootstrap, group, topic) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .create()?;
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(&topic, p);
        }
        let committed = consumer.committed_offsets(list, STEP)?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(n) => n,
                _ => 0,
            })
            .sum())
    })
    .await?
}

/// The sum of the high watermarks of `topic`'s partitions: records ever written to it.
pub async fn high_watermarks_total(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<i64> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
        let mut total = 0;
        for p in 0..partitions {
            let (_, high) = consumer.fetch_watermarks(&topic, p, STEP)?;
            total += high;
        }
        Ok(total)
    })
    .await?
}

/// `/proc/<pid>/stat` of the Kafka broker the services script started, when there is one.
pub fn broker_stat() -> Option<PathBuf> {
    crate::proc::service_stat("kafka/kafka.pid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_1kb_json_and_reproducible() {
        let mut a = fastrand::Rng::with_seed(7);
        let mut b = fastrand::Rng::with_seed(7);
        for i in [0, 9, 123_456_789] {
            let v = value(&mut a, i);
            assert_eq!(v.len(), VALUE_BYTES);
            let parsed: serde_json::Value = serde_json::from_slice(&v).expect("JSON");
            assert_eq!(parsed["id"], i);
            assert_eq!(v, value(&mut b, i));
        }
    }
}
