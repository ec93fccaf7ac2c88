//! A producer whose writes resolve on their delivery report, and whose polling thread sleeps
//! while nothing is in flight.
//!
//! rdkafka's `FutureProducer` polls from a thread of its own in 100 ms rounds, and each round
//! ends in a busy loop: its poll turns the time left into whole milliseconds, so the last
//! fraction of a millisecond becomes a zero timeout, polled again and again until the round's
//! deadline passes. That is about 1% of a core per producer, all the time, busy or idle, even
//! for a dead-letter producer that never writes (see BENCHMARKS.md, ledger
//! "`ReportingProducer`"). Here the thread polls in rounds only while records await their
//! reports, and otherwise parks, waking once a second to serve what librdkafka reports on its
//! own (errors, logs) without blocking on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use tokio::sync::oneshot;

/// How long a polling round waits for reports while records are in flight.
const ROUND: Duration = Duration::from_millis(100);
/// How often an idle producer serves what librdkafka reports on its own.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Non-blocking polls per idle wake-up: each serves at most one report.
const IDLE_POLLS: usize = 64;
/// How long a write waits before trying again when librdkafka's local queue is full.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(100);

/// A Kafka producer with a future per write. Cheap to clone; the last clone stops the thread.
pub struct ReportingProducer<C: ClientContext + 'static> {
    shared: Arc<Shared<C>>,
}

impl<C: ClientContext + 'static> std::fmt::Debug for ReportingProducer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportingProducer")
            .field("in_flight", &self.shared.producer.in_flight_count())
            .finish_non_exhaustive()
    }
}

impl<C: ClientContext + 'static> Clone for ReportingProducer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<C: ClientContext + 'static> {
    producer: Arc<BaseProducer<Reporting<C>>>,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
}

impl<C: ClientContext + 'static> ReportingProducer<C> {
    /// A producer built from `config` with `context`, polled by a thread named `thread_name`
    /// (the kernel keeps its first 15 bytes).
    ///
    /// # Errors
    ///
    /// When librdkafka refuses the configuration or the thread cannot start.
    pub fn new(config: &ClientConfig, context: C, thread_name: &str) -> KafkaResult<Self> {
        Self::with_idle_hook(config, context, thread_name, || {})
    }

    /// [`ReportingProducer::new`], calling `on_idle_wake` each time the idle thread wakes to
    /// serve librdkafka's own reports (tests wait on it).
    fn with_idle_hook(
        config: &ClientConfig,
        context: C,
        thread_name: &str,
        on_idle_wake: impl Fn() + Send + 'static,
    ) -> KafkaResult<Self> {
        let producer: Arc<BaseProducer<Reporting<C>>> =
            Arc::new(config.create_with_context(Reporting { wrapped: context })?);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn({
                let producer = Arc::clone(&producer);
                let stop = Arc::clone(&stop);
                move || poll_while_running(&producer, &stop, on_idle_wake)
            })
            .map_err(|e| KafkaError::ClientCreation(format!("starting the polling thread: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                producer,
                stop,
                poller: Some(poller),
            }),
        })
    }

    /// Produces `payload` (a tombstone for `None`) under `key` to `topic`, and resolves with
    /// the delivery report. While librdkafka's local queue is full it tries again for up to
    /// `queue_timeout`.
    ///
    /// # Errors
    ///
    /// The delivery report's error, or the error producing failed with.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: Option<&[u8]>,
        queue_timeout: Duration,
    ) -> KafkaResult<()> {
        let started = Instant::now();
        let (report_tx, report_rx) = oneshot::channel();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(report_tx)).key(key);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        loop {
            match self.shared.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < queue_timeout =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_RETRY).await;
                }
                Err((error, _record)) => return Err(error),
            }
        }
        if let Some(poller) = &self.shared.poller {
            poller.thread().unpark();
        }
        // The sender is dropped without a report only if the producer goes away first, which
        // `self` prevents; report it as a cancelled write rather than panic.
        report_rx.await.unwrap_or(Err(KafkaError::Canceled))
    }
}

impl<C: ClientContext + 'static> Drop for Shared<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(poller) = self.poller.take() {
            poller.thread().unpark();
            // The thread ends within one round; a panic in it has been reported already.
            poller.join().ok();
        }
    }
}

/// The polling thread: rounds while reports are awaited, parked otherwise.
fn poll_while_running<C: ClientContext + 'static>(
    producer: &BaseProducer<Reporting<C>>,
    stop: &AtomicBool,
    on_idle_wake: impl Fn(),
) {
    while !stop.load(Ordering::Acquire) {
        if producer.in_flight_count() > 0 {
            producer.poll(ROUND);
            continue;
        }
        thread::park_timeout(IDLE_WAKE);
        for _ in 0..IDLE_POLLS {
            producer.poll(Duration::ZERO);
        }
        on_idle_wake();
    }
}

/// Wraps the caller's context: passes everything on, and answers each delivery report on the
/// record's channel.
#[derive(Debug)]
pub struct Reporting<C> {
    wrapped: C,
}

impl<C: ClientContext> ClientContext for Reporting<C> {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = C::ENABLE_REFRESH_OAUTH_TOKEN;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.wrapped.log(level, fac, log_message);
    }

    fn stats(&self, statistics: Statistics) {
        self.wrapped.stats(statistics);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.wrapped.stats_raw(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.wrapped.error(error, reason);
    }

    fn generate_oauth_token(
        &self,
        oauthbearer_config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.wrapped.generate_oauth_token(oauthbearer_config)
    }
}

impl<C: ClientContext> ProducerContext for Reporting<C> {
    type DeliveryOpaque = Box<oneshot::Sender<KafkaResult<()>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, report: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, _message)) => Err(error.clone()),
        };
        // The writer may have stopped waiting (its future was dropped); nothing to tell then.
        report.send(outcome).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::client::DefaultClientContext;

    /// Nanoseconds the threads of this process named `name` have run (schedstat, field 1).
    fn cpu_nanos_of_threads_named(name: &str) -> (usize, u64) {
        let mut threads = 0;
        let mut nanos = 0;
        for task in std::fs::read_dir("/proc/self/task")
            .expect("procfs")
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            threads += 1;
            nanos += stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        (threads, nanos)
    }

    #[test]
    fn an_idle_producer_does_not_spin() {
        let mut config = ClientConfig::new();
        // Nothing listens there: the producer stays idle, as a dead-letter producer does.
        config.set("bootstrap.servers", "127.0.0.1:1");
        let (woke_tx, woke) = std::sync::mpsc::channel();
        let producer = ReportingProducer::with_idle_hook(
            &config,
            DefaultClientContext,
            "idle-spin-probe",
            move || {
                woke_tx.send(()).ok();
            },
        )
        .expect("a valid configuration");
        // The thread's CPU between two of its idle wake-ups, one idle second apart. A thread
        // that polls in rounds instead never gets there.
        let idle_wake = || {
            woke.recv_timeout(Duration::from_secs(10))
                .expect("the polling thread parks and wakes while idle")
        };
        idle_wake();
        let (threads, before) = cpu_nanos_of_threads_named("idle-spin-probe");
        assert_eq!(threads, 1, "the polling thread runs under its name");
        idle_wake();
        let (_, after) = cpu_nanos_of_threads_named("idle-spin-probe");
        let used = Duration::from_nanos(after - before);
        // rdkafka's own polling thread spends ~10 ms a second here, spinning at the end of
        // each 100 ms round.
        assert!(
            used < Duration::from_millis(3),
            "the idle polling thread ran {used:?}"
        );
        drop(producer);
        let (threads, _) = cpu_nanos_of_threads_named("idle-spin-probe");
        assert_eq!(threads, 0, "the last clone stops the thread");
    }

    #[tokio::test]
    async fn an_undeliverable_record_reports_its_error() {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "200");
        let producer = ReportingProducer::new(&config, DefaultClientContext, "undeliverable")
            .expect("a valid configuration");
        let error = tokio::time::timeout(
            Duration::from_secs(10),
            producer.send("t", b"k", Some(b"{}"), Duration::from_secs(1)),
        )
        .await
        .expect("the report arrives though the thread was parked")
        .expect_err("undeliverable");
        assert_eq!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageTimedOut),
            "{error}"
        );
    }
}
