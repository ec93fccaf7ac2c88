//! The log of one invocation, for Lambda's `LogType: Tail`: the last lines a function wrote
//! while it ran, kept only when the caller asked for them.
//!
//! An [`Invocation`](crate::Invocation) carries a [`LogTail`] only then, so invocations
//! without one (every event-source invocation) pay nothing; targets that see a worker's
//! output (process targets) append its lines, tagged by request id as in the broker's log.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How much of an invocation's log Lambda returns: its last 4 KB.
pub const LOG_TAIL_BYTES: usize = 4096;

/// The lines one invocation wrote, at most [`LOG_TAIL_BYTES`] of them kept (the latest).
/// Clones share the lines.
#[derive(Debug, Clone, Default)]
pub struct LogTail {
    inner: Arc<Mutex<Lines>>,
}

#[derive(Debug, Default)]
struct Lines {
    lines: VecDeque<String>,
    /// Bytes in `lines`, a newline counted per line.
    bytes: usize,
    /// Lines ever appended (to tell when output has gone quiet).
    appended: u64,
}

impl LogTail {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one line (without its newline), dropping the oldest lines beyond
    /// [`LOG_TAIL_BYTES`].
    pub fn push(&self, line: &str) {
        let mut inner = self.lock();
        inner.bytes += line.len() + 1;
        inner.lines.push_back(line.to_owned());
        inner.appended += 1;
        // The newest line always stays, however long; the caller cuts the text to size.
        while inner.bytes > LOG_TAIL_BYTES && inner.lines.len() > 1 {
            if let Some(oldest) = inner.lines.pop_front() {
                inner.bytes -= oldest.len() + 1;
            }
        }
    }

    /// The kept lines, each ending with a newline.
    pub fn text(&self) -> String {
        let inner = self.lock();
        let mut text = String::with_capacity(inner.bytes);
        for line in &inner.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Waits until no line has arrived for `quiet`, at most `limit`. A worker's output is read
    /// from a pipe by a task of its own, so lines it wrote just before answering may still be
    /// on their way when the answer arrives.
    pub async fn settled(&self, quiet: Duration, limit: Duration) {
        let give_up = tokio::time::Instant::now() + limit;
        let mut seen = self.lock().appended;
        loop {
            let wake = (tokio::time::Instant::now() + quiet).min(give_up);
            tokio::time::sleep_until(wake).await;
            let now = self.lock().appended;
            if now == seen || tokio::time::Instant::now() >= give_up {
                return;
            }
            seen = now;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        // The lines stay consistent whatever a panicking holder did: each update is whole.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The last `max` bytes of `text`, starting at a character boundary.
pub fn last_bytes(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::{last_bytes, LogTail, LOG_TAIL_BYTES};

    #[test]
    fn keeps_the_latest_lines_within_the_limit() {
        let tail = LogTail::new();
        for i in 0..1000 {
            tail.push(&format!("line {i}"));
        }
        let text = tail.text();
        assert!(text.len() <= LOG_TAIL_BYTES, "{}", text.len());
        assert!(text.ends_with("line 999\n"));
        assert!(!text.contains("line 0\n"));
    }

    #[test]
    fn cuts_at_a_character_boundary() {
        assert_eq!(last_bytes("aé", 1), "");
        assert_eq!(last_bytes("aé", 2), "é");
        assert_eq!(last_bytes("abc", 10), "abc");
    }

    #[tokio::test(start_paused = true)]
    async fn settles_once_output_goes_quiet() {
        let tail = LogTail::new();
        let writer = tail.clone();
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            for i in 0..3 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                writer.push(&format!("late {i}"));
            }
        });
        tail.settled(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_secs(1),
        )
        .await;
        assert_eq!(tail.text(), "late 0\nlate 1\nlate 2\n");
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
    }
}
