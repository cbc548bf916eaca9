//! Pull queries, filters and pages.

use serde::{Deserialize, Serialize};

use crate::cursor::{Cursor, Position};
use crate::{Error, Event, Result, TenantId, Timestamp};

/// The largest page a pull may ask for.
pub const MAX_PAGE: u32 = 1000;

/// Which events a pull, claim or subscription selects. Every field that is
/// set must match (AND); string fields match exactly, case-sensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Filter {
    /// Only events with this topic.
    pub topic: Option<String>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only events from this source.
    pub source: Option<String>,
    /// Only events created at or after this time.
    pub since: Option<Timestamp>,
}

impl Filter {
    /// Whether `event` passes this filter.
    pub fn matches(&self, event: &Event) -> bool {
        fn eq(want: &Option<String>, have: &Option<String>) -> bool {
            want.is_none() || want == have
        }
        eq(&self.topic, &event.topic)
            && eq(&self.event_type, &event.event_type)
            && eq(&self.source, &event.source)
            && self.since.is_none_or(|since| event.created_at >= since)
    }
}

/// Oldest first or newest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Oldest first, in commit order (the default).
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// A pull: which pending events, in which order, how many, from where.
///
/// ```
/// use zapinbox_core::{Order, PullQuery};
/// let q = PullQuery::new().topic("orders").order(Order::Desc).limit(20);
/// assert_eq!(q.limit, 20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PullQuery {
    /// Which events.
    pub filter: Filter,
    /// Oldest or newest first.
    pub order: Order,
    /// Page size, 1 to 1000. Default 100.
    pub limit: u32,
    /// Where the previous page ended; `None` starts at the beginning.
    pub cursor: Option<Cursor>,
}

impl Default for PullQuery {
    fn default() -> Self {
        PullQuery {
            filter: Filter::default(),
            order: Order::Asc,
            limit: 100,
            cursor: None,
        }
    }
}

impl PullQuery {
    /// The first page of all pending events, oldest first, 100 at a time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only events with this topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.filter.topic = Some(topic.into());
        self
    }

    /// Only events of this type.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.filter.event_type = Some(event_type.into());
        self
    }

    /// Only events from this source.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.filter.source = Some(source.into());
        self
    }

    /// Only events created at or after `since`.
    pub fn since(mut self, since: Timestamp) -> Self {
        self.filter.since = Some(since);
        self
    }

    /// Replaces the whole filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets the order.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Continues after the page that returned `cursor`.
    pub fn after(mut self, cursor: Cursor) -> Self {
        self.cursor = Some(cursor);
        self
    }

    /// Checks the limit and decodes the cursor for `tenant` on the backend
    /// named `backend`. Backends call this first.
    pub fn resolve(&self, tenant: &TenantId, backend: &str) -> Result<ResolvedQuery> {
        if self.limit == 0 || self.limit > MAX_PAGE {
            return Err(Error::invalid(format!(
                "limit must be 1 to {MAX_PAGE}, got {}",
                self.limit
            )));
        }
        let start = match &self.cursor {
            Some(c) => Some(c.decode(tenant, backend, self.order)?),
            None => None,
        };
        Ok(ResolvedQuery {
            start,
            limit: self.limit as usize,
        })
    }
}

/// A pull query's checked limit and decoded starting position.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResolvedQuery {
    /// Exclusive start: after this position (ascending) or before it
    /// (descending). `None` is the beginning (or, descending, the end).
    pub start: Option<Position>,
    /// Page size.
    pub limit: usize,
}

/// One page of a pull.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Page {
    /// The events, in the order asked for.
    pub events: Vec<Event>,
    /// Where to continue: after this page's last event, where the backend
    /// stopped looking (see `has_more`), or where this page started if it
    /// is empty. Keep it to read what arrives later (oldest first, nothing
    /// is skipped or repeated). `None` only for an empty page read from the
    /// beginning.
    pub next_cursor: Option<Cursor>,
    /// Whether more matching events may exist past this page: always when
    /// it is full and more were found, and also when the backend stopped
    /// looking before the page was full (a page costs bounded work, so a
    /// page with a rare filter can hold fewer events than asked for, even
    /// none). Follow `next_cursor` while this is true.
    pub has_more: bool,
    /// Each event's position, to make its cursor on demand.
    #[serde(skip)]
    positions: Positions,
}

/// The positions of a page's events and the scope their cursors are bound
/// to: encoded only when asked for ([`Page::cursor_after`]).
#[derive(Clone, Debug, Default, PartialEq)]
struct Positions {
    of: Vec<Position>,
    scope: Option<(TenantId, String, Order)>,
}

impl Page {
    /// Builds a page from up to `limit + 1` events in order, each with its
    /// backend position: the extra one only tells that more exist.
    pub fn from_positions(
        rows: Vec<(Position, Event)>,
        resolved: ResolvedQuery,
        tenant: &TenantId,
        backend: &str,
        order: Order,
    ) -> Page {
        Self::from_scan(rows, resolved, None, tenant, backend, order)
    }

    /// Like [`Page::from_positions`], for a backend that bounds the work
    /// of one page: `scanned_to` is where it stopped looking, before the
    /// page was full. The page then says `has_more` and resumes from there,
    /// so a caller following cursors still sees every event once.
    pub fn from_scan(
        mut rows: Vec<(Position, Event)>,
        resolved: ResolvedQuery,
        scanned_to: Option<Position>,
        tenant: &TenantId,
        backend: &str,
        order: Order,
    ) -> Page {
        let (next_cursor, has_more) = if rows.len() <= resolved.limit
            && let Some(scanned_to) = scanned_to
        {
            (
                Some(Cursor::encode(tenant, backend, order, &scanned_to)),
                true,
            )
        } else {
            let has_more = rows.len() > resolved.limit;
            rows.truncate(resolved.limit);
            let resume = rows.last().map(|(pos, _)| pos).or(resolved.start.as_ref());
            let next = resume.map(|pos| Cursor::encode(tenant, backend, order, pos));
            (next, has_more)
        };
        let (of, events) = rows.into_iter().unzip();
        Page {
            events,
            next_cursor,
            has_more,
            positions: Positions {
                of,
                scope: Some((tenant.clone(), backend.to_owned(), order)),
            },
        }
    }

    /// The cursor just after the event at `index` of this page: a pull (or
    /// subscription) from it resumes with the events after that one.
    /// `None` past the end.
    pub fn cursor_after(&self, index: usize) -> Option<Cursor> {
        let position = self.positions.of.get(index)?;
        let (tenant, backend, order) = self.positions.scope.as_ref()?;
        Some(Cursor::encode(tenant, backend, *order, position))
    }
}
