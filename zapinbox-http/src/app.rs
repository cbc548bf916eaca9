//! The application: its shared state, its routes, and serving them until
//! shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};
use zapinbox_core::Inbox;

use crate::auth::Authenticator;
use crate::{Config, dashboard, events, health, listing, request_id, stats, stream, usage};

/// The HTTP service on one inbox: cheap to clone, shared by every request.
///
/// Build it with [`App::new`], get its routes with [`App::router`] (to
/// nest them in a larger axum app) or serve them with [`App::serve`].
#[derive(Clone)]
pub struct App {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) inbox: Inbox,
    pub(crate) auth: Authenticator,
    pub(crate) config: Config,
    pub(crate) metrics: Option<PrometheusHandle>,
    /// Set once shutdown begins: live streams end.
    pub(crate) closing: watch::Sender<bool>,
}

impl App {
    /// The service on `inbox`, as `config` says. Build the inbox with
    /// [`Config::inbox`] so the payload cap, rate limit and metering
    /// match; `/metrics` serves `metrics` when given (see
    /// [`crate::prometheus`]).
    pub fn new(inbox: Inbox, config: Config, metrics: Option<PrometheusHandle>) -> Self {
        let auth = Authenticator::new(config.api_keys.clone(), config.jwt_secret.as_deref());
        let (closing, _) = watch::channel(false);
        App {
            shared: Arc::new(Shared {
                inbox,
                auth,
                config,
                metrics,
                closing,
            }),
        }
    }

    /// The inbox it serves.
    pub fn inbox(&self) -> &Inbox {
        &self.shared.inbox
    }

    /// Every route, with request ids, the error envelope and CORS.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(dashboard::index))
            .route("/dashboard/{file}", get(dashboard::asset))
            .route("/health", get(health::health))
            .route("/health/detailed", get(health::detailed))
            .route("/metrics", get(health::metrics))
            .route("/openapi.json", get(health::openapi))
            .route("/events", post(events::create))
            .route("/inbox", get(listing::list))
            .route("/inbox/stream", get(stream::stream))
            .route("/inbox/{id}/ack", post(listing::ack))
            .route("/inbox/{id}", axum::routing::delete(listing::delete))
            .route("/usage", get(usage::usage))
            .route("/stats", get(stats::stats))
            .fallback(health::not_found)
            .method_not_allowed_fallback(health::method_not_allowed)
            .layer(self.cors())
            // Outermost: preflights and refusals carry a request id too.
            .layer(axum::middleware::from_fn(request_id::layer))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves; then takes no new
    /// connections, ends live streams, and returns once every request in
    /// flight is answered.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let closing = self.shared.closing.clone();
        let router = self.router();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                closing.send_replace(true);
            })
            .await
    }

    /// Resolves once shutdown has begun.
    pub(crate) fn closing(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut closing = self.shared.closing.subscribe();
        async move {
            // An error means the app is gone: closing too.
            let _ = closing.wait_for(|closing| *closing).await;
        }
    }

    /// Exact origins from the configuration; credentials allowed; methods
    /// and headers as asked; `X-Request-ID` readable by the page.
    fn cors(&self) -> CorsLayer {
        let origins: Vec<HeaderValue> = self
            .shared
            .config
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods(AllowMethods::list([
                Method::GET,
                Method::POST,
                Method::DELETE,
                Method::OPTIONS,
            ]))
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([request_id::REQUEST_ID, header::RETRY_AFTER])
            .max_age(std::time::Duration::from_secs(600))
    }
}
