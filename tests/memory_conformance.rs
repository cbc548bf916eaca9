//! The conformance suite on the in-memory reference backend: as it is, as a
//! narrower backend would declare itself, and shared by two suites at once.

use zapinbox_core::testkit::{MemoryHarness, run_tenant_rules};
use zapinbox_core::{Capabilities, ClaimOrder, MemoryBackend};

zapinbox_core::conformance_tests!(memory, MemoryHarness::new());

/// A backend without stats or retention, with smaller payloads and
/// batches and claims in no promised order: every rule about what it lacks
/// asserts `Unsupported`, every limit is enforced by the inbox.
fn narrow() -> MemoryBackend {
    let capabilities = Capabilities::unlimited()
        .with_max_payload_bytes(256 * 1024)
        .with_max_batch(100, 1024 * 1024)
        .with_claim_order(ClaimOrder::Approximate);
    MemoryBackend::new()
        .declaring(capabilities)
        .without_optional_operations()
}

zapinbox_core::conformance_tests!(memory_narrow, MemoryHarness::on(narrow()));

/// Two suites at once on one store: every rule stays inside its tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_suites_at_once_share_one_store() {
    let shared = MemoryHarness::new();
    futures::join!(
        run_tenant_rules(&shared, usize::MAX),
        run_tenant_rules(&shared, usize::MAX)
    );
}
