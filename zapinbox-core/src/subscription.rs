//! Live subscriptions: a tenant's backlog after a cursor, then its new
//! events as they are committed, each with the cursor to resume from.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::changes::Changes;
use crate::{Cursor, Error, Event, Filter, Inbox, PullQuery, Result, TenantId};

/// One event of a subscription, with the cursor just after it: subscribe
/// (or pull) from that cursor to get exactly the events after this one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Subscribed {
    /// The event.
    pub event: Event,
    /// Where to resume after it.
    pub cursor: Cursor,
}

/// Concurrent subscriptions a tenant may hold by default, as the source
/// system "Ephemeral" allows per user.
pub const DEFAULT_SUBSCRIPTIONS_PER_TENANT: usize = 2;

/// How often a subscription looks again on a backend without a change
/// feed.
const POLL_WITHOUT_FEED: Duration = Duration::from_millis(100);

/// Events a subscription reads at a time: its whole buffer.
const PAGE: u32 = 100;

/// Live subscriptions per tenant, bounded.
#[derive(Debug)]
pub(crate) struct Slots {
    limit: usize,
    taken: Mutex<HashMap<TenantId, usize>>,
}

impl Slots {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Slots {
            limit,
            taken: Mutex::default(),
        })
    }

    /// Takes one of `tenant`'s slots until the returned guard drops.
    fn take(self: &Arc<Self>, tenant: &TenantId) -> Result<Slot> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let held = taken.entry(tenant.clone()).or_default();
        if *held >= self.limit {
            return Err(Error::TooManySubscriptions { limit: self.limit });
        }
        *held += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            tenant: tenant.clone(),
        })
    }
}

/// A subscription's place among its tenant's; freed when dropped.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    tenant: TenantId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.slots.taken.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = taken.get_mut(&self.tenant) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                taken.remove(&self.tenant);
            }
        }
    }
}

/// Where a subscription is.
struct Following {
    inbox: Inbox,
    tenant: TenantId,
    query: PullQuery,
    changes: Option<Changes>,
    buffered: VecDeque<Subscribed>,
    /// Whether the last page said more events may follow at once.
    more: bool,
    /// After an error: the stream has ended.
    done: bool,
    _slot: Slot,
}

impl Inbox {
    /// Pending events of `tenant` passing `filter`, in commit order: first
    /// those after `from` (all of them without a cursor), then each new one
    /// as it is committed, by this process or (where the backend sees
    /// them, see [`Capabilities::shared_writes`](crate::Capabilities)) by
    /// another. Nothing is skipped or repeated, also at the hand-over from
    /// backlog to live events; each item carries the cursor to resume
    /// after it.
    ///
    /// What it shows is the inbox as it is when the stream gets there: an
    /// event acked or deleted before the stream reaches it is not shown. A
    /// subscription reads at most 100 events ahead of its reader, so a
    /// slow reader costs no memory; it catches up from its cursor.
    ///
    /// A tenant holds at most
    /// [`InboxBuilder::max_subscriptions`](crate::InboxBuilder::max_subscriptions)
    /// streams at once (default 2): the next is `TooManySubscriptions`, and
    /// dropping a stream frees its place at once. Subscribing counts once
    /// against the rate limit; reading the stream does not. The stream
    /// ends after yielding an error; subscribe again from the last cursor.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> zapinbox_core::Result<()> {
    /// use futures::StreamExt;
    /// use serde_json::json;
    /// use zapinbox_core::{Filter, Inbox, MemoryBackend, NewEvent, TenantId};
    ///
    /// let inbox = Inbox::new(MemoryBackend::new());
    /// let tenant = TenantId::new("acme")?;
    /// inbox.ingest(&tenant, NewEvent::new(json!({ "n": 1 }))).await?;
    /// let mut live = Box::pin(inbox.subscribe(&tenant, Filter::default(), None).await?);
    /// let first = live.next().await.expect("the backlog")?;
    /// inbox.ingest(&tenant, NewEvent::new(json!({ "n": 2 }))).await?;
    /// let second = live.next().await.expect("a live event")?;
    /// assert_eq!(second.event.payload.as_value()?["n"], 2);
    /// // Later: resume exactly after `first`.
    /// drop(live);
    /// let mut again = Box::pin(inbox.subscribe(&tenant, Filter::default(), Some(first.cursor)).await?);
    /// assert_eq!(again.next().await.expect("the rest")?.event.id, second.event.id);
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(
        &self,
        tenant: &TenantId,
        filter: Filter,
        from: Option<Cursor>,
    ) -> Result<impl Stream<Item = Result<Subscribed>> + Send + use<>> {
        self.admit_subscription(tenant)?;
        let slot = self
            .slots()
            .take(tenant)
            .inspect_err(crate::telemetry::refused)?;
        let mut query = PullQuery::new().filter(filter).limit(PAGE);
        if let Some(cursor) = from {
            query = query.after(cursor);
            // Checked now, so a bad cursor fails the call, not the stream.
            query.resolve(tenant, self.backend().name())?;
        }
        let following = Following {
            changes: self.backend().changes(tenant),
            inbox: self.clone(),
            tenant: tenant.clone(),
            query,
            buffered: VecDeque::new(),
            more: true,
            done: false,
            _slot: slot,
        };
        Ok(futures::stream::unfold(following, next))
    }
}

/// The next item of a subscription, waiting for one if need be.
async fn next(mut s: Following) -> Option<(Result<Subscribed>, Following)> {
    loop {
        if let Some(item) = s.buffered.pop_front() {
            let now = s.inbox.clock().now();
            crate::telemetry::subscription_lag(
                now.saturating_duration_since(item.event.created_at),
            );
            // Metered as delivered when handed over, not when read ahead.
            let delivered = std::iter::once(&item.event);
            s.inbox
                .meter_events(&s.tenant, crate::Action::Deliver, delivered);
            return Some((Ok(item), s));
        }
        if s.done {
            return None;
        }
        if !s.more {
            // Wait for a commit after the last read (changes since were
            // marked unseen before it, so none is missed).
            match &mut s.changes {
                Some(changes) => {
                    if !changes.changed().await {
                        return None;
                    }
                }
                None => tokio::time::sleep(POLL_WITHOUT_FEED).await,
            }
        }
        if let Some(changes) = &mut s.changes {
            changes.mark_seen();
        }
        let tenant = s.tenant.clone();
        match s.inbox.backend().pull(&tenant, s.query.clone()).await {
            Ok(mut page) => {
                let cursors = (0..page.events.len()).map(|i| page.cursor_after(i));
                let cursors: Vec<Option<Cursor>> = cursors.collect();
                let events = std::mem::take(&mut page.events);
                for (event, cursor) in events.into_iter().zip(cursors) {
                    if let Some(cursor) = cursor {
                        s.buffered.push_back(Subscribed { event, cursor });
                    }
                }
                s.more = page.has_more;
                if let Some(cursor) = page.next_cursor {
                    s.query = s.query.clone().after(cursor);
                }
            }
            Err(e) => {
                s.done = true;
                return Some((Err(e), s));
            }
        }
    }
}
