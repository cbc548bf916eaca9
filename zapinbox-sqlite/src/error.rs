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
