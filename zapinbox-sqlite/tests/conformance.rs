//! The conformance suite on SQLite (default settings: `Durability::Full`).

mod harness;

// No maintenance task: a background purge would race the purge rules'
// counts and could meet a fault injected for a rule's own call; the
// upkeep tests run maintenance on its own.
zapinbox_core::conformance_tests!(sqlite, harness::SqliteHarness::without_maintenance());

/// Two suites at once on shared files, each rule's backend a writer of
/// its own (as separate processes would be): every rule stays inside its
/// tenants. A file keeps one set of shared rules, so rules that open with
/// the same settings share a file (most share one); no maintenance task,
/// since each rule's clock is its own and a purge by one would act on the
/// others' events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_suites_at_once_share_files() {
    let shared = harness::SharedFilesHarness::new();
    futures::join!(
        zapinbox_core::testkit::run_tenant_rules(&shared, usize::MAX),
        zapinbox_core::testkit::run_tenant_rules(&shared, usize::MAX)
    );
}
