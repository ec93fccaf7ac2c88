//! Kafka records, batches, and Lambda's Kafka event (SEMANTICS.md §1.1).

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;

use crate::contract::{EventId, Name};

/// `eventSource` of Lambda's self-managed Kafka event.
pub const EVENT_SOURCE: &str = "aws:SelfManagedKafka";

/// `timestampType` of a record without a timestamp.
pub const NO_TIMESTAMP_TYPE: &str = "NO_TIMESTAMP_TYPE";
/// `timestampType` of a record stamped by its producer.
pub const CREATE_TIME: &str = "CREATE_TIME";
/// `timestampType` of a record stamped by the broker.
pub const LOG_APPEND_TIME: &str = "LOG_APPEND_TIME";

/// One Kafka record on its way to a function.
///
/// Its outcome is reported with the rest of its batch's (see [`BatchOutcome`]).
///
/// [`BatchOutcome`]: super::BatchOutcome
#[derive(Debug, Clone)]
pub struct KafkaRecord {
    /// The topic it was read from. Interned: a copy per record is free, where an `Arc` cost
    /// two atomic updates per record.
    pub topic: Name,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Milliseconds since the Unix epoch; `None` for `NO_TIMESTAMP_TYPE`.
    pub timestamp: Option<i64>,
    /// `CREATE_TIME`, `LOG_APPEND_TIME` or `NO_TIMESTAMP_TYPE`.
    pub timestamp_type: &'static str,
    /// The key bytes; `None` for a null key.
    pub key: Option<Bytes>,
    /// The value bytes; `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in record order; a name may repeat, a value may be null.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl KafkaRecord {
    /// The idempotency key, the same on every delivery: `<topic>/<partition>/<offset>`
    /// (RELIABILITY.md, invariant 4). Topic names cannot contain `/`.
    pub fn event_id(&self) -> EventId {
        EventId::new(format!("{}/{}/{}", self.topic, self.partition, self.offset))
    }
}

/// Records of one partition, in offset order, sent together to a function.
#[derive(Debug, Clone)]
pub struct KafkaBatch {
    /// The trigger that read them.
    pub trigger: Arc<str>,
    /// Their topic.
    pub topic: Arc<str>,
    /// Their partition.
    pub partition: i32,
    /// The records, ascending offsets.
    pub records: Vec<KafkaRecord>,
}

impl KafkaBatch {
    /// Lambda's Kafka event for the whole batch; see [`encode_event`].
    pub fn encode(&self, bootstrap_servers: &str) -> Bytes {
        encode_event(bootstrap_servers, &self.records)
    }
}

// === encoding ===

/// Lambda's Kafka event for `records`. Keys, values and header values are written as base64 or
/// byte arrays without ever being parsed.
///
/// The event is compact JSON with fields in this order:
///
/// ```json
/// {"eventSource":"aws:SelfManagedKafka","bootstrapServers":"k1:9092,k2:9092",
///  "records":{"orders-0":[{"topic":"orders","partition":0,"offset":15,
///   "timestamp":1545084650987,"timestampType":"CREATE_TIME",
///   "key":"cmVjb3JkS2V5","value":"eyJrZXkiOiJ2YWx1ZSJ9",
///   "headers":[{"headerKey":[104,101,97,100,101,114]}]}]}}
/// ```
///
/// - `records` is keyed `<topic>-<partition>`, groups in order of first appearance, records in
///   the order given.
/// - `key` and `value` are standard base64 (with padding) of the raw bytes, whatever they hold:
///   the value is never parsed or decoded. An empty key or value is `""`; a **null** key or
///   value (a tombstone) is JSON `null`, so every record has the same fields.
/// - `headers` is a list of single-entry objects in record order (duplicate names survive);
///   each value is an array of **signed** bytes, -128–127, as Lambda sends them (Java's
///   `byte[]`; `aws_lambda_events`' `i8`, Go's and .NET's `int8`/`sbyte`). A header with a
///   **null** value is `{"name": []}`, like an empty one: Lambda does not document what it
///   sends, and `null` would fail `aws_lambda_events`' `Vec<i8>` — the whole batch, retried
///   until the partition stalls — while an empty array keeps the name and reads in every
///   official event type.
/// - `timestamp` is milliseconds since the epoch; a record without one (`NO_TIMESTAMP_TYPE`)
///   has `-1`, Kafka's own convention.
pub fn encode_event(bootstrap_servers: &str, records: &[KafkaRecord]) -> Bytes {
    // A batch holds one partition: then there is one group and nothing to collect.
    let single = records
        .split_first()
        .is_none_or(|(first, rest)| rest.iter().all(|r| same_partition(r, first)));
    let mut groups: Vec<&KafkaRecord> = Vec::new();
    if !single {
        for record in records {
            if !groups.iter().any(|g| same_partition(g, record)) {
                groups.push(record);
            }
        }
    }
    let firsts: &[&KafkaRecord] = if single { &[] } else { &groups };
    let single_topic_len = match (single, records.first()) {
        (true, Some(first)) => Some(json_str_len(&first.topic)),
        _ => None,
    };
    let capacity = envelope_len(bootstrap_servers)
        + records
            .iter()
            .map(|r| match single_topic_len {
                Some(topic_len) => record_len_in(r, topic_len) + 1,
                None => record_len(r) + 1,
            })
            .sum::<usize>()
        + match (single, records.first()) {
            (true, Some(r)) => group_envelope_len(&r.topic, r.partition),
            (true, None) => 0,
            (false, _) => firsts
                .iter()
                .map(|r| group_envelope_len(&r.topic, r.partition))
                .sum(),
        };
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(b"{\"eventSource\":\"");
    out.extend_from_slice(EVENT_SOURCE.as_bytes());
    out.extend_from_slice(b"\",\"bootstrapServers\":");
    write_str(&mut out, bootstrap_servers);
    out.extend_from_slice(b",\"records\":{");
    if single {
        if let Some(first) = records.first() {
            write_group(&mut out, first, records.iter());
        }
    } else {
        for (i, first) in firsts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let members = records.iter().filter(|r| same_partition(r, first));
            write_group(&mut out, first, members);
        }
    }
    out.extend_from_slice(b"}}");
    Bytes::from(out)
}

fn same_partition(a: &KafkaRecord, b: &KafkaRecord) -> bool {
    a.partition == b.partition && a.topic == b.topic
}

/// `"<topic>-<partition>":[…]` for the records of `first`'s partition.
fn write_group<'a>(
    out: &mut Vec<u8>,
    first: &KafkaRecord,
    members: impl Iterator<Item = &'a KafkaRecord>,
) {
    write_partition_key(out, &first.topic, first.partition);
    out.extend_from_slice(b":[");
    // Every record of the group repeats its topic: escape it once.
    let mut topic = Vec::with_capacity(json_str_len(&first.topic));
    write_str(&mut topic, &first.topic);
    for (j, record) in members.enumerate() {
        if j > 0 {
            out.push(b',');
        }
        write_record(out, record, &topic);
    }
    out.push(b']');
}

/// Bytes of the event around its groups: everything but `"<key>":[…]` entries.
pub(crate) fn envelope_len(bootstrap_servers: &str) -> usize {
    r#"{"eventSource":"","bootstrapServers":,"records":{}}"#.len()
        + EVENT_SOURCE.len()
        + json_str_len(bootstrap_servers)
}

/// Bytes of one group's `"<topic>-<partition>":[]` (plus a separating comma).
pub(crate) fn group_envelope_len(topic: &str, partition: i32) -> usize {
    // The quoted `<topic>-<partition>`, then `:[]`, and a comma (one too many for the first
    // group: an upper bound).
    json_str_len(topic) + 1 + decimal_len(i64::from(partition)) + 4
}

/// Exact bytes [`encode_event`] writes for one record (without a separating comma).
pub(crate) fn record_len(record: &KafkaRecord) -> usize {
    record_len_in(record, json_str_len(&record.topic))
}

/// [`record_len`] with the topic's JSON length already known: it is the same for a whole
/// partition, which then scans its topic once, not per record.
pub(crate) fn record_len_in(record: &KafkaRecord, topic_len: usize) -> usize {
    let fixed = r#"{"topic":,"partition":,"offset":,"timestamp":,"timestampType":"","key":,"value":,"headers":[]}"#.len();
    let headers: usize = record
        .headers
        .iter()
        .map(|(name, value)| {
            // `{` name `:` value `}`
            let bytes = value.as_deref().unwrap_or_default();
            3 + json_str_len(name) + 2 + bytes.iter().map(|b| byte_len(*b) + 1).sum::<usize>()
                - usize::from(!bytes.is_empty())
        })
        .sum::<usize>()
        + record.headers.len().saturating_sub(1);
    fixed
        + topic_len
        + decimal_len(i64::from(record.partition))
        + decimal_len(record.offset)
        + decimal_len(record.timestamp.unwrap_or(-1))
        + record.timestamp_type.len()
        + optional_base64_len(record.key.as_deref())
        + optional_base64_len(record.value.as_deref())
        + headers
}

fn write_partition_key(out: &mut Vec<u8>, topic: &str, partition: i32) {
    // `-` and digits never need escaping: the quoted topic, its closing quote moved after.
    write_str(out, topic);
    out.pop();
    out.push(b'-');
    write_decimal(out, i64::from(partition));
    out.push(b'"');
}

/// One record; `topic` is its topic already written as a JSON string.
fn write_record(out: &mut Vec<u8>, record: &KafkaRecord, topic: &[u8]) {
    out.extend_from_slice(b"{\"topic\":");
    out.extend_from_slice(topic);
    out.extend_from_slice(b",\"partition\":");
    write_decimal(out, i64::from(record.partition));
    out.extend_from_slice(b",\"offset\":");
    write_decimal(out, record.offset);
    out.extend_from_slice(b",\"timestamp\":");
    write_decimal(out, record.timestamp.unwrap_or(-1));
    out.extend_from_slice(b",\"timestampType\":\"");
    out.extend_from_slice(record.timestamp_type.as_bytes());
    out.extend_from_slice(b"\",\"key\":");
    write_base64(out, record.key.as_deref());
    out.extend_from_slice(b",\"value\":");
    write_base64(out, record.value.as_deref());
    out.extend_from_slice(b",\"headers\":[");
    for (i, (name, value)) in record.headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        write_str(out, name);
        out.push(b':');
        // A null value is written as an empty one (see `encode_event`).
        out.push(b'[');
        for (j, b) in value.as_deref().unwrap_or_default().iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_decimal(out, i64::from(i8::from_ne_bytes([*b])));
        }
        out.push(b']');
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

fn write_base64(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.extend_from_slice(b"null"),
        Some(bytes) => {
            out.push(b'"');
            let start = out.len();
            out.resize(start + base64_len(bytes.len()), 0);
            // The space is exactly the encoded length, so this cannot fail; if it ever did,
            // an empty string is still valid JSON.
            if STANDARD.encode_slice(bytes, &mut out[start..]).is_err() {
                out.truncate(start);
            }
            out.push(b'"');
        }
    }
}

fn write_decimal(out: &mut Vec<u8>, n: i64) {
    // Two digits per step from a table: a record has three numbers, and a batch up to 10,000
    // records.
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A JSON string, escaped as serde_json escapes (see [`json_str_len`]).
fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\x08' => out.extend_from_slice(b"\\b"),
            b'\x0c' => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Length of `s` as a JSON string, quotes included, escaped as serde_json does: `"` and `\`
/// take two bytes, `\b \f \n \r \t` two, other control characters six (`\u001f`).
pub(crate) fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\x08' | b'\x0c' | b'\n' | b'\r' | b'\t' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

fn optional_base64_len(bytes: Option<&[u8]>) -> usize {
    bytes.map_or(4, |b| base64_len(b.len()) + 2)
}

/// The length of `b` written as a signed byte.
fn byte_len(b: u8) -> usize {
    match i8::from_ne_bytes([b]) {
        0..=9 => 1,
        10..=99 | -9..=-1 => 2,
        100..=127 | -99..=-10 => 3,
        -128..=-100 => 4,
    }
}

fn decimal_len(n: i64) -> usize {
    // A logarithm rather than a division per digit: the batcher sizes every record it
    // reads, and a timestamp has 13 digits.
    let digits = n
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |log| log as usize + 1);
    usize::from(n < 0) + digits
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(offset: i64) -> KafkaRecord {
        KafkaRecord {
            topic: "orders".into(),
            partition: 0,
            offset,
            timestamp: Some(1_545_084_650_987),
            timestamp_type: CREATE_TIME,
            key: Some(Bytes::from_static(b"recordKey")),
            value: Some(Bytes::from_static(br#"{"key":"value"}"#)),
            headers: vec![(
                "headerKey".to_owned(),
                Some(Bytes::from_static(b"headerValue")),
            )],
        }
    }

    #[test]
    fn encodes_lambdas_example_exactly() {
        let r = record(15);
        let event = encode_event("kafka-1:9092,kafka-2:9092", std::slice::from_ref(&r));
        let expected = concat!(
            r#"{"eventSource":"aws:SelfManagedKafka","bootstrapServers":"kafka-1:9092,kafka-2:9092","#,
            r#""records":{"orders-0":[{"topic":"orders","partition":0,"offset":15,"#,
            r#""timestamp":1545084650987,"timestampType":"CREATE_TIME","#,
            r#""key":"cmVjb3JkS2V5","value":"eyJrZXkiOiJ2YWx1ZSJ9","#,
            r#""headers":[{"headerKey":[104,101,97,100,101,114,86,97,108,117,101]}]}]}}"#
        );
        assert_eq!(std::str::from_utf8(&event).unwrap(), expected);
    }

    #[test]
    fn encodes_binary_empty_and_null_fields() {
        let mut binary = record(1);
        binary.partition = 12;
        binary.topic = "a.b_c-d".into();
        binary.value = Some(Bytes::from_static(&[0xff, 0x00, 0x80, b'"']));
        binary.key = Some(Bytes::new());
        binary.headers = vec![
            (
                "dup".to_owned(),
                Some(Bytes::from_static(&[0, 9, 10, 99, 100, 255])),
            ),
            ("dup".to_owned(), None),
            ("empty\"\n".to_owned(), Some(Bytes::new())),
        ];
        binary.timestamp = None;
        binary.timestamp_type = NO_TIMESTAMP_TYPE;
        let mut tombstone = record(2);
        tombstone.topic = "a.b_c-d".into();
        tombstone.partition = 12;
        tombstone.key = None;
        tombstone.value = None;
        tombstone.headers = Vec::new();
        tombstone.timestamp_type = LOG_APPEND_TIME;
        let event = encode_event("k:9092", &[binary, tombstone]);
        let parsed: serde_json::Value = serde_json::from_slice(&event).expect("valid JSON");
        assert_eq!(
            parsed,
            json!({
                "eventSource": "aws:SelfManagedKafka",
                "bootstrapServers": "k:9092",
                "records": {"a.b_c-d-12": [
                    {"topic": "a.b_c-d", "partition": 12, "offset": 1, "timestamp": -1,
                     "timestampType": "NO_TIMESTAMP_TYPE", "key": "", "value": "/wCAIg==",
                     "headers": [{"dup": [0, 9, 10, 99, 100, -1]}, {"dup": []},
                                 {"empty\"\n": []}]},
                    {"topic": "a.b_c-d", "partition": 12, "offset": 2,
                     "timestamp": 1_545_084_650_987_i64, "timestampType": "LOG_APPEND_TIME",
                     "key": null, "value": null, "headers": []}
                ]}
            })
        );
    }

    #[test]
    fn groups_by_partition_in_first_appearance_order() {
        let a = record(1);
        let mut b = record(7);
        b.partition = 3;
        let c = record(2);
        let event = encode_event("k", &[a, b, c]);
        let text = std::str::from_utf8(&event).unwrap();
        let p0 = text.find("\"orders-0\"").unwrap();
        let p3 = text.find("\"orders-3\"").unwrap();
        assert!(p0 < p3);
        let parsed: serde_json::Value = serde_json::from_slice(&event).unwrap();
        let offsets: Vec<i64> = parsed["records"]["orders-0"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["offset"].as_i64().unwrap())
            .collect();
        assert_eq!(offsets, [1, 2]);
        assert_eq!(
            encode_event("k", &[]).as_ref(),
            br#"{"eventSource":"aws:SelfManagedKafka","bootstrapServers":"k","records":{}}"#
        );
    }

    #[test]
    fn predicted_lengths_are_exact() {
        let mut variants = Vec::new();
        for (i, value) in [
            None,
            Some(Bytes::new()),
            Some(Bytes::from_static(b"a")),
            Some(Bytes::from_static(b"ab")),
            Some(Bytes::from(vec![7u8; 1000])),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = record(i as i64 * 1_000_003);
            r.value = value.clone();
            r.key = value;
            r.partition = i as i32 * 11;
            r.timestamp = if i % 2 == 0 { None } else { Some(-5) };
            r.headers = match i {
                0 => Vec::new(),
                1 => vec![("h".to_owned(), None)],
                2 => vec![("\u{1}\t".to_owned(), Some(Bytes::new()))],
                _ => vec![
                    (
                        "x".to_owned(),
                        Some(Bytes::from_static(&[
                            0, 9, 10, 99, 100, 127, 128, 155, 156, 246, 247, 255,
                        ])),
                    ),
                    ("é".to_owned(), Some(Bytes::from_static(&[1]))),
                ],
            };
            variants.push(r);
        }
        for r in &variants {
            let mut out = Vec::new();
            let mut topic = Vec::new();
            write_str(&mut topic, &r.topic);
            write_record(&mut out, r, &topic);
            assert_eq!(
                record_len(r),
                out.len(),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
        let mut expected = envelope_len("b\"s");
        let mut partitions = Vec::new();
        for r in &variants {
            if !partitions.contains(&r.partition) {
                partitions.push(r.partition);
                expected += group_envelope_len(&r.topic, r.partition);
            }
            expected += record_len(r);
        }
        // Commas: one less per group than records, and one less than groups.
        expected -= 1;
        assert_eq!(encode_event("b\"s", &variants).len(), expected);
    }

    #[test]
    fn the_rust_runtime_s_kafka_event_type_reads_every_byte() {
        // `lambda_runtime` functions typed on `aws_lambda_events::kafka::KafkaEvent` read
        // header values as `i8`: unsigned numbers above 127 would fail the whole batch.
        let mut r = record(1);
        let all: Vec<u8> = (0..=255).collect();
        r.headers = vec![
            ("bytes".to_owned(), Some(Bytes::from(all.clone()))),
            ("null".to_owned(), None),
        ];
        let event = encode_event("k:9092", &[r]);
        let typed: aws_lambda_events::event::kafka::KafkaEvent =
            serde_json::from_slice(&event).expect("the official event type reads it");
        let record = &typed.records.values().next().expect("a partition")[0];
        let header = &record.headers[0]["bytes"];
        let read: Vec<u8> = header.iter().map(|b| b.to_ne_bytes()[0]).collect();
        assert_eq!(read, all);
        // A null header value keeps its name and reads as no bytes.
        assert_eq!(record.headers[1]["null"], Vec::<i8>::new());
    }

    #[test]
    fn strings_and_numbers_are_written_as_serde_json_does() {
        for s in [
            "",
            "plain",
            "q\"b\\s/",
            "\u{0}\u{1f}\u{7f}\n\r\t\u{8}\u{c}",
            "é✓🦀",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
            assert_eq!(json_str_len(s), serde_json::to_string(s).unwrap().len());
        }
        for n in [
            0,
            7,
            -1,
            9,
            10,
            -10,
            99,
            100,
            255,
            999_999,
            1_000_000,
            1_545_084_650_987,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
            assert_eq!(decimal_len(n), n.to_string().len());
        }
    }
}
