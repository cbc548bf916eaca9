//! The conformance suite on SQLite (default settings: `Durability::Full`).

mod harness;

zapinbox_core::conformance_tests!(sqlite, harness::SqliteHarness::new());
