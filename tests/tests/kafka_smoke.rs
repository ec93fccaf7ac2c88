//! Smoke test of the Kafka broker that `scripts/services.sh up kafka` runs: a topic created
//! through the admin API takes a record with `acks=all` and hands it back, key, value and
//! headers intact, to a consumer in a fresh group.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use impulse_tests::services::require_kafka;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use uuid::Uuid;

/// Bound on each step; a healthy local broker answers in well under a second.
const STEP: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_produced_record_is_consumed_back_intact() -> Result<()> {
    let bootstrap = require_kafka().await;
    let run = Uuid::new_v4();
    let topic = format!("impulse-smoke-{run}");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .context("creating the admin client")?;
    let options = AdminOptions::new().operation_timeout(Some(STEP));
    let created = tokio::time::timeout(
        STEP,
        admin.create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &options,
        ),
    )
    .await
    .context("CreateTopics timed out")??;
    for result in created {
        result.map_err(|(name, code)| anyhow!("creating topic {name}: {code}"))?;
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", STEP.as_millis().to_string())
        .create()
        .context("creating the producer")?;
    let key = "order-42";
    let value = r#"{"event":"order.created","id":42}"#;
    let headers = [("content-type", "application/json"), ("trace-id", "7f3a")];
    let mut owned = OwnedHeaders::new();
    for (name, header_value) in headers {
        owned = owned.insert(Header {
            key: name,
            value: Some(header_value),
        });
    }
    let record = FutureRecord::to(&topic)
        .key(key)
        .payload(value)
        .headers(owned);
    let delivered = producer
        .send(record, STEP)
        .await
        .map_err(|(e, _)| anyhow!("producing to {topic}: {e}"))?;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("impulse-smoke-{run}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the consumer")?;
    consumer.subscribe(&[&topic])?;
    let message = tokio::time::timeout(STEP, consumer.recv())
        .await
        .with_context(|| format!("no record from {topic} within {STEP:?}"))??;

    assert_eq!(message.topic(), topic);
    assert_eq!(message.partition(), delivered.partition);
    assert_eq!(message.offset(), delivered.offset);
    assert_eq!(message.key(), Some(key.as_bytes()));
    assert_eq!(message.payload(), Some(value.as_bytes()));
    let received: Vec<(&str, Option<&[u8]>)> = message
        .headers()
        .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    let expected: Vec<(&str, Option<&[u8]>)> = headers
        .iter()
        .map(|&(name, v)| (name, Some(v.as_bytes())))
        .collect();
    assert_eq!(received, expected);

    drop(message);
    consumer.unsubscribe();
    tokio::time::timeout(STEP, admin.delete_topics(&[&topic], &options))
        .await
        .context("DeleteTopics timed out")??;
    Ok(())
}
