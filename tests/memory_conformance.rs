//! The conformance suite on the in-memory reference backend.

zapinbox_core::conformance_tests!(memory, zapinbox_core::testkit::MemoryHarness::new());
