//! Shared by the test binaries: a conformance harness (a SQLite file in a
//! fresh temporary directory), and the child-process launcher of the
//! process tests. Not every binary uses every item.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tempfile::TempDir;
use zapinbox_core::testkit::Harness;
use zapinbox_core::{Backend, Fault, QueueConfig, Result};
use zapinbox_sqlite::SqliteBackend;

pub struct SqliteHarness {
    dir: TempDir,
    maintenance: bool,
}

impl SqliteHarness {
    pub fn new() -> Self {
        SqliteHarness {
            dir: tempfile::tempdir().expect("a temporary directory"),
            maintenance: true,
        }
    }

    /// A harness whose backends run no maintenance task: purges happen
    /// only when asked for, as in the in-memory model.
    pub fn without_maintenance() -> Self {
        SqliteHarness {
            maintenance: false,
            ..Self::new()
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("inbox.db")
    }
}

#[async_trait]
impl Harness for SqliteHarness {
    async fn open(&self, config: QueueConfig) -> Result<Arc<dyn Backend>> {
        let mut builder = SqliteBackend::builder(self.path()).config(config);
        if !self.maintenance {
            builder = builder.maintenance_interval(None);
        }
        let backend = builder.open().await?;
        Ok(Arc::new(backend))
    }

    fn faults(&self) -> Vec<Fault> {
        Fault::ALL.to_vec()
    }

    async fn inject(&self, backend: &Arc<dyn Backend>, fault: Fault) -> Result<()> {
        let any: &dyn std::any::Any = backend.as_ref();
        let sqlite = any
            .downcast_ref::<SqliteBackend>()
            .ok_or_else(|| zapinbox_core::Error::invalid("not a backend this harness opened"))?;
        sqlite.inject_fault(fault);
        Ok(())
    }
}

/// Backends on shared files, without maintenance: rules that open with the
/// same shared rules (retention, idempotency window, max attempts; a file
/// keeps one set, see `SharedRules`) share one file, as separate processes
/// would.
pub struct SharedFilesHarness {
    dir: TempDir,
}

impl SharedFilesHarness {
    pub fn new() -> Self {
        SharedFilesHarness {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

#[async_trait]
impl Harness for SharedFilesHarness {
    async fn open(&self, config: QueueConfig) -> Result<Arc<dyn Backend>> {
        let file = format!(
            "inbox-{}-{}-{}.db",
            config.retention.as_millis(),
            config.idempotency_window.as_millis(),
            config.retry.max_attempts
        );
        let backend = SqliteBackend::builder(self.dir.path().join(file))
            .config(config)
            .maintenance_interval(None)
            .open()
            .await?;
        Ok(Arc::new(backend))
    }
}

#[allow(unused_imports)]
pub use zapinbox_core::testkit::process::{child_process, finished, results};
