//! `GET /stats`: the caller's counters, for the dashboard.

use axum::Json;
use axum::extract::State;
use zapinbox_core::TenantStats;

use crate::error::ApiError;
use crate::{App, Caller};

/// Pending, leased, dead-lettered and kept acked events, and the age of
/// the oldest pending one (501 on storage that does not count them).
pub(crate) async fn stats(
    State(app): State<App>,
    caller: Caller,
) -> Result<Json<TenantStats>, ApiError> {
    Ok(Json(app.shared.inbox.tenant_stats(&caller.tenant).await?))
}
