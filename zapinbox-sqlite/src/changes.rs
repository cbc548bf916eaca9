//! Seeing other processes' commits: while anyone subscribes, a task reads
//! `PRAGMA data_version` on the writer's connection every 20 ms. On that
//! connection it moves only when another connection (another process, or
//! a handle of its own on the file) commits, so this process's own writes,
//! which wake their tenant's subscriptions directly, wake nobody else.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::watch;
use zapinbox_core::Result;
use zapinbox_core::raw::ChangeFeed;

use crate::error::storage;
use crate::writer::Writer;

/// How often the task looks: the most another process's commit waits to
/// reach a subscription here (plus the read that follows).
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// Starts the task on `runtime`; it stops when `stop` says so or its
/// sender is gone (the backend closed or dropped).
pub(crate) fn watch_other_processes(
    runtime: &tokio::runtime::Handle,
    writer: Arc<Writer>,
    feed: ChangeFeed,
    mut stop: watch::Receiver<bool>,
) {
    runtime.spawn(async move {
        let mut seen = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                changed = stop.changed() => if changed.is_err() || *stop.borrow() {
                    return;
                },
            }
            if !feed.is_watched() {
                continue;
            }
            match writer.direct(|conn, _| data_version(conn)).await {
                Ok(version) => {
                    // The first reading wakes everyone too: a commit just
                    // before it cannot be told from an old one.
                    if seen != Some(version) {
                        feed.notify_all();
                    }
                    seen = Some(version);
                }
                // Closed, or the file is failing: subscriptions see it on
                // their next read.
                Err(e) => tracing::debug!(error = %e, "could not read data_version"),
            }
        }
    });
}

fn data_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
        .map_err(storage)
}
