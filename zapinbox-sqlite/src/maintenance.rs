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
use zapinbox_core::raw::Retention;
use zapinbox_core::{Purged, Result, Timestamp};

use crate::backend::{Inner, SqliteBackend};
use crate::error::storage;

/// When and how hard the maintenance task works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Whether a reader or another process kept the WAL from being
    /// truncated (a later round tries again).
    pub busy: bool,
    /// Frames in the WAL when it ran.
    pub wal_frames: i64,
    /// Frames copied into the database (all of them unless a reader still
    /// needed some).
    pub checkpointed_frames: i64,
}

/// Starts the task; it stops when `stop` turns true or the backend is gone.
pub(crate) fn spawn(
    inner: Weak<Inner>,
    options: MaintenanceOptions,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
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
    })
}

/// One round: purge, vacuum, checkpoint, optimize.
async fn round(
    backend: &SqliteBackend,
    options: MaintenanceOptions,
    last_optimize: &mut Instant,
) -> Result<()> {
    let mut total = Purged::default();
    let mut failed = None;
    for _ in 0..MAX_BATCHES_PER_ROUND {
        match backend.purge_expired(options.purge_batch).await {
            Ok(purged) => {
                total = Purged::new(
                    total.events + purged.events,
                    total.keys + purged.keys,
                    purged.more,
                );
                if !purged.more {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
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
    if let Some(e) = failed {
        return Err(e);
    }
    if wal_bytes(backend.path()) > options.wal_limit {
        let record = backend.checkpoint().await?;
        tracing::info!(?record, "checkpointed the WAL");
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

/// Copies the WAL into the database and truncates it, never waiting for
/// readers: one that holds a snapshot keeps the truncate from happening
/// (`busy`) until a later round.
pub(crate) fn checkpoint(
    conn: &Connection,
    at: Timestamp,
    busy: Duration,
) -> Result<CheckpointRecord> {
    let run = |mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((
                r.get::<_, i64>(0)? != 0,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(storage)
    };
    // PASSIVE never waits: it copies what no reader still needs, and its
    // answer says how much of the WAL that was.
    let (_, wal_frames, checkpointed_frames) = run("PASSIVE")?;
    // Truncating must wait for every reader to leave the WAL: try without
    // waiting, so a long reader (a backup) never stalls the writer.
    conn.busy_timeout(Duration::ZERO).map_err(storage)?;
    let truncated = run("TRUNCATE");
    // Back to how this connection waits: the writer's fair turns (see
    // `busy`), or SQLite's timeout.
    crate::busy::wait_as_this_thread(conn, busy)?;
    let (busy, _, _) = truncated?;
    Ok(CheckpointRecord {
        at,
        busy,
        wal_frames,
        checkpointed_frames,
    })
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
