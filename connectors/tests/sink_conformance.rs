//! The sinks against real storage: the embedded log in a temp dir, a Redis stream, and a Kafka
//! topic on the broker `scripts/services.sh up` runs. Each write must be readable back once it
//! resolved `Ok`.

#![cfg(all(feature = "kafka", feature = "embedded", feature = "redis"))]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use futures::future::join_all;
use impulse_connectors::contract::Sink;
use impulse_connectors::embedded::{read_log, LogSink};
use impulse_connectors::kafka::KafkaSink;
use impulse_connectors::redis::{read_stream, RedisStreamSink};
use impulse_test_support::services::{require_kafka, require_redis};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use serde_json::json;
use uuid::Uuid;

/// Bound on each step against a real service.
const STEP: Duration = Duration::from_secs(30);

#[tokio::test]
async fn log_sink_writes_are_read_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sink = LogSink::open(dir.path(), "orders-dlq")?;
    let writes = (0..20).map(|i| {
        let sink = sink.clone();
        async move {
            sink.write(&format!("req-{i}"), Bytes::from(format!(r#"{{"n":{i}}}"#)))
                .await
        }
    });
    for written in join_all(writes).await {
        written?;
    }
    sink.write("raw", Bytes::from_static(b"not json")).await?;

    let entries = read_log(dir.path(), "orders-dlq")?;
    assert_eq!(entries.len(), 21);
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.index, i);
        chrono::DateTime::parse_from_rfc3339(&entry.time)
            .with_context(|| format!("time {:?} is RFC 3339", entry.time))?;
    }
    let mut numbers: Vec<i64> = entries[..20]
        .iter()
        .map(|e| {
            assert_eq!(e.key, format!("req-{}", e.record["n"]));
            e.record["n"].as_i64().context("n is a number")
        })
        .collect::<Result<_>>()?;
    numbers.sort_unstable();
    assert_eq!(numbers, (0..20).collect::<Vec<_>>());
    assert_eq!(entries[20].key, "raw");
    assert_eq!(entries[20].record, json!("not json"));
    Ok(())
}

#[tokio::test]
async fn redis_stream_sink_writes_are_read_back() -> Result<()> {
    let url = require_redis().await;
    let stream = format!("impulse-sink-test-{}", Uuid::new_v4());
    let sink = RedisStreamSink::new("dlq", &url, &stream)?;
    sink.write("req-1", Bytes::from_static(br#"{"a":1}"#))
        .await?;
    sink.write("req-2", Bytes::from_static(b"plain text"))
        .await?;

    let entries = read_stream(&url, &stream, 10).await?;
    let got: Vec<(&str, &serde_json::Value)> =
        entries.iter().map(|(_, k, r)| (k.as_str(), r)).collect();
    assert_eq!(
        got,
        [("req-1", &json!({"a": 1})), ("req-2", &json!("plain text"))]
    );
    assert_eq!(read_stream(&url, &stream, 1).await?.len(), 1);

    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("DEL")
        .arg(&stream)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

#[tokio::test]
async fn kafka_sink_writes_are_consumed_back() -> Result<()> {
    let bootstrap = require_kafka().await;
    let run = Uuid::new_v4();
    let topic = format!("impulse-sink-test-{run}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
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

    let extra = BTreeMap::from([("message.timeout.ms".to_owned(), "30000".to_owned())]);
    let sink = KafkaSink::new("dlq", &bootstrap, &topic, &extra)?;
    let record = br#"{"requestContext":{"condition":"RetriesExhausted"}}"#;
    tokio::time::timeout(STEP, sink.write("req-42", Bytes::from_static(record)))
        .await
        .context("the delivery report did not arrive")??;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("impulse-sink-test-{run}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let message = tokio::time::timeout(STEP, consumer.recv())
        .await
        .with_context(|| format!("no record from {topic} within {STEP:?}"))??;
    assert_eq!(message.key(), Some(b"req-42".as_slice()));
    assert_eq!(message.payload(), Some(record.as_slice()));
    drop(message);
    drop(consumer);

    let deleted = tokio::time::timeout(STEP, admin.delete_topics(&[&topic], &options))
        .await
        .context("DeleteTopics timed out")??;
    for result in deleted {
        result.map_err(|(name, code)| anyhow!("deleting topic {name}: {code}"))?;
    }
    Ok(())
}
