//! Events: what callers send, what the inbox stores, what ingest answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::payload::{Body, MAX_PAYLOAD_DEPTH};
use crate::{Error, EventId, Payload, Result, TenantId, Timestamp};

/// An event to ingest.
///
/// The payload must be a JSON object, given as a [`Value`]
/// ([`NewEvent::new`]), as JSON text passed through untouched
/// ([`NewEvent::from_json`]), or as anything serializable
/// ([`NewEvent::from_serialize`]). It is checked when the event is
/// ingested.
///
/// ```
/// use serde_json::json;
/// use zapinbox_core::NewEvent;
///
/// let event = NewEvent::new(json!({ "order": 42 }))
///     .with_topic("orders")
///     .with_type("order.created")
///     .with_idempotency_key("order-42-created");
/// let same = NewEvent::from_json(r#"{"order": 42}"#);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NewEvent {
    /// Where the event came from, e.g. `billing`.
    pub source: Option<String>,
    /// What happened, e.g. `invoice.paid`.
    pub event_type: Option<String>,
    /// The stream it belongs to, e.g. `payments`.
    pub topic: Option<String>,
    /// The body: must be a JSON object.
    payload: Body,
    /// Makes retries safe: a second ingest with the same key and the same
    /// content within the idempotency window returns the first event.
    pub idempotency_key: Option<String>,
    /// Who produced it, for metering.
    pub client_id: Option<String>,
}

impl NewEvent {
    /// An event with this payload and no metadata.
    pub fn new(payload: Value) -> Self {
        Self::with_body(Body::Value(payload))
    }

    /// An event whose payload is this JSON text, stored as given (less
    /// surrounding whitespace) and returned without being re-encoded.
    pub fn from_json(text: impl Into<String>) -> Self {
        Self::with_body(Body::Text(text.into()))
    }

    /// An event whose payload is `value` encoded as JSON.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let text = serde_json::to_string(value)
            .map_err(|e| Error::invalid(format!("payload cannot be encoded: {e}")))?;
        Ok(Self::from_json(text))
    }

    fn with_body(payload: Body) -> Self {
        NewEvent {
            source: None,
            event_type: None,
            topic: None,
            payload,
            idempotency_key: None,
            client_id: None,
        }
    }

    /// Sets the source.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Sets the event type.
    pub fn with_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    /// Sets the topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the producing client's id.
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Checks the event against `limits` and encodes its payload once, for
    /// storage and for the idempotency fingerprint.
    pub fn validate(self, limits: &Limits) -> Result<ValidEvent> {
        self.check_fields(limits)?;
        let NewEvent {
            source,
            event_type,
            topic,
            mut payload,
            idempotency_key,
            client_id,
        } = self;
        let checked = payload.check(
            limits.max_payload_depth,
            limits.max_payload_bytes,
            idempotency_key.is_some(),
        )?;
        // Only a key needs the content compared: no hash without one.
        let fields = [&source, &event_type, &topic, &client_id];
        let idempotency = idempotency_key
            .zip(checked.value)
            .map(|(key, value)| (key, Fingerprint::of(fields, &value)));
        Ok(ValidEvent {
            source,
            event_type,
            topic,
            client_id,
            idempotency,
            payload: checked.payload,
        })
    }

    fn check_fields(&self, limits: &Limits) -> Result<()> {
        check_field("source", self.source.as_deref(), limits.max_field_chars)?;
        check_field(
            "event_type",
            self.event_type.as_deref(),
            limits.max_field_chars,
        )?;
        check_field("topic", self.topic.as_deref(), limits.max_field_chars)?;
        check_field(
            "client_id",
            self.client_id.as_deref(),
            limits.max_field_chars,
        )?;
        if let Some(key) = &self.idempotency_key {
            limits.check_idempotency_key(key)?;
        }
        Ok(())
    }
}

fn check_field(name: &str, value: Option<&str>, max_chars: usize) -> Result<()> {
    let Some(value) = value else { return Ok(()) };
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(Error::invalid(format!(
            "{name} is {chars} characters, over the limit of {max_chars}"
        )));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{name} must not contain control characters, found {c:?}"
        )));
    }
    Ok(())
}

/// Limits on what one request may carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Limits {
    /// Largest payload, as stored JSON text, in bytes. Default 512 KiB.
    pub max_payload_bytes: usize,
    /// Deepest nesting of arrays and objects in a payload (the outer
    /// object is level 1). Default 64, at most [`MAX_PAYLOAD_DEPTH`] (127),
    /// the deepest a payload can be decoded again.
    pub max_payload_depth: usize,
    /// Longest `source`, `event_type`, `topic` or `client_id`, in characters.
    /// Default 256.
    pub max_field_chars: usize,
    /// Longest idempotency key, in characters. Default 256.
    pub max_idempotency_key_chars: usize,
    /// Most events in one `ingest_batch`. Default 1 000.
    pub max_batch_events: usize,
    /// Most payload bytes in one `ingest_batch`, added up. Default 16 MiB.
    pub max_batch_bytes: usize,
    /// Most ids in one `redrive` or `purge_dead_letters` by ids, or leases
    /// in one `ack_leases`. Default 1 000.
    pub max_ids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 512 * 1024,
            max_payload_depth: 64,
            max_field_chars: 256,
            max_idempotency_key_chars: 256,
            max_batch_events: 1000,
            max_batch_bytes: 16 * 1024 * 1024,
            max_ids: 1000,
        }
    }
}

impl Limits {
    /// These limits, lowered to what `capabilities` allow: a backend that
    /// keeps smaller payloads or batches sets the bound.
    pub fn within(mut self, capabilities: &crate::Capabilities) -> Self {
        self.max_payload_bytes = self.max_payload_bytes.min(capabilities.max_payload_bytes);
        self.max_batch_events = self.max_batch_events.min(capabilities.max_batch_events);
        self.max_batch_bytes = self.max_batch_bytes.min(capabilities.max_batch_bytes);
        self
    }

    /// Sets the largest payload accepted, in bytes of JSON text.
    pub fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Sets the deepest nesting accepted, from 1 to [`MAX_PAYLOAD_DEPTH`]
    /// (values outside are clamped).
    pub fn with_max_payload_depth(mut self, depth: usize) -> Self {
        self.max_payload_depth = depth.clamp(1, MAX_PAYLOAD_DEPTH);
        self
    }

    /// Sets the longest `source`, `event_type`, `topic` or `client_id`.
    pub fn with_max_field_chars(mut self, chars: usize) -> Self {
        self.max_field_chars = chars;
        self
    }

    /// Sets the longest idempotency key.
    pub fn with_max_idempotency_key_chars(mut self, chars: usize) -> Self {
        self.max_idempotency_key_chars = chars;
        self
    }

    /// Sets the most events one batch may hold.
    pub fn with_max_batch_events(mut self, events: usize) -> Self {
        self.max_batch_events = events;
        self
    }

    /// Sets the most payload bytes one batch may hold.
    pub fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Sets the most ids one redrive, purge by ids or `ack_leases` may
    /// name.
    pub fn with_max_ids(mut self, ids: usize) -> Self {
        self.max_ids = ids;
        self
    }

    /// Checks an idempotency key: not empty, not too long, no control
    /// characters.
    pub fn check_idempotency_key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid("idempotency_key must not be empty"));
        }
        check_field("idempotency_key", Some(key), self.max_idempotency_key_chars)
    }

    /// Checks a count against a limit.
    pub(crate) fn check_count(what: &'static str, actual: usize, limit: usize) -> Result<()> {
        if actual > limit {
            return Err(Error::LimitExceeded {
                what,
                actual: actual as u64,
                limit: limit as u64,
            });
        }
        Ok(())
    }
}

/// An event that passed validation, its payload encoded once.
///
/// Backends take only validated events, so nothing invalid reaches storage:
/// the fields can be read, not changed.
#[derive(Clone, Debug)]
pub struct ValidEvent {
    source: Option<String>,
    event_type: Option<String>,
    topic: Option<String>,
    client_id: Option<String>,
    idempotency: Option<(String, Fingerprint)>,
    payload: Payload,
}

/// A validated event taken apart, for a backend that stores its fields
/// separately.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EventParts {
    /// Where the event came from.
    pub source: Option<String>,
    /// What happened.
    pub event_type: Option<String>,
    /// Its stream.
    pub topic: Option<String>,
    /// Who produced it.
    pub client_id: Option<String>,
    /// The idempotency key and the fingerprint of the content it was
    /// given with, which decides duplicate (same) or conflict (different).
    pub idempotency: Option<(String, Fingerprint)>,
    /// The payload, checked: a JSON object within the limits.
    pub payload: Payload,
}

impl ValidEvent {
    /// Where the event came from.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// What happened.
    pub fn event_type(&self) -> Option<&str> {
        self.event_type.as_deref()
    }

    /// Its stream.
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    /// Who produced it.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The payload.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The payload as JSON text.
    pub fn payload_json(&self) -> &str {
        self.payload.as_str()
    }

    /// The idempotency key, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency.as_ref().map(|(key, _)| key.as_str())
    }

    /// The idempotency key and its content fingerprint, if the event has a
    /// key.
    pub fn idempotency(&self) -> Option<(&str, &Fingerprint)> {
        self.idempotency.as_ref().map(|(key, f)| (key.as_str(), f))
    }

    /// The fields, by value.
    pub fn into_parts(self) -> EventParts {
        EventParts {
            source: self.source,
            event_type: self.event_type,
            topic: self.topic,
            client_id: self.client_id,
            idempotency: self.idempotency,
            payload: self.payload,
        }
    }

    /// The stored event this becomes under `id`.
    pub fn into_event(self, tenant: TenantId, id: EventId) -> Event {
        self.into_parts().into_event(tenant, id)
    }
}

impl EventParts {
    /// An event with `payload` and no metadata, for a backend that reads
    /// back what it stored after validation (set the other fields as read).
    pub fn new(payload: Payload) -> Self {
        EventParts {
            source: None,
            event_type: None,
            topic: None,
            client_id: None,
            idempotency: None,
            payload,
        }
    }

    /// The stored event this becomes under `id`.
    pub fn into_event(self, tenant: TenantId, id: EventId) -> Event {
        let mut event = Event::new(tenant, id, self.payload);
        event.source = self.source;
        event.event_type = self.event_type;
        event.topic = self.topic;
        event.idempotency_key = self.idempotency.map(|(key, _)| key);
        event.client_id = self.client_id;
        event
    }
}

/// SHA-256 over an event's content (every field but the idempotency key),
/// with object keys in sorted order so equal JSON always hashes the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Over `source`, `event_type`, `topic` and `client_id`, then the
    /// payload.
    fn of(fields: [&Option<String>; 4], payload: &Value) -> Self {
        let mut h = Sha256::new();
        for field in fields {
            match field {
                Some(s) => {
                    h.update([1]);
                    h.update((s.len() as u64).to_be_bytes());
                    h.update(s.as_bytes());
                }
                None => h.update([0]),
            }
        }
        hash_json(&mut h, payload);
        Fingerprint(h.finalize().into())
    }
}

fn hash_json(h: &mut Sha256, v: &Value) {
    fn str(h: &mut Sha256, s: &str) {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    match v {
        Value::Null => h.update([0]),
        Value::Bool(b) => h.update([1, u8::from(*b)]),
        Value::Number(n) => {
            h.update([2]);
            str(h, &n.to_string());
        }
        Value::String(s) => {
            h.update([3]);
            str(h, s);
        }
        Value::Array(items) => {
            h.update([4]);
            h.update((items.len() as u64).to_be_bytes());
            items.iter().for_each(|item| hash_json(h, item));
        }
        Value::Object(map) => {
            h.update([5]);
            h.update((map.len() as u64).to_be_bytes());
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in entries {
                str(h, k);
                hash_json(h, v);
            }
        }
    }
}

/// Where an event is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Waiting to be delivered: listed by pull, claimable by workers.
    Pending,
    /// Delivered and acknowledged: no longer in the inbox.
    Acked,
    /// Failed its last allowed attempt: kept aside until redriven.
    DeadLettered,
}

impl EventStatus {
    /// The status's number in storage.
    pub fn code(self) -> u8 {
        match self {
            EventStatus::Pending => 0,
            EventStatus::Acked => 1,
            EventStatus::DeadLettered => 2,
        }
    }

    /// The status stored as `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(EventStatus::Pending),
            1 => Some(EventStatus::Acked),
            2 => Some(EventStatus::DeadLettered),
            _ => None,
        }
    }
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// Its id.
    pub id: EventId,
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// Where it came from.
    pub source: Option<String>,
    /// What happened.
    pub event_type: Option<String>,
    /// Its stream.
    pub topic: Option<String>,
    /// Its body, a JSON object as text (see [`Event::payload`] to decode
    /// it).
    pub payload: Payload,
    /// The idempotency key it was ingested with.
    pub idempotency_key: Option<String>,
    /// The client that produced it.
    pub client_id: Option<String>,
    /// When it was ingested (the timestamp of its id).
    pub created_at: Timestamp,
    /// Pending, acked or dead-lettered.
    pub status: EventStatus,
    /// How many times it was claimed by a worker.
    pub attempts: u32,
    /// While a worker holds a lease on it: when that lease ends. A browse
    /// (pull) lists leased events too; this says they are leased.
    pub leased_until: Option<Timestamp>,
}

impl Event {
    /// A pending event with this id and payload and no metadata; backends
    /// fill in the rest as they read it back.
    pub fn new(tenant: TenantId, id: EventId, payload: Payload) -> Self {
        Event {
            id,
            tenant,
            source: None,
            event_type: None,
            topic: None,
            payload,
            idempotency_key: None,
            client_id: None,
            created_at: id.created_at(),
            status: EventStatus::Pending,
            attempts: 0,
            leased_until: None,
        }
    }

    /// Decodes the payload into `T`: [`Error::Decode`] if it does not fit.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        self.payload.decode()
    }

    /// Whether a worker's lease on this event is running at `now`.
    pub fn is_leased_at(&self, now: Timestamp) -> bool {
        self.leased_until.is_some_and(|until| until > now)
    }
}

/// What ingest answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Ingested {
    /// The event's id (the original one for a duplicate).
    pub id: EventId,
    /// When the event was created.
    pub created_at: Timestamp,
    /// True when an event with the same idempotency key and content was
    /// already stored: nothing new was stored.
    pub duplicate: bool,
}

impl Ingested {
    /// The answer for event `id`; `duplicate` if it was stored before.
    pub fn new(id: EventId, duplicate: bool) -> Self {
        Ingested {
            id,
            created_at: id.created_at(),
            duplicate,
        }
    }
}
