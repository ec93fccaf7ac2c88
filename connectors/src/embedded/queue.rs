//! The embedded async-invocation queue: a redb file in the data directory, written by one
//! thread with group commit.
//!
//! Every enqueue, completion and reschedule goes through a channel to a single writer thread.
//! It takes everything pending and applies it in **one** write transaction, so one fsync makes
//! a whole batch durable, then answers every waiter ([`Commit::Group`]; [`Commit::PerEvent`]
//! commits each operation alone, as a benchmark baseline).
//!
//! The file holds the events; memory holds an index of them: which are due when, and which are
//! leased. Leases live only in memory, so after a restart every event not yet completed is
//! delivered again: duplicates are possible, loss is not.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::SystemTime;

use futures::future::BoxFuture;
use futures::FutureExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::contract::{unix_millis, Delivery, LeaseId, Queue, QueueError, QueuedEvent};

/// The queue's file inside the data directory.
pub const QUEUE_FILE: &str = "queue.redb";

/// Sequence number → record: the due time (unix ms, i64 big-endian) then the encoded event.
pub(super) const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
/// Records that failed to decode at open, moved aside (same key) for an operator to inspect.
pub(super) const QUARANTINE: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("quarantine");

/// The most operations one write transaction takes: bounds a transaction's size and latency.
const MAX_BATCH: usize = 4096;
/// The length of a record's due-time prefix.
const DUE_LEN: usize = 8;

/// How the writer commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Commit {
    /// Everything pending goes into one transaction (one fsync). The default.
    #[default]
    Group,
    /// One transaction (one fsync) per operation: the baseline group commit is measured against.
    PerEvent,
}

/// The embedded durable queue (see the module documentation). Cheap to clone: clones share
/// one database and one writer. [`Queue::next`] may be called by several tasks at once; each
/// gets a different event.
///
/// The database file is locked while any clone lives; dropping the last clone waits for the
/// writer thread to finish its batch and closes the file, so the directory can be reopened at
/// once.
#[derive(Clone)]
pub struct EmbeddedQueue {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// `Some` until drop, which closes the channel so that the writer thread ends.
    writer: Option<mpsc::UnboundedSender<Op>>,
    thread: Option<JoinHandle<()>>,
    clock: DueClock,
    path: PathBuf,
    commit: Commit,
}

/// What the writer thread and the handles share.
struct Shared {
    db: Database,
    index: Mutex<Index>,
    /// Signalled whenever an event becomes ready (enqueued, rescheduled, lease given back).
    ready: Notify,
}

/// The in-memory index. An event is in exactly one of `ready`, `leased` or `settling`.
#[derive(Default)]
struct Index {
    /// Not leased, ordered by (due unix ms, sequence).
    ready: BTreeSet<(i64, u64)>,
    /// Handed out by `next`, not yet settled.
    leased: HashSet<u64>,
    /// A `complete` or `reschedule` is on its way to disk.
    settling: HashSet<u64>,
}

enum Op {
    Enqueue {
        due: i64,
        record: Vec<u8>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Complete {
        seq: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Reschedule {
        seq: u64,
        due: i64,
        record: Vec<u8>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// The clock of events' due times: wall-clock milliseconds derived from tokio's monotonic
/// clock. Due times are stored as unix milliseconds (they must survive restarts), but waiting
/// uses tokio timers, which stay exact (and follow paused time in tests) as long as "now" comes
/// from the same clock. A wall-clock step while the process runs shifts due times by the step
/// until the next restart.
#[derive(Debug, Clone, Copy)]
struct DueClock {
    origin: Instant,
    origin_ms: i64,
}

impl DueClock {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            origin_ms: unix_millis(SystemTime::now()),
        }
    }

    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.origin_ms.saturating_add(elapsed)
    }

    /// The instant at which `now_ms()` reaches `ms` (now, if it already has).
    fn instant_at(&self, ms: i64) -> Instant {
        let ahead = u64::try_from(ms.saturating_sub(self.origin_ms)).unwrap_or(0);
        self.origin + std::time::Duration::from_millis(ahead)
    }
}

// === impl EmbeddedQueue ===

impl EmbeddedQueue {
    /// Opens (or creates) `<data_dir>/queue.redb` with group commit. Every event found in it
    /// is due again at once (or at its delay): leases never survive a restart.
    pub fn open(data_dir: &Path) -> Result<Self, QueueError> {
        Self::open_with(data_dir, Commit::Group)
    }

    /// Like [`EmbeddedQueue::open`], choosing how the writer commits.
    pub fn open_with(data_dir: &Path, commit: Commit) -> Result<Self, QueueError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            open_error(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(QUEUE_FILE);
        let db = open_database(&path)?;
        let (index, next_seq) = load_index(&db, &path)?;
        let shared = Arc::new(Shared {
            db,
            index: Mutex::new(index),
            ready: Notify::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("impulse-queue-writer".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run_writer(&shared, rx, commit, next_seq)
            })
            .map_err(|e| open_error(format!("cannot start the queue writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                writer: Some(tx),
                thread: Some(thread),
                clock: DueClock::new(),
                path,
                commit,
            }),
        })
    }

    /// The number of events stored and not completed: due, delayed and leased.
    pub fn len(&self) -> usize {
        let index = self.inner.shared.index();
        index.ready.len() + index.leased.len() + index.settling.len()
    }

    /// Whether no event is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands `op` to the writer thread and waits for its verdict.
    async fn submit(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        let writer = self
            .inner
            .writer
            .as_ref()
            .ok_or_else(|| "the queue is closed".to_owned())?;
        writer
            .send(op(reply))
            .map_err(|_| "the queue writer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the queue writer stopped before answering".to_owned())?
    }

    async fn enqueue_event(&self, event: QueuedEvent) -> Result<(), QueueError> {
        let due = self.inner.clock.now_ms();
        let record = record(due, &event);
        self.submit(|reply| Op::Enqueue { due, record, reply })
            .await
            .map_err(|message| QueueError {
                operation: "enqueue",
                message,
            })
    }

    async fn next_delivery(&self) -> Result<Delivery, QueueError> {
        let shared = &self.inner.shared;
        loop {
            // Register for a wake-up *before* looking, so that an event made ready between the
            // look and the wait still wakes us.
            let notified = shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let head = shared.index().ready.first().copied();
            let wake_at = match head {
                Some((due, seq)) if due <= self.inner.clock.now_ms() => {
                    let lease = {
                        let mut index = shared.index();
                        // Another caller may have taken it since we looked.
                        if !index.ready.remove(&(due, seq)) {
                            continue;
                        }
                        index.leased.insert(seq);
                        PendingLease {
                            shared: Arc::clone(shared),
                            seq,
                            due,
                            armed: true,
                        }
                    };
                    match self.read(lease).await? {
                        Some(delivery) => return Ok(delivery),
                        None => continue,
                    }
                }
                Some((due, _)) => Some(self.inner.clock.instant_at(due)),
                None => None,
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Reads a freshly leased event. `Ok(None)`: the record is gone or unreadable (logged, and
    /// dropped from the index); try the next one.
    async fn read(&self, mut lease: PendingLease) -> Result<Option<Delivery>, QueueError> {
        let shared = Arc::clone(&self.inner.shared);
        let seq = lease.seq;
        let read = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, String> {
            let txn = shared.db.begin_read().map_err(|e| e.to_string())?;
            let table = txn.open_table(EVENTS).map_err(|e| e.to_string())?;
            let value = table.get(seq).map_err(|e| e.to_string())?;
            Ok(value.map(|v| v.value().to_vec()))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|read| read);
        // On error the lease guard puts the event back: it is due again at once.
        let bytes = read.map_err(|message| QueueError {
            operation: "next",
            message: format!("reading event {seq}: {message}"),
        })?;
        let event = match bytes.as_deref().map(decode_record) {
            Some(Ok((_, event))) => event,
            Some(Err(e)) => {
                tracing::error!(seq, error = %e, "Undecodable event in the embedded queue; it will be quarantined at the next start.");
                lease.forget();
                return Ok(None);
            }
            None => {
                tracing::error!(seq, "An indexed event is missing from the embedded queue.");
                lease.forget();
                return Ok(None);
            }
        };
        lease.armed = false;
        Ok(Some(Delivery {
            lease: LeaseId(seq.to_string()),
            event,
        }))
    }

    /// Moves `lease` from leased to settling, then has the writer apply `op`.
    async fn settle(
        &self,
        operation: &'static str,
        lease: &LeaseId,
        op: impl FnOnce(u64, oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), QueueError> {
        let error = |message: String| QueueError { operation, message };
        let seq: u64 = lease
            .0
            .parse()
            .map_err(|_| error(format!("{:?} is not an embedded queue lease", lease.0)))?;
        {
            let mut index = self.inner.shared.index();
            if !index.leased.remove(&seq) {
                return Err(error(format!("lease {seq} is not held")));
            }
            index.settling.insert(seq);
        }
        let result = self.submit(|reply| op(seq, reply)).await;
        if result.is_err() {
            // The writer already gave the lease back if it ran the operation and failed;
            // this covers a writer that never saw it.
            let mut index = self.inner.shared.index();
            if index.settling.remove(&seq) {
                index.leased.insert(seq);
            }
        }
        result.map_err(error)
    }
}

impl EmbeddedQueue {
    /// [`Queue::count_for`]: reads every stored event (a scan of the file).
    async fn count_events_for(&self, function: &str) -> Result<Option<u64>, QueueError> {
        let shared = Arc::clone(&self.inner.shared);
        let function = function.to_owned();
        let count = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let txn = shared.db.begin_read().map_err(|e| e.to_string())?;
            let table = txn.open_table(EVENTS).map_err(|e| e.to_string())?;
            let mut count = 0;
            for entry in table.iter().map_err(|e| e.to_string())? {
                let (_, value) = entry.map_err(|e| e.to_string())?;
                // Undecodable records are quarantined at open and belong to no function.
                if let Ok((_, event)) = decode_record(value.value()) {
                    if crate::contract::names_function(&event.function, &function) {
                        count += 1;
                    }
                }
            }
            Ok(count)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|count| count);
        count.map(Some).map_err(|message| QueueError {
            operation: "count",
            message,
        })
    }
}

impl Queue for EmbeddedQueue {
    fn count_for<'a>(
        &'a self,
        function: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, QueueError>> {
        self.count_events_for(function).boxed()
    }

    fn enqueue(&self, event: QueuedEvent) -> BoxFuture<'_, Result<(), QueueError>> {
        self.enqueue_event(event).boxed()
    }

    fn next(&self) -> BoxFuture<'_, Result<Delivery, QueueError>> {
        self.next_delivery().boxed()
    }

    fn complete(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), QueueError>> {
        async move {
            self.settle("complete", &lease, |seq, reply| Op::Complete { seq, reply })
                .await
        }
        .boxed()
    }

    fn reschedule(
        &self,
        lease: LeaseId,
        event: QueuedEvent,
        not_before: SystemTime,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        async move {
            let due = unix_millis(not_before);
            let record = record(due, &event);
            self.settle("reschedule", &lease, |seq, reply| Op::Reschedule {
                seq,
                due,
                record,
                reply,
            })
            .await
        }
        .boxed()
    }
}

impl fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedQueue")
            .field("path", &self.inner.path)
            .field("commit", &self.inner.commit)
            .field("len", &self.len())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered what it already took; join
        // it so that the database file is closed (and unlocked) when the last handle is gone.
        drop(self.writer.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("The embedded queue writer thread panicked.");
            }
        }
    }
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, Index> {
        // No code path panics while holding the lock; if one ever did, the index is still
        // consistent (every update is a single insert or remove), so keep going.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A lease taken by `next` whose event is not yet in the caller's hands. Dropping it armed
/// (the read failed, or the `next` future was cancelled) makes the event ready again.
struct PendingLease {
    shared: Arc<Shared>,
    seq: u64,
    due: i64,
    armed: bool,
}

impl PendingLease {
    /// Drops the event from the index without making it ready again.
    fn forget(&mut self) {
        self.armed = false;
        self.shared.index().leased.remove(&self.seq);
    }
}

impl Drop for PendingLease {
    fn drop(&mut self) {
        if self.armed {
            let mut index = self.shared.index();
            if index.leased.remove(&self.seq) {
                index.ready.insert((self.due, self.seq));
            }
            drop(index);
            self.shared.ready.notify_waiters();
        }
    }
}

// === the writer thread ===

fn run_writer(shared: &Shared, mut rx: mpsc::UnboundedReceiver<Op>, commit: Commit, next_seq: u64) {
    let limit = match commit {
        Commit::Group => MAX_BATCH,
        Commit::PerEvent => 1,
    };
    let mut next_seq = next_seq;
    let mut batch = Vec::with_capacity(limit.min(256));
    while let Some(op) = rx.blocking_recv() {
        batch.push(op);
        while batch.len() < limit {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let first_seq = next_seq;
        match write_batch(&shared.db, &batch, first_seq) {
            Ok(used) => {
                next_seq = first_seq + used;
                apply(shared, batch.drain(..), first_seq);
            }
            Err(message) => {
                tracing::error!(error = %message, "Embedded queue write failed.");
                fail(shared, batch.drain(..), &message);
            }
        }
    }
}

/// Writes `batch` in one transaction; enqueues take sequence numbers from `first_seq` on.
/// Returns how many sequence numbers were used.
fn write_batch(db: &Database, batch: &[Op], first_seq: u64) -> Result<u64, String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let mut next = first_seq;
    {
        let mut table = txn.open_table(EVENTS).map_err(|e| e.to_string())?;
        for op in batch {
            match op {
                Op::Enqueue { record, .. } => {
                    table
                        .insert(next, record.as_slice())
                        .map_err(|e| e.to_string())?;
                    next += 1;
                }
                Op::Complete { seq, .. } => {
                    table.remove(*seq).map_err(|e| e.to_string())?;
                }
                Op::Reschedule { seq, record, .. } => {
                    table
                        .insert(*seq, record.as_slice())
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())?;
    Ok(next - first_seq)
}

/// After a commit: updates the index, wakes `next` callers, answers the waiters.
fn apply(shared: &Shared, batch: impl Iterator<Item = Op>, first_seq: u64) {
    let mut replies = Vec::new();
    let mut next = first_seq;
    let mut woke = false;
    {
        let mut index = shared.index();
        for op in batch {
            match op {
                Op::Enqueue { due, reply, .. } => {
                    index.ready.insert((due, next));
                    next += 1;
                    woke = true;
                    replies.push(reply);
                }
                Op::Complete { seq, reply } => {
                    index.settling.remove(&seq);
                    replies.push(reply);
                }
                Op::Reschedule {
                    seq, due, reply, ..
                } => {
                    if index.settling.remove(&seq) {
                        index.ready.insert((due, seq));
                        woke = true;
                    }
                    replies.push(reply);
                }
            }
        }
    }
    if woke {
        shared.ready.notify_waiters();
    }
    for reply in replies {
        // A waiter that went away (its future was dropped) needs no answer.
        drop(reply.send(Ok(())));
    }
}

/// After a failed transaction: settles go back to leased (the caller may retry), and every
/// waiter hears the error. Nothing was written.
fn fail(shared: &Shared, batch: impl Iterator<Item = Op>, message: &str) {
    let mut replies = Vec::new();
    {
        let mut index = shared.index();
        for op in batch {
            let reply = match op {
                Op::Enqueue { reply, .. } => reply,
                Op::Complete { seq, reply } | Op::Reschedule { seq, reply, .. } => {
                    if index.settling.remove(&seq) {
                        index.leased.insert(seq);
                    }
                    reply
                }
            };
            replies.push(reply);
        }
    }
    for reply in replies {
        drop(reply.send(Err(message.to_owned())));
    }
}

// === records and opening ===

fn record(due: i64, event: &QueuedEvent) -> Vec<u8> {
    let encoded = event.encode();
    let mut record = Vec::with_capacity(DUE_LEN + encoded.len());
    record.extend_from_slice(&due.to_be_bytes());
    record.extend_from_slice(&encoded);
    record
}

fn decode_record(bytes: &[u8]) -> Result<(i64, QueuedEvent), String> {
    let (due, encoded) = bytes
        .split_first_chunk::<DUE_LEN>()
        .ok_or_else(|| "record shorter than its due time".to_owned())?;
    let event = QueuedEvent::decode(encoded).map_err(|e| e.to_string())?;
    Ok((i64::from_be_bytes(*due), event))
}

/// Builds the index from the file, quarantining records that do not decode. Returns the index
/// and the next sequence number.
fn load_index(db: &Database, path: &Path) -> Result<(Index, u64), QueueError> {
    let storage = |e: &dyn fmt::Display| open_error(format!("cannot read {}: {e}", path.display()));
    let mut index = Index::default();
    let mut corrupt = Vec::new();
    let mut next_seq = 0u64;
    {
        let txn = db.begin_write().map_err(|e| storage(&e))?;
        {
            // Opening the table in a write transaction creates it on first use.
            let table = txn.open_table(EVENTS).map_err(|e| storage(&e))?;
            for entry in table.iter().map_err(|e| storage(&e))? {
                let (key, value) = entry.map_err(|e| storage(&e))?;
                let seq = key.value();
                next_seq = next_seq.max(seq.saturating_add(1));
                match decode_record(value.value()) {
                    Ok((due, _)) => {
                        index.ready.insert((due, seq));
                    }
                    Err(e) => corrupt.push((seq, value.value().to_vec(), e)),
                }
            }
        }
        if !corrupt.is_empty() {
            let mut events = txn.open_table(EVENTS).map_err(|e| storage(&e))?;
            let mut quarantine = txn.open_table(QUARANTINE).map_err(|e| storage(&e))?;
            for (seq, bytes, error) in &corrupt {
                tracing::error!(seq, %error, path = %path.display(), "Quarantining an undecodable event of the embedded queue.");
                quarantine
                    .insert(*seq, bytes.as_slice())
                    .map_err(|e| storage(&e))?;
                events.remove(*seq).map_err(|e| storage(&e))?;
            }
        }
        txn.commit().map_err(|e| storage(&e))?;
    }
    Ok((index, next_seq))
}

/// Opens the queue file, checked page by page, or creates it when there is none.
///
/// A file that exists is never recreated: an empty one was truncated outside Impulse (redb
/// would silently start afresh in it), and a damaged one is refused rather than trusted (redb
/// may panic on pages altered outside it). Both errors say what to do.
fn open_database(path: &Path) -> Result<Database, QueueError> {
    let already_open = || {
        open_error(format!(
            "{} is already open (by another queue in this or another process)",
            path.display()
        ))
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Database::create(path).map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => already_open(),
                e => open_error(format!("cannot create {}: {e}", path.display())),
            });
        }
        Err(e) => return Err(open_error(format!("cannot read {}: {e}", path.display()))),
        Ok(meta) if meta.len() == 0 => {
            return Err(open_error(format!(
                "{} exists but is empty (0 bytes): it was truncated outside Impulse and the \
                 events it held are gone. `impulse queue salvage` sets it aside and starts an \
                 empty queue.",
                path.display()
            )))
        }
        Ok(_) => {}
    }
    // The check reads every page; a panic is still caught, should one get through it.
    let opened = std::panic::catch_unwind(|| {
        Database::builder()
            .set_check_integrity_on_open(true)
            .open(path)
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(already_open()),
        Ok(Err(e)) => Err(damaged(path, &e)),
        Err(_) => Err(damaged(path, &"redb could not read it")),
    }
}

fn damaged(path: &Path, reason: &dyn fmt::Display) -> QueueError {
    open_error(format!(
        "{} is damaged ({reason}). `impulse queue salvage` copies the events that can still be \
         read into a fresh queue file and keeps the damaged one beside it.",
        path.display()
    ))
}

fn open_error(message: String) -> QueueError {
    QueueError {
        operation: "open",
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn event(id: &str) -> QueuedEvent {
        QueuedEvent::new(
            id.to_owned(),
            "f".to_owned(),
            "invoke".to_owned(),
            Bytes::from(format!("{{\"id\":\"{id}\"}}")),
        )
    }

    async fn next_now(queue: &EmbeddedQueue) -> Delivery {
        tokio::time::timeout(Duration::from_millis(1), queue.next())
            .await
            .expect("an event is due")
            .expect("next succeeds")
    }

    #[tokio::test]
    async fn counts_the_events_of_a_function_under_every_qualifier() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let queue = EmbeddedQueue::open(dir.path()).expect("opens");
        for (id, function) in [
            ("a", "f"),
            ("b", "f:live"),
            ("c", "fx"),
            ("d", "g"),
            ("e", "f"),
        ] {
            let mut event = event(id);
            event.function = function.to_owned();
            queue.enqueue(event).await.expect("durable");
        }
        // Leased and rescheduled events are queued still.
        let delivery = queue.next().await.expect("next");
        let not_before = SystemTime::now() + Duration::from_secs(60);
        queue
            .reschedule(delivery.lease, delivery.event, not_before)
            .await
            .expect("reschedules");
        let _leased = queue.next().await.expect("next");
        for (function, expected) in [("f", 3), ("fx", 1), ("g", 1), ("h", 0)] {
            assert_eq!(
                queue.count_for(function).await.expect("counts"),
                Some(expected),
                "{function}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn enqueue_next_complete_in_fifo_order() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let queue = EmbeddedQueue::open(dir.path()).expect("opens");
        for id in ["a", "b", "c"] {
            queue.enqueue(event(id)).await.expect("durable");
        }
        assert_eq!(queue.len(), 3);
        let mut ids = Vec::new();
        for _ in 0..3 {
            let delivery = next_now(&queue).await;
            ids.push(delivery.event.id.clone());
            queue.complete(delivery.lease).await.expect("completes");
        }
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(queue.is_empty());
        assert!(
            tokio::time::timeout(Duration::from_secs(60), queue.next())
                .await
                .is_err(),
            "nothing left to deliver"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rescheduled_event_waits_for_its_time() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let queue = EmbeddedQueue::open(dir.path()).expect("opens");
        queue.enqueue(event("a")).await.expect("durable");
        let delivery = next_now(&queue).await;
        let mut retried = delivery.event.clone();
        retried.attempts = 1;
        let not_before = SystemTime::now() + Duration::from_secs(10);
        queue
            .reschedule(delivery.lease, retried, not_before)
            .await
            .expect("reschedules");

        let waiting = queue.next();
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(9_900), &mut waiting)
                .await
                .is_err(),
            "delivered early"
        );
        let delivery = tokio::time::timeout(Duration::from_millis(200), waiting)
            .await
            .expect("due after 10 s")
            .expect("next succeeds");
        assert_eq!(delivery.event.attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_next_wakes_for_a_new_event() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let queue = EmbeddedQueue::open(dir.path()).expect("opens");
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await.map(|d| d.event.id) }
        });
        tokio::task::yield_now().await;
        queue.enqueue(event("late")).await.expect("durable");
        let id = tokio::time::timeout(Duration::from_millis(1), waiter)
            .await
            .expect("woken at once")
            .expect("the task ends")
            .expect("next succeeds");
        assert_eq!(id, "late");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_get_different_events() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let queue = EmbeddedQueue::open(dir.path()).expect("opens");
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.next().await.map(|d| d.event.id) })
            })
            .collect();
        for i in 0..8 {
            queue.enqueue(event(&i.to_string())).await.expect("durable");
        }
        let mut ids = Vec::new();
        for caller in callers {
            ids.push(caller.await.expect("joins").expect("next succeeds"));
        }
        ids.sort();
        assert_eq!(ids, ["0", "1", "2", "3", "4", "5", "6", "7"]);
    }

    #[tokio::test(start_paused = true)]
    async fn leases_do_not_survive_a_restart() {
        let dir = tempfile::tempdir().expect("a temp dir");
        {
            let queue = EmbeddedQueue::open(dir.path()).expect("opens");
            for id in ["done", "leased", "delayed"] {
                queue.enqueue(event(id)).await.expect("durable");
            }
            let done = next_now(&queue).await;
            queue.complete(done.lease).await.expect("completes");
            let leased = next_now(&queue).await;
            assert_eq!(leased.event.id, "leased");
            let delayed = next_now(&queue).await;
            let mut retried = delayed.event.clone();
            retried.attempts = 2;
            retried.function_retries = 1;
            queue
                .reschedule(
                    delayed.lease,
                    retried,
                    SystemTime::now() + Duration::from_secs(5),
                )
                .await
                .expect("reschedules");
            // A second handle to the same file is refused while this one lives.
            assert!(EmbeddedQueue::open(dir.path()).is_err());
        }
        let queue = EmbeddedQueue::open(dir.path()).expect("reopens");
        assert_eq!(queue.len(), 2);
        let leased = next_now(&queue).await;
        assert_eq!(leased.event.id, "leased");
        assert!(
            tokio::time::timeout(Duration::from_secs(4), queue.next())
                .await
                .is_err(),
            "the delay survives the restart"
        );
        let delayed = tokio::time::timeout(Duration::from_secs(2), queue.next())
            .await
            .expect("due")
            .expect("next succeeds");
        assert_eq!(delayed.event.id, "delayed");
        assert_eq!(
            (delayed.event.attempts, delayed.event.function_retries),
            (2, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn settling_needs_a_held_lease() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let queue = EmbeddedQueue::open(dir.path()).expect("opens");
        queue.enqueue(event("a")).await.expect("durable");
        let delivery = next_now(&queue).await;
        queue
            .complete(delivery.lease.clone())
            .await
            .expect("completes");
        let again = queue.complete(delivery.lease.clone()).await;
        assert!(again.is_err(), "a settled lease settles once");
        let bogus = queue.complete(LeaseId("redis-1-0".to_owned())).await;
        assert!(bogus.is_err());
        let reschedule = queue
            .reschedule(delivery.lease, event("a"), SystemTime::now())
            .await;
        assert!(reschedule.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn undecodable_records_are_quarantined_at_open() {
        let dir = tempfile::tempdir().expect("a temp dir");
        {
            let queue = EmbeddedQueue::open(dir.path()).expect("opens");
            queue.enqueue(event("good")).await.expect("durable");
        }
        {
            let db = Database::create(dir.path().join(QUEUE_FILE)).expect("opens the file");
            let txn = db.begin_write().expect("a write transaction");
            {
                let mut table = txn.open_table(EVENTS).expect("the table");
                table
                    .insert(100, [0u8, 0, 0, 0, 0, 0, 0, 0, 9, 9].as_slice())
                    .expect("inserts");
                table.insert(101, [1u8].as_slice()).expect("inserts");
            }
            txn.commit().expect("commits");
        }
        let queue = EmbeddedQueue::open(dir.path()).expect("reopens");
        assert_eq!(queue.len(), 1);
        assert_eq!(next_now(&queue).await.event.id, "good");
        drop(queue);
        let db = Database::create(dir.path().join(QUEUE_FILE)).expect("opens the file");
        let txn = db.begin_read().expect("a read transaction");
        let quarantine = txn.open_table(QUARANTINE).expect("the quarantine table");
        assert_eq!(quarantine.iter().expect("iterates").count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn per_event_commit_is_equally_durable() {
        let dir = tempfile::tempdir().expect("a temp dir");
        {
            let queue = EmbeddedQueue::open_with(dir.path(), Commit::PerEvent).expect("opens");
            let enqueues = (0..20).map(|i| queue.enqueue(event(&i.to_string())));
            for result in futures::future::join_all(enqueues).await {
                result.expect("durable");
            }
        }
        let queue = EmbeddedQueue::open(dir.path()).expect("reopens");
        assert_eq!(queue.len(), 20);
    }
}
