//! Several processes opening one new file at the same moment: each open
//! waits its turn (the busy timeout holds from the first statement) and
//! none fails with "database is locked", whether the file is brand new or
//! an old version that needs migrating.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use zapinbox_core::{Inbox, NewEvent, PullQuery, TenantId};
use zapinbox_sqlite::{SCHEMA_VERSION, SqliteBackend};

const DIR_ENV: &str = "ZAPINBOX_RACE_DIR";
const START_ENV: &str = "ZAPINBOX_RACE_START_MS";
const PROCESSES: usize = 4;
/// Opens each process makes at once in every round.
const OPENS: usize = 2;
const ROUNDS: usize = 30;
const ROUND: Duration = Duration::from_millis(120);

/// Schema version 1 as it was released: every later version must migrate
/// it in place.
const V1_SCHEMA: &str = r#"
    CREATE TABLE events (
        seq              INTEGER PRIMARY KEY AUTOINCREMENT,
        id               BLOB    NOT NULL UNIQUE,
        tenant           TEXT    NOT NULL,
        status           INTEGER NOT NULL DEFAULT 0,
        source           TEXT,
        event_type       TEXT,
        topic            TEXT,
        client_id        TEXT,
        idempotency_key  TEXT,
        payload          TEXT    NOT NULL,
        created_at       INTEGER NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        visible_at       INTEGER NOT NULL DEFAULT 0,
        lease_token      INTEGER,
        lease_expires_at INTEGER,
        acked_at         INTEGER
    );
    CREATE INDEX events_by_tenant_status ON events (tenant, status, seq);
    CREATE TABLE idempotency_keys (
        tenant      TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        event_id    BLOB    NOT NULL,
        fingerprint BLOB    NOT NULL,
        expires_at  INTEGER NOT NULL,
        PRIMARY KEY (tenant, key)
    ) WITHOUT ROWID;
    PRAGMA user_version = 1;
"#;

fn round_path(dir: &Path, round: usize) -> PathBuf {
    dir.join(format!("round-{round}.db"))
}

fn tenant() -> TenantId {
    TenantId::new("race").expect("tenant")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One process's side: in every round, at the same wall-clock moment as
/// the others, opens the round's file `OPENS` times at once and ingests
/// one event through each. Prints how many opens failed and why.
async fn race(dir: &Path, start_ms: u64) {
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let at = start_ms + (round as u64) * ROUND.as_millis() as u64;
        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
        let path = round_path(dir, round);
        let opens: Vec<_> = (0..OPENS)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move {
                    let backend = SqliteBackend::open(&path).await?;
                    let inbox = Inbox::new(backend.clone());
                    inbox
                        .ingest(&tenant(), NewEvent::new(json!({ "round": round })))
                        .await?;
                    backend.close().await
                })
            })
            .collect();
        for open in opens {
            if let Err(e) = open.await.expect("task") {
                failures.push(format!("round {round}: {e}"));
            }
        }
    }
    println!("RESULT failures={} {:?}", failures.len(), failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the other processes' side: started by the test below with --ignored"]
async fn child_process_entry_point() {
    if let (Some(dir), Some(start)) = (std::env::var_os(DIR_ENV), std::env::var_os(START_ENV)) {
        let start = start.to_string_lossy().parse().expect("start time");
        race(Path::new(&dir), start).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_racing_to_open_and_migrate_one_file_all_succeed() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Every other round's file is an old version that must be migrated by
    // whichever open comes first.
    for round in (0..ROUNDS).step_by(2) {
        let conn = rusqlite::Connection::open(round_path(dir.path(), round)).expect("v1 file");
        conn.execute_batch(V1_SCHEMA).expect("v1 schema");
    }
    // Far enough ahead for every process to be up and waiting.
    let start = now_ms() + 1500;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            harness::child_process()
                .env(DIR_ENV, dir.path())
                .env(START_ENV, start.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a process")
        })
        .collect();
    for child in children {
        let stdout = harness::finished(child).await;
        let results = harness::results(&stdout);
        assert!(
            results
                .first()
                .is_some_and(|r| r.starts_with("failures=0 ")),
            "{stdout}"
        );
    }
    for round in 0..ROUNDS {
        let path = round_path(dir.path(), round);
        let backend = SqliteBackend::open(&path).await.expect("reopen");
        let inbox = Inbox::new(backend.clone());
        let events = inbox
            .pull(&tenant(), PullQuery::new())
            .await
            .expect("pull")
            .events;
        assert_eq!(events.len(), PROCESSES * OPENS, "round {round}");
        backend.close().await.expect("close");
        let conn = rusqlite::Connection::open(&path).expect("raw");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION, "round {round}");
    }
}
