//! Partial batch responses: `{"batchItemFailures": [{"itemIdentifier": …}]}` (SEMANTICS §1.2).

use impulse_connectors::kafka::{KafkaRecord, RecordId};
use serde_json::Value;

/// Where retrying starts after a response, as an index into the batch's records.
///
/// Lambda's stream rules: an empty or null list, or an empty or null response, is full
/// success; an empty or null `itemIdentifier`, an identifier not in the batch, or a misspelt
/// key is full failure; otherwise the batch checkpoints at the lowest failed record.
pub(crate) fn first_failed(payload: &[u8], records: &[KafkaRecord]) -> Option<usize> {
    let trimmed = payload.iter().filter(|b| !b.is_ascii_whitespace()).count();
    if trimmed == 0 {
        return None;
    }
    let Ok(value) = serde_json::from_slice::<Value>(payload) else {
        return Some(0);
    };
    let failures = match &value {
        Value::Null => return None,
        Value::Object(map) => match map.get("batchItemFailures") {
            None if map.is_empty() => return None,
            None => return Some(0), // misspelt or another shape: full failure
            Some(Value::Null) => return None,
            Some(Value::Array(items)) => items,
            Some(_) => return Some(0),
        },
        _ => return Some(0),
    };
    let mut lowest: Option<usize> = None;
    for item in failures {
        let Some(index) = item
            .get("itemIdentifier")
            .and_then(|id| locate(id, records))
        else {
            return Some(0);
        };
        lowest = Some(lowest.map_or(index, |l| l.min(index)));
    }
    lowest
}

/// The index of an identifier in the batch, in any form [`RecordId::from_json`] reads.
fn locate(id: &Value, records: &[KafkaRecord]) -> Option<usize> {
    let id = RecordId::from_json(id)?;
    records.iter().position(|record| record.is(&id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<KafkaRecord> {
        (10..13)
            .map(|offset| KafkaRecord {
                topic: "orders".into(),
                partition: 0,
                offset,
                timestamp: None,
                timestamp_type: impulse_connectors::kafka::NO_TIMESTAMP_TYPE,
                key: None,
                value: None,
                headers: Vec::new(),
            })
            .collect()
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
                first_failed(payload, &ids()),
                None,
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn lowest_failed_item_wins() {
        let payload = br#"{"batchItemFailures":[{"itemIdentifier":"orders-0@12"},{"itemIdentifier":"orders-0@11"}]}"#;
        assert_eq!(first_failed(payload, &ids()), Some(1));
        let object_form =
            br#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-0","offset":12}}]}"#;
        assert_eq!(first_failed(object_form, &ids()), Some(2));
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
                first_failed(payload, &ids()),
                Some(0),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}
