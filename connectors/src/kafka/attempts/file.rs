//! The default attempt store: a small JSON file in the data directory, rewritten (fsync, then
//! rename) on every change. It survives a restart on the same disk, not a rebalance to an
//! instance with another data directory.

use super::counts::{Counts, CountsGuard};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Attempt counts of one trigger, persisted as `data_dir/kafka/<trigger>-attempts.json`.
#[derive(Debug)]
pub(super) struct FileStore {
    path: PathBuf,
    counts: Counts,
}

impl FileStore {
    /// Opens (or starts) the store of `trigger` under `data_dir/kafka/`.
    pub(super) fn open(data_dir: &Path, trigger: &str) -> std::io::Result<Self> {
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
            Err(err) => return Err(err),
        };
        Ok(Self {
            path,
            counts: Counts::new(counts),
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub(super) fn get(&self, key: &str) -> u32 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    pub(super) fn set(&self, key: &str, attempts: u32) {
        let mut counts = self.lock();
        counts.insert(key.to_owned(), attempts);
        self.persist(&counts);
    }

    pub(super) fn clear(&self, key: &str) {
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

    fn lock(&self) -> CountsGuard<'_> {
        self.counts.lock()
    }
}
