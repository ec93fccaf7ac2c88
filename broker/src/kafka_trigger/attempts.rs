//! Durable attempt counts for failing Kafka batches, so a poison batch cannot retry forever by
//! crashing the broker: the count survives a restart (kept in the data directory).
//!
//! Keys are `<topic>-<partition>@<first offset>` of the (sub-)batch being retried. Counts are
//! per data directory: an instance that takes the partition over after a rebalance starts
//! from zero unless it shares the directory.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use impulse_config::KafkaTriggerConfig;

/// Attempt counts of one trigger, persisted as a small JSON file.
#[derive(Debug)]
pub(crate) struct AttemptStore {
    path: PathBuf,
    counts: Mutex<BTreeMap<String, u32>>,
}

impl AttemptStore {
    /// Opens (or starts) the store of `trigger` under `data_dir/kafka/`.
    pub(crate) async fn open(
        data_dir: &Path,
        trigger: &str,
        _config: &KafkaTriggerConfig,
    ) -> anyhow::Result<Self> {
        let dir = data_dir.join("kafka");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{trigger}-attempts.json"));
        let counts = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                // Losing counts only allows more retries; it never loses records.
                tracing::warn!(path = %path.display(), error = %err, "Ignoring an unreadable attempts file.");
                BTreeMap::new()
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(err.into()),
        };
        Ok(Self {
            path,
            counts: Mutex::new(counts),
        })
    }

    /// Whether no count is kept at all: then nothing needs clearing after a success.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Attempts recorded for `key`.
    pub(crate) async fn get(&self, key: &str) -> u32 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    /// Records `attempts` for `key`, durably.
    pub(crate) async fn set(&self, key: &str, attempts: u32) {
        let mut counts = self.lock();
        counts.insert(key.to_owned(), attempts);
        self.persist(&counts);
    }

    /// Forgets `key` (its records are resolved).
    pub(crate) async fn clear(&self, key: &str) {
        let mut counts = self.lock();
        if counts.remove(key).is_some() {
            self.persist(&counts);
        }
    }

    fn persist(&self, counts: &BTreeMap<String, u32>) {
        let tmp = self.path.with_extension("json.tmp");
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec(counts).unwrap_or_default())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(err) = result {
            // The in-memory count still bounds retries while this process lives.
            tracing::warn!(path = %self.path.display(), error = %err, "Cannot persist attempt counts.");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        assert_eq!(store.get("orders-0@5").await, 0);
        store.set("orders-0@5", 3).await;
        let reopened = AttemptStore::open(dir.path(), "orders", &config)
            .await
            .expect("reopen");
        assert_eq!(reopened.get("orders-0@5").await, 3);
        reopened.clear("orders-0@5").await;
        let again = AttemptStore::open(dir.path(), "orders", &config)
            .await
            .expect("reopen");
        assert_eq!(again.get("orders-0@5").await, 0);
    }
}
