//! Upkeep that keeps a long-running SQLite inbox fast and bounded: purges
//! in small batches, reclaims the pages they free, keeps the WAL from
//! growing without limit, refreshes the query planner's statistics.
//!
//! Runs as a tokio task from open to close. Every step goes through the
//! writer as its own small request, so normal writes run between them and
//! ingest latency does not spike while a purge runs.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde::Serialize;
use tokio::sync::watch;
use tracing::Instrument;
use zapinbox_core::{Purged, Result, Retention, Timestamp};

use crate::backend::{Inner, SqliteBackend};
use crate::error::storage;

/// When and how hard the maintenance task works.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaintenanceOptions {
    pub interval: Duration,
    pub purge_batch: usize,
    pub wal_limit: u64,
}

/// Most purge batches in one round: the rest waits for the next round.
const MAX_BATCHES_PER_ROUND: usize = 50;

/// Pages given back to the file system per round, at most (4 MiB).
const VACUUM_PAGES: u32 = 1024;

/// How often the query planner's statistics are refreshed.
const OPTIMIZE_EVERY: Duration = Duration::from_secs(3600);

/// What maintenance last did, for [`SqliteBackend::stats`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MaintenanceLog {
    pub last_purge: Option<PurgeRecord>,
    pub last_checkpoint: Option<CheckpointRecord>,
}

/// The last purge that removed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PurgeRecord {
    /// When it ran.
    pub at: Timestamp,
    /// Acked events past retention removed in that round.
    pub events: u64,
    /// Expired idempotency keys removed in that round.
    pub keys: u64,
}

/// The last WAL checkpoint maintenance ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CheckpointRecord {
    /// When it ran.
    pub at: Timestamp,
    /// Whether a reader or another process kept it from finishing.
    pub busy: bool,
    /// Frames in the WAL when it ran.
    pub wal_frames: i64,
    /// Frames copied into the database.
    pub checkpointed_frames: i64,
}

/// Starts the task; it stops when `stop` turns true or the backend is gone.
pub(crate) fn spawn(
    inner: Weak<Inner>,
    options: MaintenanceOptions,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut last_optimize = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(options.interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let Some(inner) = inner.upgrade() else { return };
            let backend = SqliteBackend::from_inner(inner);
            let span = tracing::debug_span!("sqlite_maintenance");
            let done = round(&backend, options, &mut last_optimize)
                .instrument(span)
                .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "SQLite maintenance round failed");
                if !e.is_retryable() && backend.is_closed() {
                    return;
                }
            }
        }
    });
}

/// One round: purge, vacuum, checkpoint, optimize.
async fn round(
    backend: &SqliteBackend,
    options: MaintenanceOptions,
    last_optimize: &mut Instant,
) -> Result<()> {
    let mut total = Purged::default();
    for _ in 0..MAX_BATCHES_PER_ROUND {
        let purged = backend.purge_expired(options.purge_batch).await?;
        total = Purged::new(
            total.events + purged.events,
            total.keys + purged.keys,
            purged.more,
        );
        if !purged.more {
            break;
        }
        tokio::task::yield_now().await;
    }
    let now = backend.clock_now();
    if total.events + total.keys > 0 {
        tracing::info!(
            events = total.events,
            keys = total.keys,
            "purged what outlived its retention"
        );
        backend.log(|log| {
            log.last_purge = Some(PurgeRecord {
                at: now,
                events: total.events,
                keys: total.keys,
            })
        });
        backend
            .writer()
            .direct(|conn, _| incremental_vacuum(conn, VACUUM_PAGES))
            .await?;
    }
    if wal_bytes(backend.path()) > options.wal_limit {
        let record = backend
            .writer()
            .direct(move |conn, _| checkpoint(conn, now))
            .await?;
        tracing::info!(?record, "checkpointed the WAL");
        backend.log(|log| log.last_checkpoint = Some(record));
    }
    if last_optimize.elapsed() >= OPTIMIZE_EVERY {
        *last_optimize = Instant::now();
        backend.writer().direct(|conn, _| optimize(conn)).await?;
    }
    Ok(())
}

/// Gives up to `pages` free pages back to the file system.
fn incremental_vacuum(conn: &Connection, pages: u32) -> Result<()> {
    // Each step frees one page: step until done (execute_batch steps once).
    let mut stmt = conn
        .prepare(&format!("PRAGMA incremental_vacuum({pages})"))
        .map_err(storage)?;
    let mut rows = stmt.query([]).map_err(storage)?;
    while rows.next().map_err(storage)?.is_some() {}
    Ok(())
}

/// Copies the WAL into the database and truncates it (readers that hold an
/// old snapshot can keep it from finishing: `busy`).
pub(crate) fn checkpoint(conn: &Connection, at: Timestamp) -> Result<CheckpointRecord> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok(CheckpointRecord {
            at,
            busy: r.get::<_, i64>(0)? != 0,
            wal_frames: r.get(1)?,
            checkpointed_frames: r.get(2)?,
        })
    })
    .map_err(storage)
}

/// Lets SQLite refresh the statistics its query planner uses.
pub(crate) fn optimize(conn: &Connection) -> Result<()> {
    conn.execute_batch("PRAGMA optimize").map_err(storage)
}

/// The WAL file's size in bytes (0 if there is none).
pub(crate) fn wal_bytes(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// Shared record of what maintenance did.
pub(crate) type SharedLog = Arc<Mutex<MaintenanceLog>>;
