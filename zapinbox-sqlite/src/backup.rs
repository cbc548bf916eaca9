//! Online backup with SQLite's backup API.

use std::path::Path;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use zapinbox_core::{Error, Result};

use crate::error::storage;

/// Copies the database at `source` to `target` in one backup step: the
/// step reads one consistent snapshot, and in WAL mode it does not block
/// writers while it runs. Waits up to `busy` for locks.
pub(crate) fn copy(source: &Path, target: &Path, busy: Duration) -> Result<()> {
    let from =
        Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(storage)?;
    from.busy_timeout(busy).map_err(storage)?;
    let mut to = Connection::open(target).map_err(storage)?;
    let backup = Backup::new(&from, &mut to).map_err(storage)?;
    let give_up = std::time::Instant::now() + busy;
    loop {
        match backup.step(-1).map_err(storage)? {
            StepResult::Done => return Ok(()),
            StepResult::More => continue,
            StepResult::Busy | StepResult::Locked if std::time::Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                return Err(Error::transient(
                    "the database stayed locked during the backup",
                ));
            }
        }
    }
}
