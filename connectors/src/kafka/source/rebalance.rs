//! The consumer's callbacks and thread: partitions assigned and revoked (starting positions,
//! one queue and task per partition, drain and commit on revoke), statistics and log lines.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use super::partition::PartitionTask;
use super::{wait_for_tasks, Shared, SourceConsumer, Start, TaskHandle, TASK_EXIT_GRACE};
use crate::kafka::offsets::{store_list, TopicPartition};
use crate::kafka::stop::{stop_channel, Stop};

/// Bound on the metadata look-ups in the assign callback (committed offsets, offsets for a
/// timestamp).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

// === rebalance ===

impl Shared {
    /// Assign callback: starting positions, then one split queue and task per partition.
    fn on_assign(
        self: &Arc<Self>,
        base: &BaseConsumer<SourceContext>,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions = partitions_of(tpl);
        if partitions.is_empty() || self.lock().shutting_down {
            return;
        }
        tracing::info!(trigger = %self.trigger, partitions = ?partitions, "Partitions assigned.");
        self.apply_start(base, tpl);
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            self.fail("the Kafka consumer is gone during an assignment".to_owned());
            return;
        };
        for tp in partitions {
            // A task of an earlier assignment must be gone before the queue is split again:
            // dropping its queue would switch off the new queue's wake-ups (vector#26438).
            let previous = self.lock().tasks.remove(&tp);
            if let Some(previous) = previous {
                previous.tell(Stop::Abort);
                wait_for_tasks(&self.trigger, vec![(tp.clone(), previous)], TASK_EXIT_GRACE);
            }
            let mut state = self.lock();
            if state.shutting_down {
                return;
            }
            let epoch = state.assignments.assign(&tp);
            let Some(queue) = consumer.split_partition_queue(&tp.0, tp.1) else {
                drop(state);
                self.fail(format!("could not split the queue of {}-{}", tp.0, tp.1));
                continue;
            };
            let (stop, stop_rx) = stop_channel();
            let (done_tx, done) = std::sync::mpsc::channel();
            let task =
                PartitionTask::new(Arc::clone(self), Arc::clone(&consumer), tp.clone(), epoch);
            self.runtime.spawn(task.run(queue, stop_rx, done_tx));
            state.tasks.insert(tp, TaskHandle { stop, done });
        }
    }

    /// Sets the start offset of partitions the group has no committed offset for.
    fn apply_start(&self, base: &BaseConsumer<SourceContext>, tpl: &mut TopicPartitionList) {
        let committed = match base.committed_offsets(tpl.clone(), LOOKUP_TIMEOUT) {
            Ok(committed) => committed,
            Err(e) => {
                tracing::warn!(trigger = %self.trigger, error = %e, "Could not read committed offsets; partitions without one start at the earliest record.");
                return;
            }
        };
        let fresh: Vec<TopicPartition> = committed
            .elements()
            .iter()
            .filter(|e| e.offset() == Offset::Invalid)
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        if fresh.is_empty() {
            return;
        }
        let starts: Vec<(TopicPartition, Offset)> = match self.start {
            Start::Earliest => fresh
                .into_iter()
                .map(|tp| (tp, Offset::Beginning))
                .collect(),
            Start::Latest => fresh.into_iter().map(|tp| (tp, Offset::End)).collect(),
            Start::AtTimestamp(millis) => match self.offsets_at_time(base, &fresh, millis) {
                Some(starts) => starts,
                None => return,
            },
        };
        for ((topic, partition), offset) in starts {
            tracing::info!(trigger = %self.trigger, topic = %topic, partition, start = ?offset, "No committed offset: applying starting_position.");
            if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                tracing::warn!(trigger = %self.trigger, error = %e, "Could not set a start offset.");
            }
        }
    }

    /// The first offset at or after `millis` of each partition of `fresh` (the end where there
    /// is none); `None` when the look-up failed (they then start at the earliest record).
    fn offsets_at_time(
        &self,
        base: &BaseConsumer<SourceContext>,
        fresh: &[TopicPartition],
        millis: i64,
    ) -> Option<Vec<(TopicPartition, Offset)>> {
        let mut query = TopicPartitionList::new();
        for (topic, partition) in fresh {
            if let Err(e) = query.add_partition_offset(topic, *partition, Offset::Offset(millis)) {
                tracing::warn!(trigger = %self.trigger, error = %e, "Invalid starting_timestamp.");
            }
        }
        match base.offsets_for_times(query, LOOKUP_TIMEOUT) {
            Ok(found) => Some(
                found
                    .elements()
                    .iter()
                    .filter(|e| e.error().is_ok())
                    .map(|e| {
                        let offset = match e.offset() {
                            Offset::Offset(o) => Offset::Offset(o),
                            // No record at or after the timestamp.
                            _ => Offset::End,
                        };
                        ((e.topic().to_owned(), e.partition()), offset)
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(trigger = %self.trigger, error = %e, "Could not look up offsets for starting_timestamp; starting at the earliest record.");
                None
            }
        }
    }

    /// Revoke callback: stop, drain, store, commit, end the epochs.
    fn on_revoke(
        &self,
        base: &BaseConsumer<SourceContext>,
        partitions: &[TopicPartition],
        lost: bool,
    ) {
        if partitions.is_empty() {
            return;
        }
        tracing::info!(trigger = %self.trigger, partitions = ?partitions, lost, "Partitions revoked.");
        let tasks: Vec<(TopicPartition, TaskHandle)> = {
            let mut state = self.lock();
            partitions
                .iter()
                .filter_map(|tp| state.tasks.remove(tp).map(|t| (tp.clone(), t)))
                .collect()
        };
        let (stop, wait) = if lost {
            (Stop::Abort, TASK_EXIT_GRACE)
        } else {
            (
                Stop::Drain(self.drain_timeout),
                self.drain_timeout + TASK_EXIT_GRACE,
            )
        };
        for (_, task) in &tasks {
            task.tell(stop);
        }
        wait_for_tasks(&self.trigger, tasks, wait);
        let stored: Vec<(TopicPartition, i64)> = {
            let mut state = self.lock();
            partitions
                .iter()
                .filter_map(|tp| state.assignments.revoke(tp).map(|o| (tp.clone(), o)))
                .collect()
        };
        if lost {
            // Someone else may own them already: committing could move their offsets.
            tracing::warn!(trigger = %self.trigger, "Assignment lost; nothing committed, unfinished records will be redelivered.");
            return;
        }
        if stored.is_empty() {
            return;
        }
        match base.commit(&store_list(&stored), CommitMode::Sync) {
            Ok(()) => {
                tracing::debug!(trigger = %self.trigger, offsets = ?stored, "Committed offsets on revoke.")
            }
            Err(e) => {
                tracing::warn!(trigger = %self.trigger, error = %e, "Commit on revoke failed; uncommitted records will be redelivered.")
            }
        }
    }

    fn on_unexpected_message(&self, topic: &str, partition: i32) {
        if self.lock().shutting_down {
            return;
        }
        self.fail(format!(
            "a record of {topic}-{partition} reached the consumer's main queue instead of its \
             partition queue; stopping so that it is redelivered"
        ));
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// The consumer thread: awaits the main queue, which serves rebalances (running the callbacks
/// below on this thread), statistics and errors. Records never arrive here: every assigned
/// partition has its own queue.
pub(super) fn poll_main_queue(
    consumer: &SourceConsumer,
    shared: &Shared,
    mut stop: oneshot::Receiver<()>,
) {
    futures::executor::block_on(async {
        loop {
            let next = consumer.recv();
            futures::pin_mut!(next);
            match futures::future::select(next, &mut stop).await {
                futures::future::Either::Left((Ok(message), _)) => {
                    shared.on_unexpected_message(message.topic(), message.partition());
                }
                futures::future::Either::Left((Err(e), _)) => {
                    tracing::warn!(trigger = %shared.trigger, error = %e, "Kafka consumer error.");
                }
                futures::future::Either::Right(_) => return,
            }
        }
    });
}

// === SourceContext ===

/// The consumer's callbacks: rebalances, statistics and log lines.
pub(super) struct SourceContext {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for SourceContext {
    /// librdkafka's log lines, as tracing events (target `librdkafka`). A consumer that
    /// exceeded `max.poll.interval.ms` leaves its group with only a log line
    /// (fede1024/rust-rdkafka#433): it is raised to an error here.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let trigger = &*self.shared.trigger;
        match level {
            _ if fac == "MAXPOLL" => {
                tracing::error!(target: "librdkafka", trigger, fac, "{log_message}");
            }
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", trigger, fac, "{log_message}");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", trigger, fac, "{log_message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", trigger, fac, "{log_message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", trigger, fac, "{log_message}");
            }
        }
    }

    fn stats(&self, statistics: Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|topic| topic.partitions.values())
            .filter(|p| p.partition >= 0 && p.desired)
            .filter_map(|p| {
                let position = [p.stored_offset, p.committed_offset]
                    .into_iter()
                    .find(|o| *o >= 0)?;
                (p.hi_offset >= 0).then(|| (p.hi_offset - position).max(0))
            })
            .sum();
        self.shared.metrics.offset_lag(lag);
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result: KafkaResult<()> = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.shared.on_assign(base, tpl);
                if cooperative {
                    base.incremental_assign(tpl)
                } else {
                    base.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = base.assignment_lost();
                self.shared.on_revoke(base, &partitions_of(tpl), lost);
                if cooperative {
                    base.incremental_unassign(tpl)
                } else {
                    base.unassign()
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::error!(trigger = %self.shared.trigger, error = %code, "Rebalance error; dropping the assignment.");
                let owned: Vec<TopicPartition> = self.shared.lock().tasks.keys().cloned().collect();
                self.shared.on_revoke(base, &owned, true);
                base.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(trigger = %self.shared.trigger, error = %e, "Applying a rebalance failed.");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(trigger = %self.shared.trigger, error = %e, "Offset commit failed; it is retried with the next one.");
            }
        }
    }
}
