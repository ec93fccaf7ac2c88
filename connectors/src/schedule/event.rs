//! The EventBridge scheduled-event shape and the idempotency keys derived from a tick.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::contract::EventId;

/// The namespace of scheduled-event UUIDs (v5).
///
/// It MUST never change: the `id` of a tick is its idempotency key, and functions that
/// deduplicate on it would see every tick fired after an upgrade as new.
const NAMESPACE: Uuid = Uuid::from_u128(0x5c1e_d0e7_3b1a_4f4e_9d62_8a0f_4c35_b7e1);

/// Account and region of the EventBridge envelope: Impulse has neither, so it says so plainly.
const ACCOUNT: &str = "000000000000";
const REGION: &str = "local";

/// The event's `id`: a UUID v5 of (schedule name, tick), so that every fire of one tick, on any
/// instance and after any restart, carries the same id.
pub fn scheduled_event_uuid(schedule: &str, tick: DateTime<Utc>) -> Uuid {
    Uuid::new_v5(&NAMESPACE, key(schedule, tick).as_bytes())
}

/// The [`EventId`] of a tick: `schedule/<name>/<tick in Unix seconds>`.
pub fn event_id(schedule: &str, tick: DateTime<Utc>) -> EventId {
    EventId::new(format!("schedule/{}", key(schedule, tick)))
}

/// `<name>/<unix seconds>`: unambiguous because the tick, the last segment, never holds a `/`.
fn key(schedule: &str, tick: DateTime<Utc>) -> String {
    format!("{schedule}/{}", tick.timestamp())
}

/// The EventBridge scheduled-rule event, fields in EventBridge's order.
#[derive(Serialize)]
struct ScheduledEvent<'a> {
    version: &'static str,
    id: String,
    #[serde(rename = "detail-type")]
    detail_type: &'static str,
    source: &'static str,
    account: &'static str,
    time: String,
    region: &'static str,
    resources: [String; 1],
    detail: &'a serde_json::Value,
}

/// Encodes the EventBridge scheduled event for `tick` of the schedule named `schedule`.
///
/// `time` is the scheduled tick (not the moment it fired), in UTC with whole seconds, and `id`
/// is [`scheduled_event_uuid`]; `detail` is the trigger's `input` (see
/// `ScheduleTriggerConfig::detail`).
pub fn encode_scheduled_event(
    schedule: &str,
    tick: DateTime<Utc>,
    detail: &serde_json::Value,
) -> Result<Bytes, serde_json::Error> {
    let event = ScheduledEvent {
        version: "0",
        id: scheduled_event_uuid(schedule, tick).to_string(),
        detail_type: "Scheduled Event",
        source: "aws.events",
        account: ACCOUNT,
        time: tick.to_rfc3339_opts(SecondsFormat::Secs, true),
        region: REGION,
        resources: [format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/{schedule}")],
        detail,
    };
    serde_json::to_vec(&event).map(Bytes::from)
}
