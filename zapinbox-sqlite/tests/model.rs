//! Random operation sequences on SQLite and on the in-memory model, with
//! restarts, compared answer by answer.

mod harness;

use proptest::prelude::*;
use zapinbox_core::testkit::model::{compare_with_model, ops};

fn run(ops: Vec<zapinbox_core::testkit::model::Op>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let harness = harness::SqliteHarness::without_maintenance();
    runtime.block_on(compare_with_model(&harness, &ops));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_answers_like_the_model(ops in ops(80)) {
        run(ops);
    }
}
