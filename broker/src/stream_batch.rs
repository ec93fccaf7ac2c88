//! One stream batch's life, whatever its source (Kafka, Redis streams): invoke, retry while
//! the source waits, bisect, dead-letter, ack.
//!
//! The policy is generic over a [`StreamKind`], the source's side: how its records are
//! encoded, identified, aged and their attempts counted. It is monomorphised per source, so
//! the Kafka hot path pays no dynamic dispatch or allocation for sharing it.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use impulse_connectors::contract::{BatchHandler, BatchOutcome, Outcome, Sink};
use impulse_connectors::telemetry;
use impulse_invoker::record::{DestinationRecord, RecordOutcome, RecordSource};
use impulse_invoker::retry::{remaining_age, FailureCondition, STREAM_BACKOFF};
use impulse_invoker::{Invocation, InvokeError, Name};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::functions::{CallError, Function};

/// A source's side of the batch policy.
pub(crate) trait StreamKind: Send + Sync + 'static {
    /// One record (entry) of a batch.
    type Record: Send + Sync;
    /// The source's name in log messages (`Kafka`, `Redis stream`).
    const NAME: &'static str;

    /// The event passed to the function for `records`.
    fn encode(&self, records: &[Self::Record]) -> Bytes;
    /// Where retrying starts after the function's response (a partial batch response).
    fn first_failed(&self, payload: &[u8], records: &[Self::Record]) -> Option<usize>;
    /// When the record was written to its source, for `max_record_age`; `None` if unknown.
    fn written_at(&self, record: &Self::Record) -> Option<SystemTime>;
    /// The record's identifier: the `itemIdentifier` of partial batch responses, the key of its
    /// on-failure record and of its attempt count.
    fn identifier(&self, record: &Self::Record) -> String;
    /// The source-specific part of the on-failure record: the name and value of its batch info
    /// field, and the record as a one-record event.
    fn failure_info(&self, record: &Self::Record) -> (&'static str, Box<RawValue>, Bytes);
    /// Whether an attempt count may be stored for some record (a cheap check made after every
    /// successful part, so that success usually costs no lookup).
    fn counts_may_exist(&self) -> bool;
    /// Failed attempts counted for the part starting at `record`, across restarts.
    fn attempts(&self, record: &Self::Record) -> impl Future<Output = u32> + Send;
    /// Stores `made` failed attempts for the part starting at `record`.
    fn set_attempts(&self, record: &Self::Record, made: u32) -> impl Future<Output = ()> + Send;
    /// Forgets the count of `record` (its part resolved).
    fn clear_attempts(&self, record: &Self::Record) -> impl Future<Output = ()> + Send;
    /// Counts `records` in a failed invocation.
    fn count_failed_invoke(&self, trigger: &str, records: u64);
    /// Counts `records` that failed for good and were dropped (no `on_failure`).
    fn count_dropped(&self, trigger: &str, condition: &'static str, records: u64);
}

/// The batch settings every source shares (Lambda's event-source-mapping settings).
pub(crate) struct BatchSettings {
    /// Retries after the first attempt; `None` = until success or expiry.
    pub max_retry_attempts: Option<u32>,
    pub max_record_age: Option<Duration>,
    pub bisect: bool,
    pub report_item_failures: bool,
}

/// What every batch of one trigger shares.
pub(crate) struct BatchContext<S: StreamKind> {
    trigger: Name,
    stream: S,
    function: Function,
    on_failure: Option<Arc<dyn Sink>>,
    settings: BatchSettings,
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
    /// `is_cancelled` takes a lock every batch of the trigger shares, and the source stops
    /// handing out batches at shutdown anyway.
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

/// A batch of some source: its records, as the policy sees them.
pub(crate) trait HasRecords<R>: Send + 'static {
    /// The records, in the source's order.
    fn records(&self) -> &[R];
}

impl<S: StreamKind, B: HasRecords<S::Record>> BatchHandler<B> for BatchContext<S> {
    fn handle(&self, batch: B) -> BoxFuture<'_, (B, BatchOutcome)> {
        Box::pin(async move {
            let outcome = self.process(batch.records()).await;
            (batch, outcome)
        })
    }
}

impl<S: StreamKind> BatchContext<S> {
    pub(crate) fn new(
        trigger: &str,
        stream: S,
        function: Function,
        on_failure: Option<Arc<dyn Sink>>,
        settings: BatchSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            trigger: Name::new(trigger),
            stream,
            function,
            on_failure,
            settings,
            shutdown,
        }
    }

    /// Takes one batch to a final outcome for every record, or stops at shutdown leaving the
    /// rest without one (they are read again by the source's next reader).
    ///
    /// Parts are retried in source order, each until it succeeds or fails for good, so a
    /// batch's records finish in order.
    pub(crate) async fn process(&self, records: &[S::Record]) -> BatchOutcome {
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

    /// Retries one part while the source waits, until its records have outcomes or it is
    /// bisected into `parts`.
    async fn run_part(
        &self,
        records: &[S::Record],
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
            self.stream.count_failed_invoke(
                &self.trigger,
                range.len().saturating_sub(failed_from) as u64,
            );
            // Records before the first failure succeeded: the source checkpoints there.
            if failed_from > 0 {
                let failed = range.start + failed_from;
                self.delivered(records, range.start..failed, outcome).await;
                range.start = failed;
            }
            if self.settings.bisect && range.len() > 1 {
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
                "{} batch failed; retrying while the source waits.", S::NAME
            );
            if !self.sleep(STREAM_BACKOFF.delay(made - 1)).await {
                return Flow::Stop;
            }
        }
    }

    /// Marks `range` delivered and drops the attempt count its first record may have.
    async fn delivered(
        &self,
        records: &[S::Record],
        range: Range<usize>,
        outcome: &mut BatchOutcome,
    ) {
        let first = range.start;
        outcome.resolve(range, Outcome::Delivered);
        // A count may be left by an earlier run that crashed mid-retry.
        if self.stream.counts_may_exist() {
            self.stream.clear_attempts(&records[first]).await;
        }
    }

    /// Counts a failed attempt of the part starting at `first` (a new first record, after a
    /// partial success, starts over). The count is stored until the part resolves, and
    /// cleared once retries ran out.
    async fn count_attempt(&self, first: &S::Record, new_first: bool) -> Count {
        let made = if new_first {
            1
        } else {
            self.stream.attempts(first).await + 1
        };
        if self
            .settings
            .max_retry_attempts
            .is_some_and(|max| made > max)
        {
            self.stream.clear_attempts(first).await;
            return Count::Exhausted(made);
        }
        self.stream.set_attempts(first, made).await;
        Count::Retry(made)
    }

    /// One invocation of `records`, once the function's limits admit it.
    async fn attempt(&self, records: &[S::Record]) -> Attempt {
        loop {
            let result = self
                .function
                .call_when_admitted(|| Invocation {
                    request_id: crate::request_id::new(),
                    function: self.function.name,
                    trigger: self.trigger,
                    payload: self.stream.encode(records),
                    deadline: None,
                    client_context: None,
                    log_tail: None,
                })
                .await;
            return match result {
                Ok(response) if self.settings.report_item_failures => {
                    match self.stream.first_failed(&response.payload, records) {
                        None => Attempt::Success,
                        Some(index) => Attempt::FailedFrom(index, None),
                    }
                }
                Ok(_) => Attempt::Success,
                Err(CallError::Failed(err)) => Attempt::FailedFrom(0, Some(err)),
                Err(CallError::NotAdmitted(throttle)) => {
                    // A disabled function holds its source, as Lambda stops polling.
                    tracing::warn!(trigger = %self.trigger, reason = throttle.reason(), "{} batch not admitted; waiting.", S::NAME);
                    if self.sleep(STREAM_BACKOFF.max).await {
                        continue;
                    }
                    Attempt::Interrupted
                }
            };
        }
    }

    /// Fails the records of `range` older than `max_record_age` (they come first in a
    /// batch, in source order) and returns the rest.
    async fn expire(
        &self,
        records: &[S::Record],
        range: Range<usize>,
        outcome: &mut BatchOutcome,
    ) -> Range<usize> {
        let Some(max_age) = self.settings.max_record_age else {
            return range;
        };
        let now = SystemTime::now();
        let too_old = |r: &S::Record| {
            self.stream
                .written_at(r)
                .is_some_and(|written| remaining_age(written, max_age, now).is_none())
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
        let first = &records[range.start];
        let attempts = self.stream.attempts(first).await;
        if attempts > 0 {
            self.stream.clear_attempts(first).await;
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
        records: &[S::Record],
        range: Range<usize>,
        outcome: &mut BatchOutcome,
        condition: FailureCondition,
        attempts: u32,
        error: Option<&InvokeError>,
    ) {
        tracing::warn!(
            trigger = %self.trigger, records = range.len(), condition = condition.as_str(),
            "{} records failed for good.", S::NAME
        );
        let Some(sink) = &self.on_failure else {
            self.stream
                .count_dropped(&self.trigger, condition.as_str(), range.len() as u64);
            outcome.resolve(range, Outcome::Dropped);
            return;
        };
        for index in range {
            let record = &records[index];
            let body = self.failure_record(record, condition, attempts, error);
            let mut failures = 0;
            loop {
                match sink
                    .write(&self.stream.identifier(record), body.clone())
                    .await
                {
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
                            "Cannot write a failed record to on_failure; the source waits."
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

    /// The on-failure record of one record: Lambda's failure metadata, the record's position
    /// (the source's batch info) and the record itself as a one-record event.
    fn failure_record(
        &self,
        record: &S::Record,
        condition: FailureCondition,
        attempts: u32,
        error: Option<&InvokeError>,
    ) -> Bytes {
        let identifier = self.stream.identifier(record);
        let (info_field, info, payload) = self.stream.failure_info(record);
        DestinationRecord {
            request_id: &identifier,
            function: &self.function.qualified,
            executed_version: self.function.version(),
            approximate_invoke_count: attempts,
            outcome: RecordOutcome::Failure { condition, error },
            source: RecordSource::Batch {
                info_field,
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
