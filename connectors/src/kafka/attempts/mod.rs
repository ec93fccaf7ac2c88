//! Durable attempt counts for failing Kafka batches, so that a poison batch cannot retry
//! forever by crashing the broker.
//!
//! Keys are `<topic>-<partition>@<first offset>` of the (sub-)batch being retried. Only the
//! current owner of a partition writes its keys. Every call but [`AttemptStore::is_empty`] is on
//! the failure path (a few per failing batch); `is_empty` runs after every successful batch and
//! never does I/O.
//!
//! Two backends:
//! - **file** (default): `queue.data_dir/kafka/<trigger>-attempts.json`. Survives a restart on
//!   the same disk, but an instance that takes a partition over after a rebalance starts from
//!   zero unless it shares the directory.
//! - **topic** (`attempts_topic`): a compacted Kafka topic shared by every instance of the
//!   trigger's group ([`topic`]). Survives a restart and a rebalance to another instance.

mod counts;
mod file;
mod topic;

use std::path::Path;

use impulse_config::KafkaTriggerConfig;

use self::file::FileStore;
use self::topic::TopicStore;

/// Attempt counts of one trigger.
#[derive(Debug)]
pub struct AttemptStore(Backend);

/// Why an attempt store could not be opened. The message names the trigger's option and
/// carries no secret value from `librdkafka_options`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AttemptStoreError {
    message: String,
    #[source]
    source: Option<std::io::Error>,
}

impl AttemptStoreError {
    fn new(message: String) -> Self {
        Self {
            message,
            source: None,
        }
    }
}

#[derive(Debug)]
enum Backend {
    File(FileStore),
    Topic(TopicStore),
}

impl AttemptStore {
    /// Opens the store of `trigger`: the trigger's `attempts_topic` when set (creating the
    /// topic if missing and reading it to its end), else the file under `data_dir/kafka/`.
    pub async fn open(
        data_dir: &Path,
        trigger: &str,
        config: &KafkaTriggerConfig,
    ) -> Result<Self, AttemptStoreError> {
        let backend = match &config.attempts_topic {
            Some(topic) => Backend::Topic(TopicStore::open(trigger, config, topic).await?),
            None => Backend::File(FileStore::open(data_dir, trigger).map_err(|err| {
                AttemptStoreError {
                    message: format!(
                        "triggers.{trigger}: cannot open the attempts file under {}",
                        data_dir.join("kafka").display()
                    ),
                    source: Some(err),
                }
            })?),
        };
        Ok(Self(backend))
    }

    /// Whether no count is kept at all: then nothing needs clearing after a success. Cheap:
    /// an in-memory check.
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Backend::File(store) => store.is_empty(),
            Backend::Topic(store) => store.is_empty(),
        }
    }

    /// Attempts recorded for `key` (0 when none). The topic store first catches up with what
    /// other instances wrote, within a bound.
    pub async fn get(&self, key: &str) -> u32 {
        match &self.0 {
            Backend::File(store) => store.get(key),
            Backend::Topic(store) => store.get(key).await,
        }
    }

    /// Records `attempts` for `key`, durably before returning (file: fsync and rename; topic:
    /// delivery confirmed by an idempotent `acks=all` producer). A failed write is logged and
    /// the count kept in memory, which still bounds retries while this process lives.
    pub async fn set(&self, key: &str, attempts: u32) {
        match &self.0 {
            Backend::File(store) => store.set(key, attempts),
            Backend::Topic(store) => store.set(key, attempts).await,
        }
    }

    /// Forgets `key` (its records are resolved); no I/O when the key is absent.
    pub async fn clear(&self, key: &str) {
        match &self.0 {
            Backend::File(store) => store.clear(key),
            Backend::Topic(store) => store.clear(key).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaTriggerConfig {
        serde_json::from_value(serde_json::json!({
            "function": "f",
            "bootstrap_servers": "127.0.0.1:9092",
            "topics": ["orders"],
        }))
        .expect("a minimal Kafka trigger")
    }

    #[tokio::test]
    async fn counts_survive_reopen_and_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config();
        let store = AttemptStore::open(dir.path(), "orders", &config)
            .await
            .expect("open");
        assert!(store.is_empty());
        assert_eq!(store.get("orders-0@5").await, 0);
        store.set("orders-0@5", 3).await;
        assert!(!store.is_empty());
        let reopened = AttemptStore::open(dir.path(), "orders", &config)
            .await
            .expect("reopen");
        assert_eq!(reopened.get("orders-0@5").await, 3);
        reopened.clear("orders-0@5").await;
        assert!(reopened.is_empty());
        let again = AttemptStore::open(dir.path(), "orders", &config)
            .await
            .expect("reopen");
        assert_eq!(again.get("orders-0@5").await, 0);
    }

    #[tokio::test]
    async fn the_file_store_is_the_default_and_touches_no_kafka() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config();
        // Nothing listens there: the file store must not try.
        config.bootstrap_servers = "127.0.0.1:1".to_owned();
        let store = AttemptStore::open(dir.path(), "orders", &config)
            .await
            .expect("open");
        assert!(matches!(store.0, Backend::File(_)));
        store.set("orders-1@7", 1).await;
        assert!(dir.path().join("kafka/orders-attempts.json").exists());
    }

    #[tokio::test]
    async fn clearing_an_absent_key_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AttemptStore::open(dir.path(), "orders", &config())
            .await
            .expect("open");
        store.clear("orders-0@1").await;
        assert!(!dir.path().join("kafka/orders-attempts.json").exists());
    }

    #[tokio::test]
    async fn an_unreachable_attempts_topic_fails_open_naming_the_option() {
        let mut config = config();
        config.bootstrap_servers = "127.0.0.1:1".to_owned();
        config.attempts_topic = Some("impulse-attempts".to_owned());
        config
            .librdkafka_options
            .insert("sasl.password".to_owned(), "canary-secret".to_owned());
        config
            .librdkafka_options
            .insert("security.protocol".to_owned(), "sasl_plaintext".to_owned());
        config
            .librdkafka_options
            .insert("sasl.mechanism".to_owned(), "PLAIN".to_owned());
        config
            .librdkafka_options
            .insert("sasl.username".to_owned(), "impulse".to_owned());
        let started = std::time::Instant::now();
        let topic = config.attempts_topic.clone().unwrap_or_default();
        let err =
            TopicStore::open_within("orders", &config, &topic, std::time::Duration::from_secs(2))
                .await
                .expect_err("nothing listens on port 1");
        let text = format!("{err:#}");
        assert!(
            text.starts_with("triggers.orders.attempts_topic: "),
            "{text}"
        );
        assert!(text.contains("\"impulse-attempts\""), "{text}");
        assert!(!text.contains("canary"), "{text}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "bounded: {:?}",
            started.elapsed()
        );
    }
}
