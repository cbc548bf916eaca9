//! A small pool of read-only connections, shared fairly between tenants.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
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

    /// Runs `f` on a read connection, on the thread `work` calls for.
    pub(crate) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        work: Work,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let loan = self.loan().await?;
        // The caller's span (the inbox call) follows the read to whichever
        // thread runs it.
        let span = tracing::trace_span!("sqlite_read");
        let read = move || {
            let _entered = span.entered();
            match &loan.conn {
                Some(conn) => f(conn),
                None => Err(Error::permanent("read pool lost a connection")),
            }
        };
        match work {
            Work::Bounded => run_here(read),
            Work::MayScan => run_blocking(read).await,
        }
    }

    /// Runs `f` for `tenant` on a read connection, within the tenant's
    /// share of the pool.
    pub(crate) async fn read_for<T: Send + 'static>(
        self: &Arc<Self>,
        tenant: &TenantId,
        work: Work,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let share = Share::take(self, tenant);
        let turn = Arc::clone(&share.turns)
            .acquire_owned()
            .await
            .map_err(|_| Error::permanent("the read pool is closed"))?;
        // The turn and the share end with the read (the turn first), even
        // one left running on a blocking thread by a caller that stopped
        // waiting.
        self.read(work, move |conn| {
            let _share = share;
            let _turn = turn;
            f(conn)
        })
        .await
    }

    /// Runs `f` on every connection of the pool, waiting until all are
    /// idle, on a blocking thread.
    pub(crate) async fn read_each<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl Fn(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<Vec<T>> {
        let size = u32::try_from(self.size).map_err(Error::permanent)?;
        // All permits at once: two callers cannot each hold half the pool.
        let all = Arc::clone(&self.available)
            .acquire_many_owned(size)
            .await
            .map_err(|_| Error::permanent("the read pool is closed"))?;
        let conns = std::mem::take(&mut *self.lock());
        let pool = Arc::clone(self);
        // The permits go with the connections, even when the caller
        // stopped waiting.
        run_blocking(move || {
            let _all = all;
            let out = catch_unwind(AssertUnwindSafe(|| conns.iter().map(&f).collect()));
            // Back before the permits go, even after a panic.
            pool.lock().extend(conns);
            out.map_err(panicked)?
        })
        .await
    }
}

/// How much work a read may do, which decides the thread it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    /// Bounded by what it returns (a page, a few rows): runs on the
    /// caller's thread. A page of 100 events reads in about 60 µs, and
    /// sending it to a blocking thread and back took about 40 µs more.
    Bounded,
    /// May walk many rows (a claim's search with a filter no index
    /// serves, counts over a range): runs on a blocking thread, so that it
    /// holds no runtime thread.
    MayScan,
}

/// One tenant's share of the pool, taken for one read: the last of the
/// tenant's reads in flight forgets it, so idle tenants keep no memory.
struct Share {
    pool: Arc<ReadPool>,
    tenant: TenantId,
    turns: Arc<Semaphore>,
}

impl Share {
    fn take(pool: &Arc<ReadPool>, tenant: &TenantId) -> Self {
        let mut shares = pool.shares.lock().unwrap_or_else(|p| p.into_inner());
        let most = pool.size.saturating_sub(1).max(1);
        let turns = shares
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(most)));
        let turns = Arc::clone(turns);
        drop(shares);
        Share {
            pool: Arc::clone(pool),
            tenant: tenant.clone(),
            turns,
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut shares = self.pool.shares.lock().unwrap_or_else(|p| p.into_inner());
        // The map's and this one: no other read of the tenant holds it.
        if Arc::strong_count(&self.turns) == 2 {
            shares.remove(&self.tenant);
        }
    }
}

/// Runs a read on this thread; a panic is the read's error.
fn run_here<T>(read: impl FnOnce() -> Result<T>) -> Result<T> {
    // The connection is safe to use after a panic: an open read
    // transaction rolls back as its guard unwinds, statements reset.
    catch_unwind(AssertUnwindSafe(read)).map_err(panicked)?
}

/// Runs a read on a blocking thread of the runtime, or here outside one.
async fn run_blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    if tokio::runtime::Handle::try_current().is_err() {
        return run_here(read);
    }
    tokio::task::spawn_blocking(move || run_here(read))
        .await
        .map_err(|e| Error::permanent(format!("read task failed: {e}")))?
}

fn panicked(payload: Box<dyn std::any::Any + Send>) -> Error {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    Error::permanent(format!("read task failed: it panicked: {message}"))
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
                    pool.read_for(&busy, Work::MayScan, move |_| {
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
        let quiet_read = pool.read_for(&quiet, Work::Bounded, |_| Ok(()));
        tokio::time::timeout(Duration::from_secs(10), quiet_read)
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

    /// Which thread a read with `work` ran on.
    async fn read_thread(pool: &Arc<ReadPool>, work: Work) -> std::thread::ThreadId {
        pool.read(work, |_| Ok(std::thread::current().id()))
            .await
            .expect("read")
    }

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    fn multi_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime")
    }

    /// Where a read with `work` runs, from a task spawned on a runtime's
    /// worker: that worker's thread, or another.
    fn reads_on_the_worker(runtime: &tokio::runtime::Runtime, work: Work) -> bool {
        let pool = pool(1);
        let (read, worker) = runtime
            .block_on(async move {
                tokio::spawn(async move {
                    (read_thread(&pool, work).await, std::thread::current().id())
                })
                .await
            })
            .expect("task");
        read == worker
    }

    /// Whether a read with `work`, outside any runtime, runs on this
    /// thread.
    fn reads_here_outside_a_runtime(work: Work) -> bool {
        let pool = pool(1);
        futures::executor::block_on(read_thread(&pool, work)) == std::thread::current().id()
    }

    #[test]
    fn a_bounded_read_runs_on_the_callers_thread() {
        assert!(reads_on_the_worker(&current_thread(), Work::Bounded));
        assert!(reads_on_the_worker(&multi_thread(), Work::Bounded));
        assert!(reads_here_outside_a_runtime(Work::Bounded));
    }

    #[test]
    fn a_read_that_may_scan_runs_on_a_blocking_thread_or_alone_outside_a_runtime() {
        assert!(!reads_on_the_worker(&current_thread(), Work::MayScan));
        assert!(!reads_on_the_worker(&multi_thread(), Work::MayScan));
        assert!(reads_here_outside_a_runtime(Work::MayScan));
    }

    #[test]
    fn reads_work_in_a_local_set_on_a_multi_thread_runtime() {
        // Where tokio refuses `block_in_place`.
        let (runtime, pool) = (multi_thread(), pool(1));
        let local = tokio::task::LocalSet::new();
        for work in [Work::Bounded, Work::MayScan] {
            let read = local.block_on(&runtime, pool.read(work, |_| Ok(1)));
            assert_eq!(read.expect("read"), 1);
        }
    }

    #[test]
    fn a_read_that_panics_is_an_error_and_returns_its_connection() {
        let pool = pool(2);
        let panics = |work| {
            let pool = Arc::clone(&pool);
            async move {
                pool.read(work, |_| -> Result<()> { panic!("a read panics") })
                    .await
            }
        };
        let (current, multi) = (current_thread(), multi_thread());
        for work in [Work::Bounded, Work::MayScan] {
            let failed = [
                current.block_on(panics(work)),
                multi
                    .block_on(async { tokio::spawn(panics(work)).await })
                    .expect("the task itself does not panic"),
                futures::executor::block_on(panics(work)),
            ];
            for failure in failed {
                let message = failure.expect_err("a panic is an error").to_string();
                assert!(message.contains("panicked: a read panics"), "{message}");
            }
        }
        assert_eq!(pool.lock().len(), 2, "every connection is back");
        let read = futures::executor::block_on(pool.read(Work::Bounded, |_| Ok(1)));
        assert_eq!(read.expect("read"), 1);
    }

    #[test]
    fn a_panic_on_every_connection_returns_them_all() {
        let pool = pool(2);
        let failed = current_thread()
            .block_on(pool.read_each(|_| -> Result<()> { panic!("a read panics") }));
        let message = failed.expect_err("a panic is an error").to_string();
        assert!(message.contains("panicked: a read panics"), "{message}");
        assert_eq!(pool.lock().len(), 2, "every connection is back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_its_caller_left_keeps_its_turn_until_it_ends() {
        let pool = pool(4);
        let tenant = TenantId::new("left").expect("tenant");
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let read = tokio::spawn({
            let (pool, tenant) = (Arc::clone(&pool), tenant.clone());
            async move {
                pool.read_for(&tenant, Work::MayScan, move |_| {
                    let _ = started_tx.send(());
                    let _ = released.recv();
                    Ok(())
                })
                .await
            }
        });
        started.await.expect("the read runs");
        read.abort();
        let _ = read.await;
        let turns_left = |pool: &ReadPool| {
            let shares = pool.shares.lock().expect("lock");
            shares.get(&tenant).map(|turns| turns.available_permits())
        };
        assert_eq!(
            turns_left(&pool),
            Some(2),
            "the read still running holds its turn"
        );
        drop(release);
        tokio::time::timeout(Duration::from_secs(10), async {
            while turns_left(&pool).is_some() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the share is forgotten once the read ends");
    }
}
