//! Salvaging a damaged queue file: the events that can still be read go into a fresh file,
//! and the damaged one is kept beside it, renamed, for an operator to inspect.
//!
//! A damaged file is read without trusting it: read-only, without redb's integrity check
//! (which refuses the whole file), and with panics inside redb caught. Events are read in key
//! order until the first unreadable page; what follows it in the file is not reached.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::queue::{EVENTS, QUARANTINE};
use super::QUEUE_FILE;

/// What [`salvage`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    /// Events copied into the fresh queue file.
    pub events: usize,
    /// Quarantined records copied (see the embedded queue's quarantine).
    pub quarantined: usize,
    /// Why reading stopped before the end, when it did: later events were not reached.
    pub stopped_early: Option<String>,
    /// Where the damaged file now is.
    pub kept_at: PathBuf,
}

impl fmt::Display for Salvaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events and {} quarantined records copied into a fresh {QUEUE_FILE}; the damaged \
             file is kept at {}",
            self.events,
            self.quarantined,
            self.kept_at.display()
        )?;
        if let Some(reason) = &self.stopped_early {
            write!(
                f,
                ". Reading stopped early ({reason}): events stored after that point are lost"
            )?;
        }
        Ok(())
    }
}

/// Why salvaging did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SalvageError {
    /// There is no queue file in the data directory.
    #[error("{0} does not exist: nothing to salvage")]
    Missing(PathBuf),
    /// A running broker holds the file.
    #[error("{0} is open in a running broker; stop it first")]
    InUse(PathBuf),
    /// Writing the fresh file or moving the files failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Copies the readable events of `<data_dir>/queue.redb` into a fresh file that takes its
/// place; the old file is renamed `queue.redb.damaged-<unix seconds>`. An empty or unreadable
/// file yields an empty queue (and is kept all the same).
///
/// # Errors
///
/// A missing file, a file in use by a running broker, or a failure to write or rename.
pub fn salvage(data_dir: &Path) -> Result<Salvaged, SalvageError> {
    let path = data_dir.join(QUEUE_FILE);
    let io = |path: &Path, e: &dyn fmt::Display| SalvageError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    if !path.exists() {
        return Err(SalvageError::Missing(path));
    }
    let read = read_damaged(&path)?;

    let fresh_path = data_dir.join(format!("{QUEUE_FILE}.salvaging"));
    match std::fs::remove_file(&fresh_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&fresh_path, &e)),
    }
    {
        let fresh = Database::create(&fresh_path).map_err(|e| io(&fresh_path, &e))?;
        let txn = fresh.begin_write().map_err(|e| io(&fresh_path, &e))?;
        for (table, records) in [(EVENTS, &read.events), (QUARANTINE, &read.quarantined)] {
            let mut table = txn.open_table(table).map_err(|e| io(&fresh_path, &e))?;
            for (key, value) in records {
                table
                    .insert(*key, value.as_slice())
                    .map_err(|e| io(&fresh_path, &e))?;
            }
        }
        txn.commit().map_err(|e| io(&fresh_path, &e))?;
    }
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kept_at = data_dir.join(format!("{QUEUE_FILE}.damaged-{seconds}"));
    std::fs::rename(&path, &kept_at).map_err(|e| io(&path, &e))?;
    std::fs::rename(&fresh_path, &path).map_err(|e| io(&fresh_path, &e))?;
    Ok(Salvaged {
        events: read.events.len(),
        quarantined: read.quarantined.len(),
        stopped_early: read.stopped_early,
        kept_at,
    })
}

/// The records read from a damaged file, in key order.
#[derive(Default)]
struct Read {
    events: Vec<(u64, Vec<u8>)>,
    quarantined: Vec<(u64, Vec<u8>)>,
    stopped_early: Option<String>,
}

fn read_damaged(path: &Path) -> Result<Read, SalvageError> {
    let mut read = Read::default();
    if std::fs::metadata(path).is_ok_and(|meta| meta.len() == 0) {
        return Ok(read);
    }
    let opened = std::panic::catch_unwind(|| Database::builder().open_read_only(path));
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(SalvageError::InUse(path.to_owned()))
        }
        Ok(Err(e)) => {
            read.stopped_early = Some(format!("the file cannot be opened: {e}"));
            return Ok(read);
        }
        Err(_) => {
            read.stopped_early = Some("the file cannot be opened: redb panicked".to_owned());
            return Ok(read);
        }
    };
    for (table, into) in [
        (EVENTS, &mut read.events),
        (QUARANTINE, &mut read.quarantined),
    ] {
        // `into` keeps what was read before a panic; its records are whole.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| copy_table(&db, table, into)));
        let stopped = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(_) => Some("redb panicked on a damaged page".to_owned()),
        };
        if let (Some(reason), None) = (stopped, &read.stopped_early) {
            read.stopped_early = Some(reason);
        }
    }
    Ok(read)
}

/// Appends `table`'s records to `into` until the end or the first error.
fn copy_table(
    db: &redb::ReadOnlyDatabase,
    table: TableDefinition<'_, u64, &[u8]>,
    into: &mut Vec<(u64, Vec<u8>)>,
) -> Result<(), String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = match txn.open_table(table) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    for entry in table.iter().map_err(|e| e.to_string())? {
        let (key, value) = entry.map_err(|e| e.to_string())?;
        into.push((key.value(), value.value().to_vec()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
