//! Partial batch responses (SEMANTICS.md §1.2): where a failed batch resumes, read from
//! `{"batchItemFailures": [{"itemIdentifier": …}]}`, and the record identifiers it names.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::event::KafkaRecord;
use crate::contract::first_failed_item;

/// Where retrying starts after a function's response to a batch, as an index into `records`,
/// by the stream rules of [`first_failed_item`] with Kafka record identifiers.
pub fn first_failed(payload: &[u8], records: &[KafkaRecord]) -> Option<usize> {
    first_failed_item(payload, |id| locate(id, records))
}

/// The index of an identifier in the batch, in any form [`RecordId::from_json`] reads.
fn locate(id: &Value, records: &[KafkaRecord]) -> Option<usize> {
    let id = RecordId::from_json(id)?;
    records.iter().position(|record| record.is(&id))
}

// === RecordId ===

/// A record's coordinates, as named by an identifier.
///
/// A record's identifier, used as `itemIdentifier` in partial batch responses, is
/// `<topic>-<partition>@<offset>` (`orders-0@15`): the event's `records` key, `@`, and the
/// record's `offset`. [`RecordId::from_json`] also reads the forms functions commonly return:
/// `{"partition": "orders-0", "offset": 15}` and `{"topic": "orders", "partition": 0,
/// "offset": 15}` (numbers or numeric strings), and the idempotency key `orders/0/15`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}@{}", self.topic, self.partition, self.offset)
    }
}

/// A string or JSON value that names no record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Kafka record identifier (expected \"<topic>-<partition>@<offset>\")")]
pub struct RecordIdError(());

impl FromStr for RecordId {
    type Err = RecordIdError;

    /// Reads `orders-0@15` (the identifier) or `orders/0/15` (the idempotency key).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some((partition_key, offset)) = s.rsplit_once('@') {
            let (topic, partition) = split_partition_key(partition_key).ok_or(RecordIdError(()))?;
            return Ok(Self {
                topic: topic.to_owned(),
                partition,
                offset: parse_offset(offset).ok_or(RecordIdError(()))?,
            });
        }
        let mut parts = s.rsplitn(3, '/');
        let (Some(offset), Some(partition), Some(topic)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(RecordIdError(()));
        };
        Ok(Self {
            topic: valid_topic(topic).ok_or(RecordIdError(()))?.to_owned(),
            partition: parse_partition(partition).ok_or(RecordIdError(()))?,
            offset: parse_offset(offset).ok_or(RecordIdError(()))?,
        })
    }
}

impl RecordId {
    /// Reads an `itemIdentifier` as a function returned it: a string (see [`FromStr`]),
    /// `{"partition": "orders-0", "offset": 15}`, or `{"topic": "orders", "partition": 0,
    /// "offset": 15}`; numbers may also be numeric strings. `None` for anything else (the
    /// caller treats that as Lambda does an invalid identifier: the whole batch failed).
    pub fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => s.parse().ok(),
            Value::Object(map) => {
                let offset = match map.get("offset")? {
                    Value::Number(n) => n.as_i64().filter(|o| *o >= 0)?,
                    Value::String(s) => parse_offset(s)?,
                    _ => return None,
                };
                let (topic, partition) = match (map.get("topic"), map.get("partition")?) {
                    (Some(Value::String(topic)), Value::Number(n)) => {
                        (valid_topic(topic)?, i32::try_from(n.as_i64()?).ok()?)
                    }
                    (Some(Value::String(topic)), Value::String(p)) => {
                        (valid_topic(topic)?, parse_partition(p)?)
                    }
                    (None, Value::String(key)) => split_partition_key(key)?,
                    _ => return None,
                };
                if partition < 0 {
                    return None;
                }
                Some(Self {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                })
            }
            _ => None,
        }
    }
}

/// `orders-0` → (`orders`, 0). Topic names may contain `-`; the partition is the digits after
/// the last one.
fn split_partition_key(key: &str) -> Option<(&str, i32)> {
    let (topic, partition) = key.rsplit_once('-')?;
    Some((valid_topic(topic)?, parse_partition(partition)?))
}

fn valid_topic(topic: &str) -> Option<&str> {
    (!topic.is_empty()).then_some(topic)
}

fn parse_partition(s: &str) -> Option<i32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_offset(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// === a record's identifier ===

impl KafkaRecord {
    /// The identifier used in partial batch responses: `<topic>-<partition>@<offset>`; see
    /// [`RecordId`].
    pub fn identifier(&self) -> String {
        self.id().to_string()
    }

    /// The record's coordinates.
    pub fn id(&self) -> RecordId {
        RecordId {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// Whether `id` names this record.
    pub fn is(&self, id: &RecordId) -> bool {
        self.offset == id.offset && self.partition == id.partition && *self.topic == *id.topic
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kafka::NO_TIMESTAMP_TYPE;

    fn record(topic: &str, partition: i32, offset: i64) -> KafkaRecord {
        KafkaRecord {
            topic: topic.into(),
            partition,
            offset,
            timestamp: None,
            timestamp_type: NO_TIMESTAMP_TYPE,
            key: None,
            value: None,
            headers: Vec::new(),
        }
    }

    /// Offsets 10, 11 and 12 of `orders-0`.
    fn batch() -> Vec<KafkaRecord> {
        (10..13).map(|offset| record("orders", 0, offset)).collect()
    }

    #[test]
    fn success_shapes() {
        for payload in [
            &b""[..],
            b"null",
            b"{}",
            br#"{"batchItemFailures":[]}"#,
            br#"{"batchItemFailures":null}"#,
        ] {
            assert_eq!(
                first_failed(payload, &batch()),
                None,
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn lowest_failed_item_wins() {
        let payload = br#"{"batchItemFailures":[{"itemIdentifier":"orders-0@12"},{"itemIdentifier":"orders-0@11"}]}"#;
        assert_eq!(first_failed(payload, &batch()), Some(1));
        let object_form =
            br#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-0","offset":12}}]}"#;
        assert_eq!(first_failed(object_form, &batch()), Some(2));
    }

    #[test]
    fn malformed_responses_fail_the_whole_batch() {
        for payload in [
            &br#"{"batchItemFailures":[{"itemIdentifier":""}]}"#[..],
            br#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            br#"{"batchItemFailures":[{"itemIdentifier":"orders-0@99"}]}"#,
            br#"{"batchItemFailure":[]}"#,
            b"not json",
        ] {
            assert_eq!(
                first_failed(payload, &batch()),
                Some(0),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn identifiers_round_trip() {
        let r = record("my-orders.v2", 10, 15);
        assert_eq!(r.identifier(), "my-orders.v2-10@15");
        assert_eq!(r.event_id().as_str(), "my-orders.v2/10/15");
        let id: RecordId = r.identifier().parse().unwrap();
        assert!(r.is(&id));
        assert_eq!(r.event_id().as_str().parse::<RecordId>().unwrap(), id);
        assert_eq!(
            RecordId::from_json(&json!("my-orders.v2-10@15")),
            Some(id.clone())
        );
        assert_eq!(
            RecordId::from_json(&json!({"partition": "my-orders.v2-10", "offset": 15})),
            Some(id.clone())
        );
        assert_eq!(
            RecordId::from_json(&json!({"partition": "my-orders.v2-10", "offset": "15"})),
            Some(id.clone())
        );
        assert_eq!(
            RecordId::from_json(&json!({"topic": "my-orders.v2", "partition": 10, "offset": 15})),
            Some(id.clone())
        );
        assert_eq!(
            RecordId::from_json(&json!({"topic": "my-orders.v2", "partition": "10", "offset": 15})),
            Some(id)
        );
    }

    #[test]
    fn invalid_identifiers_are_rejected() {
        for bad in [
            "",
            "orders",
            "orders@15",
            "orders-@15",
            "-0@15",
            "orders-0@",
            "orders-0@-1",
            "orders-x@1",
            "orders-0@1.5",
            "orders/0",
            "/0/1",
            "orders/-1/1",
            "orders-99999999999@1",
        ] {
            assert!(bad.parse::<RecordId>().is_err(), "{bad:?} parsed");
        }
        for bad in [
            json!(null),
            json!(15),
            json!({}),
            json!({"partition": "orders-0"}),
            json!({"offset": 15}),
            json!({"partition": 0, "offset": 15}),
            json!({"partition": "orders-0", "offset": -1}),
            json!({"partition": "orders-0", "offset": 1.5}),
            json!({"topic": "orders", "partition": -1, "offset": 1}),
            json!({"topic": "", "partition": 0, "offset": 1}),
        ] {
            assert_eq!(RecordId::from_json(&bad), None, "{bad} parsed");
        }
    }
}
