//! ZapStream's HTTP API on any zapinbox backend, with token auth, usage
//! for billing, Prometheus metrics and a live dashboard.
//!
//! Existing ZapStream clients work unchanged: the same paths, JSON shapes,
//! status codes and error envelope, with ZapStream's bugs fixed (see the
//! README's "ZapStream compatibility"). Build an [`App`] on an inbox and
//! serve it:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use zapinbox_core::MemoryBackend;
//! use zapinbox_http::{App, Config};
//!
//! let config = Config::default(); // or Config::from_env()?
//! let inbox = config.inbox(MemoryBackend::with_config(config.queue_config()));
//! let app = App::new(inbox, config, None);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}", listener.local_addr()?);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(app.serve(listener, async { stopped.await.ok(); }));
//!
//! let http = reqwest::Client::new();
//! let created: serde_json::Value = http
//!     .post(format!("{url}/events"))
//!     .header("X-API-Key", "dev_key_123")
//!     .json(&serde_json::json!({ "topic": "orders", "payload": { "order": 42 } }))
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(created["status"], "accepted");
//!
//! let inbox: serde_json::Value = http
//!     .get(format!("{url}/inbox?topic=orders"))
//!     .bearer_auth("dev_key_123")
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(inbox["events"][0]["id"], created["id"]);
//!
//! stop.send(()).ok();
//! server.await??;
//! # Ok(()) }
//! ```
//!
//! The routes:
//!
//! | Route | What it does |
//! |---|---|
//! | `GET /` | the dashboard (for browsers), or an index of routes |
//! | `GET /health`, `/health/detailed` | a read from the storage, timed: 200 or 503 |
//! | `POST /events` | ingest one event (`X-Idempotency-Key` optional) |
//! | `GET /inbox` | pending events: `limit`, `cursor`, `topic`, `type`, `source`, `since`, `order` |
//! | `POST /inbox/{id}/ack`, `DELETE /inbox/{id}` | settle one event |
//! | `GET /inbox/stream` | server-sent events, resumable with `Last-Event-ID` |
//! | `GET /stats` | the tenant's counters |
//! | `GET /usage?from=&to=` | the tenant's metered usage and billable totals |
//! | `GET /metrics` | Prometheus text |
//! | `GET /openapi.json` | this API, described |
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod app;
mod auth;
mod config;
mod dashboard;
mod error;
mod events;
mod health;
mod listing;
mod query;
mod request_id;
mod stats;
mod stream;
mod usage;
mod wire;

pub use app::App;
pub use auth::Caller;
pub use config::{Config, ConfigError, DEV_KEY, DEV_TENANT};
pub use error::ApiError;
pub use request_id::{REQUEST_ID, RequestId};

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process's Prometheus recorder, installed on first call, for
/// [`App::new`]. `None` if another `metrics` recorder was installed first
/// (then `/metrics` answers 501, and that recorder has the figures).
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
}
