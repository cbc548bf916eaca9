//! Every refusal, in ZapStream's envelope:
//! `{"error":{"code","message","requestId", …}}`.
//!
//! A handler answers an [`ApiError`]; the request-id layer
//! ([`crate::request_id`]) writes the body, since only it knows the id.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use zapinbox_core::Error;

/// A refused request: its status, ZapStream's error code, a message for
/// people, and what else a client acts on.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Map<String, Value>,
    retry_after: Option<Duration>,
    challenge: bool,
}

/// The envelope's content, left on the response for the request-id layer.
#[derive(Clone, Debug)]
pub(crate) struct Envelope {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) fields: Map<String, Value>,
}

impl Envelope {
    /// The envelope's JSON with `request_id` in it.
    pub(crate) fn render(self, request_id: &str) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        error.insert("requestId".into(), request_id.into());
        error.extend(self.fields);
        json!({ "error": error })
    }
}

impl ApiError {
    /// An error of `status` with `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Map::new(),
            retry_after: None,
            challenge: false,
        }
    }

    /// 401: no credentials, or ones that are not valid. Carries
    /// `WWW-Authenticate: Bearer`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "AUTHENTICATION_ERROR", message);
        e.challenge = true;
        e
    }

    /// 422 about the request body.
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
            message,
        )
    }

    /// 422 about a query parameter, with ZapStream's `validation_errors`.
    pub fn invalid_query(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let item = json!({ "field": format!("query->{field}"), "message": message, "type": "value_error" });
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
            format!("{field}: {message}"),
        )
        .with_field("validation_errors", json!([item]))
    }

    /// 400: a request the server understood and will not do (a bad
    /// cursor, a payload over the cap).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    /// The answer to `error` from a read that started at a client's
    /// cursor (`what` names where it came from): the only input the inbox
    /// checks there is the cursor, so invalid input is a bad cursor (400).
    pub(crate) fn from_cursor_read(error: Error, what: &str) -> Self {
        match error {
            Error::InvalidInput(why) => Self::bad_request(format!("Invalid {what}: {why}")),
            other => other.into(),
        }
    }

    /// 404 for an event this tenant does not have.
    pub fn event_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Event not found")
    }

    /// 409: the idempotency key was used before, for `existing`.
    pub fn idempotency_conflict(existing: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            "Event with this idempotency key already exists",
        )
        .with_field("existing_event_id", existing.to_string().into())
    }

    /// Adds a field to the envelope's `error` object.
    pub fn with_field(mut self, name: &str, value: Value) -> Self {
        self.fields.insert(name.to_owned(), value);
        self
    }

    /// Tells the client when to come back (`Retry-After`, whole seconds,
    /// rounded up).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// ZapStream's error code, such as `VALIDATION_ERROR`.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<Error> for ApiError {
    /// The status a core error answers with. Input errors are the
    /// client's (4xx); storage failures are ours (503 when a retry can
    /// help, 500 otherwise) and say nothing of the storage's insides.
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidInput(message) => ApiError::invalid_body(message),
            Error::PayloadTooLarge { size, limit } => ApiError::bad_request(format!(
                "Payload must be a JSON object and <= {limit} bytes (it is {size})"
            ))
            .with_field("limit", limit.into()),
            Error::NotFound { .. } => ApiError::event_not_found(),
            Error::IdempotencyConflict { original, .. } => ApiError::idempotency_conflict(original),
            Error::RateLimited { retry_after } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMIT_EXCEEDED",
                "Rate limit exceeded",
            )
            .with_retry_after(retry_after),
            Error::QuotaExceeded {
                scope,
                limit,
                reset_at,
            } => {
                // The wall clock: Retry-After is for the client's.
                let now = zapinbox_core::Timestamp::from(std::time::SystemTime::now());
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "QUOTA_EXCEEDED",
                    format!("The daily {scope} quota of {limit} is used up"),
                )
                .with_field("reset_at", reset_at.to_string().into())
                .with_retry_after(reset_at.saturating_duration_since(now))
            }
            Error::TooManySubscriptions { limit } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_STREAMS",
                format!("This tenant already holds {limit} live streams"),
            )
            .with_retry_after(Duration::from_secs(1)),
            Error::LimitExceeded {
                what,
                actual,
                limit,
            } => ApiError::invalid_body(format!("{what} is {actual}, over the limit of {limit}")),
            Error::Unsupported { operation, backend } => ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED",
                format!("The {backend} storage does not offer {operation}"),
            ),
            e if e.is_retryable() => {
                tracing::warn!(error = %e, "storage unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "STORAGE_UNAVAILABLE",
                    "The storage is busy or unreachable; try again",
                )
                .with_retry_after(Duration::from_secs(1))
            }
            e => {
                tracing::error!(error = %e, "storage error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    "An unexpected error occurred",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.challenge {
            let challenge = HeaderValue::from_static(r#"Bearer realm="zapinbox""#);
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response.extensions_mut().insert(Envelope {
            code: self.code,
            message: self.message,
            fields: self.fields,
        });
        response
    }
}
