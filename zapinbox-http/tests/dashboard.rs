//! The dashboard, end to end in headless Chromium: `tests/dashboard.mjs`
//! (playwright-core) drives the page of a server started here. The test
//! command installs both (`scripts/install-browser.sh`) and names them in
//! `ZAPINBOX_CHROMIUM` and `ZAPINBOX_PLAYWRIGHT`; without them this test
//! fails, saying how to get them.

mod support;

use support::{Server, sqlite};

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the dashboard test needs Chromium and playwright-core. \
             ./scripts/test.sh installs both (scripts/install-browser.sh)"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_events_live_and_settles_them() {
    let (chromium, playwright) = (
        required("ZAPINBOX_CHROMIUM"),
        required("ZAPINBOX_PLAYWRIGHT"),
    );
    let server = Server::start(sqlite(), &[]).await;
    // Kept from the run: `docs/dashboard.png` is one of these.
    let screenshot = std::env::var("ZAPINBOX_SCREENSHOT").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join(format!("zapinbox-dashboard-{}.png", std::process::id()))
            .display()
            .to_string()
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard.mjs");
    let run = tokio::process::Command::new("node")
        .arg(script)
        .env("URL", &server.url)
        .env("KEY", &server.key)
        .env("CHROMIUM", chromium)
        .env("PLAYWRIGHT", playwright)
        .env("SCREENSHOT", &screenshot)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the browser run ends within 2 minutes")
        .expect("node runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert!(said.contains("dashboard: ok"), "{said}");
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    server.shut_down().await.expect("a clean shutdown");
}
