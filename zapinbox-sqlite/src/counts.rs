//! New pending events counted in memory while a write transaction runs:
//! a tenant's first count in a transaction is written at once, the rest
//! once before it commits. One statement per ingest request was about an
//! eighth of the time a commit of 64 single-event ingests spent running
//! its requests; a commit of one request still writes one.

use std::cell::RefCell;
use std::collections::HashMap;

use rusqlite::{Connection, params};
use zapinbox_core::{Result, TenantId};

use crate::error::storage;

/// Pending events added per tenant in the open write transaction.
#[derive(Debug, Default)]
pub(crate) struct PendingCounts {
    added: RefCell<HashMap<TenantId, i64>>,
}

impl PendingCounts {
    /// Counts `n` new pending events of `tenant`. The first count of a
    /// tenant in a transaction is written at once, which makes its row if
    /// it is missing: the triggers of later statements of the same
    /// transaction (a delete, a change of status) update that row and must
    /// find it. Later ones wait for [`PendingCounts::write`]. Outside a
    /// transaction every count is written at once. Call it after the
    /// request's own writes: the writer tells a request that failed after
    /// writing by the rows it changed, and a count kept in memory is none.
    pub(crate) fn add(&self, conn: &Connection, tenant: &TenantId, n: i64) -> Result<()> {
        let open = !conn.is_autocommit();
        if let Some(added) = self.added.borrow_mut().get_mut(tenant).filter(|_| open) {
            *added += n;
            return Ok(());
        }
        conn.prepare_cached(
            "INSERT INTO tenant_counts (tenant, pending) VALUES (?1, ?2)
             ON CONFLICT (tenant) DO UPDATE SET pending = pending + excluded.pending",
        )
        .and_then(|mut stmt| stmt.execute(params![tenant.as_str(), n]))
        .map_err(storage)?;
        if open {
            self.added.borrow_mut().insert(tenant.clone(), 0);
        }
        Ok(())
    }

    /// Adds what was counted and not yet written to `tenant_counts`, in
    /// the transaction about to commit, and forgets it.
    pub(crate) fn write(&self, conn: &Connection) -> Result<()> {
        let added = std::mem::take(&mut *self.added.borrow_mut());
        for (tenant, n) in added.into_iter().filter(|&(_, n)| n != 0) {
            conn.prepare_cached(
                "UPDATE tenant_counts SET pending = pending + ?2 WHERE tenant = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![tenant.as_str(), n]))
            .map_err(storage)?;
        }
        Ok(())
    }

    /// Forgets what was counted: a new transaction begins, and whatever
    /// counted it before was rolled back with its own.
    pub(crate) fn forget(&self) {
        self.added.borrow_mut().clear();
    }
}
