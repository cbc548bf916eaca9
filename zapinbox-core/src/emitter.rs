//! A buffered emitter: record usage or events without waiting for storage
//! (the source system "Module 3.1"'s fire-and-forget producer).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::{Backend, Inbox, NewEvent, TenantId, UsageRecord};

/// Where an emitter writes: through an inbox, or (the inbox's own usage
/// meter, which must not keep its inbox alive) straight to a backend.
pub(crate) enum Target {
    Inbox(Inbox),
    Backend(Arc<dyn Backend>),
}

/// What an emitter writes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Emit {
    /// A usage record, added to the backend's usage counts.
    Usage(UsageRecord),
    /// An event, ingested for the tenant.
    Event(TenantId, NewEvent),
}

/// How an emitter buffers and batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmitterConfig {
    /// Most items waiting; more are dropped and counted. Default 1 000.
    pub capacity: usize,
    /// Items written together. Default 100.
    pub batch: usize,
    /// Longest an item waits for its batch to fill. Default 500 ms.
    pub linger: Duration,
}

impl Default for EmitterConfig {
    fn default() -> Self {
        EmitterConfig {
            capacity: 1000,
            batch: 100,
            linger: Duration::from_millis(500),
        }
    }
}

/// What an emitter could not deliver, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dropped {
    /// The buffer was full.
    pub full: u64,
    /// The emitter was closed.
    pub closed: u64,
    /// The write failed (the error is logged).
    pub failed: u64,
}

#[derive(Default)]
struct DropCounts {
    full: AtomicU64,
    closed: AtomicU64,
    failed: AtomicU64,
}

enum Message {
    Item(Emit),
    Flush(oneshot::Sender<()>),
}

/// Records usage or events without waiting: [`BufferedEmitter::emit`]
/// never blocks; a task writes what was accepted through an [`Inbox`] in
/// batches of up to 100, or after 500 ms, whichever comes first. A full
/// buffer drops and counts ([`BufferedEmitter::dropped`]);
/// [`BufferedEmitter::close`] writes everything accepted before it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> zapinbox_core::Result<()> {
/// use serde_json::json;
/// use zapinbox_core::{BufferedEmitter, Emit, EmitterConfig, Inbox, MemoryBackend, NewEvent, PullQuery, TenantId};
///
/// let inbox = Inbox::new(MemoryBackend::new());
/// let audit = TenantId::new("audit")?;
/// let emitter = BufferedEmitter::new(inbox.clone(), EmitterConfig::default());
/// emitter.emit(Emit::Event(audit.clone(), NewEvent::new(json!({ "login": "ada" }))));
/// emitter.close().await;
/// assert_eq!(inbox.pull(&audit, PullQuery::new()).await?.events.len(), 1);
/// # Ok(()) }
/// ```
pub struct BufferedEmitter {
    queue: mpsc::Sender<Message>,
    dropped: Arc<DropCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl BufferedEmitter {
    /// Starts an emitter writing through `inbox` (on the current Tokio
    /// runtime; panics outside one).
    pub fn new(inbox: Inbox, config: EmitterConfig) -> Self {
        Self::to(Target::Inbox(inbox), config)
    }

    pub(crate) fn to(target: Target, config: EmitterConfig) -> Self {
        let (queue, items) = mpsc::channel(config.capacity.max(1));
        let dropped = Arc::new(DropCounts::default());
        let task = tokio::spawn(run(target, config, items, Arc::clone(&dropped)));
        BufferedEmitter {
            queue,
            dropped,
            task,
        }
    }

    /// Accepts `item` for writing, or drops and counts it if the buffer is
    /// full or the emitter closed. Never waits. Returns whether it was
    /// accepted.
    pub fn emit(&self, item: Emit) -> bool {
        match self.queue.try_send(Message::Item(item)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.full.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.dropped.closed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Writes everything accepted so far, and waits until it is written
    /// (or dropped as failed).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// What was dropped so far, by reason.
    pub fn dropped(&self) -> Dropped {
        Dropped {
            full: self.dropped.full.load(Ordering::Relaxed),
            closed: self.dropped.closed.load(Ordering::Relaxed),
            failed: self.dropped.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, writes everything accepted, and returns what was
    /// dropped in all.
    pub async fn close(self) -> Dropped {
        let BufferedEmitter {
            queue,
            dropped,
            task,
        } = self;
        drop(queue);
        let _ = task.await;
        Dropped {
            full: dropped.full.load(Ordering::Relaxed),
            closed: dropped.closed.load(Ordering::Relaxed),
            failed: dropped.failed.load(Ordering::Relaxed),
        }
    }
}

/// Gathers batches and writes them until the queue closes and is empty.
async fn run(
    inbox: Target,
    config: EmitterConfig,
    mut items: mpsc::Receiver<Message>,
    dropped: Arc<DropCounts>,
) {
    let batch = config.batch.max(1);
    let mut pending: Vec<Emit> = Vec::with_capacity(batch);
    loop {
        let message = if pending.is_empty() {
            items.recv().await
        } else {
            match tokio::time::timeout(config.linger, items.recv()).await {
                Ok(message) => message,
                Err(_) => {
                    write(&inbox, std::mem::take(&mut pending), &dropped).await;
                    continue;
                }
            }
        };
        match message {
            Some(Message::Item(item)) => {
                pending.push(item);
                if pending.len() >= batch {
                    write(&inbox, std::mem::take(&mut pending), &dropped).await;
                }
            }
            Some(Message::Flush(done)) => {
                write(&inbox, std::mem::take(&mut pending), &dropped).await;
                let _ = done.send(());
            }
            None => {
                write(&inbox, pending, &dropped).await;
                return;
            }
        }
    }
}

/// Writes one batch: usage in one call, events one batch per tenant.
async fn write(target: &Target, items: Vec<Emit>, dropped: &DropCounts) {
    let mut usage = Vec::new();
    let mut events: HashMap<TenantId, Vec<NewEvent>> = HashMap::new();
    for item in items {
        match item {
            Emit::Usage(record) => usage.push(record),
            Emit::Event(tenant, event) => events.entry(tenant).or_default().push(event),
        }
    }
    let failed = |n: usize, e: crate::Error| {
        tracing::warn!(error = %e, dropped = n, "the emitter could not write");
        dropped.failed.fetch_add(n as u64, Ordering::Relaxed);
    };
    if !usage.is_empty() {
        let n = usage.len();
        let written = match target {
            Target::Inbox(inbox) => inbox.record_usage(usage).await,
            Target::Backend(backend) => match backend.metering() {
                Some(metering) => metering.add_usage(crate::sum_usage(usage)).await,
                None => Ok(()),
            },
        };
        if let Err(e) = written {
            failed(n, e);
        }
    }
    let Target::Inbox(inbox) = target else {
        return;
    };
    let most = inbox.limits().max_batch_events.max(1);
    for (tenant, mut events) in events {
        while !events.is_empty() {
            let rest = events.split_off(events.len().min(most));
            let n = events.len();
            if let Err(e) = inbox.ingest_batch(&tenant, events).await {
                failed(n, e);
            }
            events = rest;
        }
    }
}
