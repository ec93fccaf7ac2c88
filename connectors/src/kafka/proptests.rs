//! Property tests of what a Kafka batch meets on its way: records of any bytes encode to the
//! exact, valid event the size accounting predicts; filters match any record without a panic;
//! partial batch responses name only records of the batch.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use impulse_config::filter::FilterCriteria;
use impulse_test_support::prop::{check, drawn, filter_patterns, Draw};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::event::{envelope_len, group_envelope_len, record_len};
use super::{
    encode_event, first_failed, KafkaFilter, KafkaRecord, RecordId, CREATE_TIME, LOG_APPEND_TIME,
    NO_TIMESTAMP_TYPE,
};
use crate::contract::Name;

/// Topics as Kafka allows them (`[a-zA-Z0-9._-]`), `-` (the identifiers' separator) included.
/// A fixed set: topic names are interned for the process's life.
const TOPICS: &[&str] = &["orders", "my-orders.v2", "a-1", "-", "a--0", "_", "x.y-9"];

/// Topics Kafka refuses, which the encoder must still escape (it never assumes a valid topic).
const ODD_TOPICS: &[&str] = &[
    "x@y",
    "q\"uote",
    "back\\slash",
    "t\nl",
    "\u{1}c",
    "é😀",
    "a/b",
];

fn bytes_from(d: &mut Draw<'_>, max: usize) -> Option<Bytes> {
    if d.chance(24) {
        return None;
    }
    let len = d.below(max + 1);
    Some((0..len).map(|_| d.byte()).collect::<Vec<u8>>().into())
}

fn record_from(d: &mut Draw<'_>, topic: &str, partition: i32, offset: i64) -> KafkaRecord {
    let timestamp_type = d.pick(&[CREATE_TIME, LOG_APPEND_TIME, NO_TIMESTAMP_TYPE]);
    let headers = (0..d.below(4))
        .map(|_| (d.string(6), bytes_from(d, 8)))
        .collect();
    KafkaRecord {
        topic: Name::new(topic),
        partition,
        offset,
        timestamp: (timestamp_type != NO_TIMESTAMP_TYPE).then(|| d.u64() as i64),
        timestamp_type,
        key: bytes_from(d, 16),
        value: bytes_from(d, 32),
        headers,
    }
}

/// A batch of one partition, ascending offsets from any start (edges included).
fn batch_from(d: &mut Draw<'_>, topics: &[&str]) -> Vec<KafkaRecord> {
    let topic = d.pick(topics);
    let partition = if d.chance(16) {
        i32::MAX
    } else {
        i32::from(d.byte())
    };
    let start = match d.below(4) {
        0 => i64::MAX - 20,
        1 => (d.u64() >> 2) as i64,
        _ => i64::from(d.byte()),
    };
    let count = d.below(9);
    (0..count)
        .map(|i| record_from(d, topic, partition, start + i as i64))
        .collect()
}

#[test]
fn events_are_valid_json_of_exactly_the_predicted_size() {
    let batches = drawn(512, |d| {
        let topics = if d.chance(64) { ODD_TOPICS } else { TOPICS };
        let mut records = batch_from(d, topics);
        if d.chance(32) {
            // Records of several partitions (the encoder groups them by partition).
            let other = batch_from(d, topics);
            let first = records.first().map(|r| (r.topic, r.partition));
            if other.first().map(|r| (r.topic, r.partition)) != first {
                records.extend(other);
            }
        }
        (d.string(12), records)
    });
    check("kafka::encode_event", batches, |(servers, records)| {
        let event = encode_event(&servers, &records);
        let parsed: Value = match serde_json::from_slice(&event) {
            Ok(parsed) => parsed,
            Err(err) => return Err(TestCaseError::fail(format!("not JSON: {err}"))),
        };
        prop_assert_eq!(&parsed["bootstrapServers"], servers.as_str());
        let single = records
            .windows(2)
            .all(|w| w[0].topic == w[1].topic && w[0].partition == w[1].partition);
        if single {
            // The size accounting that caps a batch at 6 MB is exact for one partition.
            let predicted = envelope_len(&servers)
                + records.iter().map(record_len).sum::<usize>()
                + records.len().saturating_sub(1)
                + records
                    .first()
                    .map_or(0, |r| group_envelope_len(&r.topic, r.partition) - 1);
            prop_assert_eq!(event.len(), predicted);
        }
        let groups = parsed["records"].as_object().cloned().unwrap_or_default();
        let encoded: Vec<&Value> = groups
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .collect();
        prop_assert_eq!(encoded.len(), records.len());
        for record in &records {
            let key = format!("{}-{}", record.topic, record.partition);
            let found = groups[&key]
                .as_array()
                .and_then(|group| group.iter().find(|r| r["offset"] == record.offset));
            let Some(found) = found else {
                return Err(TestCaseError::fail(format!(
                    "{key}@{} missing",
                    record.offset
                )));
            };
            prop_assert_eq!(&found["topic"], &*record.topic);
            for (field, bytes) in [("key", &record.key), ("value", &record.value)] {
                match bytes {
                    None => prop_assert!(found[field].is_null()),
                    Some(bytes) => {
                        let decoded = found[field].as_str().and_then(|s| STANDARD.decode(s).ok());
                        prop_assert_eq!(decoded.as_deref(), Some(bytes.as_ref()));
                    }
                }
            }
            let headers = found["headers"].as_array().cloned().unwrap_or_default();
            prop_assert_eq!(headers.len(), record.headers.len());
            for (encoded, (name, value)) in headers.iter().zip(&record.headers) {
                // Signed bytes, as Lambda sends Java's `byte[]`; a null value as no bytes.
                let expected = json!(value
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(|b| i8::from_ne_bytes([*b]))
                    .collect::<Vec<_>>());
                prop_assert_eq!(&encoded[name.as_str()], &expected);
            }
        }
        Ok(())
    });
}

/// A partial batch response: mostly the real shape naming records of the batch in every form
/// functions use, with identifiers off by one, foreign, malformed or of the wrong type mixed in.
fn response_from(d: &mut Draw<'_>, records: &[KafkaRecord]) -> Vec<u8> {
    if d.chance(24) {
        return d.json(3).to_string().into_bytes();
    }
    let mut items = Vec::new();
    for _ in 0..d.below(5) {
        let id = match (d.below(10), records.is_empty()) {
            (0..=5, false) => {
                let record = &records[d.below(records.len())];
                let offset = record
                    .offset
                    .saturating_add(i64::from(d.pick(&[0, 0, 0, 1, -1])));
                match d.below(5) {
                    0 => json!(format!("{}-{}@{}", record.topic, record.partition, offset)),
                    1 => json!(format!("{}/{}/{}", record.topic, record.partition, offset)),
                    2 => {
                        json!({"partition": format!("{}-{}", record.topic, record.partition), "offset": offset})
                    }
                    3 => {
                        json!({"topic": &*record.topic, "partition": record.partition, "offset": offset.to_string()})
                    }
                    _ => json!(format!(
                        " {}-{}@{} ",
                        record.topic, record.partition, offset
                    )),
                }
            }
            (6, _) => Value::Null,
            (7, _) => json!(d.string(12)),
            _ => d.json(2),
        };
        let key = if d.chance(240) {
            "itemIdentifier"
        } else {
            "itemidentifier"
        };
        items.push(json!({ key: id }));
    }
    let list = if d.chance(240) {
        Value::Array(items)
    } else {
        d.json(1)
    };
    let key = if d.chance(245) {
        "batchItemFailures"
    } else {
        "batchItemFailure"
    };
    json!({ key: list }).to_string().into_bytes()
}

#[test]
fn partial_batch_responses_name_only_records_of_the_batch() {
    let cases = drawn(512, |d| {
        let records = batch_from(d, TOPICS);
        let response = response_from(d, &records);
        (records, response)
    });
    check("kafka::first_failed", cases, |(records, payload)| {
        let Some(index) = first_failed(&payload, &records) else {
            return Ok(());
        };
        if index == 0 {
            // Full failure (also what every malformed response gives).
            return Ok(());
        }
        prop_assert!(
            index < records.len(),
            "index {} of {}",
            index,
            records.len()
        );
        // A checkpoint past the first record is taken only from a response that names that
        // record, and names nothing before it nor outside the batch.
        let response: Value = serde_json::from_slice(&payload).expect("a checkpoint needs JSON");
        let named: Vec<Option<RecordId>> = response["batchItemFailures"]
            .as_array()
            .expect("a checkpoint needs the list")
            .iter()
            .map(|item| RecordId::from_json(&item["itemIdentifier"]))
            .collect();
        prop_assert!(named
            .iter()
            .any(|id| id.as_ref().is_some_and(|id| records[index].is(id))));
        for id in &named {
            let position = id
                .as_ref()
                .and_then(|id| records.iter().position(|r| r.is(id)));
            prop_assert!(position.is_some_and(|p| p >= index), "{:?}", id);
        }
        Ok(())
    });
}

#[test]
fn record_identifiers_parse_or_fail_and_round_trip() {
    let cases = drawn(64, |d| {
        let (topic, partition, offset) = (d.pick(TOPICS), i32::from(d.byte()), d.u64() >> 1);
        let record = record_from(d, topic, partition, offset as i64);
        let text = if d.chance(128) {
            d.string(24)
        } else {
            record.identifier()
        };
        (record, text)
    });
    check("kafka::record_id", cases, |(record, text)| {
        if let Ok(id) = text.parse::<RecordId>() {
            prop_assert!(id.partition >= 0 && id.offset >= 0);
            prop_assert!(!id.topic.is_empty());
        }
        let id: RecordId = match record.identifier().parse() {
            Ok(id) => id,
            Err(err) => return Err(TestCaseError::fail(format!("{err}"))),
        };
        prop_assert!(record.is(&id));
        // The idempotency key names the record too (topics cannot contain `/`).
        prop_assert_eq!(
            record.event_id().as_str().parse::<RecordId>().ok(),
            Some(id)
        );
        Ok(())
    });
}

#[test]
fn filters_match_any_record_without_panicking() {
    let records = drawn(256, |d| {
        let json_or_bytes = |d: &mut Draw<'_>| {
            if d.chance(128) {
                Some(Bytes::from(d.json(3).to_string()))
            } else {
                bytes_from(d, 24)
            }
        };
        let key = json_or_bytes(d);
        let value = json_or_bytes(d);
        let headers: Vec<(String, Option<Bytes>)> = (0..d.below(3))
            .map(|_| {
                let name = d.pick(&["content-type", "trace", "a", ""]).to_owned();
                (name, json_or_bytes(d))
            })
            .collect();
        (key, value, headers)
    });
    check(
        "kafka::filter_matches",
        (filter_patterns(), records),
        |(patterns, (key, value, headers))| {
            let Ok(parsed) = FilterCriteria::from(patterns).parse() else {
                return Ok(());
            };
            let filter = KafkaFilter::new(parsed.clone());
            let matched = filter.matches(key.as_deref(), value.as_deref(), &headers);
            if parsed.is_empty() {
                prop_assert!(matched);
            }
            // A record passes when any pattern passes it alone.
            let any_alone = parsed.into_iter().any(|p| {
                KafkaFilter::new(vec![p]).matches(key.as_deref(), value.as_deref(), &headers)
            });
            prop_assert_eq!(matched, any_alone || filter.is_empty());
            Ok(())
        },
    );
}
