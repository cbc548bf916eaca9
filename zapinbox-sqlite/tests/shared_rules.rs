//! Retention, the idempotency window and `max_attempts` are stored in the
//! file by its first open and shared by every process that opens it.

mod harness;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use zapinbox_core::{
    Backend, ClaimQuery, Error, Inbox, NewEvent, PullQuery, QueueConfig, RetryPolicy, TenantId,
};
use zapinbox_sqlite::{SharedRules, SqliteBackend};

const CHILD_ENV: &str = "ZAPINBOX_RULES_CHILD_DB";

fn tenant() -> TenantId {
    TenantId::new("rules").expect("tenant")
}

fn strict() -> QueueConfig {
    QueueConfig::default()
        .with_retention(Duration::from_secs(3600))
        .with_idempotency_window(Duration::from_secs(600))
        .with_retry(RetryPolicy::default().with_max_attempts(2))
}

/// The other process: opens the file with the default rules, which is
/// refused; then adopts the file's, and fails one event twice.
async fn child(path: &Path) {
    match SqliteBackend::open(path).await {
        Err(e) => println!("RESULT refused {e}"),
        Ok(_) => println!("RESULT opened with other rules"),
    }
    let backend = SqliteBackend::builder(path)
        .shared_rules(SharedRules::Adopt)
        .open()
        .await
        .expect("adopt");
    let config = backend.config();
    println!(
        "RESULT adopted retention={:?} window={:?} max_attempts={}",
        config.retention, config.idempotency_window, config.retry.max_attempts
    );
    let inbox = Inbox::new(backend.clone());
    let id = inbox
        .ingest(&tenant(), NewEvent::new(json!({ "by": "child" })))
        .await
        .expect("ingest")
        .id;
    let mut last = None;
    for _ in 0..2 {
        let leased = inbox
            .claim(&tenant(), ClaimQuery::new())
            .await
            .expect("claim")
            .pop()
            .expect("the event is claimable");
        assert_eq!(leased.event.id, id);
        last = Some(
            inbox
                .release(&tenant(), leased.token, Some(Duration::ZERO))
                .await
                .expect("release"),
        );
    }
    println!("RESULT second release {last:?} of {id}");
    backend.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the other process's side: started by the test below with --ignored"]
async fn child_process_entry_point() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&path)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_on_a_file_follows_its_stored_rules() {
    let harness = harness::SqliteHarness::new();
    let path = harness.path();
    let backend = SqliteBackend::builder(&path)
        .config(strict())
        .open()
        .await
        .expect("the first open stores its rules");
    let output = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            harness::child_process()
                .env(CHILD_ENV, &path)
                .stdout(Stdio::piped())
                .output()
        }
    })
    .await
    .expect("join")
    .expect("run the other process");
    assert!(
        output.status.success(),
        "the other process finished cleanly"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results = harness::results(&stdout);
    assert_eq!(results.len(), 3, "{stdout}");
    assert!(
        results[0].starts_with("refused")
            && results[0].contains("retention 3600s")
            && results[0].contains("retention 604800s")
            && results[0].contains("max_attempts 2")
            && results[0].contains("max_attempts 5"),
        "a different open is refused naming both: {}",
        results[0]
    );
    assert_eq!(
        results[1],
        "adopted retention=3600s window=600s max_attempts=2"
    );
    assert!(
        results[2].starts_with("second release Some(DeadLettered)"),
        "the other process dead-letters after the shared max_attempts: {}",
        results[2]
    );

    let inbox = Inbox::new(backend.clone());
    let dead = inbox
        .dead_letters(&tenant(), PullQuery::new())
        .await
        .expect("dead letters");
    assert_eq!(dead.events.len(), 1, "both processes agree: a dead letter");
    assert!(
        inbox
            .pull(&tenant(), PullQuery::new())
            .await
            .expect("pull")
            .events
            .is_empty()
    );
    backend.close().await.expect("close");

    // Replacing the rules: later opens follow the new ones.
    let looser = strict().with_retention(Duration::from_secs(7200));
    let r = SqliteBackend::builder(&path)
        .config(looser.clone())
        .open()
        .await;
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    SqliteBackend::builder(&path)
        .config(looser.clone())
        .shared_rules(SharedRules::Replace)
        .open()
        .await
        .expect("replace")
        .close()
        .await
        .expect("close");
    let reopened = SqliteBackend::builder(&path)
        .config(looser)
        .open()
        .await
        .expect("the new rules are the file's");
    assert_eq!(reopened.config().retention, Duration::from_secs(7200));
    reopened.close().await.expect("close");
    let r = SqliteBackend::builder(&path).config(strict()).open().await;
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
}
