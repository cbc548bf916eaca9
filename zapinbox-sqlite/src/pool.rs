//! A small pool of read-only connections, shared fairly between tenants.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zapinbox_core::{Error, Result, TenantId};

/// Read connections handed out one caller at a time.
///
/// One tenant holds at most all connections but one at a time, so another
/// tenant's read always finds one free soon, however many reads the first
/// one queues.
pub(crate) struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    available: Arc<Semaphore>,
    size: usize,
    /// The connections each tenant with reads in flight may still take.
    shares: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
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
            shares: Mutex::new(HashMap::new()),
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

    /// Runs `f` on a read connection, where blocking is allowed: in place
    /// on a multi-thread runtime's worker (its other tasks move to another
    /// thread meanwhile), on a blocking thread under a current-thread
    /// runtime, and directly outside any runtime.
    pub(crate) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let loan = self.loan().await?;
        // The caller's span (the inbox call) follows the read to its thread.
        let span = tracing::trace_span!("sqlite_read");
        let run = move || {
            let _entered = span.entered();
            match &loan.conn {
                Some(conn) => f(conn),
                None => Err(Error::permanent("read pool lost a connection")),
            }
        };
        if blocks_in_place() {
            // A page of 100 events reads in tens of microseconds: waking a
            // blocking thread for it and the caller's thread after it took
            // a third of a pull's time. A panic stays an error of this
            // read, as it is on a blocking thread.
            tokio::task::block_in_place(|| std::panic::catch_unwind(AssertUnwindSafe(run)))
                .map_err(|_| Error::permanent("read task failed: it panicked"))?
        } else {
            tokio::task::spawn_blocking(run)
                .await
                .map_err(|e| Error::permanent(format!("read task failed: {e}")))?
        }
    }

    /// Runs `f` for `tenant` on a read connection, within the tenant's
    /// share of the pool.
    pub(crate) async fn read_for<T: Send + 'static>(
        self: &Arc<Self>,
        tenant: &TenantId,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let share = {
            let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
            let most = self.size.saturating_sub(1).max(1);
            Arc::clone(
                shares
                    .entry(tenant.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(most))),
            )
        };
        let turn = Arc::clone(&share)
            .acquire_owned()
            .await
            .map_err(|_| Error::permanent("the read pool is closed"))?;
        let out = self.read(f).await;
        drop(turn);
        // The last of the tenant's reads forgets its share: idle tenants
        // keep no memory.
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&share) == 2 {
            shares.remove(tenant);
        }
        out
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

/// Whether a read may block the calling thread: not on a current-thread
/// runtime, whose one thread runs every task, and where
/// `tokio::task::block_in_place` would panic.
fn blocks_in_place() -> bool {
    !matches!(
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread)
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pool(size: usize) -> Arc<ReadPool> {
        let conns = (0..size)
            .map(|_| Connection::open_in_memory().expect("open"))
            .collect();
        ReadPool::new(conns)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_tenant_never_holds_every_connection() {
        let pool = pool(4);
        let (busy, quiet) = (
            TenantId::new("busy").expect("tenant"),
            TenantId::new("quiet").expect("tenant"),
        );
        // The busy tenant's reads hold their connections until released.
        let (release, released) = tokio::sync::watch::channel(false);
        let holding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let slow: Vec<_> = (0..10)
            .map(|_| {
                let (pool, busy, mut released) =
                    (Arc::clone(&pool), busy.clone(), released.clone());
                let holding = Arc::clone(&holding);
                tokio::spawn(async move {
                    pool.read_for(&busy, move |_| {
                        holding.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Holds the read's thread until released.
                        let _ = futures::executor::block_on(released.wait_for(|r| *r));
                        Ok(())
                    })
                    .await
                })
            })
            .collect();
        while holding.load(std::sync::atomic::Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        // Time for a fourth busy read to take the last connection, if it
        // could. Without a share per tenant it would, and this read would
        // wait for ever.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::time::timeout(Duration::from_secs(10), pool.read_for(&quiet, |_| Ok(())))
            .await
            .expect("the quiet tenant finds a connection while the busy one holds its share")
            .expect("read");
        release.send_replace(true);
        for read in slow {
            read.await.expect("task").expect("read");
        }
        assert!(
            pool.shares.lock().expect("lock").is_empty(),
            "idle tenants keep no share"
        );
    }

    /// Which thread a read ran on.
    async fn read_thread(pool: &Arc<ReadPool>) -> std::thread::ThreadId {
        pool.read(|_| Ok(std::thread::current().id()))
            .await
            .expect("read")
    }

    #[test]
    fn reads_run_under_every_runtime_and_outside_one() {
        let pool = pool(2);
        let here = std::thread::current().id();
        // One thread runs every task: the read goes to a blocking thread.
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert_ne!(current.block_on(read_thread(&pool)), here);
        // Blocking in place: the read runs on the caller's thread.
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        assert_eq!(multi.block_on(read_thread(&pool)), here);
        let spawned = multi
            .block_on(async {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { (read_thread(&pool).await, std::thread::current().id()) })
                    .await
            })
            .expect("task");
        assert_eq!(spawned.0, spawned.1, "a worker reads in place");
        assert_eq!(futures::executor::block_on(read_thread(&pool)), here);
        assert_eq!(pool.lock().len(), 2, "every connection is back");
    }

    #[test]
    fn a_read_that_panics_fails_alone_and_returns_its_connection() {
        let pool = pool(2);
        let panics = |pool: &Arc<ReadPool>| {
            let pool = Arc::clone(pool);
            async move {
                pool.read(|_| -> Result<()> { panic!("a read panics") })
                    .await
            }
        };
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        let failed = [
            current.block_on(panics(&pool)),
            multi.block_on(panics(&pool)),
            futures::executor::block_on(panics(&pool)),
        ];
        for failure in failed {
            let message = failure.expect_err("a panic is an error").to_string();
            assert!(message.contains("read task failed"), "{message}");
        }
        assert_eq!(pool.lock().len(), 2, "every connection is back");
        assert_eq!(
            futures::executor::block_on(read_thread(&pool)),
            std::thread::current().id()
        );
    }
}
