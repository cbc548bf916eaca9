//! Raw rusqlite baselines: the same rows, schema and indexes as the SQLite
//! backend (the file is created by it), WAL with `synchronous=FULL`, none
//! of zapinbox's work. What the backend is measured against.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};
use zapinbox::sqlite::SqliteBackend;
use zapinbox::{EventId, Timestamp};

use crate::Scale;
use crate::report::Row;
use crate::workloads::{Latencies, payload_json};

/// The baseline figures: measured once up front, or (those [`Beside`]
/// names, and one row per transaction) the median of the runs paired with
/// the SQLite backend's.
#[derive(Clone, Debug, Default)]
pub struct Raw {
    /// One row per transaction, each committed before the next.
    pub one_per_txn: Latencies,
    /// Rows a second, 1 000 rows per transaction.
    pub thousand_per_txn: f64,
    /// Rows a second, 100 rows per transaction: what one `ingest_batch` of
    /// 100 writes.
    pub hundred_per_txn: f64,
    /// Rows a second, 64 rows per transaction: the most 64 callers that
    /// each wait for their own durable commit can share one.
    pub sixty_four_per_txn: f64,
    /// A bare round trip from a tokio task to a thread and back, no work:
    /// what handing a request to a writer thread costs on this machine.
    pub thread_round_trip: Latencies,
    /// Rows a second read in pages of 100 in commit order.
    pub pages_of_100: f64,
    /// Events a second claimed (select + update) and acked (update) in
    /// batches of 100, two transactions a batch.
    pub claim_ack_100: f64,
    /// Events a second claimed and acked one at a time, two transactions
    /// an event: what one worker with one handler does at best.
    pub claim_ack_1: f64,
    /// A point lookup of an idempotency key.
    pub key_lookup: Latencies,
}

const TENANT: &str = "bench";

/// Measures the baselines that are not paired with a backend's runs (see
/// [`Baselines`]) on a file of their own (none when a single workload is
/// picked with `ZAPINBOX_BENCH_ONLY`, for profiling).
pub async fn measure(scale: Scale) -> Raw {
    if std::env::var_os("ZAPINBOX_BENCH_ONLY").is_some() {
        return Raw::default();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raw.db");
    create_schema(&path).await;
    let round_trip = thread_round_trip(scale.latency_ops).await;
    tokio::task::spawn_blocking(move || {
        let conn = connect(&path);
        let raw = Raw {
            thousand_per_txn: runs(scale, |i| {
                per_txn(
                    &conn,
                    &format!("thousand-{i}"),
                    scale.throughput_events.max(10_000),
                    1000,
                )
            }),
            key_lookup: key_lookup(&conn, scale.latency_ops),
            ..Raw::default()
        };
        drop(dir);
        Raw {
            thread_round_trip: round_trip,
            ..raw
        }
    })
    .await
    .expect("raw baselines")
}

/// A raw baseline run beside each of the SQLite backend's runs of the same
/// work. On a shared VM the fsync rate alone moved threefold within
/// minutes: measured minutes apart, a ratio said more about the moment than
/// about the backend.
#[derive(Clone, Copy, Debug)]
pub enum Beside {
    /// Rows a second, 100 rows per transaction.
    HundredPerTxn,
    /// Rows a second, 64 rows per transaction.
    SixtyFourPerTxn,
    /// Rows a second read in pages of 100 from a backlog.
    PagesOf100,
    /// The same, read on a connection opened after the rows were written,
    /// as a read pool's connection is: the writer's page cache does not
    /// serve it.
    PagesOf100Elsewhere,
    /// Events a second claimed and acked in batches of 100.
    ClaimAck100,
    /// Events a second claimed and acked one at a time.
    ClaimAck1,
}

/// The file the paired baselines run on.
pub struct Baselines {
    conn: Arc<Mutex<Connection>>,
    path: std::path::PathBuf,
    runs: AtomicUsize,
    _dir: tempfile::TempDir,
}

impl Baselines {
    /// A fresh file with the backend's schema.
    pub async fn open() -> Baselines {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("raw-beside.db");
        create_schema(&path).await;
        Baselines {
            conn: Arc::new(Mutex::new(connect(&path))),
            path,
            runs: AtomicUsize::new(0),
            _dir: dir,
        }
    }

    /// One run of `which` at `scale`, on a tenant of its own.
    pub async fn run(&self, which: Beside, scale: Scale) -> f64 {
        let tenant = format!("{which:?}-{}", self.runs.fetch_add(1, Ordering::Relaxed));
        let path = self.path.clone();
        self.blocking(move |conn| match which {
            Beside::HundredPerTxn => per_txn(conn, &tenant, scale.throughput_events, 100),
            Beside::SixtyFourPerTxn => per_txn(conn, &tenant, scale.throughput_events, 64),
            Beside::PagesOf100 => {
                bulk_insert(conn, &tenant, scale.backlog);
                pages_of_100(conn, &tenant, scale.backlog)
            }
            Beside::PagesOf100Elsewhere => {
                bulk_insert(conn, &tenant, scale.backlog);
                let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .expect("open a reader");
                pages_of_100(&reader, &tenant, scale.backlog)
            }
            Beside::ClaimAck100 => claim_ack(conn, &tenant, scale.claim_events, 100),
            Beside::ClaimAck1 => claim_ack(conn, &tenant, scale.claim_events / 10, 1),
        })
        .await
    }

    /// `n` rows, each committed in a transaction of its own before the next.
    pub async fn one_per_txn(&self, n: usize) -> Latencies {
        self.blocking(move |conn| one_per_txn(conn, n)).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> T {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&conn.lock().expect("raw connection")))
            .await
            .expect("a raw baseline")
    }
}

/// Creates `path` with the backend's schema, so baselines have the same
/// indexes.
async fn create_schema(path: &Path) {
    let backend = SqliteBackend::open(path).await.expect("create the schema");
    backend.close().await.expect("close");
}

fn connect(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("wal");
    assert_eq!(mode, "wal");
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")
        .expect("pragmas");
    conn
}

fn insert(conn: &Connection, tenant: &str, n: usize) {
    let id = EventId::generate(Timestamp::from(std::time::SystemTime::now()));
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO events (id, tenant, source, event_type, topic, client_id,
                                 idempotency_key, payload, created_at)
             VALUES (?1, ?2, NULL, NULL, NULL, NULL, NULL, ?3, ?4)",
        )
        .expect("prepare");
    stmt.execute(params![
        id.to_bytes(),
        tenant,
        payload_json(n),
        id.created_at().as_millis() as i64
    ])
    .expect("insert");
}

fn one_per_txn(conn: &Connection, n: usize) -> Latencies {
    let tenant = "one-per-txn";
    for i in 0..crate::workloads::WARM_UP {
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        insert(conn, tenant, i);
        conn.execute_batch("COMMIT").expect("commit");
    }
    let mut latencies = Latencies::default();
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        insert(conn, tenant, i);
        conn.execute_batch("COMMIT").expect("commit");
        latencies.push(t.elapsed());
    }
    latencies.finish(started.elapsed())
}

fn bulk_insert(conn: &Connection, tenant: &str, n: usize) -> Duration {
    bulk_insert_by(conn, tenant, n, 1000)
}

fn bulk_insert_by(conn: &Connection, tenant: &str, n: usize, per_txn: usize) -> Duration {
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(per_txn) {
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for i in chunk {
            insert(conn, tenant, *i);
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    started.elapsed()
}

fn per_txn(conn: &Connection, tenant: &str, n: usize, rows: usize) -> f64 {
    n as f64 / bulk_insert_by(conn, tenant, n, rows).as_secs_f64()
}

/// Round trips through a queue to a thread and back, as the SQLite
/// backend's writer does, with no work in between.
async fn thread_round_trip(n: usize) -> Latencies {
    type Job = tokio::sync::oneshot::Sender<()>;
    let (queue, mut jobs) = tokio::sync::mpsc::channel::<Job>(16);
    let thread = std::thread::spawn(move || {
        while let Some(reply) = jobs.blocking_recv() {
            let _ = reply.send(());
        }
    });
    let mut latencies = Latencies::default();
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let (reply, answer) = tokio::sync::oneshot::channel();
        queue.send(reply).await.expect("send");
        answer.await.expect("answer");
        latencies.push(t.elapsed());
    }
    let out = latencies.finish(started.elapsed());
    drop(queue);
    let _ = thread.join();
    out
}

/// The median of `scale.runs` runs of `f` (given the run's number).
fn runs(scale: Scale, f: impl FnMut(usize) -> f64) -> f64 {
    crate::median((0..scale.runs).map(f).collect())
}

/// Reads the `backlog` rows of `tenant` in pages of 100; rows a second.
fn pages_of_100(conn: &Connection, tenant: &str, backlog: usize) -> f64 {
    let mut stmt = conn
        .prepare(
            "SELECT seq, id, source, event_type, topic, payload, idempotency_key, client_id,
                    status, attempts
             FROM events WHERE tenant = ?1 AND status = 0 AND seq > ?2 ORDER BY seq LIMIT 100",
        )
        .expect("prepare");
    let started = Instant::now();
    let (mut after, mut read) = (0i64, 0usize);
    loop {
        let mut rows = stmt.query(params![tenant, after]).expect("query");
        let mut page = 0;
        while let Some(row) = rows.next().expect("row") {
            // Every column selected is read, as handing events on needs.
            after = row.get(0).expect("seq");
            let id: Vec<u8> = row.get(1).expect("id");
            let payload: String = row.get(5).expect("payload");
            let texts: [Option<String>; 5] =
                [2, 3, 4, 6, 7].map(|c| row.get(c).expect("text column"));
            let numbers: [i64; 2] = [8, 9].map(|c| row.get(c).expect("number column"));
            std::hint::black_box((id, payload, texts, numbers));
            page += 1;
        }
        read += page;
        if page < 100 {
            break;
        }
    }
    assert_eq!(read, backlog);
    read as f64 / started.elapsed().as_secs_f64()
}

fn claim_ack(conn: &Connection, tenant: &str, n: usize, batch: i64) -> f64 {
    bulk_insert(conn, tenant, n);
    let started = Instant::now();
    let mut done = 0;
    loop {
        let now = Timestamp::from(std::time::SystemTime::now()).as_millis() as i64;
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        let seqs: Vec<i64> = conn
            .prepare_cached(
                "SELECT seq FROM events WHERE tenant = ?1 AND status = 0 AND visible_at <= ?2
                 ORDER BY seq LIMIT ?3",
            )
            .expect("prepare")
            .query_map(params![tenant, now, batch], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        for seq in &seqs {
            conn.prepare_cached(
                "UPDATE events SET attempts = attempts + 1, lease_token = ?1,
                                   lease_expires_at = ?2, visible_at = ?2 WHERE seq = ?3",
            )
            .expect("prepare")
            .execute(params![*seq, now + 60_000, seq])
            .expect("claim");
        }
        conn.execute_batch("COMMIT").expect("commit");
        if seqs.is_empty() {
            break;
        }
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for seq in &seqs {
            conn.prepare_cached(
                "UPDATE events SET status = 1, acked_at = ?1, lease_token = NULL,
                                   lease_expires_at = NULL WHERE seq = ?2",
            )
            .expect("prepare")
            .execute(params![now, seq])
            .expect("ack");
        }
        conn.execute_batch("COMMIT").expect("commit");
        done += seqs.len();
    }
    assert_eq!(done, n);
    n as f64 / started.elapsed().as_secs_f64()
}

fn key_lookup(conn: &Connection, n: usize) -> Latencies {
    conn.execute(
        "INSERT OR REPLACE INTO idempotency_keys (tenant, key, event_id, fingerprint, expires_at)
         VALUES (?1, 'retry', ?2, ?3, ?4)",
        params![TENANT, [0u8; 16], [0u8; 32], i64::MAX],
    )
    .expect("key");
    let mut latencies = Latencies::default();
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let found: (Vec<u8>, Vec<u8>) = conn
            .prepare_cached(
                "SELECT event_id, fingerprint FROM idempotency_keys
                 WHERE tenant = ?1 AND key = 'retry' AND expires_at > ?2",
            )
            .expect("prepare")
            .query_row(params![TENANT, 0], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("lookup");
        std::hint::black_box(found);
        latencies.push(t.elapsed());
    }
    latencies.finish(started.elapsed())
}

impl Raw {
    /// The baselines as report rows of their own.
    pub fn rows(&self) -> Vec<Row> {
        let raw = |workload: &str, figure: &str, value: f64| {
            Row::new("raw sqlite", workload, figure, value)
        };
        vec![
            raw(
                "insert, 1 row per transaction",
                "events/s",
                self.one_per_txn.per_second,
            ),
            raw(
                "insert, 1 row per transaction",
                "p50 ms",
                self.one_per_txn.p50_ms(),
            ),
            raw(
                "insert, 1 row per transaction",
                "p99 ms",
                self.one_per_txn.p99_ms(),
            ),
            raw(
                "insert, 1 000 rows per transaction",
                "events/s",
                self.thousand_per_txn,
            ),
            raw(
                "insert, 100 rows per transaction",
                "events/s",
                self.hundred_per_txn,
            ),
            Row::new(
                "raw sqlite",
                "insert, 64 rows per transaction",
                "events/s",
                self.sixty_four_per_txn,
            )
            .against(
                "insert, 1 000 rows per transaction",
                self.thousand_per_txn,
                true,
            ),
            Row::new(
                "tokio + thread",
                "round trip to a thread and back, no work",
                "p50 ms",
                self.thread_round_trip.p50_ms(),
            ),
            raw(
                "select pages of 100, every column read",
                "events/s",
                self.pages_of_100,
            ),
            raw(
                "select + update claim, update ack, batches of 100",
                "events/s",
                self.claim_ack_100,
            ),
            raw(
                "select + update claim, update ack, one at a time",
                "events/s",
                self.claim_ack_1,
            ),
            raw(
                "idempotency key point lookup",
                "p50 ms",
                self.key_lookup.p50_ms(),
            ),
        ]
    }
}
