//! The conformance suite on SQLite (default settings: `Durability::Full`).

mod harness;

zapinbox_core::conformance_tests!(sqlite, harness::SqliteHarness::new());

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
        zapinbox_core::testkit::run_tenant_rules(&shared),
        zapinbox_core::testkit::run_tenant_rules(&shared)
    );
}
