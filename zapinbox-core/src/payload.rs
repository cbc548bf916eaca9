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
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Arc<str>);

impl Payload {
    /// A payload from text a backend stored after validation. The text is
    /// not checked again: if it was damaged outside zapinbox, decoding this
    /// payload fails, and nothing else does.
    pub fn from_stored(text: impl Into<Arc<str>>) -> Self {
        Payload(text.into())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never, for an accepted payload).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Decodes the payload into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.0).map_err(|e| Error::Decode {
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
        write!(f, "Payload({})", self.0)
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        // Checked here, where it is cheap next to the writing itself: text
        // damaged in storage must not become broken JSON in a response.
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Payload(Arc::from(raw.get())))
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
    /// Checks that the body is a JSON object no deeper than `max_depth` and
    /// no larger than `max_bytes` as text. Nothing here recurses before the
    /// depth is known to be within the limit, so no input can exhaust the
    /// stack. `keep_value` asks for the decoded value back (for the
    /// idempotency fingerprint).
    pub(crate) fn check(
        self,
        max_depth: usize,
        max_bytes: usize,
        keep_value: bool,
    ) -> Result<Checked> {
        match self {
            Body::Value(value) => {
                if !value.is_object() {
                    let kind = json_kind(&value);
                    dismantle(value);
                    return Err(not_an_object(kind));
                }
                if !value_within(&value, max_depth) {
                    dismantle(value);
                    return Err(too_deep(max_depth));
                }
                let text = serde_json::to_string(&value)
                    .map_err(|e| Error::invalid(format!("payload cannot be encoded: {e}")))?;
                check_size(&text, max_bytes)?;
                Ok(Checked {
                    payload: Payload(Arc::from(text)),
                    value: keep_value.then_some(value),
                })
            }
            Body::Text(text) => {
                let trimmed = text.trim_matches(JSON_WHITESPACE);
                if !text_within(trimmed, max_depth) {
                    return Err(too_deep(max_depth));
                }
                check_size(trimmed, max_bytes)?;
                // Decoded in full, not merely scanned: a lone surrogate
                // escape or a number out of range passes a scan and would
                // fail every later decode.
                let value: Value = serde_json::from_str(trimmed).map_err(malformed)?;
                let value = keep_value.then_some(value);
                if !trimmed.starts_with('{') {
                    let kind = match trimmed.as_bytes().first() {
                        Some(b'[') => "an array",
                        Some(b'"') => "a string",
                        Some(b't' | b'f') => "a boolean",
                        Some(b'n') => "null",
                        _ => "a number",
                    };
                    return Err(not_an_object(kind));
                }
                let payload = if trimmed.len() == text.len() {
                    Payload(Arc::from(text))
                } else {
                    Payload(Arc::from(trimmed))
                };
                Ok(Checked { payload, value })
            }
        }
    }

    /// Drops the body without recursing (see [`dismantle`]).
    pub(crate) fn discard(self) {
        if let Body::Value(value) = self {
            dismantle(value);
        }
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
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth > max_depth {
            return false;
        }
        stack.extend(children.map(|child| (child, depth + 1)));
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
