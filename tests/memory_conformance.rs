//! The conformance suite on the in-memory reference backend.

zapinbox_core::conformance_tests!(zapinbox_core::testkit::MemoryHarness::new());
