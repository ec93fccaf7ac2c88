//! The Redis stream sink: destination and dead-letter records as stream entries, and the reader
//! the CLI uses on them.
//!
//! Redis replicates asynchronously: a confirmed `XADD` can still be lost on a failover
//! (RELIABILITY.md §3). Prefer a Kafka sink for dead letters when that matters.

use std::fmt;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use redis::aio::ConnectionManager;
use redis::{RedisError, Value};

use super::{error_code, parse_entries, redact_url, RESPONSE_TIMEOUT};
use crate::contract::{Sink, SinkError};

/// Writes each record as an entry of `stream` with fields `key` and `record` (`XADD`); a write
/// resolves once Redis replied. Cheap to clone.
#[derive(Clone)]
pub struct RedisStreamSink {
    name: String,
    stream: String,
    url: String,
    manager: ConnectionManager,
}

impl RedisStreamSink {
    /// A sink named `name` writing to `stream` at `url`. Connects lazily, on the first write,
    /// and reconnects in the background after a failure: Redis being down at start-up fails
    /// writes, not the broker.
    pub fn new(name: &str, url: &str, stream: &str) -> Result<Self, SinkError> {
        let shown = redact_url(url);
        let error = |message: String| SinkError {
            sink: name.to_owned(),
            code: "invalid",
            message,
        };
        let client = redis::Client::open(url)
            .map_err(|e| error(format!("invalid Redis URL {shown}: {e}")))?;
        let config = super::manager_config();
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| error(format!("Redis client for {shown}: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            stream: stream.to_owned(),
            url: shown,
            manager,
        })
    }

    async fn add(&self, key: String, record: Bytes) -> Result<(), SinkError> {
        // Not retried: after an ambiguous error XADD may have happened, and the caller's retry
        // (the event stays unacknowledged) is the one place that decides to try again.
        let added: Result<String, RedisError> = redis::cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg("key")
            .arg(key)
            .arg("record")
            .arg(record.as_ref())
            .query_async(&mut self.manager.clone())
            .await;
        added.map(drop).map_err(|e| SinkError {
            sink: self.name.clone(),
            code: error_code(&e),
            message: format!("XADD to {} at {}: {e}", self.stream, self.url),
        })
    }
}

impl Sink for RedisStreamSink {
    fn write(&self, key: &str, record: Bytes) -> BoxFuture<'_, Result<(), SinkError>> {
        self.add(key.to_owned(), record).boxed()
    }
}

impl fmt::Debug for RedisStreamSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamSink")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Reads the oldest `count` entries of `stream` written by a [`RedisStreamSink`], as
/// `(entry id, key, record)`. A record that is not JSON comes back as a JSON string; an entry
/// lacking a field gets an empty key or a `null` record.
pub async fn read_stream(
    url: &str,
    stream: &str,
    count: usize,
) -> Result<Vec<(String, String, serde_json::Value)>, SinkError> {
    let shown = redact_url(url);
    let error = |e: &RedisError| SinkError {
        sink: stream.to_owned(),
        code: error_code(e),
        message: format!("reading {stream} at {shown}: {e}"),
    };
    let client = redis::Client::open(url).map_err(|e| error(&e))?;
    let mut conn = super::dedicated_connection(&client, RESPONSE_TIMEOUT)
        .await
        .map_err(|e| error(&e))?;
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await
        .map_err(|e| error(&e))?;
    Ok(parse_entries(reply)
        .into_iter()
        .map(|entry| {
            let key = entry
                .field(b"key")
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            let record = entry.field(b"record").map_or(serde_json::Value::Null, |r| {
                serde_json::from_slice(r).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(r).into_owned())
                })
            });
            (entry.id, key, record)
        })
        .collect())
}
