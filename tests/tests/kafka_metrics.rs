//! Kafka trigger metrics and the KIP-848 consumer group protocol, end to end: the real
//! `impulse` binary against the real Kafka broker of `scripts/services.sh`.
//!
//! - The lag gauge (`impulse_offset_lag_records`) while a function holds its batches, and once
//!   everything is delivered and committed; the record, filter and batch counters and the batch
//!   size histogram against what the function saw.
//! - Two instances sharing a group with `group.protocol = "consumer"` (KIP-848) while records
//!   are produced, one of them stopped with SIGTERM: nothing lost, offsets committed to the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::Impulse;
use impulse_tests::kafka::{committed_total, create_topic, orders_trigger_config, producer};
use impulse_tests::services::{kafka_bootstrap, require_kafka};
use impulse_tests::wait::eventually;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound on every wait for an observable state.
const WAIT: Duration = Duration::from_secs(60);

const LAG: &str = "impulse_offset_lag_records";
const RECEIVED: &str = "impulse_kafka_records_received_total";
const FILTERED: &str = "impulse_kafka_records_filtered_total";
const BATCHES: &str = "impulse_kafka_batches_total";
const BATCH_SIZE: &str = "impulse_kafka_batch_size";

// === helpers ===

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// One record of a Lambda Kafka event.
#[derive(Debug, Clone)]
struct Seen {
    partition: i32,
    offset: i64,
    value: Value,
}

/// The records of a Lambda Kafka event (`records` keyed `topic-partition`), values parsed.
fn records(event: &Value) -> Vec<Seen> {
    let mut out = Vec::new();
    let Some(groups) = event["records"].as_object() else {
        return out;
    };
    for list in groups.values() {
        for record in list.as_array().expect("a list of records") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(record["value"].as_str().expect("a base64 value"))
                .expect("base64");
            out.push(Seen {
                partition: i32::try_from(record["partition"].as_i64().expect("partition"))
                    .expect("an i32 partition"),
                offset: record["offset"].as_i64().expect("offset"),
                value: serde_json::from_slice(&bytes).expect("a JSON value"),
            });
        }
    }
    out
}

/// Produces `records` (partition, value) concurrently; returns each one's (partition, offset)
/// from its delivery report.
async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[(i32, String)],
) -> Vec<(i32, i64)> {
    let sends = records.iter().map(|(partition, value)| {
        let record = FutureRecord::to(topic)
            .partition(*partition)
            .key("k")
            .payload(value.as_str());
        producer.send(record, Duration::from_secs(30))
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|result| {
            let delivery = result.map_err(|(e, _)| e).expect("delivered");
            (delivery.partition, delivery.offset)
        })
        .collect()
}

// === Prometheus text format ===

/// One sample line of a Prometheus text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug)]
struct Metrics(Vec<Sample>);

impl Metrics {
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("bad sample line {line:?}")))
            .collect();
        Self(samples)
    }

    /// The value of the sample named `name` whose label set is exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut found = self
            .0
            .iter()
            .filter(|s| s.name == name && s.labels == wanted);
        let sample = found.next()?;
        assert!(found.next().is_none(), "{name}{labels:?} appears twice");
        Some(sample.value)
    }

    /// The value of `name{trigger="<trigger>"}`, as a count (panics when absent or fractional).
    fn count(&self, name: &str, trigger: &str) -> i64 {
        let value = self
            .get(name, &[("trigger", trigger)])
            .unwrap_or_else(|| panic!("no {name}{{trigger=\"{trigger}\"}} in /metrics"));
        assert!(
            value.fract() == 0.0,
            "{name} = {value} is not a whole number"
        );
        value as i64
    }

    /// The cumulative count of histogram `name`'s bucket `le` for `trigger`.
    fn bucket(&self, name: &str, trigger: &str, le: f64) -> i64 {
        let bucket = format!("{name}_bucket");
        let found: Vec<f64> = self
            .0
            .iter()
            .filter(|s| {
                s.name == bucket
                    && s.labels.len() == 2
                    && s.labels.get("trigger").map(String::as_str) == Some(trigger)
                    && s.labels.get("le").and_then(|b| b.parse::<f64>().ok()) == Some(le)
            })
            .map(|s| s.value)
            .collect();
        assert_eq!(found.len(), 1, "{bucket}{{le=\"{le}\"}} for {trigger}");
        found[0] as i64
    }
}

/// `name{k="v",…} value [timestamp]` or `name value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut set) = rest.strip_prefix('{') {
        loop {
            set = set.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if let Some(after) = set.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after_key) = set.split_once('=')?;
            let quoted = after_key.strip_prefix('"')?;
            let mut chars = quoted.char_indices();
            let mut value = String::new();
            let closing = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.trim().to_owned(), value);
            set = &quoted[closing + 1..];
        }
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

async fn scrape(impulse: &Impulse) -> Metrics {
    let response = reqwest::get(impulse.admin_url("/metrics"))
        .await
        .expect("GET /metrics");
    assert!(
        response.status().is_success(),
        "/metrics answered {}",
        response.status()
    );
    Metrics::parse(&response.text().await.expect("the /metrics body"))
}

// === ConsumerGroupDescribe (KIP-848), on the wire ===

/// What the broker's ConsumerGroupDescribe (API key 69, KIP-848) says about a group. The API
/// describes only groups run by the new protocol: a classic group answers
/// GROUP_ID_NOT_FOUND (69).
#[derive(Debug)]
struct GroupDescription {
    error_code: i16,
    state: String,
    assignor: String,
    members: usize,
}

/// Reads a flexible-version Kafka response.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        assert!(
            self.0.len() >= n,
            "truncated ConsumerGroupDescribe response"
        );
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }

    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().expect("2 bytes"))
    }

    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().expect("4 bytes"))
    }

    fn uvarint(&mut self) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
        }
        panic!("an unsigned varint longer than 64 bits");
    }

    /// A COMPACT_(NULLABLE_)STRING: length + 1 as a varint, 0 for null.
    fn compact_string(&mut self) -> Option<String> {
        let len = usize::try_from(self.uvarint()).expect("a usize length");
        let len = len.checked_sub(1)?;
        Some(String::from_utf8(self.take(len).to_vec()).expect("a UTF-8 string"))
    }

    fn skip_tagged_fields(&mut self) {
        for _ in 0..self.uvarint() {
            self.uvarint();
            let size = usize::try_from(self.uvarint()).expect("a usize size");
            self.take(size);
        }
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Sends ConsumerGroupDescribe v0 for `group` to the first bootstrap server, which is the
/// group coordinator on the single-node broker of `scripts/services.sh`.
async fn describe_consumer_group(group: &str) -> GroupDescription {
    let bootstrap = kafka_bootstrap();
    let addr = bootstrap
        .split(',')
        .next()
        .expect("a bootstrap server")
        .trim();
    let mut request = Vec::new();
    request.extend(69i16.to_be_bytes()); // API key: ConsumerGroupDescribe
    request.extend(0i16.to_be_bytes()); // API version
    request.extend(7i32.to_be_bytes()); // correlation id
    let client_id = b"impulse-tests";
    request.extend((client_id.len() as i16).to_be_bytes()); // header v2: INT16-sized client id
    request.extend(client_id);
    request.push(0); // header tagged fields
    request.push(2); // group ids: compact array of 1
    put_uvarint(&mut request, group.len() as u64 + 1);
    request.extend(group.as_bytes());
    request.push(0); // include_authorized_operations = false
    request.push(0); // body tagged fields

    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let size = i32::try_from(request.len()).expect("a small request");
        stream.write_all(&size.to_be_bytes()).await?;
        stream.write_all(&request).await?;
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).await?;
        let mut response = vec![0u8; usize::try_from(i32::from_be_bytes(size)).expect("size")];
        stream.read_exact(&mut response).await?;
        std::io::Result::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("ConsumerGroupDescribe answered within 10 s")
        .unwrap_or_else(|e| panic!("ConsumerGroupDescribe to {addr}: {e}"));

    let mut cursor = Cursor(&response);
    assert_eq!(cursor.i32(), 7, "correlation id");
    cursor.skip_tagged_fields(); // response header v1
    cursor.i32(); // throttle_time_ms
    assert_eq!(cursor.uvarint(), 2, "one described group");
    let error_code = cursor.i16();
    cursor.compact_string(); // error message
    assert_eq!(cursor.compact_string().as_deref(), Some(group), "group id");
    let state = cursor.compact_string().unwrap_or_default();
    cursor.i32(); // group epoch
    cursor.i32(); // assignment epoch
    let assignor = cursor.compact_string().unwrap_or_default();
    let members = usize::try_from(cursor.uvarint().saturating_sub(1)).expect("a member count");
    GroupDescription {
        error_code,
        state,
        assignor,
        members,
    }
}

#[test]
fn the_exposition_parser_matches_label_sets_exactly() {
    let text = r#"# HELP impulse_offset_lag_records Records behind.
# TYPE impulse_offset_lag_records gauge
impulse_offset_lag_records{trigger="orders"} 12
impulse_offset_lag_records{trigger="orders-2"} 7
impulse_kafka_batch_size_bucket{trigger="orders",le="10"} 3
impulse_kafka_batch_size_bucket{trigger="orders",le="+Inf"} 4
impulse_kafka_batch_size_sum{trigger="orders"} 31
odd{a="x \"y\", z\\",trigger="orders"} 1.5 1700000000000
impulse_build_info 1
"#;
    let metrics = Metrics::parse(text);
    assert_eq!(metrics.get(LAG, &[("trigger", "orders")]), Some(12.0));
    assert_eq!(metrics.get(LAG, &[("trigger", "orders-2")]), Some(7.0));
    assert_eq!(metrics.get(LAG, &[("trigger", "order")]), None);
    assert_eq!(metrics.count(LAG, "orders-2"), 7);
    assert_eq!(metrics.bucket(BATCH_SIZE, "orders", 10.0), 3);
    assert_eq!(metrics.bucket(BATCH_SIZE, "orders", f64::INFINITY), 4);
    assert_eq!(metrics.count("impulse_kafka_batch_size_sum", "orders"), 31);
    assert_eq!(
        metrics.get("odd", &[("a", "x \"y\", z\\"), ("trigger", "orders")]),
        Some(1.5)
    );
    assert_eq!(metrics.get("odd", &[("trigger", "orders")]), None);
    assert_eq!(metrics.get("impulse_build_info", &[]), Some(1.0));
}

// === the lag gauge and the counters ===

/// The trigger of [`lag_gauge_counts_held_records_then_returns_to_zero_and_counters_match`].
const LAGGED: &str = "lagged";

#[tokio::test]
async fn lag_gauge_counts_held_records_then_returns_to_zero_and_counters_match() {
    const PARTITIONS: i32 = 3;
    const PER_PARTITION: i64 = 100;
    const BATCH: i64 = 10;
    const N: i64 = PARTITIONS as i64 * PER_PARTITION;
    // Every fifth record of a partition (j % 5 == 4) is dropped by the filter; the first record
    // of each partition passes, so a partition's first batch starts at offset 0.
    const FILTERED_OUT: i64 = PARTITIONS as i64 * (PER_PARTITION / 5);

    let bootstrap = require_kafka().await;
    let topic = unique("lag");
    create_topic(&bootstrap, &topic, PARTITIONS).await;
    let planned: Vec<(i32, String)> = (0..PER_PARTITION)
        .flat_map(|j| {
            (0..PARTITIONS)
                .map(move |p| (p, json!({ "p": p, "j": j, "skip": j % 5 == 4 }).to_string()))
        })
        .collect();
    let written = produce_all(&producer(&bootstrap), &topic, &planned).await;
    for (p, offsets) in (0..PARTITIONS).map(|p| (p, written.iter().filter(|w| w.0 == p).count())) {
        assert_eq!(offsets as i64, PER_PARTITION, "records in partition {p}");
    }

    // The function records every invocation, then waits for the gate.
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let calls: Arc<Mutex<Vec<Vec<Seen>>>> = Arc::default();
    let c = Arc::clone(&calls);
    let function = FunctionServer::start(move |event: Value| {
        c.lock().expect("lock").push(records(&event));
        let mut gate = gate_rx.clone();
        async move {
            // The sender lives until the test ends; a dropped one also lets the call finish.
            let _open = gate.wait_for(|open| *open).await;
            axum::Json(json!({}))
        }
    })
    .await;
    let config = format!(
        r#"
[functions.held]
target = {{ type = "http", endpoint = "{endpoint}" }}
# Longer than the test holds a batch: a timeout would retry it and invoke more than once.
timeout = "300s"

[triggers.{LAGGED}]
type = "kafka"
function = "held"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{topic}-group"
starting_position = "earliest"
batch_size = {BATCH}
batch_window = "100ms"
filter = [ {{ value = {{ skip = [false] }} }} ]
librdkafka_options = {{ "statistics.interval.ms" = "200" }}
"#,
        endpoint = function.endpoint(),
    );
    let impulse = Impulse::start(&config).await;
    let fail = |e: String| -> ! { panic!("{e}\nimpulse log:\n{}", impulse.logs()) };
    let invocations = || calls.lock().expect("lock").len();

    // Held: one batch in flight per partition (ordering = "partition"), and nothing resolved
    // below it. Each partition's position stays at offset 0, so the lag is every record of the
    // topic: the held batches are not processed yet, and the records read behind them
    // (buffered, or dropped by the filter) cannot move the position past them.
    eventually("the first batch of every partition", WAIT, async || {
        let seen = invocations();
        if seen == PARTITIONS as usize {
            Ok(())
        } else {
            Err(format!("{seen} invocations"))
        }
    })
    .await
    .unwrap_or_else(|e| fail(e));
    let held_partitions: BTreeSet<i32> = calls
        .lock()
        .expect("lock")
        .iter()
        .map(|batch| {
            let partitions: BTreeSet<i32> = batch.iter().map(|r| r.partition).collect();
            assert_eq!(partitions.len(), 1, "a batch holds one partition");
            assert_eq!(
                batch[0].offset, 0,
                "a partition's first batch starts at offset 0"
            );
            assert!(batch.len() as i64 <= BATCH, "at most batch_size records");
            partitions.into_iter().next().expect("one partition")
        })
        .collect();
    assert_eq!(held_partitions, (0..PARTITIONS).collect::<BTreeSet<_>>());

    let mut highest_lag = 0;
    let held = eventually("the lag of the held records", WAIT, async || {
        let metrics = scrape(&impulse).await;
        let lag = metrics.count(LAG, LAGGED);
        highest_lag = highest_lag.max(lag);
        let state = (
            lag,
            metrics.count(RECEIVED, LAGGED),
            metrics.count(FILTERED, LAGGED),
            metrics.count(BATCHES, LAGGED),
        );
        // The lag is every record while only the held batches were sent; the source has read
        // at least those.
        let (lag, received, _, batches) = state;
        if lag == N && batches == i64::from(PARTITIONS) && received >= i64::from(PARTITIONS) * BATCH
        {
            Ok(state)
        } else {
            Err(format!("(lag, received, filtered, batches) = {state:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| fail(e));
    // Reading stops behind a held batch: in partition order a partition buffers two batches
    // besides the one in flight, and every 5th record (filtered, never buffered) comes on top.
    let (_, received, filtered, _) = held;
    let read_ahead = i64::from(PARTITIONS) * 3 * BATCH * 5 / 4;
    assert!(
        received <= read_ahead,
        "read {received} records behind held batches, more than {read_ahead}"
    );
    assert!(
        filtered <= received / 5 + i64::from(PARTITIONS),
        "{filtered} filtered of {received}"
    );
    assert!(
        highest_lag <= N,
        "the lag peaked at {highest_lag}, more records than the topic holds ({N})"
    );
    assert_eq!(
        invocations(),
        PARTITIONS as usize,
        "no batch beyond the held ones was sent"
    );

    // Open the gate: everything is delivered and committed, and the lag drains to 0.
    gate.send_replace(true);
    let group = format!("{topic}-group");
    eventually("every offset committed", WAIT, async || {
        let committed = committed_total(&bootstrap, &group, &topic, PARTITIONS).await;
        if committed == N {
            Ok(())
        } else {
            Err(format!("{committed} of {N} committed"))
        }
    })
    .await
    .unwrap_or_else(|e| fail(e));
    let metrics = eventually("the lag to drain to 0", WAIT, async || {
        let metrics = scrape(&impulse).await;
        match metrics.count(LAG, LAGGED) {
            0 => Ok(metrics),
            lag => Err(format!("lag {lag}")),
        }
    })
    .await
    .unwrap_or_else(|e| fail(e));

    // What the function saw: every record that passes the filter, exactly once, and no other.
    let calls = calls.lock().expect("lock").clone();
    let mut delivered: HashMap<(i32, i64), u32> = HashMap::new();
    for record in calls.iter().flatten() {
        assert_eq!(
            record.value["skip"],
            json!(false),
            "a filtered-out record reached the function: {record:?}"
        );
        *delivered
            .entry((record.partition, record.offset))
            .or_default() += 1;
    }
    let duplicates: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "delivered more than once: {duplicates:?}"
    );
    assert_eq!(
        delivered.len() as i64,
        N - FILTERED_OUT,
        "records delivered"
    );
    assert!(calls.iter().all(|batch| batch.len() as i64 <= BATCH));

    // The counters against it.
    let invoked = calls.len() as i64;
    assert_eq!(metrics.count(RECEIVED, LAGGED), N, "{RECEIVED}");
    assert_eq!(metrics.count(FILTERED, LAGGED), FILTERED_OUT, "{FILTERED}");
    assert_eq!(
        metrics.count(BATCHES, LAGGED),
        invoked,
        "{BATCHES} = invocations"
    );
    assert_eq!(
        metrics.count(&format!("{BATCH_SIZE}_count"), LAGGED),
        invoked,
        "{BATCH_SIZE}_count = invocations"
    );
    assert_eq!(
        metrics.count(&format!("{BATCH_SIZE}_sum"), LAGGED),
        N - FILTERED_OUT,
        "{BATCH_SIZE}_sum = records delivered"
    );
    assert_eq!(
        metrics.bucket(BATCH_SIZE, LAGGED, BATCH as f64),
        invoked,
        "every batch holds at most batch_size records"
    );
    println!(
        "lag: held at {} (peak {highest_lag}), {invoked} invocations, {} records delivered",
        held.0,
        N - FILTERED_OUT
    );
}

// === KIP-848: the consumer group protocol ===

/// Deliveries per (partition, offset), over every instance.
type Deliveries = Arc<Mutex<HashMap<(i32, i64), u32>>>;

/// A function that counts the records it receives into `deliveries` (per partition and offset)
/// and into `records_seen` (its own total).
async fn counting_function(
    deliveries: Deliveries,
    records_seen: Arc<AtomicUsize>,
) -> FunctionServer {
    FunctionServer::start(move |event: Value| {
        let batch = records(&event);
        records_seen.fetch_add(batch.len(), Ordering::SeqCst);
        let mut d = deliveries.lock().expect("lock");
        for record in batch {
            *d.entry((record.partition, record.offset)).or_default() += 1;
        }
        async move {
            // A little work, so that rebalances find batches in flight.
            tokio::time::sleep(Duration::from_millis(5)).await;
            axum::Json(json!({}))
        }
    })
    .await
}

fn kip848_config(endpoint: &str, topic: &str) -> String {
    // KIP-848: the broker assigns partitions, and the session and heartbeat settings are the
    // broker's (group.consumer.*), so none are passed here.
    let extra = r#"batch_size = 20
batch_window = "50ms"
librdkafka_options = { "group.protocol" = "consumer" }"#;
    orders_trigger_config(endpoint, "30s", topic, extra)
}

#[tokio::test]
async fn kip848_group_protocol_two_instances_one_stopped_loses_nothing() {
    const PARTITIONS: i32 = 6;
    let bootstrap = require_kafka().await;
    let topic = unique("kip848");
    let group = format!("{topic}-group");
    create_topic(&bootstrap, &topic, PARTITIONS).await;

    let deliveries: Deliveries = Arc::default();
    let (seen_a, seen_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let function_a = counting_function(Arc::clone(&deliveries), Arc::clone(&seen_a)).await;
    let function_b = counting_function(Arc::clone(&deliveries), Arc::clone(&seen_b)).await;
    let a = Impulse::start(&kip848_config(&function_a.endpoint(), &topic)).await;

    // Produce until told to stop: two records per partition every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let produced_count = Arc::new(AtomicUsize::new(0));
    let producing = tokio::spawn({
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        let (stop, produced_count) = (Arc::clone(&stop), Arc::clone(&produced_count));
        async move {
            let producer = producer(&bootstrap);
            let mut produced = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let chunk: Vec<(i32, String)> = (0..2 * PARTITIONS)
                    .map(|i| {
                        n += 1;
                        (i % PARTITIONS, json!({ "n": n }).to_string())
                    })
                    .collect();
                produced.extend(produce_all(&producer, &topic, &chunk).await);
                produced_count.store(produced.len(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            produced
        }
    });
    let logs = |b: Option<&Impulse>| {
        format!(
            "instance A log:\n{}\ninstance B log:\n{}",
            a.logs(),
            b.map(Impulse::logs).unwrap_or_default()
        )
    };

    eventually(
        "instance A to receive records",
        WAIT,
        async || match seen_a.load(Ordering::SeqCst) {
            0 => Err("none".to_owned()),
            n => Ok(n),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(None)));

    let mut b = Impulse::start(&kip848_config(&function_b.endpoint(), &topic)).await;
    // The broker moves partitions to B once A has released them.
    eventually(
        "instance B to receive records",
        WAIT,
        async || match seen_b.load(Ordering::SeqCst) {
            0 => Err("none".to_owned()),
            n => Ok(n),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(Some(&b))));
    // A keeps its share while B runs.
    let a_before = seen_a.load(Ordering::SeqCst);
    eventually("instance A to keep receiving records", WAIT, async || {
        let now = seen_a.load(Ordering::SeqCst);
        if now > a_before {
            Ok(())
        } else {
            Err(format!("{now} records"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(Some(&b))));

    // The group is a KIP-848 group (ConsumerGroupDescribe describes only those) with both.
    let described = eventually(
        "a consumer-protocol group with two members",
        WAIT,
        async || {
            let d = describe_consumer_group(&group).await;
            if d.error_code == 0 && d.members == 2 {
                Ok(d)
            } else {
                Err(format!("{d:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(Some(&b))));

    b.terminate();
    let status = b.wait(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "instance B exits cleanly on SIGTERM:\n{}",
        b.logs()
    );
    let b_seen = seen_b.load(Ordering::SeqCst);

    // Keep producing after B left: A must take over B's partitions for these.
    let after_b = produced_count.load(Ordering::SeqCst);
    eventually("records produced after B left", WAIT, async || {
        let n = produced_count.load(Ordering::SeqCst);
        if n >= after_b + 500 {
            Ok(())
        } else {
            Err(format!("{n} produced"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    stop.store(true, Ordering::SeqCst);
    let produced = producing.await.expect("the producer task");
    let expected: BTreeSet<(i32, i64)> = produced.iter().copied().collect();
    assert_eq!(expected.len(), produced.len(), "distinct delivery reports");

    // 0 lost: every (partition, offset) a delivery report named reached a function.
    eventually("every produced record", WAIT, async || {
        let d = deliveries.lock().expect("lock");
        let missing: Vec<(i32, i64)> = expected
            .iter()
            .filter(|k| !d.contains_key(k))
            .copied()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} missing, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            ))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(None)));
    eventually(
        "the group's committed offsets at the end",
        WAIT,
        async || {
            let committed = committed_total(&bootstrap, &group, &topic, PARTITIONS).await;
            if committed == produced.len() as i64 {
                Ok(())
            } else {
                Err(format!("{committed} of {} committed", produced.len()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(None)));
    let after = describe_consumer_group(&group).await;
    assert_eq!(
        (after.error_code, after.members),
        (0, 1),
        "only A is left: {after:?}"
    );

    let deliveries = deliveries.lock().expect("lock");
    let unexpected: Vec<_> = deliveries
        .keys()
        .filter(|k| !expected.contains(k))
        .collect();
    assert!(
        unexpected.is_empty(),
        "records never produced: {unexpected:?}"
    );
    let duplicates: u32 = deliveries.values().map(|n| n - 1).sum();
    println!(
        "KIP-848 ({} assignor, group {}): {} records, 0 lost, {duplicates} duplicates; \
         A received {}, B received {b_seen}",
        described.assignor,
        described.state,
        produced.len(),
        seen_a.load(Ordering::SeqCst),
    );
}
