//! The Redis backends: the async-invocation queue on a stream with a consumer group, schedule
//! ticks claimed on that queue by one instance each, the stream source of Redis triggers, and a
//! stream sink for destinations and dead letters; and admission limits shared by the instances
//! of a cluster (concurrency leases and rates, beside the queue).

mod limits;
mod queue;
#[cfg(feature = "schedule")]
mod schedules;
mod sink;
mod stream;

pub use limits::{ClusterTarget, Lease, RedisLimits, Slots, Verdict};
pub use queue::{RedisQueue, GROUP};
#[cfg(feature = "schedule")]
pub use schedules::RedisSchedules;
pub use sink::{read_stream, RedisStreamSink};
pub use stream::{
    encode_event, RedisAttempts, RedisBatch, RedisEntry, RedisStreamSettings, RedisStreamSource,
    EVENT_SOURCE,
};

use impulse_config::redact_url;
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::{ErrorKind, RedisError, RetryMethod, ServerErrorKind, Value};

/// Response timeout of connections for non-blocking commands: without one, a command on a
/// connection Redis stopped answering waits forever (CRATES.md).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The settings of every connection manager (the shared, reconnecting connection for
/// non-blocking commands) of the Redis backends.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_max_delay(MAX_BACKOFF)
}

/// A connection of its own (not the shared manager), for blocking reads that need a longer
/// `response_timeout` than any `BLOCK` they send, or for one-off commands.
async fn dedicated_connection(
    client: &redis::Client,
    response_timeout: Duration,
) -> Result<redis::aio::MultiplexedConnection, RedisError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Whether a command that failed with `e` may succeed when tried again (after a reconnect).
fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
        )
        || matches!(
            e.retry_method(),
            RetryMethod::Reconnect | RetryMethod::ReconnectFromInitialConnections
        )
}

/// A stable code for a failed command, for [`crate::contract::SinkError::code`].
fn error_code(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if is_transient(e) {
        "unavailable"
    } else {
        "rejected"
    }
}

/// The bytes of a bulk or simple string reply.
fn value_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

/// A stream entry id (`<ms>-<seq>`, or `<ms>` for `<ms>-0`) as a comparable pair.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Whether `to` comes after `from` in a stream: how paging loops check that a reply moved on,
/// so that a server answering the same page again (or garbage) cannot keep them looping.
fn advances(from: &str, to: &str) -> bool {
    match (stream_id(from), stream_id(to)) {
        (Some(from), Some(to)) => to > from,
        _ => false,
    }
}

/// A stream entry as Redis returned it; `fields` is `None` for an entry still pending but
/// deleted from the stream.
#[derive(Debug)]
struct RawEntry {
    id: String,
    fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl RawEntry {
    fn field(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Parses `[[id, [field, value, …] | nil], …]` (XRANGE, and the entries of XREADGROUP and
/// XAUTOCLAIM replies). Malformed elements are skipped: a reply is untrusted input.
fn parse_entries(value: Value) -> Vec<RawEntry> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let mut pair = pair.into_iter();
            let id = String::from_utf8(value_bytes(pair.next()?)?).ok()?;
            let fields = match pair.next() {
                Some(Value::Array(flat)) => {
                    let mut fields = Vec::with_capacity(flat.len() / 2);
                    let mut flat = flat.into_iter();
                    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                        fields.push((value_bytes(k)?, value_bytes(v)?));
                    }
                    Some(fields)
                }
                Some(Value::Map(map)) => Some(
                    map.into_iter()
                        .filter_map(|(k, v)| Some((value_bytes(k)?, value_bytes(v)?)))
                        .collect(),
                ),
                _ => None,
            };
            Some(RawEntry { id, fields })
        })
        .collect()
}

/// Parses an XREADGROUP reply for one stream: `nil`, `[[stream, entries]]`, or (RESP3) a map.
fn parse_read_reply(value: Value) -> Vec<RawEntry> {
    match value {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|stream| match stream {
                Value::Array(pair) => pair.into_iter().nth(1).map(parse_entries),
                _ => None,
            })
            .flatten()
            .collect(),
        Value::Map(streams) => streams
            .into_iter()
            .flat_map(|(_, entries)| parse_entries(entries))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_defensively() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("e"), bulk("x")])]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
                Value::Int(3),
                Value::Array(vec![]),
            ]),
        ])]);
        let entries = parse_read_reply(reply);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(entries[0].field(b"e"), Some(b"x".as_slice()));
        assert_eq!(entries[1].id, "2-0");
        assert!(entries[1].fields.is_none());
        assert!(parse_read_reply(Value::Nil).is_empty());
    }

    #[test]
    fn stream_ids_must_move_forward() {
        assert!(advances("0", "1-0"));
        assert!(advances("0-0", "0-1"));
        assert!(advances("5-9", "6-0"));
        assert!(!advances("6-0", "6-0"));
        assert!(!advances("6-1", "6-0"));
        assert!(!advances("0-0", "garbage"));
        assert!(!advances("0-0", "1-x"));
    }
}
