//! Event payloads: a JSON object kept as the text it was validated as.
//!
//! An inbox mostly passes JSON through, so the payload is checked once on
//! the way in and then stored and returned as text, never parsed again on
//! a read: a pull or claim cannot fail on what a payload contains, and the
//! caller decodes it only when it wants to.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{Error, Result};

/// The deepest nesting a payload may have: serde_json, which decodes
/// payloads, refuses 128 nested arrays and objects.
pub const MAX_PAYLOAD_DEPTH: usize = 127;

/// An event's body: a JSON object, as text.
///
/// Stored and returned exactly as it was accepted. Decode it on demand with
/// [`Payload::decode`] or [`Payload::as_value`]; serializing an event writes
/// the payload as raw JSON, not as a string.
///
/// ```
/// # fn main() -> zapinbox_core::Result<()> {
/// use serde::Deserialize;
/// use zapinbox_core::Payload;
///
/// #[derive(Deserialize)]
/// struct Order { order: u32 }
///
/// let payload = Payload::from_stored(r#"{"order":42}"#);
/// assert_eq!(payload.decode::<Order>()?.order, 42);
/// assert_eq!(payload.as_value()?["order"], 42);
/// assert_eq!(payload.as_str(), r#"{"order":42}"#);
/// # Ok(()) }
/// ```
///
/// Payloads serialize as raw JSON with `serde_json` (an event as JSON shows
/// its payload as the object it is); other serde formats are not supported.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Stored);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Stored {
    Json(Arc<str>),
    /// What storage held could not even be read as text; the reason.
    Damaged(Arc<str>),
}

impl Payload {
    /// A payload from text a backend stored after validation. The text is
    /// not checked again: if it was damaged outside zapinbox, decoding this
    /// payload fails, and nothing else does.
    pub fn from_stored(text: impl Into<Arc<str>>) -> Self {
        Payload(Stored::Json(text.into()))
    }

    /// A payload that storage could not give back as text at all (bytes
    /// that are not UTF-8, say): it has no text, and every decode fails
    /// with `reason`, so the event around it can still be read, listed and
    /// deleted.
    pub fn damaged(reason: impl Into<Arc<str>>) -> Self {
        Payload(Stored::Damaged(reason.into()))
    }

    /// The JSON text (empty for a damaged payload).
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Stored::Json(text) => text,
            Stored::Damaged(_) => "",
        }
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.as_str().len()
    }

    /// Whether there is no text (never, for an accepted payload).
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }

    /// Decodes the payload into `T`: [`Error::Decode`] if it does not fit
    /// or was damaged in storage.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        let text = match &self.0 {
            Stored::Json(text) => text,
            Stored::Damaged(reason) => {
                return Err(Error::Decode {
                    reason: reason.to_string(),
                });
            }
        };
        serde_json::from_str(text).map_err(|e| Error::Decode {
            reason: e.to_string(),
        })
    }

    /// Decodes the payload into a JSON value.
    pub fn as_value(&self) -> Result<Value> {
        self.decode()
    }
}

/// Compares the decoded payload with a value (false if it does not
/// decode), so tests and callers can write `assert_eq!(event.payload, json!(…))`.
impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.as_value().is_ok_and(|v| v == *other)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Stored::Json(text) => write!(f, "Payload({text})"),
            Stored::Damaged(reason) => write!(f, "Payload(damaged: {reason})"),
        }
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        // Checked here, where it is cheap next to the writing itself: text
        // damaged in storage must not become broken JSON in a response.
        let raw: &RawValue =
            serde_json::from_str(self.as_str()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Payload::from_stored(raw.get()))
    }
}

/// What a new event's payload was given as.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Body {
    /// A JSON value.
    Value(Value),
    /// JSON text, not yet checked.
    Text(String),
}

/// Drops a value however deeply it nests (see [`dismantle`]): an event
/// refused for its depth, or dropped unsent, must not overflow the stack.
impl Drop for Body {
    fn drop(&mut self) {
        if let Body::Value(value) = self
            && matches!(value, Value::Array(_) | Value::Object(_))
        {
            dismantle(std::mem::take(value));
        }
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Body::Value(v) => v.serialize(serializer),
            Body::Text(text) => {
                let raw: &RawValue =
                    serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
                raw.serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Body::Text(raw.get().to_owned()))
    }
}

/// A payload that passed validation, and the value its fingerprint is
/// computed from when the event has an idempotency key.
#[derive(Debug)]
pub(crate) struct Checked {
    pub payload: Payload,
    pub value: Option<Value>,
}

impl Body {
    /// Checks that the body is a JSON object without repeated keys, no
    /// deeper than `max_depth` (clamped to 1..=[`MAX_PAYLOAD_DEPTH`]) and
    /// no larger than `max_bytes` as text. Nothing here recurses before the
    /// depth is known to be within the limit, so no input can exhaust the
    /// stack. `keep_value` asks for the decoded value back (for the
    /// idempotency fingerprint).
    pub(crate) fn check(
        &mut self,
        max_depth: usize,
        max_bytes: usize,
        keep_value: bool,
    ) -> Result<Checked> {
        let max_depth = max_depth.clamp(1, MAX_PAYLOAD_DEPTH);
        match self {
            Body::Value(value) => {
                if !value.is_object() {
                    return Err(not_an_object(json_kind(value)));
                }
                if !value_within(value, max_depth) {
                    return Err(too_deep(max_depth));
                }
                let text = serde_json::to_string(value)
                    .map_err(|e| Error::invalid(format!("payload cannot be encoded: {e}")))?;
                check_size(&text, max_bytes)?;
                // Out of the body: within the limit, it drops as usual.
                let value = std::mem::take(value);
                Ok(Checked {
                    payload: Payload::from_stored(text),
                    value: keep_value.then_some(value),
                })
            }
            Body::Text(text) => {
                let trimmed = text.trim_matches(JSON_WHITESPACE);
                check_size(trimmed, max_bytes)?;
                if !text_within(trimmed, max_depth) {
                    return Err(too_deep(max_depth));
                }
                // Decoded in full, not merely scanned: a lone surrogate
                // escape or a number out of range passes a scan and would
                // fail every later decode. Repeated keys are refused: the
                // decoder keeps the last, a typed decode refuses them, and
                // other readers may keep the first.
                let Strict(value) = serde_json::from_str(trimmed).map_err(malformed)?;
                if !value.is_object() {
                    return Err(not_an_object(json_kind(&value)));
                }
                Ok(Checked {
                    payload: Payload::from_stored(trimmed),
                    value: keep_value.then_some(value),
                })
            }
        }
    }
}

/// A JSON value decoded with every object's keys checked for repeats.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

const JSON_WHITESPACE: &[char] = &[' ', '\t', '\n', '\r'];

fn check_size(text: &str, max_bytes: usize) -> Result<()> {
    if text.len() > max_bytes {
        return Err(Error::PayloadTooLarge {
            size: text.len(),
            limit: max_bytes,
        });
    }
    Ok(())
}

fn malformed(e: serde_json::Error) -> Error {
    Error::invalid(format!("payload is not valid JSON: {e}"))
}

fn not_an_object(kind: &str) -> Error {
    Error::invalid(format!("payload must be a JSON object, got {kind}"))
}

fn too_deep(max_depth: usize) -> Error {
    Error::invalid(format!(
        "payload nests arrays and objects more than {max_depth} levels deep, over the limit (Limits::max_payload_depth)"
    ))
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `value` nests no more than `max_depth` arrays and objects
/// (the outermost counts as 1), found without recursion.
fn value_within(value: &Value, max_depth: usize) -> bool {
    let mut stack = vec![(value, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        if !matches!(v, Value::Array(_) | Value::Object(_)) {
            continue;
        }
        if depth > max_depth {
            return false;
        }
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|c| (c, depth + 1))),
            _ => {}
        }
    }
    true
}

/// Whether JSON text nests no more than `max_depth` arrays and objects,
/// counted in one pass over the bytes (brackets inside strings do not
/// count). Malformed text is left for the parser to refuse.
fn text_within(text: &str, max_depth: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Drops a JSON value without recursing: serde_json's own drop recurses
/// once per level, and a value nested deeply enough would exhaust the
/// stack.
pub(crate) fn dismantle(value: Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested_text(depth: usize) -> String {
        format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
    }

    #[test]
    fn depth_counts_containers_not_brackets_in_strings() {
        assert!(text_within(&nested_text(3), 3));
        assert!(!text_within(&nested_text(4), 3));
        assert!(text_within(r#"{"a":"[[[[{{{{","b":"\"[[["}"#, 1));
        assert!(value_within(&json!({ "a": [1, { "b": [] }] }), 4));
        assert!(!value_within(&json!({ "a": [1, { "b": [] }] }), 3));
        assert!(value_within(&json!({ "a": "[[[[" }), 1));
    }

    #[test]
    fn text_and_value_limits_agree_with_the_decoder() {
        let text = nested_text(MAX_PAYLOAD_DEPTH);
        assert!(text_within(&text, MAX_PAYLOAD_DEPTH));
        let value: Value = serde_json::from_str(&text).expect("the decoder reads the deepest");
        assert!(value_within(&value, MAX_PAYLOAD_DEPTH));
        assert!(serde_json::from_str::<Value>(&nested_text(MAX_PAYLOAD_DEPTH + 1)).is_err());
    }

    #[test]
    fn text_is_kept_as_given_and_checked() {
        let checked = Body::Text(" {\"b\": 1,  \"a\":2}\n".into())
            .check(8, 1024, true)
            .expect("valid");
        let damaged = Payload::damaged("not UTF-8");
        assert!(matches!(damaged.as_value(), Err(Error::Decode { .. })));
        assert_eq!(checked.payload.as_str(), "{\"b\": 1,  \"a\":2}");
        assert_eq!(checked.value, Some(json!({ "a": 2, "b": 1 })));
        let bad_text = [
            "{",
            "{} {}",
            "[1]",
            "\"s\"",
            "12",
            "null",
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":1e400}"#,
            "{\"a\":\"x\ny\"}",
            r#"{"a":1,"a":2}"#,
            r#"{"o":{"k":[{"x":1,"x":1}]}}"#,
        ];
        for bad in bad_text {
            let r = Body::Text(bad.into()).check(8, 1024, false);
            assert!(matches!(r, Err(Error::InvalidInput(_))), "{bad}: {r:?}");
        }
    }

    #[test]
    fn a_value_too_deep_to_drop_recursively_is_refused_and_dropped() {
        // Built by hand: `json!` would copy the value through `to_value`,
        // which recurses.
        let mut value = json!(1);
        for _ in 0..200_000 {
            let mut map = serde_json::Map::new();
            map.insert("a".into(), value);
            value = Value::Object(map);
        }
        let r = Body::Value(value).check(64, usize::MAX, false);
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
        // Past the decoder's limit whatever the configured one says.
        let r = Body::Text(nested_text(MAX_PAYLOAD_DEPTH + 1)).check(usize::MAX, usize::MAX, false);
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    }

    #[test]
    fn payloads_serialize_as_raw_json() {
        let payload = Payload::from_stored(r#"{"x":[1,2]}"#);
        let json = serde_json::to_string(&json!({ "p": payload.as_value().expect("decodes") }))
            .expect("encodes");
        assert_eq!(json, r#"{"p":{"x":[1,2]}}"#);
        assert_eq!(
            serde_json::to_string(&payload).expect("encodes"),
            r#"{"x":[1,2]}"#
        );
        let back: Payload = serde_json::from_str(r#"{"x":[1,2]}"#).expect("decodes");
        assert_eq!(back, payload);
        assert!(serde_json::to_string(&Payload::from_stored("{broken")).is_err());
    }
}
