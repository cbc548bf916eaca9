//! The writer thread: owns the one write connection and commits everything
//! queued together (group commit).
//!
//! Each request runs inside its own savepoint, so one request's error rolls
//! back only its own changes; the batch then commits once and every caller
//! is answered after that commit. If COMMIT itself fails, every caller in the
//! batch gets that error.

use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use zapinbox_core::{Clock, Error, Result};

use crate::error::storage;

/// Most requests committed in one transaction: bounds the time a batch
/// holds the write lock and the latency of its first caller.
const MAX_BATCH: usize = 1024;

/// Requests waiting for the writer before callers wait for room.
const QUEUE: usize = 8192;

/// A write operation run on the writer's connection inside a transaction.
type Op<T> = Box<dyn FnOnce(&Connection, &Clock) -> Result<T> + Send>;

/// One queued request, type-erased so one channel carries them all.
trait Job: Send {
    /// Runs the operation; returns whether it succeeded and how to answer
    /// the caller once the transaction's fate is known.
    fn run(self: Box<Self>, conn: &Connection, clock: &Clock) -> (bool, Box<dyn Answer>);

    /// Gives up on the operation without running it: its answer will carry
    /// the batch's failure.
    fn abandon(self: Box<Self>) -> Box<dyn Answer>;
}

/// Answers one caller with its result, or with the commit's failure.
trait Answer: Send {
    fn send(self: Box<Self>, commit: Result<(), &CommitFailure>);
}

struct Typed<T> {
    op: Op<T>,
    reply: oneshot::Sender<Result<T>>,
}

struct Reply<T> {
    result: Result<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send + 'static> Job for Typed<T> {
    fn run(self: Box<Self>, conn: &Connection, clock: &Clock) -> (bool, Box<dyn Answer>) {
        let result = (self.op)(conn, clock);
        let ok = result.is_ok();
        (
            ok,
            Box::new(Reply {
                result,
                reply: self.reply,
            }),
        )
    }

    fn abandon(self: Box<Self>) -> Box<dyn Answer> {
        Box::new(Reply {
            result: Err(closed()),
            reply: self.reply,
        })
    }
}

impl<T: Send + 'static> Answer for Reply<T> {
    fn send(self: Box<Self>, commit: Result<(), &CommitFailure>) {
        let result = match commit {
            Ok(()) => self.result,
            Err(failure) => Err(failure.to_error()),
        };
        // The caller may have given up waiting; the outcome stands anyway.
        let _ = self.reply.send(result);
    }
}

/// Why a whole batch failed, shared by every caller in it.
struct CommitFailure {
    retryable: bool,
    message: String,
}

impl CommitFailure {
    fn from_error(stage: &str, e: &Error) -> Self {
        CommitFailure {
            retryable: e.is_retryable(),
            message: format!("{stage} failed: {e}"),
        }
    }

    fn to_error(&self) -> Error {
        Error::Backend {
            retryable: self.retryable,
            source: self.message.clone().into(),
        }
    }
}

enum Message {
    Job(Box<dyn Job>),
    Close,
}

/// A handle on the writer thread.
pub(crate) struct Writer {
    queue: mpsc::Sender<Message>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn spawn(conn: Connection, clock: Clock) -> Result<Arc<Writer>> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("zapinbox-sqlite-writer".into())
            .spawn(move || run(conn, clock, rx))
            .map_err(|e| Error::permanent(format!("cannot start the writer thread: {e}")))?;
        Ok(Arc::new(Writer {
            queue,
            thread: std::sync::Mutex::new(Some(thread)),
        }))
    }

    /// Runs `op` in the next group commit; answers after that commit.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection, &Clock) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Typed {
            op: Box::new(op),
            reply,
        });
        self.queue
            .send(Message::Job(job))
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Finishes the batch in progress, stops the thread and waits for it.
    /// Requests still queued are answered with an error.
    pub(crate) async fn close(&self) -> Result<()> {
        let _ = self.queue.send(Message::Close).await;
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| Error::permanent(format!("writer thread: {e}")))?
                .map_err(|_| Error::permanent("writer thread panicked"))?;
        }
        Ok(())
    }
}

fn closed() -> Error {
    Error::permanent("the SQLite inbox is closed")
}

fn run(mut conn: Connection, clock: Clock, mut rx: mpsc::Receiver<Message>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut closing = false;
    while !closing {
        match rx.blocking_recv() {
            Some(Message::Job(job)) => batch.push(job),
            Some(Message::Close) | None => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Message::Job(job)) => batch.push(job),
                Ok(Message::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &clock, batch.drain(..));
    }
    rx.close();
    // Dropping what is still queued answers those callers with "closed".
    while rx.try_recv().is_ok() {}
}

fn commit_batch(conn: &mut Connection, clock: &Clock, jobs: impl Iterator<Item = Box<dyn Job>>) {
    let _span = tracing::trace_span!("group_commit").entered();
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let failure = CommitFailure::from_error("BEGIN", &e);
        for job in jobs {
            job.abandon().send(Err(&failure));
        }
        return;
    }
    let mut answers = Vec::new();
    let mut broken = None;
    for job in jobs {
        if broken.is_some() {
            answers.push(job.abandon());
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT request") {
            broken = Some(CommitFailure::from_error("SAVEPOINT", &e));
            answers.push(job.abandon());
            continue;
        }
        let (ok, answer) = job.run(conn, clock);
        answers.push(answer);
        let end = if ok {
            exec(conn, "RELEASE request")
        } else {
            exec(conn, "ROLLBACK TO request").and_then(|()| exec(conn, "RELEASE request"))
        };
        if let Err(e) = end {
            broken = Some(CommitFailure::from_error("savepoint", &e));
        }
    }
    let outcome = match broken {
        Some(failure) => Err(failure),
        None => exec(conn, "COMMIT").map_err(|e| CommitFailure::from_error("COMMIT", &e)),
    };
    tracing::trace!(
        requests = answers.len(),
        ok = outcome.is_ok(),
        "group commit"
    );
    if outcome.is_err() && !conn.is_autocommit() {
        // Leave no transaction open for the next batch.
        let _ = exec(conn, "ROLLBACK");
    }
    for answer in answers {
        answer.send(outcome.as_ref().map(|_| ()));
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(|_| ())
        .map_err(storage)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A writer on an in-memory database with a deferred foreign key, so a
    /// request can succeed alone and still make COMMIT fail.
    fn writer() -> Arc<Writer> {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
             CREATE TABLE log (n INTEGER NOT NULL UNIQUE);",
        )
        .expect("schema");
        Writer::spawn(conn, Clock::system()).expect("spawn")
    }

    fn insert(n: i64) -> impl FnOnce(&Connection, &Clock) -> Result<i64> + Send + 'static {
        move |conn, _| {
            conn.execute("INSERT INTO log (n) VALUES (?1)", [n])
                .map_err(storage)?;
            Ok(n)
        }
    }

    fn logged(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT n FROM log ORDER BY n")
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    /// Holds the writer busy so that the requests sent meanwhile share the
    /// next batch.
    fn hold(for_ms: u64) -> impl FnOnce(&Connection, &Clock) -> Result<()> + Send + 'static {
        move |_, _| {
            std::thread::sleep(Duration::from_millis(for_ms));
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_request_rolls_back_only_its_savepoint() {
        let w = writer();
        let busy = tokio::spawn({
            let w = Arc::clone(&w);
            async move { w.write(hold(100)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (a, dup, b) = tokio::join!(
            w.write(|conn, clock| insert(1)(conn, clock).and_then(|_| insert(2)(conn, clock))),
            w.write(|conn, clock| insert(3)(conn, clock).and_then(|_| insert(1)(conn, clock))),
            w.write(insert(4)),
        );
        busy.await.expect("task").expect("hold");
        assert_eq!(a.expect("first request"), 2);
        assert!(matches!(dup, Err(Error::Backend { .. })), "{dup:?}");
        assert_eq!(b.expect("third request"), 4);
        let rows = w.write(|conn, _| Ok(logged(conn))).await.expect("read");
        assert_eq!(
            rows,
            vec![1, 2, 4],
            "the failed request's 3 was rolled back"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_reaches_every_caller_in_the_batch() {
        let w = writer();
        let busy = tokio::spawn({
            let w = Arc::clone(&w);
            async move { w.write(hold(100)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let poison = |conn: &Connection, _: &Clock| {
            conn.execute("INSERT INTO child (parent) VALUES (99)", [])
                .map_err(storage)
                .map(|_| ())
        };
        let (ok, poisoned) = tokio::join!(w.write(insert(1)), w.write(poison));
        busy.await.expect("task").expect("hold");
        for r in [ok.map(|_| ()), poisoned] {
            let message = match r {
                Err(Error::Backend { source, .. }) => source.to_string(),
                other => panic!("expected the COMMIT failure, got {other:?}"),
            };
            assert!(message.contains("COMMIT"), "{message}");
        }
        let rows = w
            .write(|conn, _| Ok(logged(conn)))
            .await
            .expect("the writer goes on");
        assert!(
            rows.is_empty(),
            "nothing of the failed batch stayed: {rows:?}"
        );
        assert_eq!(w.write(insert(5)).await.expect("next batch"), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_after_close_fail_cleanly() {
        let w = writer();
        assert_eq!(w.write(insert(1)).await.expect("write"), 1);
        w.close().await.expect("close");
        let r = w.write(insert(2)).await;
        assert!(
            matches!(&r, Err(e) if e.to_string().contains("closed")),
            "{r:?}"
        );
        w.close().await.expect("closing twice is fine");
    }
}
