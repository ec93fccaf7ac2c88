//! The Kafka sink: destination and dead-letter records produced with an idempotent producer
//! (`enable.idempotence=true`, which implies `acks=all`); a write resolves once the delivery
//! report says the record is on the broker.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use impulse_config::{redact_secret_values, DebugSecretMap};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;

use super::ReportingProducer;
use crate::contract::{Sink, SinkError};

/// How long a write waits for room in librdkafka's local queue before failing.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Properties the sink sets itself, after the caller's options: without them a delivery
/// report would not mean "durable on the broker".
const OWNED: &[(&str, &str)] = &[("enable.idempotence", "true"), ("acks", "all")];

/// Produces each record to a topic, keyed by its idempotency key. Every undelivered report,
/// `message.timeout.ms` expiry included, is a [`SinkError`]. Cheap to clone.
#[derive(Clone)]
pub struct KafkaSink {
    name: String,
    topic: String,
    bootstrap_servers: String,
    /// The caller's extra options, kept for `Debug` (redacted there).
    options: BTreeMap<String, String>,
    producer: ReportingProducer<DefaultClientContext>,
}

impl KafkaSink {
    /// A sink named `name` producing to `topic` on `bootstrap_servers`. `librdkafka_options`
    /// pass through to librdkafka (security settings, `message.timeout.ms`, …), except that
    /// idempotence and `acks=all` are always on. Does not connect yet: only an invalid
    /// configuration fails here.
    pub fn new(
        name: &str,
        bootstrap_servers: &str,
        topic: &str,
        librdkafka_options: &BTreeMap<String, String>,
    ) -> Result<Self, SinkError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap_servers);
        for (key, value) in librdkafka_options {
            config.set(key, value);
        }
        for (key, value) in OWNED {
            config.set(*key, *value);
        }
        let thread = format!("sink-{name}");
        let producer =
            ReportingProducer::new(&config, DefaultClientContext, &thread).map_err(|e| {
                SinkError {
                    sink: name.to_owned(),
                    code: "invalid",
                    // librdkafka's message may quote the offending property's value.
                    message: redact_secret_values(
                        &format!("creating the Kafka producer: {e}"),
                        librdkafka_options,
                    ),
                }
            })?;
        Ok(Self {
            name: name.to_owned(),
            topic: topic.to_owned(),
            bootstrap_servers: bootstrap_servers.to_owned(),
            options: librdkafka_options.clone(),
            producer,
        })
    }

    async fn produce(&self, key: String, record: Bytes) -> Result<(), SinkError> {
        let sent = self
            .producer
            .send(&self.topic, key.as_bytes(), Some(&record), QUEUE_TIMEOUT)
            .await;
        match sent {
            Ok(()) => Ok(()),
            Err(e) => Err(SinkError {
                sink: self.name.clone(),
                code: error_code(&e),
                message: format!("producing to {}: {e}", self.topic),
            }),
        }
    }
}

impl Sink for KafkaSink {
    fn write(&self, key: &str, record: Bytes) -> BoxFuture<'_, Result<(), SinkError>> {
        self.produce(key.to_owned(), record).boxed()
    }
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("librdkafka_options", &DebugSecretMap(&self.options))
            .finish_non_exhaustive()
    }
}

fn error_code(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut) => "timeout",
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::InvalidRecord,
        ) => "rejected",
        _ => "unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn debug_hides_secrets() {
        let sink = KafkaSink::new(
            "dlq",
            "127.0.0.1:9092",
            "dead-letters",
            &options(&[
                ("sasl.password", "canary-sasl"),
                ("sasl.username", "impulse"),
                ("client.id", "impulse-test"),
            ]),
        )
        .expect("a valid configuration");
        let shown = format!("{sink:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("impulse-test"), "{shown}");
    }

    #[test]
    fn an_invalid_option_fails_at_construction() {
        let err = KafkaSink::new(
            "dlq",
            "127.0.0.1:9092",
            "t",
            &options(&[("no.such.property", "1")]),
        )
        .expect_err("librdkafka rejects unknown properties");
        assert_eq!(err.code, "invalid");
        assert_eq!(err.sink, "dlq");

        // librdkafka quotes the value of a property it refuses (this build refuses OIDC
        // properties: it has no libcurl); a secret must not leak.
        let refused = KafkaSink::new(
            "dlq",
            "127.0.0.1:9092",
            "t",
            &options(&[("sasl.oauthbearer.client.secret", "canary-oauth")]),
        );
        if let Err(err) = refused {
            assert!(!err.to_string().contains("canary"), "{err}");
        }
        let redacted = redact_secret_values(
            "bad value canary-pw for sasl.password; client.id x",
            &options(&[("sasl.password", "canary-pw"), ("client.id", "x")]),
        );
        assert_eq!(redacted, "bad value *** for sasl.password; client.id x");
    }

    #[tokio::test]
    async fn an_expired_message_is_an_error() {
        // Nothing listens on port 1: the record can never be delivered, and the report says so
        // once `message.timeout.ms` expires.
        let sink = KafkaSink::new(
            "dlq",
            "127.0.0.1:1",
            "t",
            &options(&[("message.timeout.ms", "200")]),
        )
        .expect("a valid configuration");
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            sink.write("k", Bytes::from_static(b"{}")),
        )
        .await
        .expect("the report arrives")
        .expect_err("undeliverable");
        assert_eq!(err.code, "timeout", "{err}");
    }
}
