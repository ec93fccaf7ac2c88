//! One Kafka batch's life: invoke, retry while the partition waits, bisect, dead-letter, ack.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use impulse_config::KafkaTriggerConfig;
use impulse_connectors::contract::{Outcome, Sink};
use impulse_connectors::kafka::{
    encode_event, first_failed, AttemptStore, BatchHandler, BatchOutcome, KafkaBatch, KafkaRecord,
};
use impulse_connectors::telemetry;
use impulse_invoker::record::{DestinationRecord, RecordOutcome, RecordSource};
use impulse_invoker::retry::{remaining_age, FailureCondition, STREAM_BACKOFF};
use impulse_invoker::{Invocation, InvokeError, Name};
use serde_json::json;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::functions::{CallError, Function};

/// What every batch of one trigger shares.
pub(super) struct BatchContext {
    trigger: Name,
    bootstrap_servers: String,
    function: Function,
    on_failure: Option<Arc<dyn Sink>>,
    attempts: AttemptStore,
    /// Retries after the first attempt; `None` = until success or expiry.
    max_retry_attempts: Option<u32>,
    max_record_age: Option<Duration>,
    bisect: bool,
    report_item_failures: bool,
    shutdown: CancellationToken,
}

/// How an attempt ended.
enum Attempt {
    /// Every record succeeded.
    Success,
    /// Records from this index on failed (the ones before it succeeded).
    FailedFrom(usize, Option<InvokeError>),
    /// Shutdown came while waiting for admission: nothing was invoked.
    Interrupted,
}

/// Failed attempts of a part, after one more.
enum Count {
    /// Retry after a backoff.
    Retry(u32),
    /// Retries ran out.
    Exhausted(u32),
}

/// Whether the work on a batch goes on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    /// On to the next part.
    Continue,
    /// Shutdown: leave the rest without an outcome.
    Stop,
}

/// The parts of a batch still to run, as index ranges into its records, in offset order: the
/// whole batch, and after a bisect its halves. The queue exists only after a bisect, so a
/// batch that succeeds allocates none.
struct Parts {
    whole: Option<Range<usize>>,
    split: VecDeque<Range<usize>>,
}

impl Parts {
    fn new(len: usize) -> Self {
        Self {
            whole: Some(0..len),
            split: VecDeque::new(),
        }
    }

    /// The next part, unless shutdown came. Shutdown is checked between bisected parts only:
    /// `is_cancelled` takes a lock every partition shares, and the source stops handing out
    /// batches at shutdown anyway.
    fn next(&mut self, shutdown: &CancellationToken) -> Option<Range<usize>> {
        self.whole.take().or_else(|| {
            if self.split.is_empty() || shutdown.is_cancelled() {
                None
            } else {
                self.split.pop_front()
            }
        })
    }

    /// Splits `range` in two halves, run next, lower half first. Bisecting spends no retry: it
    /// narrows down the failing records.
    fn bisect(&mut self, range: Range<usize>) {
        let middle = range.start + range.len() / 2;
        self.split.push_front(middle..range.end);
        self.split.push_front(range.start..middle);
    }
}

impl BatchHandler for BatchContext {
    fn handle(&self, batch: KafkaBatch) -> BoxFuture<'_, (KafkaBatch, BatchOutcome)> {
        Box::pin(async move {
            let outcome = self.process(&batch).await;
            (batch, outcome)
        })
    }
}

impl BatchContext {
    pub(super) fn new(
        trigger: &str,
        config: &KafkaTriggerConfig,
        function: Function,
        on_failure: Option<Arc<dyn Sink>>,
        attempts: AttemptStore,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            trigger: Name::new(trigger),
            bootstrap_servers: config.bootstrap_servers.clone(),
            function,
            on_failure,
            attempts,
            max_retry_attempts: config.retry_limit(),
            max_record_age: config.max_record_age,
            bisect: config.bisect_batch_on_error,
            report_item_failures: config.report_batch_item_failures,
            shutdown,
        }
    }

    /// Takes one batch to a final outcome for every record, or stops at shutdown leaving the
    /// rest without one (they are read again by the partition's next owner).
    ///
    /// Parts are retried in offset order, each until it succeeds or fails for good, so a
    /// partition's records finish in order.
    pub(super) async fn process(&self, batch: &KafkaBatch) -> BatchOutcome {
        let records = &batch.records[..];
        let mut outcome = BatchOutcome::unresolved(records.len());
        let mut parts = Parts::new(records.len());
        while let Some(range) = parts.next(&self.shutdown) {
            if self
                .run_part(records, range, &mut parts, &mut outcome)
                .await
                == Flow::Stop
            {
                break;
            }
        }
        outcome
    }

    /// Retries one part while the partition waits, until its records have outcomes or it is
    /// bisected into `parts`.
    async fn run_part(
        &self,
        records: &[KafkaRecord],
        mut range: Range<usize>,
        parts: &mut Parts,
        outcome: &mut BatchOutcome,
    ) -> Flow {
        loop {
            range = self.expire(records, range, outcome).await;
            if range.is_empty() {
                return Flow::Continue;
            }
            let (failed_from, error) = match self.attempt(&records[range.clone()]).await {
                Attempt::Success => {
                    self.delivered(records, range, outcome).await;
                    return Flow::Continue;
                }
                Attempt::FailedFrom(index, error) => (index, error),
                Attempt::Interrupted => return Flow::Stop,
            };
            telemetry::kafka_records_failed_invoke(
                &self.trigger,
                range.len().saturating_sub(failed_from) as u64,
            );
            // Records before the first failure succeeded: the partition checkpoints there.
            if failed_from > 0 {
                let failed = range.start + failed_from;
                self.delivered(records, range.start..failed, outcome).await;
                range.start = failed;
            }
            if self.bisect && range.len() > 1 {
                parts.bisect(range);
                return Flow::Continue;
            }
            let made = match self
                .count_attempt(&records[range.start], failed_from > 0)
                .await
            {
                Count::Retry(made) => made,
                Count::Exhausted(made) => {
                    self.give_up(
                        records,
                        range,
                        outcome,
                        FailureCondition::RetriesExhausted,
                        made,
                        error.as_ref(),
                    )
                    .await;
                    return Flow::Continue;
                }
            };
            tracing::info!(
                trigger = %self.trigger, records = range.len(), attempts = made,
                error_code = error.as_ref().map_or("partial_failure", InvokeError::error_code),
                "Kafka batch failed; retrying while the partition waits."
            );
            if !self.sleep(STREAM_BACKOFF.delay(made - 1)).await {
                return Flow::Stop;
            }
        }
    }

    /// Marks `range` delivered and drops the attempt count its first record may have.
    async fn delivered(
        &self,
        records: &[KafkaRecord],
        range: Range<usize>,
        outcome: &mut BatchOutcome,
    ) {
        let first = range.start;
        outcome.resolve(range, Outcome::Delivered);
        // A count may be left by an earlier run that crashed mid-retry.
        if !self.attempts.is_empty() {
            self.attempts.clear(&records[first].identifier()).await;
        }
    }

    /// Counts a failed attempt of the part starting at `first` (a new first record, after a
    /// partial success, starts over). The count is stored until the part resolves, and
    /// cleared once retries ran out.
    async fn count_attempt(&self, first: &KafkaRecord, new_first: bool) -> Count {
        let key = first.identifier();
        let made = if new_first {
            1
        } else {
            self.attempts.get(&key).await + 1
        };
        if self.max_retry_attempts.is_some_and(|max| made > max) {
            self.attempts.clear(&key).await;
            return Count::Exhausted(made);
        }
        self.attempts.set(&key, made).await;
        Count::Retry(made)
    }

    /// One invocation of `records`, once the function's limits admit it.
    async fn attempt(&self, records: &[KafkaRecord]) -> Attempt {
        loop {
            let result = self
                .function
                .call_when_admitted(|| Invocation {
                    request_id: crate::request_id::new(),
                    function: self.function.name,
                    trigger: self.trigger,
                    payload: encode_event(&self.bootstrap_servers, records),
                    deadline: None,
                    client_context: None,
                    log_tail: None,
                })
                .await;
            return match result {
                Ok(response) if self.report_item_failures => {
                    match first_failed(&response.payload, records) {
                        None => Attempt::Success,
                        Some(index) => Attempt::FailedFrom(index, None),
                    }
                }
                Ok(_) => Attempt::Success,
                Err(CallError::Failed(err)) => Attempt::FailedFrom(0, Some(err)),
                Err(CallError::NotAdmitted(throttle)) => {
                    // A disabled function holds its partitions, as Lambda stops polling.
                    tracing::warn!(trigger = %self.trigger, reason = throttle.reason(), "Kafka batch not admitted; waiting.");
                    if self.sleep(STREAM_BACKOFF.max).await {
                        continue;
                    }
                    Attempt::Interrupted
                }
            };
        }
    }

    /// Fails the records of `range` older than `max_record_age` (they come first in a
    /// partition's batch) and returns the rest.
    async fn expire(
        &self,
        records: &[KafkaRecord],
        range: Range<usize>,
        outcome: &mut BatchOutcome,
    ) -> Range<usize> {
        let Some(max_age) = self.max_record_age else {
            return range;
        };
        let now = SystemTime::now();
        let too_old = |r: &KafkaRecord| {
            r.timestamp.is_some_and(|ms| {
                let written = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
                remaining_age(written, max_age, now).is_none()
            })
        };
        let expired = records[range.clone()]
            .iter()
            .take_while(|r| too_old(r))
            .count();
        if expired == 0 {
            return range;
        }
        let split = range.start + expired;
        // The count belongs to the part's first record, which is given up here: the rest
        // starts a count of its own.
        let key = records[range.start].identifier();
        let attempts = self.attempts.get(&key).await;
        if attempts > 0 {
            self.attempts.clear(&key).await;
        }
        self.give_up(
            records,
            range.start..split,
            outcome,
            FailureCondition::AgeExceeded,
            attempts,
            None,
        )
        .await;
        split..range.end
    }

    /// Writes each record of `range` to `on_failure` (retrying the write until it is
    /// confirmed), then marks it dead-lettered. Without a destination the records are dropped,
    /// as Lambda does, and counted. Shutdown leaves the records not yet written without an
    /// outcome.
    async fn give_up(
        &self,
        records: &[KafkaRecord],
        range: Range<usize>,
        outcome: &mut BatchOutcome,
        condition: FailureCondition,
        attempts: u32,
        error: Option<&InvokeError>,
    ) {
        tracing::warn!(
            trigger = %self.trigger, records = range.len(), condition = condition.as_str(),
            "Kafka records failed for good."
        );
        let Some(sink) = &self.on_failure else {
            telemetry::kafka_records_dropped(&self.trigger, condition.as_str(), range.len() as u64);
            outcome.resolve(range, Outcome::Dropped);
            return;
        };
        for index in range {
            let record = &records[index];
            let body = self.failure_record(record, condition, attempts, error);
            let mut failures = 0;
            loop {
                match sink.write(&record.identifier(), body.clone()).await {
                    Ok(()) => {
                        telemetry::dead_letter_written(&self.function.name, &self.trigger, true);
                        outcome.resolve(index..index + 1, Outcome::DeadLettered);
                        break;
                    }
                    Err(err) => {
                        telemetry::dead_letter_written(&self.function.name, &self.trigger, false);
                        telemetry::destination_failed(&self.function.name, "on_failure");
                        tracing::error!(
                            trigger = %self.trigger, error = %err,
                            "Cannot write a failed record to on_failure; the partition waits."
                        );
                        // Not final: the record is not acked until the write is confirmed.
                        if !self.sleep(STREAM_BACKOFF.delay(failures)).await {
                            return;
                        }
                        failures += 1;
                    }
                }
            }
        }
    }

    /// The on-failure record of one Kafka record: Lambda's failure metadata, the record's
    /// position as `KafkaBatchInfo`, and the record itself as a one-record Kafka event.
    fn failure_record(
        &self,
        record: &KafkaRecord,
        condition: FailureCondition,
        attempts: u32,
        error: Option<&InvokeError>,
    ) -> Bytes {
        let identifier = record.identifier();
        let info = json!({
            "bootstrapServers": self.bootstrap_servers,
            "topic": &*record.topic,
            "partition": record.partition,
            "startOffset": record.offset,
            "endOffset": record.offset,
            "batchSize": 1,
        });
        // A JSON object of strings and numbers always serialises.
        let info: Box<RawValue> =
            serde_json::value::to_raw_value(&info).expect("the batch info serialises");
        let payload = encode_event(&self.bootstrap_servers, std::slice::from_ref(record));
        DestinationRecord {
            request_id: &identifier,
            function: &self.function.name,
            approximate_invoke_count: attempts,
            outcome: RecordOutcome::Failure { condition, error },
            source: RecordSource::Batch {
                info_field: "KafkaBatchInfo",
                info: &info,
                payload: &payload,
            },
            timestamp: SystemTime::now(),
        }
        .to_bytes()
    }

    /// Sleeps unless shutdown comes first; returns false on shutdown.
    async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }
}
