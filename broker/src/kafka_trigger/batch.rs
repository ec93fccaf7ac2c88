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
use impulse_invoker::record::function_arn;
use impulse_invoker::{Invocation, Invoke, InvokeError, Name};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::functions::Function;
use crate::limiter::Limiter;

/// First delay between attempts of a failing batch.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest delay between attempts of a failing batch.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Lambda's default once an on-failure destination is set: 10 retries instead of infinite.
const RETRIES_WITH_DESTINATION: u32 = 10;

/// What every batch of one trigger shares.
pub(super) struct BatchContext {
    trigger: Name,
    bootstrap_servers: String,
    function: Function,
    limiter: Limiter,
    on_failure: Option<Arc<dyn Sink>>,
    attempts: AttemptStore,
    /// Retries after the first attempt; `None` = until success or expiry.
    max_retry_attempts: Option<u32>,
    max_record_age: Option<Duration>,
    bisect: bool,
    report_item_failures: bool,
    shutdown: CancellationToken,
}

/// Why records failed for good, as the record's `condition`.
#[derive(Debug, Clone, Copy)]
enum Condition {
    RetriesExhausted,
    RecordAgeExceeded,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Self::RetriesExhausted => "RetryAttemptsExhausted",
            Self::RecordAgeExceeded => "MaximumRecordAgeExceeded",
        }
    }
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
        limiter: Limiter,
        on_failure: Option<Arc<dyn Sink>>,
        attempts: AttemptStore,
        shutdown: CancellationToken,
    ) -> Self {
        let max_retry_attempts = config
            .max_retry_attempts
            .or(on_failure.as_ref().map(|_| RETRIES_WITH_DESTINATION));
        Self {
            trigger: Name::new(trigger),
            bootstrap_servers: config.bootstrap_servers.clone(),
            function,
            limiter,
            on_failure,
            attempts,
            max_retry_attempts,
            max_record_age: config.max_record_age,
            bisect: config.bisect_batch_on_error,
            report_item_failures: config.report_batch_item_failures,
            shutdown,
        }
    }

    /// Takes one batch to a final outcome for every record, or stops at shutdown leaving the
    /// rest without one (they are read again by the partition's next owner).
    ///
    /// Parts of the batch are index ranges into `batch.records`; they are retried in offset
    /// order, each until it succeeds or fails for good, so a partition's records finish in
    /// order.
    pub(super) async fn process(&self, batch: &KafkaBatch) -> BatchOutcome {
        let records = &batch.records[..];
        let mut outcome = BatchOutcome::unresolved(records.len());
        // The whole batch first; parts only exist after a bisect (so a batch that succeeds
        // allocates no queue).
        let mut whole = Some(0..records.len());
        let mut pending: VecDeque<Range<usize>> = VecDeque::new();
        // Shutdown stops the work between attempts: here before a bisected part, and in the
        // backoff before a retry. (Not before the first attempt, nor after the last part:
        // `is_cancelled` takes a lock that every partition shares, and the source stops handing
        // out batches at shutdown.)
        while let Some(mut range) = whole.take().or_else(|| {
            if pending.is_empty() || self.shutdown.is_cancelled() {
                None
            } else {
                pending.pop_front()
            }
        }) {
            loop {
                if range.is_empty() {
                    break;
                }
                range = self.expire(records, range, &mut outcome).await;
                if range.is_empty() {
                    break;
                }
                let (failed_from, error) = match self.attempt(&records[range.clone()]).await {
                    Attempt::Success => {
                        outcome.resolve(range.clone(), Outcome::Delivered);
                        self.forget_attempts(&records[range.start]).await;
                        break;
                    }
                    Attempt::FailedFrom(index, error) => (index, error),
                    Attempt::Interrupted => return outcome,
                };
                // Records before the first failure succeeded: the partition checkpoints there.
                if failed_from > 0 {
                    outcome.resolve(range.start..range.start + failed_from, Outcome::Delivered);
                    self.forget_attempts(&records[range.start]).await;
                    range.start += failed_from;
                }
                if self.bisect && range.len() > 1 {
                    // Bisecting does not spend a retry: it narrows down the failing records.
                    let middle = range.start + range.len() / 2;
                    pending.push_front(middle..range.end);
                    pending.push_front(range.start..middle);
                    break;
                }
                // Counted per first record of the failing part; a new first record starts over.
                let key = records[range.start].identifier();
                let made = if failed_from > 0 {
                    1
                } else {
                    self.attempts.get(&key).await + 1
                };
                if self.max_retry_attempts.is_some_and(|max| made > max) {
                    self.attempts.clear(&key).await;
                    self.give_up(
                        records,
                        range,
                        &mut outcome,
                        Condition::RetriesExhausted,
                        made,
                        error.as_ref(),
                    )
                    .await;
                    break;
                }
                self.attempts.set(&key, made).await;
                tracing::info!(
                    trigger = %self.trigger, records = range.len(), attempts = made,
                    error_code = error.as_ref().map_or("partial_failure", InvokeError::error_code),
                    "Kafka batch failed; retrying while the partition waits."
                );
                if !self.sleep(backoff(made)).await {
                    return outcome;
                }
            }
        }
        outcome
    }

    /// Drops the attempt count kept for a part starting at `first`, if there is one (a count
    /// may be left by an earlier run that crashed mid-retry).
    async fn forget_attempts(&self, first: &KafkaRecord) {
        if !self.attempts.is_empty() {
            self.attempts.clear(&first.identifier()).await;
        }
    }

    /// One invocation of `records` under the limiter.
    async fn attempt(&self, records: &[KafkaRecord]) -> Attempt {
        let permit = loop {
            match self.limiter.acquire(&self.function.name).await {
                Ok(permit) => break permit,
                Err(throttle) => {
                    // A disabled function holds its partitions, as Lambda stops polling.
                    tracing::warn!(trigger = %self.trigger, reason = throttle.reason(), "Kafka batch not admitted; waiting.");
                    if !self.sleep(BACKOFF_MAX).await {
                        return Attempt::Interrupted;
                    }
                }
            }
        };
        let invocation = Invocation {
            request_id: crate::request_id::new(),
            function: self.function.name,
            trigger: self.trigger,
            payload: encode_event(&self.bootstrap_servers, records),
            deadline: None,
        };
        let result = self.function.service.invoke(invocation).await;
        drop(permit);
        match result {
            Ok(response) if self.report_item_failures => {
                match first_failed(&response.payload, records) {
                    None => Attempt::Success,
                    Some(index) => Attempt::FailedFrom(index, None),
                }
            }
            Ok(_) => Attempt::Success,
            Err(err) => Attempt::FailedFrom(0, Some(err)),
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
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let too_old = |r: &KafkaRecord| {
            r.timestamp.is_some_and(|ts| {
                let ts = u128::try_from(ts).unwrap_or(0);
                now_ms.saturating_sub(ts) > max_age.as_millis()
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
            Condition::RecordAgeExceeded,
            attempts,
            None,
        )
        .await;
        split..range.end
    }

    /// Writes each record of `range` to `on_failure` (retrying the write until it is
    /// confirmed), then marks it dead-lettered. Without a destination the records are dropped,
    /// as Lambda does, and counted.
    async fn give_up(
        &self,
        records: &[KafkaRecord],
        range: Range<usize>,
        outcome: &mut BatchOutcome,
        condition: Condition,
        attempts: u32,
        error: Option<&InvokeError>,
    ) {
        tracing::warn!(
            trigger = %self.trigger, records = range.len(), condition = condition.as_str(),
            "Kafka records failed for good."
        );
        let Some(sink) = &self.on_failure else {
            for _ in range.clone() {
                telemetry::async_event_finished(&self.function.name, "dropped");
            }
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
                        failures += 1;
                        telemetry::dead_letter_written(&self.function.name, &self.trigger, false);
                        telemetry::destination_failed(&self.function.name, "on_failure");
                        tracing::error!(
                            trigger = %self.trigger, error = %err,
                            "Cannot write a failed record to on_failure; the partition waits."
                        );
                        // Not final: the record is not acked until the write is confirmed.
                        if !self.sleep(backoff(failures)).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The on-failure record of one Kafka record: Lambda's metadata plus the record itself,
    /// as a one-record Kafka event.
    fn failure_record(
        &self,
        record: &KafkaRecord,
        condition: Condition,
        attempts: u32,
        error: Option<&InvokeError>,
    ) -> Bytes {
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let payload: serde_json::Value = serde_json::from_slice(&encode_event(
            &self.bootstrap_servers,
            std::slice::from_ref(record),
        ))
        .unwrap_or(serde_json::Value::Null);
        let response_payload = match error {
            Some(InvokeError::Function { payload, .. }) => {
                serde_json::from_slice(payload).unwrap_or(serde_json::Value::Null)
            }
            Some(other) => {
                json!({ "errorType": other.error_code(), "errorMessage": other.to_string() })
            }
            None => serde_json::Value::Null,
        };
        let document = json!({
            "version": "1.0",
            "timestamp": timestamp,
            "requestContext": {
                "requestId": record.identifier(),
                "functionArn": function_arn(&self.function.name),
                "condition": condition.as_str(),
                "approximateInvokeCount": attempts,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": if error.is_some() { "Unhandled" } else { "" },
            },
            "KafkaBatchInfo": {
                "bootstrapServers": self.bootstrap_servers,
                "topic": &*record.topic,
                "partition": record.partition,
                "startOffset": record.offset,
                "endOffset": record.offset,
                "batchSize": 1,
            },
            "responsePayload": response_payload,
            "payload": payload,
        });
        Bytes::from(document.to_string())
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

/// `BACKOFF_BASE × 2^(attempts-1)`, at most `BACKOFF_MAX`.
fn backoff(attempts: u32) -> Duration {
    let step = attempts.saturating_sub(1).min(16);
    (BACKOFF_BASE * 2u32.pow(step)).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }
}
