//! A conformance harness: a SQLite file in a fresh temporary directory.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tempfile::TempDir;
use zapinbox_core::testkit::Harness;
use zapinbox_core::{Backend, QueueConfig, Result};
use zapinbox_sqlite::SqliteBackend;

pub struct SqliteHarness {
    dir: TempDir,
}

impl SqliteHarness {
    pub fn new() -> Self {
        SqliteHarness {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("inbox.db")
    }
}

#[async_trait]
impl Harness for SqliteHarness {
    async fn open(&self, config: QueueConfig) -> Result<Arc<dyn Backend>> {
        let backend = SqliteBackend::builder(self.path())
            .config(config)
            .open()
            .await?;
        Ok(Arc::new(backend))
    }
}
