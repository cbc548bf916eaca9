//! The whole conformance testkit on DynamoDB Local, every rule on one
//! shared table; and all tenant rules at once, to show they can share it.

mod support;

use support::DynamoHarness;

zapinbox_core::conformance_tests!(dynamo, DynamoHarness::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_rule_at_once_on_one_table() {
    zapinbox_core::testkit::run_tenant_rules(&DynamoHarness::new(), usize::MAX).await;
}
