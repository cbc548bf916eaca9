//! New events of the open write transaction, inserted together: the
//! events of consecutive ingest requests wait here and go in as
//! multi-row INSERTs: all of them as soon as [`CHUNKS`]`[0]` or more
//! wait (while the next requests are on their way), and before the next
//! request that is not an ingest and before COMMIT. One statement per
//! event opened and closed a cursor on the table and on each of its
//! indexes and updated the AUTOINCREMENT counter every time: with 64
//! producers, those statements were two fifths of the writer's time.
//! Chunks of 8 to 64 rows measured alike (about a tenth faster than a
//! statement a row); 16 leaves little to insert after the last request.
//!
//! Only events wait; idempotency keys, quota charges and counts are written
//! by the request itself, so later requests of the transaction see them.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, OnceLock};

use rusqlite::Connection;
use zapinbox_core::raw::EventParts;
use zapinbox_core::{Error, EventId, Result, TenantId, Timestamp};

use crate::error::storage;
use crate::row::millis;

/// Rows per INSERT statement, largest first: a flush takes as many of
/// each as fit, so only these few statements are prepared and cached.
const CHUNKS: [usize; 3] = [16, 4, 1];

/// Columns bound per row.
const COLUMNS: usize = 10;

/// Events waiting to be inserted in the open transaction.
#[derive(Default)]
pub(crate) struct DeferredInserts {
    rows: RefCell<Vec<Deferred>>,
    /// Whether events may wait at all: off for a batch run again after a
    /// flush failed, so that the request at fault fails alone.
    off: Cell<bool>,
}

/// One event to insert.
struct Deferred {
    tenant: TenantId,
    /// The request's events, shared with it: nothing is copied.
    events: Arc<[EventParts]>,
    index: usize,
    id: EventId,
    /// When it becomes claimable: the time of the request.
    visible_at: Timestamp,
}

impl DeferredInserts {
    /// Inserts `events[index]` under `id`, now or with the next flush: now
    /// outside a transaction, or while waiting is off.
    pub(crate) fn insert(
        &self,
        conn: &Connection,
        tenant: &TenantId,
        events: &Arc<[EventParts]>,
        index: usize,
        (id, visible_at): (EventId, Timestamp),
    ) -> Result<()> {
        self.rows.borrow_mut().push(Deferred {
            tenant: tenant.clone(),
            events: Arc::clone(events),
            index,
            id,
            visible_at,
        });
        if self.off.get() || conn.is_autocommit() {
            self.flush(conn)?;
        }
        Ok(())
    }

    /// Inserts every waiting event, in the order they came. On an error
    /// some may be in and the rest are forgotten: the caller rolls back.
    pub(crate) fn flush(&self, conn: &Connection) -> Result<()> {
        let mut rows = self.rows.borrow_mut();
        let mut rest = &rows[..];
        let mut inserted = Ok(());
        for (slot, size) in CHUNKS.into_iter().enumerate() {
            while rest.len() >= size && inserted.is_ok() {
                let (chunk, after) = rest.split_at(size);
                inserted = insert_rows(conn, slot, chunk);
                rest = after;
            }
        }
        // Cleared, not dropped: its room serves the next transaction.
        rows.clear();
        inserted
    }

    /// How many events wait.
    pub(crate) fn waiting(&self) -> usize {
        self.rows.borrow().len()
    }

    /// Forgets every waiting event: the transaction was rolled back.
    pub(crate) fn forget(&self) {
        self.rows.borrow_mut().clear();
    }

    /// Whether a chunk's worth waits: the writer inserts it while the next
    /// requests are on their way rather than all at once before COMMIT.
    pub(crate) fn has_chunk(&self) -> bool {
        self.rows.borrow().len() >= CHUNKS[0]
    }

    /// Whether events may wait for a flush.
    pub(crate) fn is_on(&self) -> bool {
        !self.off.get()
    }

    /// Lets events wait (`true`) or inserts each at once (`false`).
    pub(crate) fn set_on(&self, on: bool) {
        self.off.set(!on);
    }
}

/// Inserts `rows`, as many as `CHUNKS[slot]`, with one statement.
fn insert_rows(conn: &Connection, slot: usize, rows: &[Deferred]) -> Result<()> {
    let mut stmt = conn.prepare_cached(insert_sql(slot)).map_err(storage)?;
    for (n, row) in rows.iter().enumerate() {
        let event = row
            .events
            .get(row.index)
            .ok_or_else(|| Error::permanent("a deferred insert lost its event"))?;
        bind(&mut stmt, n * COLUMNS, row, event).map_err(storage)?;
    }
    stmt.raw_execute().map(|_| ()).map_err(storage)
}

/// Binds one row's columns after the first `at` parameters.
fn bind(
    stmt: &mut rusqlite::Statement<'_>,
    at: usize,
    row: &Deferred,
    event: &EventParts,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(at + 1, row.id.to_bytes())?;
    stmt.raw_bind_parameter(at + 2, row.tenant.as_str())?;
    stmt.raw_bind_parameter(at + 3, &event.source)?;
    stmt.raw_bind_parameter(at + 4, &event.event_type)?;
    stmt.raw_bind_parameter(at + 5, &event.topic)?;
    stmt.raw_bind_parameter(at + 6, &event.client_id)?;
    stmt.raw_bind_parameter(at + 7, event.idempotency.as_ref().map(|(key, _)| key))?;
    stmt.raw_bind_parameter(at + 8, event.payload.as_str())?;
    stmt.raw_bind_parameter(at + 9, millis(row.id.created_at()))?;
    stmt.raw_bind_parameter(at + 10, millis(row.visible_at))
}

/// The INSERT of `CHUNKS[slot]` events, built once.
fn insert_sql(slot: usize) -> &'static str {
    static SQL: [OnceLock<String>; CHUNKS.len()] = [const { OnceLock::new() }; CHUNKS.len()];
    SQL[slot].get_or_init(|| {
        let values = (0..CHUNKS[slot])
            .map(|row| {
                let params = (1..=COLUMNS)
                    .map(|column| format!("?{}", row * COLUMNS + column))
                    .collect::<Vec<_>>();
                format!("({})", params.join(", "))
            })
            .collect::<Vec<_>>();
        format!(
            "INSERT INTO events (id, tenant, source, event_type, topic, client_id,
                                 idempotency_key, payload, created_at, visible_at)
             VALUES {}",
            values.join(", ")
        )
    })
}
