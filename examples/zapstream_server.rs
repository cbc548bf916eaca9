//! ZapStream's HTTP API and a live dashboard, on any zapinbox storage.
//!
//!     cargo run --example zapstream_server
//!     ZAPINBOX_BACKEND=kafka cargo run --features kafka --example zapstream_server
//!     ZAPINBOX_BACKEND=dynamo ZAPINBOX_DYNAMO_ENDPOINT=http://127.0.0.1:8000 \
//!         cargo run --features dynamo --example zapstream_server
//!
//! Existing ZapStream clients work unchanged. Settings come from the
//! environment under ZapStream's names (`API_KEYS=key=tenant,…`,
//! `RATE_LIMIT_PER_MINUTE`, `MAX_PAYLOAD_BYTES`, `CORS_ALLOWED_ORIGINS`,
//! `DATABASE_URL=sqlite:///…`) plus `JWT_SECRET`, the `QUOTA_*_PER_DAY`
//! limits, `PORT` (default 8000; 0 picks a free one) and `BIND_ADDRESS`
//! (default 127.0.0.1): see `zapinbox_http::Config`. Without `API_KEYS`
//! it serves the dev key `dev_key_123`. Ctrl-C (or SIGTERM) stops it
//! gracefully: requests in flight are answered and live streams close.

mod support;

use zapinbox_http::{App, Config, DEV_KEY};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let storage = support::open("zapstream_server", config.queue_config()).await?;
    let inbox = config.inbox(storage.backend.clone());
    let app = App::new(inbox.clone(), config.clone(), zapinbox_http::prometheus());
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);

    println!("Storage: {}", storage.description);
    if let Some(tenant) = config.api_keys.get(DEV_KEY) {
        println!("Dev key: {DEV_KEY} (tenant {tenant})");
        println!(
            "Try:     curl -H 'X-API-Key: {DEV_KEY}' -d '{{\"payload\":{{\"hello\":1}}}}' {url}/events"
        );
    }
    println!("Dashboard: {url}/");
    println!("Listening on {url}");
    app.serve(listener, stop_signal()).await?;
    // Usage metered so far is written before the storage closes.
    inbox.close().await?;
    println!("Stopped.");
    Ok(())
}

/// Ctrl-C, or SIGTERM where there is one.
async fn stop_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
