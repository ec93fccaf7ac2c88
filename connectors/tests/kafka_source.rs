//! The Kafka source against the real broker (`scripts/services.sh up kafka`): per-partition
//! order, one batch in flight per partition, per-key order with several in flight, commits at
//! the lowest unresolved offset, filtered records committed, starting positions, and a second
//! group member joining and leaving without losing a record.
//!
//! Every test makes its own topic and group, so they run in parallel.

#![cfg(feature = "kafka")]

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures::future::BoxFuture;
use impulse_config::KafkaTriggerConfig;
use impulse_connectors::contract::{Outcome, SourceError};
use impulse_connectors::kafka::{BatchHandler, BatchOutcome, KafkaBatch, KafkaSource};
use impulse_test_support::kafka::create_topic;
use impulse_test_support::services::require_kafka;
use impulse_test_support::wait::{eventually, wait_until};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Bound on each wait for a batch or a Kafka step.
const WAIT: Duration = Duration::from_secs(30);

// === helpers ===

/// A batch the Kafka source handed to a test through [`ChannelHandler`]. Answer it with
/// [`Delivery::resolve`] or [`Delivery::deliver`]; dropping it abandons every record.
#[derive(Debug)]
struct Delivery {
    /// The batch.
    batch: Arc<KafkaBatch>,
    reply: oneshot::Sender<BatchOutcome>,
}

impl Delivery {
    /// Every record was delivered.
    fn deliver(self) {
        let outcome = BatchOutcome::all(self.batch.records.len(), Outcome::Delivered);
        self.resolve(outcome);
    }

    /// Reports `outcome` to the source.
    fn resolve(self, outcome: BatchOutcome) {
        // The source stopped waiting (a revoke or shutdown timed out): nothing to tell.
        let _gone = self.reply.send(outcome);
    }
}

/// A [`BatchHandler`] that hands each batch to the test on a channel and waits for its answer.
#[derive(Debug)]
struct ChannelHandler(mpsc::Sender<Delivery>);

impl ChannelHandler {
    /// The handler for `KafkaSource::run`, and the test's end.
    fn channel(capacity: usize) -> (Arc<dyn BatchHandler<KafkaBatch>>, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Arc::new(Self(tx)), rx)
    }
}

impl BatchHandler<KafkaBatch> for ChannelHandler {
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

fn unique(prefix: &str) -> String {
    format!("impulse-src-{prefix}-{}", Uuid::new_v4().simple())
}

/// A trigger reading `topic` from the earliest record, with a short window; `extra` overrides.
fn trigger(bootstrap: &str, topic: &str, extra: &serde_json::Value) -> Result<KafkaTriggerConfig> {
    let mut config = json!({
        "function": "f",
        "bootstrap_servers": bootstrap,
        "topics": [topic],
        "starting_position": "earliest",
        "batch_window": "100ms",
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            config.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(config).context("a trigger config")
}

fn producer(bootstrap: &str) -> Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", WAIT.as_millis().to_string())
        .create()
        .context("creating the producer")
}

/// A record to produce: partition, key, value, and an optional create time.
struct Produce {
    partition: i32,
    key: String,
    value: Vec<u8>,
    timestamp: Option<i64>,
}

fn rec(partition: i32, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Produce {
    Produce {
        partition,
        key: key.into(),
        value: value.into(),
        timestamp: None,
    }
}

/// Produces in order (one idempotent producer keeps per-partition order) and returns each
/// record's (partition, offset).
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: Vec<Produce>,
) -> Result<Vec<(i32, i64)>> {
    let mut pending = Vec::with_capacity(records.len());
    for r in &records {
        let mut record = FutureRecord::to(topic)
            .partition(r.partition)
            .key(r.key.as_str())
            .payload(r.value.as_slice());
        if let Some(ts) = r.timestamp {
            record = record.timestamp(ts);
        }
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| anyhow!("enqueueing to {topic}: {e}"))?;
        pending.push(delivery);
    }
    let mut delivered = Vec::with_capacity(pending.len());
    for delivery in pending {
        let delivery = tokio::time::timeout(WAIT, delivery)
            .await
            .context("delivery report timed out")?
            .map_err(|_| anyhow!("delivery future cancelled"))?
            .map_err(|(e, _)| anyhow!("producing to {topic}: {e}"))?;
        delivered.push((delivery.partition, delivery.offset));
    }
    Ok(delivered)
}

/// The group's committed offset per partition (-1: none).
async fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Result<Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a consumer")?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let found = tokio::task::spawn_blocking(move || consumer.committed_offsets(list, WAIT))
        .await
        .context("committed_offsets panicked")??;
    Ok((0..partitions)
        .map(
            |p| match found.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect())
}

/// A source running in a task, stopped through `stop`.
struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), SourceError>>,
}

impl Running {
    fn start(source: KafkaSource, handler: Arc<dyn BatchHandler<KafkaBatch>>) -> Self {
        let (shutdown, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(source.run(handler, async move {
            let _stopped = rx.await;
        }));
        Self { shutdown, task }
    }

    async fn stop(self) -> Result<()> {
        let _listening = self.shutdown.send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .context("the source did not stop")?
            .context("the source task panicked")?
            .map_err(|e| anyhow!("the source failed: {e}"))
    }
}

async fn next_batch(rx: &mut mpsc::Receiver<Delivery>) -> Result<Delivery> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .context("no batch in time")?
        .context("the source closed its channel")
}

fn check_batch(batch: &KafkaBatch, max: usize) -> Result<()> {
    ensure!(!batch.records.is_empty(), "an empty batch");
    ensure!(
        batch.records.len() <= max,
        "{} records > batch_size {max}",
        batch.records.len()
    );
    for pair in batch.records.windows(2) {
        ensure!(
            pair[0].offset < pair[1].offset,
            "offsets out of order in a batch"
        );
    }
    for r in &batch.records {
        ensure!(
            *r.topic == *batch.topic && r.partition == batch.partition,
            "a foreign record"
        );
    }
    Ok(())
}

/// Key mode bookkeeping: records in flight per key (`.0`), batches in flight (`.1`).
#[derive(Default)]
struct InFlight(HashMap<Vec<u8>, usize>, usize);

/// Rebalance bookkeeping: records seen (`.0`), duplicates (`.1`), records per member (`.2`).
#[derive(Default)]
struct Seen(BTreeSet<(i32, i64)>, usize, [usize; 2]);

// === tests ===

#[tokio::test]
async fn keeps_partition_order_over_ten_thousand_records() -> Result<()> {
    let bootstrap = require_kafka().await;
    let topic = unique("order");
    let partitions = 4;
    let per_partition = 2_500;
    create_topic(&bootstrap, &topic, partitions).await;
    let records = (0..per_partition)
        .flat_map(|i| (0..partitions).map(move |p| rec(p, format!("k{i}"), format!("{p}:{i}"))))
        .collect();
    produce(&producer(&bootstrap)?, &topic, records).await?;

    let config = trigger(&bootstrap, &topic, &json!({"batch_size": 100}))?;
    let source = KafkaSource::new("order", &config)?;
    let group = source.group_id().to_owned();
    let (handler, mut rx) = ChannelHandler::channel(16);
    let running = Running::start(source, handler);
    let mut next = vec![0i64; partitions as usize];
    let mut total = 0;
    while total < partitions as usize * per_partition {
        let delivery = next_batch(&mut rx).await?;
        let batch = &delivery.batch;
        check_batch(batch, 100)?;
        let p = batch.partition as usize;
        for r in &batch.records {
            ensure!(
                r.offset == next[p],
                "partition {p}: got {} expected {}",
                r.offset,
                next[p]
            );
            let value = r.value.as_deref().unwrap_or_default();
            ensure!(
                value == format!("{p}:{}", next[p]).as_bytes(),
                "wrong value at {}",
                r.identifier()
            );
            next[p] += 1;
        }
        total += batch.records.len();
        delivery.deliver();
    }
    running.stop().await?;
    let offsets = committed(&bootstrap, &group, &topic, partitions).await?;
    assert_eq!(offsets, vec![per_partition as i64; partitions as usize]);
    Ok(())
}

#[tokio::test]
async fn sends_one_batch_per_partition_at_a_time() -> Result<()> {
    let bootstrap = require_kafka().await;
    let topic = unique("inflight");
    let per_partition = 200;
    create_topic(&bootstrap, &topic, 3).await;
    let records = (0..per_partition)
        .flat_map(|i| (0..3).map(move |p| rec(p, "same", format!("{i}"))))
        .collect();
    produce(&producer(&bootstrap)?, &topic, records).await?;

    let config = trigger(&bootstrap, &topic, &json!({"batch_size": 10}))?;
    let (handler, mut rx) = ChannelHandler::channel(16);
    let running = Running::start(KafkaSource::new("inflight", &config)?, handler);
    let mut held: Option<Delivery> = None;
    let mut done = [0usize; 3];
    while held.is_none() || done[1] < per_partition || done[2] < per_partition {
        let delivery = next_batch(&mut rx).await?;
        check_batch(&delivery.batch, 10)?;
        let partition = delivery.batch.partition;
        if partition == 0 {
            ensure!(
                held.is_none(),
                "a second batch of partition 0 while one was in flight"
            );
            held = Some(delivery);
        } else {
            done[partition as usize] += delivery.batch.records.len();
            delivery.deliver();
        }
    }
    // Nothing more from partition 0 while its batch is held (the others are finished).
    if let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
        bail!(
            "partition {} sent a batch while partition 0 was held",
            delivery.batch.partition
        );
    }
    let first = held.take().context("held")?;
    let mut next = first.batch.records.last().map_or(0, |r| r.offset + 1);
    done[0] = first.batch.records.len();
    first.deliver();
    while done[0] < per_partition {
        let delivery = next_batch(&mut rx).await?;
        let batch = &delivery.batch;
        ensure!(
            batch.partition == 0,
            "unexpected partition {}",
            batch.partition
        );
        for r in &batch.records {
            ensure!(r.offset == next, "out of order");
            next += 1;
        }
        done[0] += batch.records.len();
        delivery.deliver();
    }
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_mode_keeps_key_order_with_several_batches_in_flight() -> Result<()> {
    let bootstrap = require_kafka().await;
    let topic = unique("keys");
    let total = 600usize;
    let keys = 40;
    create_topic(&bootstrap, &topic, 1).await;
    let records = (0..total)
        .map(|i| rec(0, format!("k{}", i % keys), format!("{i}")))
        .collect();
    produce(&producer(&bootstrap)?, &topic, records).await?;

    let config = trigger(
        &bootstrap,
        &topic,
        &json!({"batch_size": 5, "batch_window": "20ms", "ordering": "key"}),
    )?;
    let (handler, mut rx) = ChannelHandler::channel(64);
    let running = Running::start(KafkaSource::new("keys", &config)?, handler);

    // Key → records of it in flight; batches in flight.
    let in_flight: Arc<Mutex<InFlight>> = Arc::default();
    let mut max_batches = 0;
    let mut last_offset: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut seen = 0;
    let mut resolvers = Vec::new();
    while seen < total {
        let delivery = next_batch(&mut rx).await?;
        let batch = Arc::clone(&delivery.batch);
        check_batch(&batch, 5)?;
        {
            let mut state = in_flight.lock().map_err(|_| anyhow!("poisoned"))?;
            let keys_in_batch: BTreeSet<Vec<u8>> = batch
                .records
                .iter()
                .filter_map(|r| r.key.as_deref().map(<[u8]>::to_vec))
                .collect();
            for key in &keys_in_batch {
                ensure!(
                    state.0.get(key).copied().unwrap_or(0) == 0,
                    "key {} sent while an earlier batch of it was in flight",
                    String::from_utf8_lossy(key)
                );
            }
            for r in &batch.records {
                let key = r.key.as_deref().map(<[u8]>::to_vec).context("keyed")?;
                let last = last_offset.insert(key.clone(), r.offset);
                ensure!(
                    last.is_none_or(|l| l < r.offset),
                    "key order broken at {}",
                    r.identifier()
                );
                *state.0.entry(key).or_default() += 1;
            }
            state.1 += 1;
            max_batches = max_batches.max(state.1);
        }
        seen += batch.records.len();
        // Resolve after a varying delay, so batches finish out of order.
        let delay = Duration::from_millis(10 + (batch.records[0].offset as u64 * 7) % 50);
        let state = Arc::clone(&in_flight);
        resolvers.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Release the keys before the acks, so the source can never be faster than us.
            if let Ok(mut state) = state.lock() {
                for r in &batch.records {
                    if let Some(count) = r.key.as_deref().and_then(|k| state.0.get_mut(k)) {
                        *count -= 1;
                    }
                }
                state.1 -= 1;
            }
            delivery.deliver();
        }));
    }
    for resolver in resolvers {
        resolver.await?;
    }
    ensure!(max_batches > 1, "never more than one batch in flight");
    ensure!(last_offset.len() == keys, "keys missing");
    running.stop().await
}

#[tokio::test]
async fn commits_only_up_to_the_lowest_unresolved_offset() -> Result<()> {
    let bootstrap = require_kafka().await;
    let topic = unique("watermark");
    create_topic(&bootstrap, &topic, 1).await;
    let records = (0..20)
        .map(|i| rec(0, format!("k{i}"), format!("{i}")))
        .collect();
    produce(&producer(&bootstrap)?, &topic, records).await?;
    let config = trigger(
        &bootstrap,
        &topic,
        &json!({"batch_size": 20, "batch_window": "2s"}),
    )?;
    let start = || -> Result<(KafkaSource, String)> {
        let source =
            KafkaSource::new("watermark", &config)?.with_drain_timeout(Duration::from_secs(1));
        let group = source.group_id().to_owned();
        Ok((source, group))
    };

    // 0–4 and 8–19 final (two kinds of outcome), 5–7 without an outcome (abandoned).
    let (source, group) = start()?;
    let (handler, mut rx) = ChannelHandler::channel(4);
    let running = Running::start(source, handler);
    let delivery = next_batch(&mut rx).await?;
    ensure!(
        delivery.batch.records.len() == 20,
        "one batch of 20, got {}",
        delivery.batch.records.len()
    );
    let mut outcome = BatchOutcome::unresolved(20);
    outcome.resolve(8..20, Outcome::DeadLettered);
    outcome.resolve(0..5, Outcome::Delivered);
    delivery.resolve(outcome);
    running.stop().await?;
    assert_eq!(committed(&bootstrap, &group, &topic, 1).await?, [5]);

    // The same group again: redelivery starts at the lowest unresolved offset. A batch still
    // in flight when the source stops (past the drain timeout) commits nothing.
    let (source, _) = start()?;
    let (handler, mut rx) = ChannelHandler::channel(4);
    let running = Running::start(source, handler);
    let held = next_batch(&mut rx).await?;
    let offsets: Vec<i64> = held.batch.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (5..20).collect::<Vec<_>>());
    running.stop().await?;
    drop(held);
    assert_eq!(committed(&bootstrap, &group, &topic, 1).await?, [5]);

    let (source, _) = start()?;
    let (handler, mut rx) = ChannelHandler::channel(4);
    let running = Running::start(source, handler);
    let delivery = next_batch(&mut rx).await?;
    assert_eq!(delivery.batch.records.first().map(|r| r.offset), Some(5));
    delivery.deliver();
    running.stop().await?;
    assert_eq!(committed(&bootstrap, &group, &topic, 1).await?, [20]);
    Ok(())
}

#[tokio::test]
async fn commits_filtered_records() -> Result<()> {
    let bootstrap = require_kafka().await;
    let topic = unique("filter");
    create_topic(&bootstrap, &topic, 1).await;
    let mut records: Vec<Produce> = (0..12)
        .map(|i| rec(0, "k", json!({"keep": i % 2 == 0 && i < 10}).to_string()))
        .collect();
    records[7].value = b"plain text".to_vec();
    records[9].key = "vip".to_owned();
    // A marker that passes, produced last: once it arrives, 10 and 11 were filtered.
    records.push(rec(0, "k", json!({"keep": true}).to_string()));
    produce(&producer(&bootstrap)?, &topic, records).await?;

    let config = trigger(
        &bootstrap,
        &topic,
        &json!({"filter": [{"value": {"keep": [true]}}, {"key": ["vip"]}]}),
    )?;
    let source = KafkaSource::new("filter", &config)?.with_drain_timeout(Duration::from_secs(1));
    let group = source.group_id().to_owned();
    let (handler, mut rx) = ChannelHandler::channel(4);
    let running = Running::start(source, handler);
    let mut delivered = Vec::new();
    while !delivered.contains(&12) {
        let delivery = next_batch(&mut rx).await?;
        let mut outcome = BatchOutcome::unresolved(delivery.batch.records.len());
        for (i, r) in delivery.batch.records.iter().enumerate() {
            delivered.push(r.offset);
            // The marker stays unresolved.
            if r.offset != 12 {
                outcome.resolve(i..i + 1, Outcome::Delivered);
            }
        }
        delivery.resolve(outcome);
    }
    assert_eq!(delivered, [0, 2, 4, 6, 8, 9, 12]);
    // Everything before the marker, filtered records included, commits.
    running.stop().await?;
    assert_eq!(committed(&bootstrap, &group, &topic, 1).await?, [12]);
    Ok(())
}

#[tokio::test]
async fn starting_positions_apply_to_new_groups() -> Result<()> {
    let bootstrap = require_kafka().await;
    let topic = unique("start");
    create_topic(&bootstrap, &topic, 1).await;
    let producer = producer(&bootstrap)?;
    let now = chrono::Utc::now().timestamp_millis();
    let old: Vec<Produce> = (0..10)
        .map(|i| Produce {
            timestamp: Some(now - if i < 5 { 60_000 } else { 30_000 }),
            ..rec(0, "k", format!("{i}"))
        })
        .collect();
    produce(&producer, &topic, old).await?;

    // Earliest: everything.
    let config = trigger(
        &bootstrap,
        &topic,
        &json!({"starting_position": "earliest"}),
    )?;
    let (handler, mut rx) = ChannelHandler::channel(4);
    let earliest = Running::start(KafkaSource::new("start-e", &config)?, handler);
    let mut offsets = Vec::new();
    while offsets.len() < 10 {
        let delivery = next_batch(&mut rx).await?;
        offsets.extend(delivery.batch.records.iter().map(|r| r.offset));
        delivery.deliver();
    }
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
    earliest.stop().await?;

    // At a timestamp: from the first record at or after it.
    let at = chrono::DateTime::from_timestamp_millis(now - 45_000).context("a time")?;
    let config = trigger(
        &bootstrap,
        &topic,
        &json!({"starting_position": "at_timestamp", "starting_timestamp": at.to_rfc3339()}),
    )?;
    let (handler, mut rx) = ChannelHandler::channel(4);
    let at_timestamp = Running::start(KafkaSource::new("start-t", &config)?, handler);
    let delivery = next_batch(&mut rx).await?;
    assert_eq!(delivery.batch.records.first().map(|r| r.offset), Some(5));
    delivery.deliver();
    at_timestamp.stop().await?;

    // Latest: only records produced after the assignment; keep producing until one arrives.
    let config = trigger(&bootstrap, &topic, &json!({"starting_position": "latest"}))?;
    let (handler, mut rx) = ChannelHandler::channel(4);
    let latest = Running::start(KafkaSource::new("start-l", &config)?, handler);
    let delivery = eventually("a record produced after the assignment", WAIT, async || {
        // A failed produce ends the test; only "nothing delivered yet" is worth another try.
        if let Err(e) = produce(&producer, &topic, vec![rec(0, "k", "new")]).await {
            return Ok(Err(e));
        }
        match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(delivery)) => Ok(Ok(delivery)),
            Ok(None) | Err(_) => Err("nothing delivered".to_owned()),
        }
    })
    .await
    .map_err(|e| anyhow!(e))??;
    let offsets: Vec<i64> = delivery.batch.records.iter().map(|r| r.offset).collect();
    ensure!(
        offsets.iter().all(|o| *o >= 10),
        "latest delivered an old record: {offsets:?}"
    );
    delivery.deliver();
    latest.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_joining_and_leaving_loses_nothing() -> Result<()> {
    let bootstrap = require_kafka().await;
    let topic = unique("rebalance");
    let partitions = 4;
    create_topic(&bootstrap, &topic, partitions).await;
    // Fast heartbeats: a member learns of a rebalance at its next heartbeat (3 s by default,
    // and a cooperative rebalance takes two rounds). The short session bounds the wait when a
    // member closes with an empty assignment: librdkafka then skips the LeaveGroup.
    let config = trigger(
        &bootstrap,
        &topic,
        &json!({
            "batch_size": 50,
            "group_id": unique("group"),
            "librdkafka_options": {"heartbeat.interval.ms": "500", "session.timeout.ms": "6000"},
        }),
    )?;

    // Both members feed one collector; it acks everything at once.
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let collector = |member: usize, mut rx: mpsc::Receiver<Delivery>| {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                let batch = &delivery.batch;
                if let Ok(mut seen) = seen.lock() {
                    for r in &batch.records {
                        if !seen.0.insert((r.partition, r.offset)) {
                            seen.1 += 1;
                        }
                    }
                    seen.2[member] += batch.records.len();
                }
                delivery.deliver();
            }
        })
    };
    let (handler_a, rx_a) = ChannelHandler::channel(8);
    let (handler_b, rx_b) = ChannelHandler::channel(8);
    let collect_a = collector(0, rx_a);
    let collect_b = collector(1, rx_b);

    let a = Running::start(KafkaSource::new("rebalance", &config)?, handler_a);
    let producing = tokio::spawn({
        let producer = producer(&bootstrap)?;
        let topic = topic.clone();
        async move {
            let mut produced = Vec::new();
            for chunk in 0..40 {
                let records = (0..100)
                    .map(|i| rec(i % partitions, format!("k{i}"), format!("{chunk}:{i}")))
                    .collect();
                produced.extend(produce(&producer, &topic, records).await?);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            anyhow::Ok(produced)
        }
    });
    let received_by = |member: usize| {
        let seen = Arc::clone(&seen);
        move || seen.lock().is_ok_and(|seen| seen.2[member] > 0)
    };
    // B joins while A is consuming, and leaves once it has had records of its own.
    wait_until("member A's first records", WAIT, received_by(0)).await;
    let b = Running::start(KafkaSource::new("rebalance", &config)?, handler_b);
    wait_until("member B's first records", WAIT, received_by(1)).await;
    b.stop().await?;
    let produced: BTreeSet<(i32, i64)> = producing.await??.into_iter().collect();

    eventually("every produced record", WAIT, async || {
        let seen = seen.lock().expect("no collector panicked");
        match produced.difference(&seen.0).count() {
            0 => Ok(()),
            missing => Err(format!("{missing} records lost")),
        }
    })
    .await
    .map_err(|e| anyhow!(e))?;
    a.stop().await?;
    collect_a.await?;
    collect_b.await?;
    let seen = seen.lock().map_err(|_| anyhow!("poisoned"))?;
    eprintln!(
        "{} records, {} duplicates, member A {} / member B {}",
        produced.len(),
        seen.1,
        seen.2[0],
        seen.2[1]
    );
    ensure!(
        seen.2[1] > 0,
        "the second member never received a partition"
    );
    Ok(())
}
