//! Opening connections with the same settings every time.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use zapinbox_core::{Error, Result};

use crate::error::storage;

/// How hard each commit works to survive a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced before ingest returns; an
    /// event survives a process crash and a power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: commits survive a process crash; a power loss
    /// may lose the last commits (never corrupts the file). Faster.
    Normal,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }

    /// What `PRAGMA synchronous` reads back as.
    pub(crate) fn synchronous(self) -> Synchronous {
        match self {
            Durability::Full => Synchronous::Full,
            Durability::Normal => Synchronous::Normal,
        }
    }
}

/// `PRAGMA journal_mode` as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalMode {
    /// Write-ahead logging: what every connection of this backend uses.
    Wal,
    /// Any other mode, as SQLite names it (the backend refuses to open).
    Other(String),
}

impl JournalMode {
    fn from_pragma(mode: &str) -> Self {
        if mode.eq_ignore_ascii_case("wal") {
            JournalMode::Wal
        } else {
            JournalMode::Other(mode.to_owned())
        }
    }
}

/// `PRAGMA synchronous` as read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// 0: no syncs.
    Off,
    /// 1: [`Durability::Normal`].
    Normal,
    /// 2: [`Durability::Full`].
    Full,
    /// 3: full, and the directory too.
    Extra,
    /// A value SQLite did not document when this was written.
    Other(i64),
}

impl Synchronous {
    fn from_pragma(code: i64) -> Self {
        match code {
            0 => Synchronous::Off,
            1 => Synchronous::Normal,
            2 => Synchronous::Full,
            3 => Synchronous::Extra,
            other => Synchronous::Other(other),
        }
    }
}

/// Per-connection settings, applied to every connection opened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionOptions {
    pub durability: Durability,
    pub busy_timeout: Duration,
    /// Size the WAL is trimmed to after a checkpoint.
    pub wal_limit: u64,
}

/// Which job a connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// The one connection that writes.
    Writer,
    /// A pooled read-only connection.
    Reader,
}

/// The settings a connection reports, read back from SQLite itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionSettings {
    /// The connection's job.
    pub role: Role,
    /// `PRAGMA journal_mode`: always WAL.
    pub journal_mode: JournalMode,
    /// `PRAGMA synchronous`: as the [`Durability`] asked.
    pub synchronous: Synchronous,
    /// How long the connection waits for another process's lock, in
    /// milliseconds: `PRAGMA busy_timeout` for readers; for the writer, the
    /// timeout of its own busy handler (fair turns between processes),
    /// which replaces SQLite's.
    pub busy_timeout_ms: i64,
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

/// Opens a connection, applies every per-connection pragma and checks the
/// database is in WAL mode.
pub(crate) fn open(path: &Path, role: Role, options: ConnectionOptions) -> Result<Connection> {
    let flags = match role {
        Role::Writer => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        Role::Reader => OpenFlags::SQLITE_OPEN_READ_ONLY,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(storage)?;
    // The writer waits in fair turns while it opens (see `busy`).
    crate::busy::wait_as_this_thread(&conn, options.busy_timeout)?;
    // Listings build a statement per shape of filter, order and status:
    // rusqlite's default of 16 cached statements made them parse again.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    stable_plans(&conn)?;
    if role == Role::Writer {
        // Before anything touches a new file: afterwards it is too late.
        crate::schema::prepare_new_file(&conn)?;
        // Persistent in the file: set once by the writer, read back by all.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(storage)?;
        check_wal(&mode)?;
        conn.pragma_update(None, "journal_size_limit", options.wal_limit as i64)
            .map_err(storage)?;
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA temp_store = MEMORY;",
        options.durability.pragma()
    ))
    .map_err(storage)?;
    let settings = read_settings(&conn, role)?;
    if let JournalMode::Other(mode) = &settings.journal_mode {
        check_wal(mode)?;
    }
    if settings.synchronous != options.durability.synchronous() {
        return Err(Error::permanent(format!(
            "PRAGMA synchronous reads {:?} after setting {}",
            settings.synchronous,
            options.durability.pragma()
        )));
    }
    Ok(conn)
}

/// Whether the database at `path` is in WAL mode already; false for a
/// missing or new file, or one that cannot be read now. Asked through
/// SQLite: a descriptor of our own on the file, once closed, would drop
/// every lock this process's connections hold on it (POSIX locks belong to
/// the process, which SQLite works around for its own descriptors only).
pub(crate) fn is_wal_file(path: &Path, busy_timeout: Duration) -> bool {
    if !path.exists() {
        return false;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mode = Connection::open_with_flags(path, flags).and_then(|conn| {
        conn.busy_timeout(busy_timeout)?;
        // A read makes SQLite look at the header, where WAL mode is kept.
        conn.query_row("PRAGMA schema_version", [], |_| Ok(()))?;
        conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
    });
    mode.is_ok_and(|mode| mode.eq_ignore_ascii_case("wal"))
}

/// Turns on SQLite's query planner stability guarantee: a plan no longer
/// depends on the values bound. Without it, checking a partial index's
/// condition against a bound parameter marks the statement to be prepared
/// again whenever that parameter changes, which was a quarter of a pull
/// page's time. Every listing names its index, so nothing is lost.
pub(crate) fn stable_plans(conn: &Connection) -> Result<()> {
    use rusqlite::config::DbConfig;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(|_| ())
        .map_err(storage)
}

/// Refuses SQLite's names of a database in memory or in a temporary file
/// before any side file is made beside them: neither can use WAL.
pub(crate) fn refuse_in_memory(path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return Err(Error::permanent(format!(
            "{path:?} names an in-memory or temporary database, which cannot use \"wal\": give a file's path"
        )));
    }
    Ok(())
}

fn check_wal(mode: &str) -> Result<()> {
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(Error::permanent(format!(
            "journal_mode is {mode:?}, not \"wal\" (an in-memory or read-only database cannot use WAL)"
        )))
    }
}

/// Reads a connection's settings back from SQLite.
pub(crate) fn read_settings(conn: &Connection, role: Role) -> Result<ConnectionSettings> {
    let pragma = |name: &str| -> Result<rusqlite::types::Value> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(storage)
    };
    let int = |v: rusqlite::types::Value| match v {
        rusqlite::types::Value::Integer(i) => i,
        _ => -1,
    };
    let journal_mode = JournalMode::from_pragma(&match pragma("journal_mode")? {
        rusqlite::types::Value::Text(s) => s,
        other => format!("{other:?}"),
    });
    // The writer waits with a busy handler of its own, which replaces
    // SQLite's timeout (the pragma then reads 0): report the handler's.
    let busy_timeout_ms = match crate::busy::timeout_here() {
        Some(timeout) if role == Role::Writer => {
            i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)
        }
        _ => int(pragma("busy_timeout")?),
    };
    Ok(ConnectionSettings {
        role,
        journal_mode,
        synchronous: Synchronous::from_pragma(int(pragma("synchronous")?)),
        busy_timeout_ms,
    })
}
