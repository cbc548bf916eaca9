//! Mapping SQLite errors onto the shared error type.

use rusqlite::ErrorCode;
use zapinbox_core::Error;

/// Wraps a SQLite error, retryable when the database was only busy or locked.
pub(crate) fn storage(e: rusqlite::Error) -> Error {
    let retryable = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    );
    Error::Backend {
        retryable,
        source: Box::new(e),
    }
}

/// A stored value that cannot be read back: the file was changed outside
/// zapinbox or is damaged.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::permanent(format!("stored data is damaged: {what}"))
}

/// Names the step a backend error happened in, so that an error at
/// opening says which connection or stage met it.
pub(crate) fn in_step(step: &'static str) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::Backend { retryable, source } => Error::Backend {
            retryable,
            source: Box::new(StepFailed { step, source }),
        },
        other => other,
    }
}

/// A backend error and the step it happened in.
#[derive(Debug)]
struct StepFailed {
    step: &'static str,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for StepFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.source)
    }
}

// The message holds the cause's: a `source` too would print it twice.
impl std::error::Error for StepFailed {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_names_itself_and_keeps_whether_to_retry() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        );
        let e = in_step("opening a read connection")(storage(busy));
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "backend error (retryable): opening a read connection: database is locked"
        );
        let invalid = in_step("opening")(Error::invalid("no"));
        assert!(matches!(invalid, Error::InvalidInput(_)));
    }
}
