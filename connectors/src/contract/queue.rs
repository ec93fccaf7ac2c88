//! The `Queue` trait: the durable async-invocation queue, and the event record it keeps.
//!
//! Asynchronous invocations (`X-Amz-Invocation-Type: Event`, async HTTP triggers, schedules)
//! are answered `202` only after [`Queue::enqueue`] resolves, i.e. once the event is durable.
//! A dispatcher then takes due events with [`Queue::next`], invokes, and settles each lease with
//! [`Queue::complete`] (the outcome is final) or [`Queue::reschedule`] (try again later).
//! A lease that is never settled — the process died — is delivered again: at the next start
//! (embedded) or when the lease times out (Redis). Duplicates are possible; loss is not.

use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;

/// An event in the async queue, with the state that must survive restarts so that retry
/// budgets and `max_event_age` hold across crashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    /// The request id: the idempotency key, the same on every attempt.
    pub id: String,
    /// The function to invoke.
    pub function: String,
    /// What produced the event: a trigger name, or `invoke` for the Invoke API.
    pub trigger: String,
    /// The JSON payload.
    pub payload: Bytes,
    /// When the event was first accepted; its age (for `max_event_age`) counts from here.
    pub enqueued_at: SystemTime,
    /// Attempts made so far, of every kind (Lambda's `approximateInvokeCount`).
    pub attempts: u32,
    /// Retries already spent on function errors and timeouts (bounded by `max_retry_attempts`).
    pub function_retries: u32,
    /// A destination record whose write failed: the function already ran to a final outcome,
    /// so the next delivery retries only this write (to `on_success` when `succeeded`, else
    /// `on_failure`).
    pub pending_destination: Option<PendingDestination>,
}

/// A destination write still owed for an event whose invocation outcome is final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDestination {
    /// True for `on_success`, false for `on_failure`.
    pub succeeded: bool,
    /// The invocation record to write, as JSON.
    pub record: Bytes,
}

impl QueuedEvent {
    /// A new event, never attempted.
    pub fn new(id: String, function: String, trigger: String, payload: Bytes) -> Self {
        Self {
            id,
            function,
            trigger,
            payload,
            enqueued_at: SystemTime::now(),
            attempts: 0,
            function_retries: 0,
            pending_destination: None,
        }
    }
}

/// An opaque handle to a leased event (an embedded sequence number, a Redis entry id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseId(pub String);

/// A leased event: it is invisible to other consumers until settled or the lease is lost.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Settles the lease.
    pub lease: LeaseId,
    /// The event, as last enqueued or rescheduled.
    pub event: QueuedEvent,
}

/// A queue operation failed. Enqueue failures answer the caller with an error (never `202`);
/// settle failures leave the lease to be delivered again.
#[derive(Debug, thiserror::Error)]
#[error("queue {operation} failed: {message}")]
pub struct QueueError {
    /// `enqueue`, `next`, `complete`, `reschedule` or `count`.
    pub operation: &'static str,
    /// What went wrong, for the operator.
    pub message: String,
}

/// A durable queue of async invocations. Implementations: embedded (a redb file in the data
/// directory, group commit) and Redis (a stream with a consumer group, delays in a sorted set).
pub trait Queue: Send + Sync + 'static {
    /// Appends `event`; resolves only once it is durable (fsynced, or acknowledged by Redis).
    fn enqueue(&self, event: QueuedEvent) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Waits until an event is due (its delay has passed and nobody holds it) and leases it.
    fn next(&self) -> BoxFuture<'_, Result<Delivery, QueueError>>;

    /// Removes a leased event: its outcome is final.
    fn complete(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Replaces a leased event with `event` (updated counters), due again at `not_before`.
    /// Durable before it resolves: a crash after it never loses the event.
    fn reschedule(
        &self,
        lease: LeaseId,
        event: QueuedEvent,
        not_before: SystemTime,
    ) -> BoxFuture<'_, Result<(), QueueError>>;

    /// How many events for `function` (unqualified, or under any qualifier) the queue holds,
    /// due, delayed or leased: a scan, meant for rare administrative checks (a config reload
    /// removing the function), not for the event path. `None`: this queue cannot tell.
    fn count_for<'a>(
        &'a self,
        function: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, QueueError>> {
        let _ = function;
        Box::pin(async { Ok(None) })
    }
}

/// Whether an event's `function` (`name` or `name:qualifier`) is function `name`.
pub fn names_function(event_function: &str, name: &str) -> bool {
    event_function
        .strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
}

// === impl QueuedEvent: encoding ===

/// The first byte of every encoded [`QueuedEvent`]: the layout below. A new layout takes a new
/// version; [`QueuedEvent::decode`] keeps reading the old ones.
///
/// Version 1, in order: `id`, `function`, `trigger` (each a varint byte length then UTF-8),
/// `payload` (varint length then bytes), `enqueued_at` (unix milliseconds, i64 big-endian),
/// `attempts` and `function_retries` (varints), then a flag byte: 0 for no pending destination,
/// 1 followed by `succeeded` (0 or 1) and `record` (varint length then bytes). Varints are
/// unsigned LEB128, at most 10 bytes.
const ENCODING_V1: u8 = 1;

/// Bytes were not a [`QueuedEvent`] encoded by [`QueuedEvent::encode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// There were no bytes at all.
    #[error("empty input")]
    Empty,
    /// The version byte is not one this build reads.
    #[error("unsupported encoding version {0}")]
    UnsupportedVersion(u8),
    /// The input ended inside the named field.
    #[error("input truncated in field `{0}`")]
    Truncated(&'static str),
    /// A string field held bytes that are not UTF-8.
    #[error("field `{0}` is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A number was malformed or out of its field's range.
    #[error("field `{0}` is out of range")]
    OutOfRange(&'static str),
    /// A flag byte was neither 0 nor 1.
    #[error("field `{field}` holds an invalid flag {value}")]
    InvalidFlag {
        /// The field.
        field: &'static str,
        /// The byte found.
        value: u8,
    },
    /// Bytes followed the last field.
    #[error("{0} unexpected bytes after the last field")]
    TrailingBytes(usize),
}

impl QueuedEvent {
    /// Encodes the event in Impulse's versioned binary layout (see [`QueuedEvent::decode`]).
    ///
    /// `enqueued_at` is kept in whole milliseconds since the Unix epoch: a decoded event's time
    /// is truncated to the millisecond (and saturates beyond ±292 million years).
    pub fn encode(&self) -> Vec<u8> {
        let pending_len = self
            .pending_destination
            .as_ref()
            .map_or(0, |p| p.record.len() + 11);
        let mut out = Vec::with_capacity(
            1 + self.id.len()
                + self.function.len()
                + self.trigger.len()
                + self.payload.len()
                + pending_len
                + 40,
        );
        out.push(ENCODING_V1);
        put_bytes(&mut out, self.id.as_bytes());
        put_bytes(&mut out, self.function.as_bytes());
        put_bytes(&mut out, self.trigger.as_bytes());
        put_bytes(&mut out, &self.payload);
        out.extend_from_slice(&unix_millis(self.enqueued_at).to_be_bytes());
        put_varint(&mut out, u64::from(self.attempts));
        put_varint(&mut out, u64::from(self.function_retries));
        match &self.pending_destination {
            None => out.push(0),
            Some(pending) => {
                out.push(1);
                out.push(u8::from(pending.succeeded));
                put_bytes(&mut out, &pending.record);
            }
        }
        out
    }

    /// Decodes bytes written by [`QueuedEvent::encode`]. Never panics, whatever the input:
    /// hostile or corrupt bytes give a [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != ENCODING_V1 {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let mut r = Reader { rest };
        let id = r.string("id")?;
        let function = r.string("function")?;
        let trigger = r.string("trigger")?;
        let payload = Bytes::copy_from_slice(r.bytes("payload")?);
        let enqueued_at = from_unix_millis(i64::from_be_bytes(r.array("enqueued_at")?))
            .ok_or(DecodeError::OutOfRange("enqueued_at"))?;
        let attempts = r.u32("attempts")?;
        let function_retries = r.u32("function_retries")?;
        let pending_destination = match r.flag("pending_destination")? {
            false => None,
            true => Some(PendingDestination {
                succeeded: r.flag("succeeded")?,
                record: Bytes::copy_from_slice(r.bytes("record")?),
            }),
        };
        if !r.rest.is_empty() {
            return Err(DecodeError::TrailingBytes(r.rest.len()));
        }
        Ok(Self {
            id,
            function,
            trigger,
            payload,
            enqueued_at,
            attempts,
            function_retries,
            pending_destination,
        })
    }
}

/// Milliseconds since the Unix epoch, negative before it, saturating at the ends of `i64`.
pub(crate) fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The inverse of [`unix_millis`]; `None` when the platform's `SystemTime` cannot hold it.
pub(crate) fn from_unix_millis(millis: i64) -> Option<SystemTime> {
    let offset = std::time::Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // Truncation intended: the low seven bits, with the continuation bit set.
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over untrusted bytes: every read checks the remaining length first, so a hostile
/// length can neither panic nor make us allocate more than the input holds.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let (&byte, rest) = self
                .rest
                .split_first()
                .ok_or(DecodeError::Truncated(field))?;
            self.rest = rest;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may carry only the 64th bit.
            if i == 9 && bits > 1 {
                return Err(DecodeError::OutOfRange(field));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::OutOfRange(field))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint(field)?).map_err(|_| DecodeError::OutOfRange(field))
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.varint(field)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated(field))?;
        if len > self.rest.len() {
            return Err(DecodeError::Truncated(field));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(bytes)
    }

    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.bytes(field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8(field))
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated(field))?;
        self.rest = rest;
        Ok(*head)
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let [value] = self.array::<1>(field)?;
        match value {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidFlag { field, value }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample() -> QueuedEvent {
        QueuedEvent {
            id: "req-7f3a".to_owned(),
            function: "resize".to_owned(),
            trigger: "uploads".to_owned(),
            payload: Bytes::from_static(br#"{"bucket":"photos","key":"cat.jpg"}"#),
            enqueued_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_123),
            attempts: 3,
            function_retries: 300,
            pending_destination: Some(PendingDestination {
                succeeded: false,
                record: Bytes::from_static(br#"{"requestContext":{}}"#),
            }),
        }
    }

    #[test]
    fn round_trips() {
        let event = sample();
        assert_eq!(QueuedEvent::decode(&event.encode()), Ok(event));

        let empty = QueuedEvent {
            id: String::new(),
            function: "f".to_owned(),
            trigger: "invoke".to_owned(),
            payload: Bytes::new(),
            enqueued_at: SystemTime::UNIX_EPOCH - Duration::from_millis(5),
            attempts: u32::MAX,
            function_retries: 0,
            pending_destination: None,
        };
        assert_eq!(QueuedEvent::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn truncates_times_to_the_millisecond() {
        let mut event = sample();
        event.enqueued_at += Duration::from_nanos(999_999);
        let decoded = QueuedEvent::decode(&event.encode()).expect("a valid encoding");
        assert_eq!(decoded, sample());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            let result = QueuedEvent::decode(&bytes[..len]);
            assert!(result.is_err(), "a {len}-byte prefix decoded: {result:?}");
        }
        assert_eq!(QueuedEvent::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            QueuedEvent::decode(&bytes[..3]),
            Err(DecodeError::Truncated("id"))
        );
    }

    #[test]
    fn rejects_hostile_bytes() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(
            QueuedEvent::decode(&bytes),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(
            QueuedEvent::decode(&[2, 0, 0]),
            Err(DecodeError::UnsupportedVersion(2))
        );
        // A length far beyond the input.
        let huge = [1, 0xff, 0xff, 0xff, 0xff, 0x0f, b'a'];
        assert_eq!(
            QueuedEvent::decode(&huge),
            Err(DecodeError::Truncated("id"))
        );
        // An endless varint.
        let endless = [
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(
            QueuedEvent::decode(&endless),
            Err(DecodeError::OutOfRange("id"))
        );
        // Invalid UTF-8 in the function name.
        let mut bad = vec![1, 1, b'a', 2, 0xc3, 0x28];
        bad.extend_from_slice(&[0; 20]);
        assert_eq!(
            QueuedEvent::decode(&bad),
            Err(DecodeError::InvalidUtf8("function"))
        );
    }

    #[test]
    fn rejects_bad_flags_and_counters() {
        let mut event = sample();
        event.pending_destination = None;
        let mut bytes = event.encode();
        let last = bytes.len() - 1;
        bytes[last] = 7;
        assert_eq!(
            QueuedEvent::decode(&bytes),
            Err(DecodeError::InvalidFlag {
                field: "pending_destination",
                value: 7
            })
        );

        // attempts = u32::MAX + 1 as a varint.
        let mut over = vec![1, 0, 0, 0, 0];
        over.extend_from_slice(&0i64.to_be_bytes());
        over.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x10, 0, 0]);
        assert_eq!(
            QueuedEvent::decode(&over),
            Err(DecodeError::OutOfRange("attempts"))
        );
    }

    #[test]
    fn decodes_arbitrary_bytes_without_panicking() {
        // A small deterministic fuzz: xorshift bytes, and single-byte mutations of a valid
        // encoding.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = bytes.first_mut() {
                *first = 1;
            }
            let _decoded = QueuedEvent::decode(&bytes);
        }
        let valid = sample().encode();
        for i in 0..valid.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut bytes = valid.clone();
                bytes[i] = value;
                let _decoded = QueuedEvent::decode(&bytes);
            }
        }
    }

    #[test]
    fn any_bytes_decode_or_fail_and_events_round_trip() {
        use impulse_test_support::prop::{check, drawn, Draw};
        use proptest::prop_assert_eq;

        fn event_from(d: &mut Draw<'_>) -> QueuedEvent {
            let bytes = |d: &mut Draw<'_>, max| -> Bytes {
                (0..d.below(max))
                    .map(|_| d.byte())
                    .collect::<Vec<u8>>()
                    .into()
            };
            QueuedEvent {
                id: d.string(12),
                function: d.string(8),
                trigger: d.string(8),
                payload: bytes(d, 64),
                // Whole milliseconds (what the layout keeps), any of them.
                enqueued_at: from_unix_millis((d.u64() as i64) >> (d.byte() % 64))
                    .unwrap_or(std::time::UNIX_EPOCH),
                attempts: (d.u64() >> (d.byte() % 64)) as u32,
                function_retries: u32::from(d.byte()),
                pending_destination: d.chance(64).then(|| PendingDestination {
                    succeeded: d.chance(128),
                    record: bytes(d, 32),
                }),
            }
        }
        let cases = drawn(256, |d| {
            let event = event_from(d);
            let mut bytes = if d.chance(32) {
                (0..d.below(64)).map(|_| d.byte()).collect()
            } else {
                event.encode()
            };
            // Some cases with one byte changed or the tail cut: a damaged queue entry.
            match d.below(4) {
                0 if !bytes.is_empty() => {
                    let at = d.below(bytes.len().min(256));
                    bytes[at] = d.byte();
                }
                1 => bytes.truncate(d.below(bytes.len().min(256) + 1)),
                _ => {}
            }
            (event, bytes)
        });
        check("queue::decode", cases, |(event, bytes)| {
            let decoded = QueuedEvent::decode(&bytes);
            if bytes == event.encode() {
                prop_assert_eq!(decoded, Ok(event));
            } else if let Ok(other) = decoded {
                // Damage may decode to another event (nothing checksums an entry), but what
                // decodes is an event the layout can hold: it encodes and decodes to itself.
                prop_assert_eq!(QueuedEvent::decode(&other.encode()), Ok(other));
            }
            Ok(())
        });
    }

    #[test]
    fn unix_millis_round_trip() {
        for ms in [0i64, 1, -1, 1_767_225_600_123, -86_400_000] {
            let time = from_unix_millis(ms).expect("in range");
            assert_eq!(unix_millis(time), ms);
        }
    }
}
