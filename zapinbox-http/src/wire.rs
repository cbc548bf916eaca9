//! The JSON shapes ZapStream's clients read, and its time formats.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use zapinbox_core::{Event, Payload, Timestamp};

/// An event as `GET /inbox` lists it.
#[derive(Serialize)]
pub(crate) struct Item<'a> {
    id: String,
    created_at: String,
    source: Option<&'a str>,
    #[serde(rename = "type")]
    event_type: Option<&'a str>,
    topic: Option<&'a str>,
    payload: &'a Payload,
}

impl<'a> Item<'a> {
    pub(crate) fn new(event: &'a Event) -> Self {
        Item {
            id: event.id.to_string(),
            created_at: zap_time(event.created_at),
            source: event.source.as_deref(),
            event_type: event.event_type.as_deref(),
            topic: event.topic.as_deref(),
            payload: &event.payload,
        }
    }
}

/// An event as the stream sends it: the listing's fields, and its state.
#[derive(Serialize)]
pub(crate) struct Frame<'a> {
    #[serde(flatten)]
    item: Item<'a>,
    status: &'static str,
    delivered: bool,
}

impl<'a> Frame<'a> {
    pub(crate) fn new(event: &'a Event) -> Self {
        Frame {
            item: Item::new(event),
            status: "pending",
            delivered: false,
        }
    }
}

/// A time as ZapStream prints it: RFC 3339 in UTC with six fraction
/// digits (`2026-11-23T05:14:27.685000Z`; ours are whole milliseconds).
pub(crate) fn zap_time(t: Timestamp) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_millis()) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}

/// A `since` as ZapStream takes it, and more: RFC 3339 with any offset,
/// a date and time without a zone (read as UTC, where ZapStream fails), a
/// date alone (its midnight, UTC), or Unix seconds. Rounded up to the
/// millisecond, so "at or after" stays exact.
pub(crate) fn parse_since(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    let nanos = if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        t.unix_timestamp_nanos()
    } else if let Ok(t) = time::PrimitiveDateTime::parse(text, ZONELESS) {
        t.assume_utc().unix_timestamp_nanos()
    } else if let Some(midnight) = parse_date(text) {
        i128::from(midnight.as_millis()) * 1_000_000
    } else {
        unix_seconds(text)?
    };
    let millis = nanos.checked_add(999_999)?.div_euclid(1_000_000);
    u64::try_from(millis).ok().map(Timestamp::from_millis)
}

/// A date, `YYYY-MM-DD`, as its midnight UTC (none before 1970).
pub(crate) fn parse_date(text: &str) -> Option<Timestamp> {
    let date = time::Date::parse(text, format_description!("[year]-[month]-[day]")).ok()?;
    let secs = u64::try_from(date.midnight().assume_utc().unix_timestamp()).ok()?;
    Some(Timestamp::from_millis(secs.checked_mul(1000)?))
}

/// `123` or `123.456`: Unix seconds, as nanoseconds (exactly, no float).
fn unix_seconds(text: &str) -> Option<i128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return None;
    }
    let nanos: i128 = format!("{fraction:0<9}").parse().ok()?;
    whole
        .parse::<i128>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

const ZONELESS: &[time::format_description::BorrowedFormatItem<'static>] = format_description!(
    "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_with_six_digits() {
        let t: Timestamp = "2026-11-23T05:14:27.685Z".parse().expect("time");
        assert_eq!(zap_time(t), "2026-11-23T05:14:27.685000Z");
    }

    #[test]
    fn since_takes_every_form_zapstream_clients_send() {
        let at = |s| parse_since(s).map(Timestamp::as_millis);
        assert_eq!(at("2026-11-23T05:14:27.685Z"), Some(1_795_410_867_685));
        assert_eq!(at("2026-11-23T06:14:27.685+01:00"), Some(1_795_410_867_685));
        assert_eq!(at("2026-11-23T05:14:27.685"), Some(1_795_410_867_685));
        assert_eq!(at("2026-11-23T05:14:27.684001Z"), Some(1_795_410_867_685));
        assert_eq!(at("2026-11-23"), Some(1_795_392_000_000));
        assert_eq!(at("0"), Some(0));
        assert_eq!(at("1795410867.685"), Some(1_795_410_867_685));
        for bad in ["", "garbage", "-5", "NaN", "inf", "2026-13-01"] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }
}
