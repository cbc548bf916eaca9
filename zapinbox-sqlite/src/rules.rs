//! The rules every process on one file shares, stored in the file.
//!
//! Retention, the idempotency window and `max_attempts` decide what a read
//! shows and what a purge removes: two processes with different values
//! would disagree about which events are dead letters and purge each
//! other's acked events early. The first open of a file stores them; every
//! later open compares its own with the file's (see [`SharedRules`]).

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use zapinbox_core::{Error, QueueConfig, Result};

use crate::error::storage;

/// What an open does when the rules it was given differ from the ones
/// stored in the file by the first open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SharedRules {
    /// Refuse to open, naming both sets of rules (the default): a
    /// configuration that disagrees with the file is most likely a
    /// mistake.
    #[default]
    Require,
    /// Open with the file's rules instead of the ones given.
    /// [`Backend::config`](zapinbox_core::Backend::config) then reports
    /// what is in force.
    Adopt,
    /// Store the given rules in the file. Processes that have the file
    /// open keep their rules until they reopen it: replace them when the
    /// others are stopped, or accept that they differ until then.
    Replace,
}

/// The shared rules as stored: names and whole numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stored {
    retention_ms: i64,
    idempotency_window_ms: i64,
    max_attempts: i64,
}

impl Stored {
    fn of(config: &QueueConfig) -> Self {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Stored {
            retention_ms: ms(config.retention),
            idempotency_window_ms: ms(config.idempotency_window),
            max_attempts: i64::from(config.retry.max_attempts),
        }
    }

    fn apply(self, config: &mut QueueConfig) {
        let duration = |ms: i64| Duration::from_millis(ms.max(0) as u64);
        config.retention = duration(self.retention_ms);
        config.idempotency_window = duration(self.idempotency_window_ms);
        config.retry.max_attempts = u32::try_from(self.max_attempts.max(1)).unwrap_or(u32::MAX);
    }

    fn describe(self) -> String {
        format!(
            "retention {:?}, idempotency window {:?}, max_attempts {}",
            Duration::from_millis(self.retention_ms.max(0) as u64),
            Duration::from_millis(self.idempotency_window_ms.max(0) as u64),
            self.max_attempts
        )
    }
}

const NAMES: [&str; 3] = ["retention_ms", "idempotency_window_ms", "max_attempts"];

/// Stores `config`'s rules if the file has none yet; otherwise settles a
/// difference as `mode` says, updating `config` to what is in force.
pub(crate) fn settle(
    conn: &mut Connection,
    config: &mut QueueConfig,
    mode: SharedRules,
) -> Result<()> {
    let tx = crate::busy::begin_immediate(conn)?;
    let ours = Stored::of(config);
    match load(&tx)? {
        None => save(&tx, ours)?,
        Some(theirs) if theirs == ours => {}
        Some(theirs) => match mode {
            SharedRules::Require => {
                return Err(Error::invalid(format!(
                    "this database's shared rules are {}; this open asked for {}: \
                     open with the same rules, or with SharedRules::Adopt or SharedRules::Replace",
                    theirs.describe(),
                    ours.describe()
                )));
            }
            SharedRules::Adopt => theirs.apply(config),
            SharedRules::Replace => save(&tx, ours)?,
        },
    }
    tx.commit().map_err(storage)
}

fn load(conn: &Connection) -> Result<Option<Stored>> {
    let get = |name: &str| -> Result<Option<i64>> {
        conn.query_row("SELECT value FROM rules WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(storage)
    };
    let values = NAMES.map(get);
    match values {
        [
            Ok(Some(retention_ms)),
            Ok(Some(idempotency_window_ms)),
            Ok(Some(max_attempts)),
        ] => Ok(Some(Stored {
            retention_ms,
            idempotency_window_ms,
            max_attempts,
        })),
        [Ok(None), Ok(None), Ok(None)] => Ok(None),
        [a, b, c] => {
            a?;
            b?;
            c?;
            Err(crate::error::corrupt("the shared rules are incomplete"))
        }
    }
}

fn save(conn: &Connection, rules: Stored) -> Result<()> {
    let values = [
        rules.retention_ms,
        rules.idempotency_window_ms,
        rules.max_attempts,
    ];
    for (name, value) in NAMES.iter().zip(values) {
        conn.execute(
            "INSERT OR REPLACE INTO rules (name, value) VALUES (?1, ?2)",
            params![name, value],
        )
        .map_err(storage)?;
    }
    Ok(())
}
