//! What DynamoDB's answers mean to a caller (retryable or not), and how
//! the backend waits before trying again.

use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use zapinbox_core::Error;

/// Error codes after which the same request may pass later: throttling,
/// a conflicting transaction, a server-side failure or timeout.
const RETRYABLE: [&str; 9] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
    "InternalServerError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Whether a DynamoDB error code (or cancellation reason code) is worth
/// retrying.
pub(crate) fn retryable_code(code: &str) -> bool {
    RETRYABLE.contains(&code) || code == "ThrottlingError" || code == "TransactionConflict"
}

/// Classifies an SDK error as the inbox's [`Error::Backend`]. The SDK has
/// already retried what its retry policy retries (throttling, timeouts,
/// 5xx) with backoff; what reaches here is what it gave up on.
pub(crate) fn classify<E, R>(error: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let retryable = match &error {
        SdkError::ServiceError(service) => service.err().code().is_some_and(retryable_code),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    };
    let message = match error.as_service_error() {
        Some(service) => format!(
            "DynamoDB {}: {}",
            service.code().unwrap_or("error"),
            service.message().unwrap_or("no message")
        ),
        // The SDK's own `Display` says only "dispatch failure" and the
        // like: keep the chain.
        None => format!(
            "DynamoDB: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&error)
        ),
    };
    Error::Backend {
        retryable,
        source: message.into(),
    }
}

/// Waits a little longer after each conflict, with jitter, so writers on
/// other instances take turns.
pub(crate) async fn backoff(attempt: u32) {
    let base = 2u64.saturating_pow(attempt.min(6));
    let ms = base + rand::random_range(0..=base);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Runs `call` again, with backoff, while it answers `busy` (a transaction
/// in progress on its item, which the SDK does not retry), a few times.
pub(crate) async fn waiting_out<T, E, R, F>(
    busy: &str,
    mut call: impl FnMut() -> F,
) -> Result<T, SdkError<E, R>>
where
    F: Future<Output = Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(e) if e.code() == Some(busy) && tries < 8 => {
                tries += 1;
                backoff(tries).await;
            }
            answer => return answer,
        }
    }
}
