//! The embedded log sink: an append-only JSON-lines file per sink in `<data_dir>/logs/`, synced
//! before a write resolves, and the reader the CLI uses on it.
//!
//! Each line is `{"key": …, "time": RFC 3339, "record": …}`. A record that is valid JSON is
//! embedded as JSON; any other record is embedded as a string. One writer thread appends every
//! pending line with one `write` and one `fdatasync`, so concurrent writes share a sync.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::contract::{Sink, SinkError};

/// The directory of the log files inside the data directory.
pub const LOGS_DIR: &str = "logs";

/// The most lines one write and sync takes.
const MAX_BATCH: usize = 4096;

/// An append-only JSON-lines log in `<data_dir>/logs/<name>.jsonl` (see the module
/// documentation). Cheap to clone; clones share one file and one writer thread.
///
/// One process writes a given log at a time: the broker owns its data directory.
#[derive(Clone)]
pub struct LogSink {
    name: String,
    path: PathBuf,
    /// The writer thread ends once every clone is dropped and it has answered what it took.
    writer: mpsc::UnboundedSender<Line>,
}

struct Line {
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<(), String>>,
}

/// One line of a log, as [`read_log`] returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The line's position in the file, from 0.
    pub index: usize,
    /// The idempotency key the record was written with.
    pub key: String,
    /// When it was written (RFC 3339, UTC).
    pub time: String,
    /// The record: its JSON, or a string when it was not JSON.
    pub record: serde_json::Value,
}

/// [`read_log`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    /// The name cannot be a log's.
    #[error(
        "{0:?} is not a valid log name (letters, digits, `.`, `_` and `-`; not starting with `.`)"
    )]
    InvalidName(String),
    /// The file could not be read (it does not exist until the sink's first start).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A complete line is not a log entry: the file was changed by something else.
    #[error("{}: line {} is not a log entry: {source}", path.display(), line + 1)]
    Malformed {
        /// The log file.
        path: PathBuf,
        /// The line's index, from 0.
        line: usize,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The on-disk shape of a line.
#[derive(Deserialize)]
struct StoredLine {
    key: String,
    time: String,
    record: serde_json::Value,
}

// === impl LogSink ===

impl LogSink {
    /// Opens (or creates) `<data_dir>/logs/<name>.jsonl` for appending. A torn last line left
    /// by a crash (never acknowledged) is cut off first. `name` also names the sink in errors.
    pub fn open(data_dir: &Path, name: &str) -> Result<Self, SinkError> {
        let error = |code: &'static str, message: String| SinkError {
            sink: name.to_owned(),
            code,
            message,
        };
        let path = log_path(data_dir, name).ok_or_else(|| {
            error(
                "invalid",
                LogReadError::InvalidName(name.to_owned()).to_string(),
            )
        })?;
        let dir = data_dir.join(LOGS_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| error("unavailable", format!("creating {}: {e}", dir.display())))?;
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| error("unavailable", format!("opening {}: {e}", path.display())))?;
        let len = repair_tail(&mut file)
            .map_err(|e| error("unavailable", format!("repairing {}: {e}", path.display())))?;
        if !existed {
            // Make the new directory entry itself durable.
            sync_dir(&dir)
                .map_err(|e| error("unavailable", format!("syncing {}: {e}", dir.display())))?;
        }
        let (writer, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name(format!("impulse-log-{name}"))
            .spawn(move || run_writer(file, len, rx))
            .map_err(|e| error("unavailable", format!("starting the writer thread: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            path,
            writer,
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn append(&self, line: Vec<u8>) -> Result<(), SinkError> {
        let unavailable = |message: String| SinkError {
            sink: self.name.clone(),
            code: "unavailable",
            message,
        };
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Line { bytes: line, reply })
            .map_err(|_| unavailable("the log writer has stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| unavailable("the log writer stopped before answering".to_owned()))?
            .map_err(unavailable)
    }
}

impl Sink for LogSink {
    fn write(&self, key: &str, record: Bytes) -> BoxFuture<'_, Result<(), SinkError>> {
        let line = encode_line(key, &record, &chrono::Utc::now());
        self.append(line).boxed()
    }
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSink")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

/// Reads every complete line of `<data_dir>/logs/<name>.jsonl`, oldest first. Safe while a
/// broker appends to it: a last line still being written (or torn by a crash) is left out.
pub fn read_log(data_dir: &Path, name: &str) -> Result<Vec<LogEntry>, LogReadError> {
    let path =
        log_path(data_dir, name).ok_or_else(|| LogReadError::InvalidName(name.to_owned()))?;
    let bytes = std::fs::read(&path).map_err(|source| LogReadError::Io {
        path: path.clone(),
        source,
    })?;
    let mut entries = Vec::new();
    for (index, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let Some(line) = line.strip_suffix(b"\n") else {
            break; // the torn (or still growing) last line
        };
        let stored: StoredLine =
            serde_json::from_slice(line).map_err(|source| LogReadError::Malformed {
                path: path.clone(),
                line: index,
                source,
            })?;
        entries.push(LogEntry {
            index,
            key: stored.key,
            time: stored.time,
            record: stored.record,
        });
    }
    Ok(entries)
}

fn log_path(data_dir: &Path, name: &str) -> Option<PathBuf> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    valid.then(|| data_dir.join(LOGS_DIR).join(format!("{name}.jsonl")))
}

/// One line: `{"key":…,"time":…,"record":…}\n`.
fn encode_line(key: &str, record: &[u8], now: &chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let mut line = Vec::with_capacity(record.len() + key.len() + 64);
    line.extend_from_slice(b"{\"key\":");
    push_json_string(&mut line, key);
    line.extend_from_slice(b",\"time\":\"");
    line.extend_from_slice(
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .as_bytes(),
    );
    line.extend_from_slice(b"\",\"record\":");
    if serde_json::from_slice::<serde::de::IgnoredAny>(record).is_ok() {
        // Valid JSON holds CR and LF only as whitespace between tokens (never raw inside a
        // string, and never inside a UTF-8 sequence), so blanking them keeps the document
        // identical and on one line.
        line.extend(record.iter().map(|&b| match b {
            b'\n' | b'\r' => b' ',
            b => b,
        }));
    } else {
        push_json_string(&mut line, &String::from_utf8_lossy(record));
    }
    line.extend_from_slice(b"}\n");
    line
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Serializing a `str` into a `Vec` cannot fail: the only errors serde_json reports here
    // come from the writer, and writing to a `Vec` never fails.
    if let Err(e) = serde_json::to_writer(&mut *out, s) {
        tracing::error!(error = %e, "Serializing a string to JSON failed.");
        out.extend_from_slice(b"\"\"");
    }
}

/// Cuts a torn last line (no trailing newline) off the file; returns the resulting length.
fn repair_tail(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Scan backwards for the last newline, a chunk at a time.
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    let keep = loop {
        let start = end.saturating_sub(chunk.len() as u64);
        // `end - start` is at most `chunk.len()`, a usize.
        let n = usize::try_from(end - start).unwrap_or(chunk.len());
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(pos) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            break start + pos as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    if keep < len {
        tracing::warn!(
            cut = len - keep,
            "Cutting a torn last line off an embedded log."
        );
        file.set_len(keep)?;
        file.sync_data()?;
    }
    Ok(keep)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

// === the writer thread ===

fn run_writer(mut file: File, mut len: u64, mut rx: mpsc::UnboundedReceiver<Line>) {
    // Set when a failed write could not be undone: appending after a partial line would
    // corrupt the log, so every later write fails until the sink is reopened (which repairs).
    let mut broken: Option<String> = None;
    let mut batch = Vec::new();
    let mut buf = Vec::new();
    while let Some(line) = rx.blocking_recv() {
        batch.push(line);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        let result = match &broken {
            Some(why) => Err(why.clone()),
            None => {
                buf.clear();
                for line in &batch {
                    buf.extend_from_slice(&line.bytes);
                }
                match file.write_all(&buf).and_then(|()| file.sync_data()) {
                    Ok(()) => {
                        len += buf.len() as u64;
                        Ok(())
                    }
                    Err(e) => {
                        let message = format!("appending to the log: {e}");
                        tracing::error!(error = %e, "Embedded log write failed.");
                        if let Err(undo) = file.set_len(len).and_then(|()| file.sync_data()) {
                            broken = Some(format!(
                                "the log needs repair after a failed write ({e}; undo: {undo})"
                            ));
                        }
                        Err(message)
                    }
                }
            }
        };
        for line in batch.drain(..) {
            // A writer that went away needs no answer.
            drop(line.reply.send(result.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(1_767_225_600_123).expect("a valid timestamp")
    }

    #[test]
    fn embeds_json_records_and_strings_others() {
        let line = encode_line("k\"1", b"{\n  \"a\": [1,\r\n 2]\n}", &time());
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let value: serde_json::Value = serde_json::from_slice(&line).expect("a JSON line");
        assert_eq!(
            value,
            serde_json::json!({
                "key": "k\"1",
                "time": "2026-01-01T00:00:00.123Z",
                "record": {"a": [1, 2]},
            })
        );

        let line = encode_line("k", b"not json\n\xff", &time());
        let value: serde_json::Value = serde_json::from_slice(&line).expect("a JSON line");
        assert_eq!(value["record"], "not json\n\u{fffd}");
        let line = encode_line("k", b"", &time());
        let value: serde_json::Value = serde_json::from_slice(&line).expect("a JSON line");
        assert_eq!(value["record"], "");
    }

    #[test]
    fn rejects_names_that_leave_the_directory() {
        let dir = Path::new("/data");
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "dlq\n"] {
            assert!(log_path(dir, bad).is_none(), "{bad:?} accepted");
        }
        assert_eq!(
            log_path(dir, "orders-dlq_1.v2"),
            Some(PathBuf::from("/data/logs/orders-dlq_1.v2.jsonl"))
        );
    }

    #[tokio::test]
    async fn writes_are_durable_lines_read_back_in_order() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let sink = LogSink::open(dir.path(), "dlq").expect("opens");
        let writes = (0..50).map(|i| {
            let sink = sink.clone();
            async move {
                sink.write(&format!("key-{i}"), Bytes::from(format!("{{\"n\":{i}}}")))
                    .await
            }
        });
        for result in futures::future::join_all(writes).await {
            result.expect("durable");
        }
        let entries = read_log(dir.path(), "dlq").expect("reads");
        assert_eq!(entries.len(), 50);
        let mut seen: Vec<i64> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                assert_eq!(e.index, i);
                assert_eq!(e.key, format!("key-{}", e.record["n"]));
                e.record["n"].as_i64().expect("a number")
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_torn_last_line_is_ignored_then_cut_on_reopen() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let sink = LogSink::open(dir.path(), "dlq").expect("opens");
        sink.write("a", Bytes::from_static(b"1"))
            .await
            .expect("durable");
        drop(sink);
        let path = dir.path().join("logs/dlq.jsonl");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("the log exists");
        file.write_all(b"{\"key\":\"b\",\"ti").expect("appends");
        drop(file);

        let entries = read_log(dir.path(), "dlq").expect("reads");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].record, serde_json::json!(1));

        let sink = LogSink::open(dir.path(), "dlq").expect("reopens");
        sink.write("c", Bytes::from_static(b"\"three\""))
            .await
            .expect("durable");
        let entries = read_log(dir.path(), "dlq").expect("reads");
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(entries[1].index, 1);
        assert_eq!(entries[1].record, serde_json::json!("three"));
    }

    #[test]
    fn a_malformed_complete_line_is_an_error() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir_all(dir.path().join(LOGS_DIR)).expect("creates");
        std::fs::write(dir.path().join("logs/x.jsonl"), b"garbage\n").expect("writes");
        assert!(matches!(
            read_log(dir.path(), "x"),
            Err(LogReadError::Malformed { line: 0, .. })
        ));
        assert!(matches!(
            read_log(dir.path(), "missing"),
            Err(LogReadError::Io { .. })
        ));
    }
}
