//! Query strings as ZapStream reads them: a repeated parameter's last
//! value wins, and `""` filters nothing.

use zapinbox_core::Filter;

use crate::error::ApiError;
use crate::wire::parse_since;

/// A request's query parameters, decoded.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        Params(pairs.into_owned().collect())
    }

    /// The last value of `name`.
    pub(crate) fn last(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The last value of `name`, unless it is empty.
    fn non_empty(&self, name: &str) -> Option<&str> {
        self.last(name).filter(|v| !v.is_empty())
    }

    /// The filter of `topic`, `type`, `source` and `since`.
    pub(crate) fn filter(&self) -> Result<Filter, ApiError> {
        let mut filter = Filter::default();
        filter.topic = self.non_empty("topic").map(str::to_owned);
        filter.event_type = self.non_empty("type").map(str::to_owned);
        filter.source = self.non_empty("source").map(str::to_owned);
        if let Some(since) = self.last("since") {
            let at = parse_since(since).ok_or_else(|| {
                ApiError::invalid_query(
                    "since",
                    "must be an RFC 3339 time, a date, or Unix seconds",
                )
            })?;
            filter.since = Some(at);
        }
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_value_wins_and_empty_filters_nothing() {
        let p = Params::parse(Some("limit=1&limit=%2B5&topic=&type=a%20b&since=0"));
        assert_eq!(p.last("limit"), Some("+5"));
        let f = p.filter().expect("filter");
        assert_eq!((f.topic, f.event_type.as_deref()), (None, Some("a b")));
        assert_eq!(f.since.map(|t| t.as_millis()), Some(0));
        assert!(Params::parse(Some("since=")).filter().is_err());
        assert!(Params::parse(None).last("limit").is_none());
    }
}
