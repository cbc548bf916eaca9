//! `GET /usage?from=&to=`: the caller's metered usage for billing.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Serialize;
use serde_json::{Value, json};
use zapinbox_core::{Timestamp, UsageRecord, utc_day};

use crate::error::ApiError;
use crate::query::Params;
use crate::{App, Caller};

/// The longest range one request reads, in days.
const MAX_DAYS: u64 = 366;
const DAY_MS: u64 = 86_400_000;

/// Billable counts of one action.
#[derive(Default, Serialize)]
struct Total {
    events: u64,
    bytes: u64,
}

/// The caller's usage records from `from` to `to` (UTC dates, inclusive,
/// both today by default) and the billable totals of each action.
pub(crate) async fn usage(
    State(app): State<App>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let today = utc_day(app.shared.inbox.clock().now());
    let from = day(&params, "from")?.unwrap_or(today);
    let to = day(&params, "to")?.unwrap_or(today.max(from));
    if to < from || to - from >= MAX_DAYS {
        return Err(ApiError::invalid_query(
            "to",
            format!("must be on or after from, at most {MAX_DAYS} days on"),
        ));
    }
    let records = app.shared.inbox.usage(&caller.tenant, from..=to).await?;
    let mut totals: BTreeMap<&str, Total> = BTreeMap::new();
    for record in records.iter().filter(|r| r.key.billable) {
        let total = totals.entry(record.key.action.name()).or_default();
        total.events = total.events.saturating_add(record.count);
        total.bytes = total.bytes.saturating_add(record.bytes);
    }
    let records: Vec<Value> = records.iter().map(record).collect();
    Ok(Json(json!({
        "tenant": caller.tenant.as_str(),
        "from": date(from),
        "to": date(to),
        "records": records,
        "totals": totals,
    })))
}

/// A record with its day as a date.
fn record(r: &UsageRecord) -> Value {
    json!({
        "day": date(r.key.day),
        "client_id": r.key.client_id,
        "topic": r.key.topic,
        "action": r.key.action.name(),
        "billable": r.key.billable,
        "events": r.count,
        "bytes": r.bytes,
    })
}

/// The date parameter `name` (`YYYY-MM-DD`), as a UTC day number.
fn day(params: &Params, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(text) = params.last(name) else {
        return Ok(None);
    };
    crate::wire::parse_date(text)
        .map(|t| Some(utc_day(t)))
        .ok_or_else(|| ApiError::invalid_query(name, "must be a date, YYYY-MM-DD"))
}

/// A UTC day number as `YYYY-MM-DD`.
fn date(day: u64) -> String {
    let t = Timestamp::from_millis(day.saturating_mul(DAY_MS)).to_string();
    t.get(..10).unwrap_or(&t).to_owned()
}
