//! Seeing other processes' commits: a thread that, while anyone
//! subscribes, reads `PRAGMA data_version` on a connection of its own and
//! wakes every subscription when it moves. This process's own ingests wake
//! their tenant's subscriptions at once, without it.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::watch;
use zapinbox_core::Result;
use zapinbox_core::raw::ChangeFeed;

use crate::connection::{self, ConnectionOptions, Role};
use crate::error::storage;

/// How often the thread looks: the most another process's commit waits to
/// reach a subscription here (plus the read that follows).
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// Starts the thread; it stops when `stop` says so or its sender is gone
/// (the backend closed or dropped).
pub(crate) fn watch_other_processes(
    path: PathBuf,
    options: ConnectionOptions,
    feed: ChangeFeed,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let conn = connection::open(&path, Role::Reader, options)?;
    let mut seen = data_version(&conn)?;
    std::thread::Builder::new()
        .name("zapinbox-changes".into())
        .spawn(move || {
            loop {
                std::thread::sleep(POLL);
                if stop.has_changed().is_err() || *stop.borrow_and_update() {
                    return;
                }
                if !feed.is_watched() {
                    continue;
                }
                match data_version(&conn) {
                    Ok(version) if version != seen => {
                        seen = version;
                        feed.notify_all();
                    }
                    Ok(_) => {}
                    // Subscriptions notice a failing file on their next read.
                    Err(e) => tracing::warn!(error = %e, "could not read data_version"),
                }
            }
        })
        .map_err(zapinbox_core::Error::permanent)?;
    Ok(())
}

fn data_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
        .map_err(storage)
}
