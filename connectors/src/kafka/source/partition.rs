//! One assigned partition's task: reads the partition's queue, filters and batches its
//! records, runs the handler on each batch itself, and stores the watermark as batches finish.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use impulse_config::Ordering;
use rdkafka::consumer::MessageStream;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::Timestamp;
use tokio::time::{Instant, Sleep};

use super::batcher::PartitionBatcher;
use super::{PartitionQueue, Shared, SourceConsumer, SourceContext};
use crate::contract::BatchOutcome;
use crate::kafka::event::{
    group_envelope_len, KafkaBatch, KafkaRecord, CREATE_TIME, LOG_APPEND_TIME, NO_TIMESTAMP_TYPE,
};
use crate::kafka::in_flight::InFlight;
use crate::kafka::offsets::TopicPartition;
use crate::kafka::stop::{Stop, StopReceiver};
use crate::telemetry::KafkaPartitionCounts;

/// Shortest time between two upkeeps of a partition (offset store, count flush); see
/// [`UpkeepPacer`].
pub(crate) const STORE_INTERVAL: Duration = Duration::from_millis(100);

// === PartitionTask ===

/// What a partition's task needs from the source, fixed for one assignment of the partition.
pub(super) struct PartitionTask {
    shared: Arc<Shared>,
    consumer: Arc<SourceConsumer>,
    tp: TopicPartition,
    /// The assignment's epoch: once it has ended, stores from this task are refused.
    epoch: u64,
}

impl PartitionTask {
    pub(super) fn new(
        shared: Arc<Shared>,
        consumer: Arc<SourceConsumer>,
        tp: TopicPartition,
        epoch: u64,
    ) -> Self {
        Self {
            shared,
            consumer,
            tp,
            epoch,
        }
    }

    /// Runs the partition until `stop` says so (a closed channel counts as an abort). On a
    /// drain it waits, up to its timeout, for the batches in flight and stores their outcomes;
    /// records still unresolved then stay uncommitted, for the next owner to read again.
    ///
    /// `done` disconnects only once `queue` has been dropped.
    pub(super) async fn run(
        self,
        queue: PartitionQueue,
        mut stop: StopReceiver,
        done: std::sync::mpsc::Sender<()>,
    ) {
        let mut partition = PartitionLoop::new(&self);
        let stopped = partition.read_until_stopped(&queue, &mut stop).await;
        if let Stop::Drain(timeout) = stopped {
            partition.drain(&mut stop, timeout).await;
        }
        partition.finish();
        // The queue goes before `done` disconnects: a new queue for this partition must not
        // be split while this one still exists.
        drop(queue);
        drop(done);
    }
}

// === PartitionLoop ===

/// The partition task's working state. Its running batches borrow the task (their handler
/// futures borrow the handler), so it lives beside the task rather than in it.
struct PartitionLoop<'t> {
    task: &'t PartitionTask,
    batcher: PartitionBatcher,
    in_flight: InFlight<'t>,
    counts: KafkaPartitionCounts,
    pacer: UpkeepPacer,
    /// When the loop started: the batcher's instant on every turn without a batch window.
    started: Instant,
}

impl<'t> PartitionLoop<'t> {
    fn new(task: &'t PartitionTask) -> Self {
        let shared = &*task.shared;
        let (topic, partition) = (task.tp.0.as_str(), task.tp.1);
        let batcher = PartitionBatcher::new(
            shared.settings,
            // The partition's own copy: every batch holds one, and a count that every
            // partition updated moved between cores per batch.
            Arc::from(&*shared.trigger),
            Arc::from(topic),
            partition,
            shared.envelope + group_envelope_len(topic, partition),
        );
        Self {
            task,
            batcher,
            in_flight: InFlight::new(shared.settings.ordering == Ordering::Key),
            counts: KafkaPartitionCounts::new(&shared.metrics),
            pacer: UpkeepPacer::default(),
            started: Instant::now(),
        }
    }

    /// Reads, batches and runs batches until the task is told to stop; returns how to stop.
    ///
    /// Every turn that can make a batch ready (records read, batches finished, a window or
    /// the upkeep's rest ended) sends what may go, then does the upkeep.
    async fn read_until_stopped(
        &mut self,
        queue: &PartitionQueue,
        stop: &mut StopReceiver,
    ) -> Stop {
        // A long-lived timer, polled on every turn of the loop: creating one per turn
        // registers it each time. (The stop receiver is polled in place: it registers the
        // task's waker only once.)
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut stream = queue.stream();
        self.send_ready_batches(self.started);
        loop {
            let deadline = earliest(self.batcher.deadline(), self.pacer.due());
            rearm(timer.as_mut(), &mut armed, deadline);
            tokio::select! {
                // Stop first, then finished batches (they free capacity and move the
                // watermark), then the timers, and reading last: a partition whose
                // buffer is full stops reading, which bounds its memory.
                biased;
                // The source gone without a word: nothing more may be stored.
                stopped = poll_fn(|cx| stop.poll_recv(cx)) => {
                    return stopped.unwrap_or(Stop::Abort);
                }
                Some((batch, outcome)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.on_batches_finished(&batch, &outcome);
                }
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.on_timer();
                }
                message = stream.next(), if self.batcher.has_room() => {
                    self.on_records(&mut stream, message);
                }
            }
        }
    }

    /// A batch finished: completes it and every other batch already finished (to store
    /// once), then sends what may go.
    fn on_batches_finished(&mut self, batch: &KafkaBatch, outcome: &BatchOutcome) {
        let now = self.batching_now();
        self.complete(batch, outcome, now);
        while let Some(Some((batch, outcome))) = self.in_flight.next().now_or_never() {
            self.complete(&batch, &outcome, now);
        }
        self.send_ready_batches(now);
        self.upkeep();
    }

    /// The loop's timer fired: a batch window or the upkeep's rest may have ended.
    fn on_timer(&mut self) {
        let now = Instant::now();
        self.pacer.wake(now);
        self.send_ready_batches(now);
        self.upkeep();
    }

    /// Takes `first` and, while the batcher has room, every record already fetched (so a
    /// batch fills before its window ends); then sends what may go.
    fn on_records<'q>(
        &mut self,
        stream: &mut MessageStream<'q, SourceContext>,
        first: Option<KafkaResult<BorrowedMessage<'q>>>,
    ) {
        let now = self.batching_now();
        let mut read = 0;
        if let Some(message) = first {
            read += self.receive(message, now);
        }
        while self.batcher.has_room() {
            match stream.next().now_or_never() {
                Some(Some(message)) => read += self.receive(message, now),
                _ => break,
            }
        }
        self.counts.records_received(read);
        self.send_ready_batches(now);
        self.upkeep();
    }

    /// Waits, up to `timeout`, for the batches in flight (an abort ends the wait early), then
    /// stores the watermark.
    async fn drain(&mut self, stop: &mut StopReceiver, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.in_flight.is_empty() {
            tokio::select! {
                biased;
                next = stop.recv() => {
                    if matches!(next, None | Some(Stop::Abort)) {
                        break;
                    }
                }
                Some((batch, outcome)) = self.in_flight.next() => {
                    self.complete(&batch, &outcome, Instant::now());
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.store_now();
    }

    /// Flushes the counts and drops the handlers still running: their records stay
    /// unresolved, and are logged.
    fn finish(mut self) {
        self.counts.flush();
        drop(self.in_flight);
        let unresolved = self.batcher.watermark.unresolved();
        if unresolved > 0 {
            let (topic, partition) = (&self.task.tp.0, self.task.tp.1);
            tracing::info!(
                trigger = %self.task.shared.trigger, topic = %topic, partition, unresolved,
                position = ?self.batcher.watermark.position(),
                "Partition stopped with unresolved records; they will be redelivered."
            );
        }
    }

    /// The instant the batcher is given. Without a batch window batching never depends on
    /// the time, so every turn gets the same instant and saves reading the clock (the
    /// timer's turn still reads it, for the upkeep pacer).
    #[inline]
    fn batching_now(&self) -> Instant {
        if self.task.shared.settings.window.is_zero() {
            self.started
        } else {
            Instant::now()
        }
    }

    /// Starts the handler on every batch that may go now.
    fn send_ready_batches(&mut self, now: Instant) {
        let task = self.task;
        while self.batcher.ready(now) {
            let Some(batch) = self.batcher.take_batch(now) else {
                break;
            };
            self.counts.batch_sent(batch.records.len());
            self.in_flight.push(task.shared.handler.handle(batch));
        }
    }

    /// Takes one record (filtering it, or buffering it for a batch); returns how many
    /// records it read (0 for a fetch error).
    fn receive(&mut self, message: KafkaResult<BorrowedMessage<'_>>, now: Instant) -> u64 {
        let shared = &*self.task.shared;
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(trigger = %shared.trigger, topic = %self.task.tp.0, partition = self.task.tp.1, error = %e, "Kafka fetch error.");
                return 0;
            }
        };
        let key = message.key();
        let value = message.payload();
        // Copied before the headers are read: the copy streams through the record in order,
        // so the headers, stored after the value, are in cache when librdkafka parses them
        // (read first, they cost a second round of cache misses per record; a filtered
        // record's copy is wasted, which the filter's own matching outweighs).
        let key_copy = key.map(Bytes::copy_from_slice);
        let value_copy = value.map(Bytes::copy_from_slice);
        let headers: Vec<(String, Option<Bytes>)> = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(Bytes::copy_from_slice)))
                    .collect()
            })
            .unwrap_or_default();
        if !shared.filter.matches(key, value, &headers) {
            // Final at once (`Outcome::Dropped`): it commits with its neighbours.
            self.counts.record_filtered();
            self.batcher.filtered(message.offset());
            return 1;
        }
        let (timestamp, timestamp_type) = match message.timestamp() {
            Timestamp::NotAvailable => (None, NO_TIMESTAMP_TYPE),
            Timestamp::CreateTime(t) => (Some(t), CREATE_TIME),
            Timestamp::LogAppendTime(t) => (Some(t), LOG_APPEND_TIME),
        };
        let record = KafkaRecord {
            topic: self.batcher.topic(),
            partition: self.task.tp.1,
            offset: message.offset(),
            timestamp,
            timestamp_type,
            key: key_copy,
            value: value_copy,
            headers,
        };
        self.batcher.push(record, now);
        1
    }

    /// Moves the watermark with a finished batch's outcome; logs records it abandoned.
    fn complete(&mut self, batch: &KafkaBatch, outcome: &BatchOutcome, now: Instant) {
        let abandoned = self.batcher.complete(batch, outcome, now);
        if let Some(first) = abandoned {
            tracing::error!(
                trigger = %self.task.shared.trigger, topic = %self.task.tp.0, partition = self.task.tp.1,
                offset = first, records = outcome.abandoned(),
                "Records were abandoned without a final outcome; the partition will not commit past them until they are redelivered."
            );
        }
    }

    /// Stores the watermark if it moved and flushes the partition's counts, unless the
    /// partition is resting from its last upkeep (then the timer's turn does it).
    fn upkeep(&mut self) {
        if self.pacer.may_run() {
            let stored = self.store_now();
            if self.counts.flush() || stored {
                self.pacer.ran(Instant::now());
            }
        }
    }

    /// Stores the watermark if it moved; returns whether it did.
    fn store_now(&mut self) -> bool {
        let Some(offset) = self.batcher.watermark.take_store() else {
            return false;
        };
        let task = self.task;
        task.shared
            .store(&task.consumer, &task.tp, task.epoch, offset);
        true
    }
}

/// Points the loop's timer at `deadline` if it changed. `armed` is where it points (`None`:
/// the loop ignores it).
fn rearm(timer: Pin<&mut Sleep>, armed: &mut Option<Instant>, deadline: Option<Instant>) {
    if deadline != *armed {
        if let Some(deadline) = deadline {
            timer.reset(deadline);
        }
        *armed = deadline;
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

// === UpkeepPacer ===

/// Paces a partition's upkeep: `store_offsets` and flushing its counts. librdkafka commits
/// stored offsets once a second anyway, and each store is a lock and a call into librdkafka,
/// too much to pay on every batch at one record per batch (see BENCHMARKS.md). A revoke or
/// shutdown always stores at once.
///
/// After an upkeep that did something, the partition rests for [`STORE_INTERVAL`]: upkeep
/// asked for meanwhile waits for the loop's timer to end the rest. A busy partition so reads
/// the clock once per rest, not on every turn.
#[derive(Debug, Default)]
pub(crate) struct UpkeepPacer {
    resting_until: Option<Instant>,
}

impl UpkeepPacer {
    pub(crate) fn may_run(&self) -> bool {
        self.resting_until.is_none()
    }

    pub(crate) fn ran(&mut self, now: Instant) {
        self.resting_until = Some(now + STORE_INTERVAL);
    }

    /// Ends the rest if it is over (the loop's timer fired).
    pub(crate) fn wake(&mut self, now: Instant) {
        if self.resting_until.is_some_and(|until| now >= until) {
            self.resting_until = None;
        }
    }

    /// When the rest ends: the loop's timer must fire then.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.resting_until
    }
}
