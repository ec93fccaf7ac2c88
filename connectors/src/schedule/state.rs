//! Where each schedule remembers its newest handled tick, for catch-up after a restart.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use futures::future::{self, BoxFuture};
use serde::{Deserialize, Serialize};

/// The file [`FileScheduleState`] keeps in the data directory.
const FILE_NAME: &str = "schedules.json";
/// The temporary file a new state is written to before it replaces [`FILE_NAME`].
const TEMP_FILE_NAME: &str = ".schedules.json.tmp";
/// The version of the file's layout.
const FILE_VERSION: u32 = 1;

/// The newest handled tick of each schedule.
///
/// A recorded tick means: every tick of that schedule at or before it has been handed to the
/// broker or deliberately skipped, and MUST NOT be fired again by catch-up. Implementations
/// MUST be cheap enough to call once per tick. A state shared by several instances MUST only
/// move a record forward (each instance records the ticks it has seen handled, in its own
/// order).
pub trait ScheduleState: Send + Sync {
    /// The newest handled tick of `schedule`, if one was ever recorded. An error means the
    /// state cannot be read now; the source retries, since starting without it could skip or
    /// repeat ticks.
    fn last_fired<'a>(
        &'a self,
        schedule: &'a str,
    ) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, String>>;

    /// Records `tick` as the newest handled tick of `schedule`.
    ///
    /// An error is the operator's to see; the source logs it and goes on, since the worst it
    /// can cause is one tick fired twice after a restart, with the same id.
    fn record_fired<'a>(
        &'a self,
        schedule: &'a str,
        tick: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// Why a [`FileScheduleState`] cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleStateError {
    /// Reading or writing the file failed.
    #[error("schedule state {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not a schedule state this version understands.
    #[error("schedule state {} is corrupt: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a newer Impulse.
    #[error("schedule state {} has unsupported version {version}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        version: u32,
    },
}

/// The file's layout: `{"version": 1, "schedules": {"<name>": "<RFC 3339 tick>"}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default)]
    schedules: BTreeMap<String, DateTime<Utc>>,
}

// === impl FileScheduleState ===

/// A [`ScheduleState`] in `<data_dir>/schedules.json`, for the embedded (single-instance) broker.
///
/// Each record rewrites the whole (small) file atomically: a temporary file is written and
/// fsynced, renamed over the old one, and the directory is fsynced, so a crash leaves either
/// the old state or the new one. Writes are synchronous and take a few milliseconds at most,
/// once per tick. One process MUST own a data directory.
#[derive(Debug)]
pub struct FileScheduleState {
    path: PathBuf,
    ticks: Mutex<BTreeMap<String, DateTime<Utc>>>,
}

impl FileScheduleState {
    /// Opens the state in `data_dir`, creating the directory if needed. A missing file is an
    /// empty state; an unreadable or corrupt one is an error, never silently reset.
    pub fn open(data_dir: &Path) -> Result<Self, ScheduleStateError> {
        let path = data_dir.join(FILE_NAME);
        let io_error = |source| ScheduleStateError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(data_dir).map_err(io_error)?;
        let ticks = match fs::read(&path) {
            Ok(bytes) => {
                let file: StateFile = serde_json::from_slice(&bytes).map_err(|source| {
                    ScheduleStateError::Corrupt {
                        path: path.clone(),
                        source,
                    }
                })?;
                if file.version != FILE_VERSION {
                    return Err(ScheduleStateError::Version {
                        path,
                        version: file.version,
                    });
                }
                file.schedules
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(io_error(err)),
        };
        Ok(Self {
            path,
            ticks: Mutex::new(ticks),
        })
    }

    /// The file this state lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, DateTime<Utc>>> {
        // A panic while holding the lock leaves a map of plain values, still meaningful.
        self.ticks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self, ticks: &BTreeMap<String, DateTime<Utc>>) -> Result<(), ScheduleStateError> {
        let file = StateFile {
            version: FILE_VERSION,
            schedules: ticks.clone(),
        };
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|source| ScheduleStateError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        write_atomically(&self.path, &bytes).map_err(|source| ScheduleStateError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl FileScheduleState {
    fn record(&self, schedule: &str, tick: DateTime<Utc>) -> Result<(), String> {
        // The lock is held across the write so that two schedules recording at once cannot
        // reorder their files: the last rename always carries every record.
        let mut ticks = self.lock();
        ticks.insert(schedule.to_owned(), tick);
        self.write(&ticks).map_err(|err| err.to_string())
    }
}

impl ScheduleState for FileScheduleState {
    fn last_fired<'a>(
        &'a self,
        schedule: &'a str,
    ) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, String>> {
        Box::pin(future::ready(Ok(self.lock().get(schedule).copied())))
    }

    fn record_fired<'a>(
        &'a self,
        schedule: &'a str,
        tick: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), String>> {
        // A small synchronous write, once per tick: not worth a blocking-pool hop.
        Box::pin(future::ready(self.record(schedule, tick)))
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old content or the new, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = path.with_file_name(TEMP_FILE_NAME);
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(err) = written {
        // Best effort: a leftover temporary file is overwritten by the next write anyway.
        if let Err(remove) = fs::remove_file(&temp) {
            tracing::debug!(error = %remove, "Could not remove a temporary schedule state file.");
        }
        return Err(err);
    }
    // The rename is durable only once the directory entry is.
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

// === impl MemoryScheduleState ===

/// A [`ScheduleState`] in memory: for tests, and for brokers that want no catch-up across
/// restarts.
#[derive(Debug, Default)]
pub struct MemoryScheduleState {
    ticks: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl MemoryScheduleState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, DateTime<Utc>>> {
        self.ticks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ScheduleState for MemoryScheduleState {
    fn last_fired<'a>(
        &'a self,
        schedule: &'a str,
    ) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, String>> {
        Box::pin(future::ready(Ok(self.lock().get(schedule).copied())))
    }

    fn record_fired<'a>(
        &'a self,
        schedule: &'a str,
        tick: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.lock().insert(schedule.to_owned(), tick);
        Box::pin(future::ready(Ok(())))
    }
}
