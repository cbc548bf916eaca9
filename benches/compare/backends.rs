//! The backends the workloads run on: one factory each.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use zapinbox::sqlite::{Durability, SqliteBackend};
use zapinbox::{Backend, MemoryBackend, QueueConfig};

/// A backend opened for one workload.
pub struct Opened {
    pub backend: Arc<dyn Backend>,
    /// Transactions committed so far, where the backend counts them.
    pub commits: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
}

/// Opens a fresh backend for one workload.
#[async_trait]
pub trait BenchBackend: Send + Sync {
    /// The name in the report.
    fn name(&self) -> &'static str;
    /// A fresh backend whose files, if any, live in `dir`.
    async fn open(&self, dir: &Path) -> Opened;
    /// Whether the raw SQLite baselines apply to it.
    fn has_raw_baseline(&self) -> bool;
}

/// Every backend this build can benchmark.
pub fn all() -> Vec<Box<dyn BenchBackend>> {
    vec![Box::new(Sqlite), Box::new(Memory)]
}

pub struct Sqlite;

#[async_trait]
impl BenchBackend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn open(&self, dir: &Path) -> Opened {
        let backend = SqliteBackend::builder(dir.join("bench.db"))
            .durability(Durability::Full)
            .config(QueueConfig::default())
            .open()
            .await
            .expect("open SQLite");
        let counter = backend.clone();
        Opened {
            backend: Arc::new(backend),
            commits: Some(Box::new(move || counter.commits())),
        }
    }

    fn has_raw_baseline(&self) -> bool {
        true
    }
}

pub struct Memory;

#[async_trait]
impl BenchBackend for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn open(&self, _dir: &Path) -> Opened {
        Opened {
            backend: Arc::new(MemoryBackend::new()),
            commits: None,
        }
    }

    fn has_raw_baseline(&self) -> bool {
        false
    }
}
