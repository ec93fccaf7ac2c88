//! Redis stream entries, batches, and the event a Redis trigger passes to its function.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;

/// `eventSource` of a Redis stream event.
pub const EVENT_SOURCE: &str = "impulse:redis";

/// One stream entry on its way to a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisEntry {
    /// The entry id, `<milliseconds>-<sequence>`: its `itemIdentifier` in partial batch
    /// responses.
    pub id: String,
    /// Field names and values, in entry order (a name may repeat).
    pub fields: Vec<(Bytes, Bytes)>,
    /// Deliveries of the entry to the group's consumers, this one included, when it was read:
    /// 1 for a new entry, more for one read again after a restart or claimed from a stopped
    /// instance.
    pub delivery_count: u32,
}

impl RedisEntry {
    /// When the entry was added: the milliseconds part of its id (Redis stamps ids with its
    /// clock unless the writer chose the id); `None` if the id has another form.
    pub fn written_at(&self) -> Option<SystemTime> {
        let millis: u64 = self.id.split_once('-')?.0.parse().ok()?;
        UNIX_EPOCH.checked_add(Duration::from_millis(millis))
    }

    /// An estimate of the entry's size in the event (an upper bound unless its text needs
    /// many escapes), for the 6 MB batch limit.
    pub fn event_len(&self) -> usize {
        // Base64 grows bytes by 4/3; escapes can grow text more, but events near the limit
        // are dominated by plain payload bytes.
        let fields: usize = self
            .fields
            .iter()
            .map(|(k, v)| (k.len() + v.len()) * 4 / 3 + 8)
            .sum();
        fields + self.id.len() + 160
    }
}

/// Entries of one stream, read together and sent in one invocation.
#[derive(Debug, Clone)]
pub struct RedisBatch {
    /// The stream.
    pub stream: Arc<str>,
    /// The entries, in the order they were read (claimed entries first, then new ones in id
    /// order).
    pub entries: Vec<RedisEntry>,
}

/// The event for `entries` of `stream` read through `group`:
///
/// ```json
/// {"Records":[{"eventSource":"impulse:redis","eventSourceARN":"impulse:redis:orders",
///   "stream":"orders","group":"impulse-orders","id":"1733580000000-0",
///   "timestamp":1733580000000,"encoding":"utf-8","fields":{"kind":"created","n":"42"}}]}
/// ```
///
/// - `id` is the entry id, the `itemIdentifier` of a partial batch response.
/// - `timestamp` is the milliseconds part of the id (`null` if the id has another form).
/// - `encoding` is `"utf-8"` when every field name and value of the entry is valid UTF-8:
///   `fields` then holds them as JSON strings. Otherwise it is `"base64"`, and every name
///   and value of that entry is standard base64 (with padding), so a reader decodes one way.
/// - `fields` is an object in entry order; a name repeated in the entry is repeated in the
///   object (most JSON parsers keep the last).
pub fn encode_event(stream: &str, group: &str, entries: &[RedisEntry]) -> Bytes {
    let capacity = 32 + entries.iter().map(RedisEntry::event_len).sum::<usize>();
    let mut out = Vec::with_capacity(capacity);
    // The fields every record shares, escaped once.
    let mut shared = Vec::with_capacity(2 * stream.len() + group.len() + 96);
    shared.extend_from_slice(b"{\"eventSource\":\"");
    shared.extend_from_slice(EVENT_SOURCE.as_bytes());
    shared.extend_from_slice(b"\",\"eventSourceARN\":");
    write_str(&mut shared, &format!("{EVENT_SOURCE}:{stream}"));
    shared.extend_from_slice(b",\"stream\":");
    write_str(&mut shared, stream);
    shared.extend_from_slice(b",\"group\":");
    write_str(&mut shared, group);
    out.extend_from_slice(b"{\"Records\":[");
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&shared);
        write_entry(&mut out, entry);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// The rest of one record, after the shared fields.
fn write_entry(out: &mut Vec<u8>, entry: &RedisEntry) {
    out.extend_from_slice(b",\"id\":");
    write_str(out, &entry.id);
    out.extend_from_slice(b",\"timestamp\":");
    match entry
        .written_at()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
    {
        Some(since) => out.extend_from_slice(since.as_millis().to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    let text = entry
        .fields
        .iter()
        .all(|(k, v)| std::str::from_utf8(k).is_ok() && std::str::from_utf8(v).is_ok());
    out.extend_from_slice(if text {
        b",\"encoding\":\"utf-8\",\"fields\":{".as_slice()
    } else {
        b",\"encoding\":\"base64\",\"fields\":{".as_slice()
    });
    for (i, (name, value)) in entry.fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_bytes(out, name, text);
        out.push(b':');
        write_bytes(out, value, text);
    }
    out.extend_from_slice(b"}}");
}

/// Writes `bytes` as a JSON string: as text when `text` (they are valid UTF-8), else base64.
fn write_bytes(out: &mut Vec<u8>, bytes: &[u8], text: bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) if text => write_str(out, s),
        _ => {
            out.push(b'"');
            out.extend_from_slice(STANDARD.encode(bytes).as_bytes());
            out.push(b'"');
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    serde_json::to_writer(&mut *out, s).expect("a string serialises");
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn entry(id: &str, fields: &[(&[u8], &[u8])]) -> RedisEntry {
        RedisEntry {
            id: id.to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)))
                .collect(),
            delivery_count: 1,
        }
    }

    #[test]
    fn text_entries_are_strings_and_binary_ones_base64() {
        let entries = [
            entry("1733580000000-0", &[(b"kind", b"cr\"eated"), (b"n", b"42")]),
            entry("1733580000001-3", &[(b"raw", b"\xff\x00")]),
            entry("custom", &[]),
        ];
        let event: Value = serde_json::from_slice(&encode_event("orders", "g", &entries)).unwrap();
        assert_eq!(
            event,
            json!({"Records": [
                {"eventSource": "impulse:redis", "eventSourceARN": "impulse:redis:orders",
                 "stream": "orders", "group": "g", "id": "1733580000000-0",
                 "timestamp": 1_733_580_000_000_u64, "encoding": "utf-8",
                 "fields": {"kind": "cr\"eated", "n": "42"}},
                {"eventSource": "impulse:redis", "eventSourceARN": "impulse:redis:orders",
                 "stream": "orders", "group": "g", "id": "1733580000001-3",
                 "timestamp": 1_733_580_000_001_u64, "encoding": "base64",
                 "fields": {"cmF3": "/wA="}},
                {"eventSource": "impulse:redis", "eventSourceARN": "impulse:redis:orders",
                 "stream": "orders", "group": "g", "id": "custom",
                 "timestamp": null, "encoding": "utf-8", "fields": {}},
            ]})
        );
    }

    #[test]
    fn the_size_bound_covers_the_encoding() {
        let big = vec![0xffu8; 3000];
        let entries = [entry("1-0", &[(b"k", &big)]), entry("2-0", &[(b"t", b"x")])];
        let encoded = encode_event("s", "g", &entries);
        let bound: usize = 32 + entries.iter().map(RedisEntry::event_len).sum::<usize>();
        assert!(encoded.len() <= bound, "{} > {bound}", encoded.len());
    }
}
