//! Reading and writing event rows.

use rusqlite::ToSql;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, params};
use zapinbox_core::raw::{Delivery, Position};
use zapinbox_core::{
    Event, EventId, EventStatus, Filter, Payload, Result, RetryPolicy, TenantId, Timestamp,
};

use crate::error::{corrupt, storage};

/// The columns [`stored_from_row`] reads, in order.
pub(crate) const EVENT_COLUMNS: &str = "seq, id, source, event_type, topic, payload, \
     idempotency_key, client_id, status, attempts, visible_at, lease_token, lease_expires_at, \
     acked_at";

/// The delivery columns, in the order [`delivery_at`] reads them.
pub(crate) const DELIVERY_COLUMNS: &str =
    "status, attempts, visible_at, lease_token, lease_expires_at, acked_at";

/// A field of a `Filter` as SQL: its term, the parameter it binds and
/// the value, and the index of pending rows that serves it, if any.
pub(crate) struct FilterField<'a> {
    pub term: &'static str,
    pub param: &'static str,
    pub value: &'a dyn ToSql,
    pub pending_index: Option<&'static str>,
}

/// The fields `filter` sets, in the order topic, type, source, `since`
/// (bound as `since`, its value as stored): only those, so that the
/// planner sees which field's index to use.
pub(crate) fn filter_fields<'a>(
    filter: &'a Filter,
    since: &'a Option<i64>,
) -> Vec<FilterField<'a>> {
    let field = |term, param, value, pending_index| FilterField {
        term,
        param,
        value,
        pending_index,
    };
    [
        (
            filter.topic.is_some(),
            field(
                " AND topic = :topic",
                ":topic",
                &filter.topic,
                Some("events_pending_topic"),
            ),
        ),
        (
            filter.event_type.is_some(),
            field(
                " AND event_type = :type",
                ":type",
                &filter.event_type,
                Some("events_pending_type"),
            ),
        ),
        (
            filter.source.is_some(),
            field(
                " AND source = :source",
                ":source",
                &filter.source,
                Some("events_pending_source"),
            ),
        ),
        (
            filter.since.is_some(),
            field(" AND created_at >= :since", ":since", since, None),
        ),
    ]
    .into_iter()
    .filter_map(|(set, field)| set.then_some(field))
    .collect()
}

/// The SQL terms of the fields `filter` sets (see [`filter_fields`]).
pub(crate) fn filter_sql(filter: &Filter) -> String {
    filter_fields(filter, &None)
        .iter()
        .map(|f| f.term)
        .collect()
}

/// The named parameters of [`filter_sql`] for `filter` (with `since`, its
/// `since` as stored), then `rest`.
pub(crate) fn filtered<'a>(
    filter: &'a Filter,
    since: &'a Option<i64>,
    rest: &[(&'a str, &'a dyn ToSql)],
) -> Vec<(&'a str, &'a dyn ToSql)> {
    let fields = filter_fields(filter, since).into_iter();
    let params = fields.map(|f| (f.param, f.value));
    params.chain(rest.iter().copied()).collect()
}

/// SQL that is true where `Delivery::settle` dead-letters a pending row:
/// its last allowed lease has run out. Binds `:max_attempts` and `:now`.
/// (`attempts > 0` always holds there, `max_attempts` being at least 1; it
/// lets SQLite use the index of claimed pending rows. Of two lower bounds
/// SQLite seeks on the first it is given: `:max_attempts` comes first, so
/// the index is entered at the last attempts, not at the first; tests in
/// `ops::pull` read the bytecode to hold SQLite to it.)
pub(crate) const UNSETTLED: &str =
    "(status = 0 AND attempts >= :max_attempts AND attempts > 0 AND visible_at <= :now)";

/// Reads one row selected with [`EVENT_COLUMNS`]: its sequence, the event
/// as callers see it at `now`, and its delivery state as stored.
pub(crate) fn stored_from_row(
    tenant: &TenantId,
    row: &Row<'_>,
    now: Timestamp,
    policy: &RetryPolicy,
) -> Result<(i64, Event, Delivery)> {
    let seq: i64 = row.get(0).map_err(storage)?;
    let id = EventId::from_bytes(row.get(1).map_err(storage)?);
    // Not parsed: the text was checked when it was stored, and a payload
    // that cannot be decoded fails only its own decoding, not this read.
    let payload = match row.get_ref(5).map_err(storage)? {
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Payload::from_stored(text),
            Err(e) => Payload::damaged(format!("the stored payload is not UTF-8: {e}")),
        },
        other => Payload::damaged(format!(
            "the stored payload is {:?}, not text",
            other.data_type()
        )),
    };
    let delivery = delivery_at(row, 8, id)?;
    let mut event = Event::new(tenant.clone(), id, payload);
    event.source = row.get(2).map_err(storage)?;
    event.event_type = row.get(3).map_err(storage)?;
    event.topic = row.get(4).map_err(storage)?;
    event.idempotency_key = row.get(6).map_err(storage)?;
    event.client_id = row.get(7).map_err(storage)?;
    let seen = delivery.settle(now, policy);
    event.status = seen.status;
    event.attempts = seen.attempts;
    event.leased_until = seen.leased_until();
    Ok((seq, event, delivery))
}

/// Reads the delivery state from the columns starting at `at`.
pub(crate) fn delivery_at(row: &Row<'_>, at: usize, id: EventId) -> Result<Delivery> {
    let status: u8 = row.get(at).map_err(storage)?;
    let status = EventStatus::from_code(status)
        .ok_or_else(|| corrupt(format!("status {status} of {id}")))?;
    let nonce: Option<i64> = row.get(at + 3).map_err(storage)?;
    let expires: Option<i64> = row.get(at + 4).map_err(storage)?;
    let acked_at: Option<i64> = row.get(at + 5).map_err(storage)?;
    Ok(Delivery {
        status,
        attempts: row.get(at + 1).map_err(storage)?,
        visible_at: timestamp(row.get(at + 2).map_err(storage)?),
        lease: nonce.zip(expires).map(|(n, e)| (n as u64, timestamp(e))),
        acked_at: acked_at.map(timestamp),
    })
}

/// The row sequence and delivery state of event `id` in `tenant`, if it
/// exists.
pub(crate) fn load_delivery(
    conn: &Connection,
    tenant: &TenantId,
    id: EventId,
) -> Result<Option<(i64, Delivery)>> {
    let sql = format!("SELECT seq, {DELIVERY_COLUMNS} FROM events WHERE id = ?1 AND tenant = ?2");
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    stmt.query_row(params![id.to_bytes(), tenant.as_str()], |row| {
        Ok(row
            .get(0)
            .map_err(storage)
            .and_then(|seq| Ok((seq, delivery_at(row, 1, id)?))))
    })
    .optional()
    .map_err(storage)?
    .transpose()
}

/// Loads event `id`'s delivery state as of `now` (settled), lets `f`
/// change it, and saves it if it differs from what was stored. `None` if
/// the event does not exist in `tenant`.
pub(crate) fn change_delivery<T>(
    conn: &Connection,
    tenant: &TenantId,
    id: EventId,
    (now, policy): (Timestamp, &RetryPolicy),
    f: impl FnOnce(&mut Delivery) -> Result<T>,
) -> Result<Option<T>> {
    let Some((seq, stored)) = load_delivery(conn, tenant, id)? else {
        return Ok(None);
    };
    let mut delivery = stored.settle(now, policy);
    let out = f(&mut delivery)?;
    if delivery != stored {
        save_delivery(conn, seq, &stored, &delivery)?;
    }
    Ok(Some(out))
}

/// Writes back the delivery state of the row `seq`, stored as `before`
/// (by its row number: the table itself, no index to look it up in):
/// only the columns that changed, since SQLite updates every index (and
/// fires every trigger) of a column it sets, changed or not; with the
/// indexes of schema v5 that was most of a claim's or an ack's time.
pub(crate) fn save_delivery(
    conn: &Connection,
    seq: i64,
    before: &Delivery,
    after: &Delivery,
) -> Result<()> {
    let status = after.status.code();
    let visible_at = millis(after.visible_at);
    let lease_token = after.lease.map(|(nonce, _)| nonce as i64);
    let lease_expires_at = after.lease.map(|(_, expires)| millis(expires));
    let acked_at = after.acked_at.map(millis);
    let columns: [(bool, &str, &dyn ToSql); 6] = [
        (before.status != after.status, "status", &status),
        (
            before.attempts != after.attempts,
            "attempts",
            &after.attempts,
        ),
        (
            before.visible_at != after.visible_at,
            "visible_at",
            &visible_at,
        ),
        (before.lease != after.lease, "lease_token", &lease_token),
        (
            before.lease != after.lease,
            "lease_expires_at",
            &lease_expires_at,
        ),
        (before.acked_at != after.acked_at, "acked_at", &acked_at),
    ];
    let changed: Vec<(&str, &dyn ToSql)> = columns
        .into_iter()
        .filter(|(changed, ..)| *changed)
        .map(|(_, column, value)| (column, value))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    // ?1 is the row, then one parameter a changed column.
    let set: Vec<String> = (changed.iter().enumerate())
        .map(|(i, (column, _))| format!("{column} = ?{}", i + 2))
        .collect();
    let sql = format!("UPDATE events SET {} WHERE seq = ?1", set.join(", "));
    let params: Vec<&dyn ToSql> = std::iter::once(&seq as &dyn ToSql)
        .chain(changed.iter().map(|(_, value)| *value))
        .collect();
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| stmt.execute(&*params))
        .map(|_| ())
        .map_err(storage)
}

/// A row sequence as a cursor position.
pub(crate) fn position(seq: i64) -> Position {
    Position::sequence(seq.max(0) as u64)
}

/// A cursor position as a row sequence; `InvalidInput` if it is not one.
pub(crate) fn seq(position: &Position) -> Result<i64> {
    Ok(i64::try_from(position.as_sequence()?).unwrap_or(i64::MAX))
}

/// A timestamp as stored.
pub(crate) fn millis(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

/// A stored timestamp.
pub(crate) fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms.max(0) as u64)
}
