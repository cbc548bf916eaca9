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
