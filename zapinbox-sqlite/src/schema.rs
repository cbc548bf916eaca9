//! The schema, versioned with `PRAGMA user_version`.

use rusqlite::Connection;
use zapinbox_core::{Error, Result};

use crate::error::storage;

/// One migration per schema version, applied in order. Never edit a
/// released entry: add a new one.
const MIGRATIONS: &[&str] = &[
    // v1: events in commit order, idempotency keys.
    r#"
    CREATE TABLE events (
        -- Commit order. AUTOINCREMENT: a deleted last row's number is never
        -- reused, or a cursor past it would skip the next event.
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
    -- Pending events of a tenant in commit order (pull, claim).
    CREATE INDEX events_by_tenant_status ON events (tenant, status, seq);
    CREATE TABLE idempotency_keys (
        tenant      TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        event_id    BLOB    NOT NULL,
        fingerprint BLOB    NOT NULL,
        expires_at  INTEGER NOT NULL,
        PRIMARY KEY (tenant, key)
    ) WITHOUT ROWID;
        "#,
    // v2: claims read only what is claimable now, earliest available
    // first, instead of walking past every leased row in commit order.
    // New events are available from their creation.
    r#"
    UPDATE events SET visible_at = created_at WHERE status = 0 AND attempts = 0 AND visible_at = 0;
        CREATE INDEX events_claimable ON events (tenant, status, visible_at, seq);
    "#,
    // v3: purges find what expired without scanning.
    r#"
    CREATE INDEX events_acked ON events (acked_at) WHERE status = 1;
    CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
    "#,
    // v4: the rules every process on the file shares (see `rules`).
    r#"
    CREATE TABLE rules (
        name  TEXT    NOT NULL PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // v5: filtered reads and stats cost what they return, not the tenant's
    // backlog. Pending rows only (acked ones wait for their purge), and
    // only those that have the field: an event without a topic costs no
    // topic index entry.
    r#"
    CREATE INDEX events_pending_topic ON events (tenant, topic, seq)
        WHERE status = 0 AND topic IS NOT NULL;
    CREATE INDEX events_pending_type ON events (tenant, event_type, seq)
        WHERE status = 0 AND event_type IS NOT NULL;
    CREATE INDEX events_pending_source ON events (tenant, source, seq)
        WHERE status = 0 AND source IS NOT NULL;
    CREATE INDEX events_pending_created ON events (tenant, created_at) WHERE status = 0;
    CREATE INDEX events_claimable_topic ON events (tenant, topic, visible_at, seq)
        WHERE status = 0 AND topic IS NOT NULL;
    -- Pending rows that were claimed: among them, those at their last
    -- attempt, which a lease expiry turns into dead letters (stats, dead
    -- letter listings).
    CREATE INDEX events_pending_attempts ON events (tenant, attempts)
        WHERE status = 0 AND attempts > 0;
    CREATE INDEX events_leased ON events (tenant, lease_expires_at)
        WHERE status = 0 AND lease_expires_at IS NOT NULL;
    -- Events of each tenant in each stored status, in the same
    -- transaction as every write: ingest adds its events once a request
    -- (a trigger a row halved ingest), the triggers below follow every
    -- change of status and every removal.
    CREATE TABLE tenant_counts (
        tenant        TEXT    NOT NULL PRIMARY KEY,
        pending       INTEGER NOT NULL DEFAULT 0,
        acked         INTEGER NOT NULL DEFAULT 0,
        dead_lettered INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    INSERT INTO tenant_counts (tenant, pending, acked, dead_lettered)
        SELECT tenant, sum(status = 0), sum(status = 1), sum(status = 2)
        FROM events GROUP BY tenant;
    CREATE TRIGGER events_counted_out AFTER DELETE ON events BEGIN
        UPDATE tenant_counts SET
            pending = pending - (old.status = 0),
            acked = acked - (old.status = 1),
            dead_lettered = dead_lettered - (old.status = 2)
        WHERE tenant = old.tenant;
    END;
    CREATE TRIGGER events_counted_moved AFTER UPDATE OF status ON events
        WHEN old.status != new.status BEGIN
        UPDATE tenant_counts SET
            pending = pending + (new.status = 0) - (old.status = 0),
            acked = acked + (new.status = 1) - (old.status = 1),
            dead_lettered = dead_lettered + (new.status = 2) - (old.status = 2)
        WHERE tenant = new.tenant;
    END;
    "#,
    // v6: daily quota use per tenant ('' for the whole inbox) and UTC day
    // (days since the epoch), counted in the transaction of the write.
    r#"
    CREATE TABLE usage_days (
        scope        TEXT    NOT NULL,
        day          INTEGER NOT NULL,
        messages_in  INTEGER NOT NULL DEFAULT 0,
        bytes_in     INTEGER NOT NULL DEFAULT 0,
        messages_out INTEGER NOT NULL DEFAULT 0,
        bytes_out    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (scope, day)
    ) WITHOUT ROWID;
    -- Metered usage per tenant, UTC day, client, topic ('' for none: an
    -- empty field is never valid), action and billable.
    CREATE TABLE usage_records (
        tenant    TEXT    NOT NULL,
        day       INTEGER NOT NULL,
        client_id TEXT    NOT NULL,
        topic     TEXT    NOT NULL,
        action    TEXT    NOT NULL,
        billable  INTEGER NOT NULL,
        count     INTEGER NOT NULL,
        bytes     INTEGER NOT NULL,
        PRIMARY KEY (tenant, day, client_id, topic, action, billable)
    ) WITHOUT ROWID;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Makes a new, empty file reclaim the space purges free, page by page
/// (`auto_vacuum = INCREMENTAL` only takes effect before the first table).
/// Files made before this keep `auto_vacuum = NONE` until a `VACUUM`.
pub(crate) fn prepare_new_file(conn: &Connection) -> Result<()> {
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(storage)?;
    if tables == 0 {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .map_err(storage)?;
    }
    Ok(())
}

/// Brings the database up to [`SCHEMA_VERSION`]. Runs in one immediate
/// transaction, so two processes opening one file migrate it once.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = crate::busy::begin_immediate(conn)?;
    let current: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(storage)?;
    if current > SCHEMA_VERSION {
        return Err(Error::permanent(format!(
            "database schema is version {current}, newer than this build's {SCHEMA_VERSION}: upgrade zapinbox"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.execute_batch(sql).map_err(storage)?;
        tx.pragma_update(None, "user_version", version as i64 + 1)
            .map_err(storage)?;
    }
    tx.commit().map_err(storage)
}

/// A migrated in-memory database whose planner is set as every opened
/// connection's (see `connection::stable_plans`), for pinning plans.
#[cfg(test)]
pub(crate) fn planned_db() -> Connection {
    let mut conn = Connection::open_in_memory().expect("open");
    crate::connection::stable_plans(&conn).expect("stable plans");
    migrate(&mut conn).expect("migrate");
    conn
}

/// The plan SQLite picks for `sql`, its steps joined by "; ".
#[cfg(test)]
pub(crate) fn query_plan(conn: &Connection, sql: &str) -> String {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    // Parameters stay unbound: a plan does not depend on their values.
    let mut rows = stmt.raw_query();
    let mut steps = Vec::new();
    while let Some(row) = rows.next().expect("plan") {
        steps.push(row.get::<_, String>(3).expect("detail"));
    }
    steps.join("; ")
}

/// The opcodes SQLite's bytecode for `sql` runs, in order: which seek
/// enters an index, where the plan alone does not tell.
#[cfg(test)]
pub(crate) fn opcodes(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).expect("explain");
    let mut rows = stmt.raw_query();
    let mut opcodes = Vec::new();
    while let Some(row) = rows.next().expect("bytecode") {
        opcodes.push(row.get::<_, String>(1).expect("opcode"));
    }
    opcodes
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    #[test]
    fn a_version_1_file_migrates_and_keeps_its_events() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(MIGRATIONS[0]).expect("v1 schema");
        conn.pragma_update(None, "user_version", 1)
            .expect("version 1");
        conn.execute(
            "INSERT INTO events (id, tenant, payload, created_at) VALUES (x'01', 't', '{}', 1234)",
            [],
        )
        .expect("a v1 row");
        migrate(&mut conn).expect("migrate");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let visible: i64 = conn
            .query_row("SELECT visible_at FROM events", [], |r| r.get(0))
            .expect("row kept");
        assert_eq!(visible, 1234, "available from its creation");
        migrate(&mut conn).expect("migrating again does nothing");
    }
}
