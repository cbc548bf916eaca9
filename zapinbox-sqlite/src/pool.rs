//! A small pool of read-only connections, used on tokio's blocking threads.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zapinbox_core::{Error, Result};

/// Read connections handed out one caller at a time.
pub(crate) struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    available: Arc<Semaphore>,
    size: usize,
}

/// A connection on loan; goes back to the pool when dropped, even if the
/// caller stopped waiting for the query.
struct Loan {
    pool: Arc<ReadPool>,
    conn: Option<Connection>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Loan {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.lock().push(conn);
        }
    }
}

impl ReadPool {
    pub(crate) fn new(conns: Vec<Connection>) -> Arc<Self> {
        Arc::new(ReadPool {
            available: Arc::new(Semaphore::new(conns.len())),
            size: conns.len(),
            idle: Mutex::new(conns),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn loan(self: &Arc<Self>) -> Result<Loan> {
        let permit = Arc::clone(&self.available)
            .acquire_owned()
            .await
            .map_err(|_| Error::permanent("the read pool is closed"))?;
        let conn = self
            .lock()
            .pop()
            .ok_or_else(|| Error::permanent("read pool lost a connection"))?;
        Ok(Loan {
            pool: Arc::clone(self),
            conn: Some(conn),
            _permit: permit,
        })
    }

    /// Runs `f` on a read connection on a blocking thread.
    pub(crate) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let loan = self.loan().await?;
        tokio::task::spawn_blocking(move || match &loan.conn {
            Some(conn) => f(conn),
            None => Err(Error::permanent("read pool lost a connection")),
        })
        .await
        .map_err(|e| Error::permanent(format!("read task failed: {e}")))?
    }

    /// Runs `f` on every connection of the pool, waiting until all are idle.
    pub(crate) async fn read_each<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl Fn(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<Vec<T>> {
        let size = u32::try_from(self.size).map_err(Error::permanent)?;
        // All permits at once: two callers cannot each hold half the pool.
        let _all = Arc::clone(&self.available)
            .acquire_many_owned(size)
            .await
            .map_err(|_| Error::permanent("the read pool is closed"))?;
        let conns = std::mem::take(&mut *self.lock());
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let out = conns.iter().map(&f).collect();
            pool.lock().extend(conns);
            out
        })
        .await
        .map_err(|e| Error::permanent(format!("read task failed: {e}")))?
    }
}
