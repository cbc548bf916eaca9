//! A harness on DynamoDB Local (started by `./scripts/test.sh`, which
//! exports `ZAPINBOX_DYNAMO_ENDPOINT`), and a transport that answers with
//! DynamoDB's own error responses on demand: DynamoDB Local never
//! throttles, so throttling and conflicts are injected here.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{Credentials, Region, SharedCredentialsProvider};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use zapinbox_core::testkit::Harness;
use zapinbox_core::{Backend, Fault, QueueConfig, Result};
use zapinbox_dynamo::DynamoBackend;

/// Attempts the SDK makes per call in these tests (its standard retry).
pub const ATTEMPTS: u32 = 3;

/// The one table every test shares.
pub const TABLE: &str = "zapinbox-tests";

/// Where DynamoDB Local listens; fails loudly when it is not running.
pub fn endpoint() -> String {
    std::env::var("ZAPINBOX_DYNAMO_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "ZAPINBOX_DYNAMO_ENDPOINT is not set: these tests need DynamoDB Local. \
             Run ./scripts/test.sh, which installs and starts it"
        )
    })
}

/// A canned DynamoDB answer: status and JSON body.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub body: String,
    /// Never answer: the SDK's attempt timeout ends the wait.
    pub hang: bool,
}

impl Canned {
    /// DynamoDB's error `code` with `status`.
    pub fn error(status: u16, code: &str) -> Self {
        let body = format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"injected by the test"}}"#
        );
        Canned {
            status,
            body,
            hang: false,
        }
    }

    /// No answer at all, as a server that stopped responding.
    pub fn hang() -> Self {
        Canned {
            status: 500,
            body: String::new(),
            hang: true,
        }
    }

    /// What each fault looks like coming from DynamoDB.
    pub fn of(fault: Fault) -> Self {
        match fault {
            Fault::Transient => Self::error(500, "InternalServerError"),
            Fault::Throttled => Self::error(400, "ProvisionedThroughputExceededException"),
            _ => Self::error(400, "AccessDeniedException"),
        }
    }
}

/// Answers queued for the next requests, in order, instead of sending
/// them.
#[derive(Debug, Default)]
pub struct Faults {
    /// `None`: let this request through.
    queue: Mutex<VecDeque<Option<Canned>>>,
}

impl Faults {
    /// The next `times` requests get `answer` (and never reach DynamoDB).
    pub fn answer_next(&self, answer: Canned, times: u32) {
        self.answer_after(0, answer, times);
    }

    /// Lets `pass` requests through, then answers the `times` after them
    /// with `answer`.
    pub fn answer_after(&self, pass: u32, answer: Canned, times: u32) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.extend(std::iter::repeat_n(None, pass as usize));
        queue.extend(std::iter::repeat_n(Some(answer), times as usize));
    }

    /// Makes the next call fail with `fault`: every attempt of it, for
    /// those the SDK retries.
    pub fn fail_next_call(&self, fault: Fault) {
        let times = if fault.retryable() { ATTEMPTS } else { 1 };
        self.answer_next(Canned::of(fault), times);
    }

    /// Forgets the answers still queued.
    pub fn clear(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn take(&self) -> Option<Canned> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.pop_front().flatten()
    }
}

#[derive(Debug)]
struct FaultyClient {
    inner: SharedHttpClient,
    faults: Arc<Faults>,
}

#[derive(Debug)]
struct FaultyConnector {
    inner: SharedHttpConnector,
    faults: Arc<Faults>,
}

impl HttpClient for FaultyClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            inner: self.inner.http_connector(settings, components),
            faults: Arc::clone(&self.faults),
        })
    }
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let Some(canned) = self.faults.take() else {
            return self.inner.call(request);
        };
        if canned.hang {
            return HttpConnectorFuture::new(std::future::pending());
        }
        let status = StatusCode::try_from(canned.status).expect("a valid status");
        let mut response = Response::new(status, SdkBody::from(canned.body));
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(response))
    }
}

/// An SDK config for DynamoDB Local whose transport can be made to fail.
pub async fn sdk_config(faults: &Arc<Faults>, attempt_timeout: Duration) -> aws_types::SdkConfig {
    let base = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDLOCAL",
            "secretlocal",
            None,
            None,
            "static",
        )))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        )
        .load()
        .await;
    // DynamoDB Local speaks plain HTTP.
    let inner = aws_smithy_http_client::Builder::new().build_http();
    base.to_builder()
        .http_client(FaultyClient {
            inner,
            faults: Arc::clone(faults),
        })
        .build()
}

/// Whether this process made sure the table exists.
static TABLE_READY: AtomicBool = AtomicBool::new(false);

/// Opens backends on the shared table. Each open makes its own client:
/// a test's runtime ends with it, and a client's connections with that.
pub struct DynamoHarness {
    pub faults: Arc<Faults>,
    /// How long the SDK waits for one attempt's answer.
    pub attempt_timeout: Duration,
}

impl DynamoHarness {
    pub fn new() -> Self {
        DynamoHarness {
            faults: Arc::default(),
            attempt_timeout: Duration::from_secs(10),
        }
    }

    /// A backend on the shared table, as the harness opens it.
    pub async fn backend(&self, config: QueueConfig) -> Result<DynamoBackend> {
        let sdk = sdk_config(&self.faults, self.attempt_timeout).await;
        let backend = DynamoBackend::builder(&sdk)
            .table(TABLE)
            .config(config)
            .watch_every(Duration::from_millis(20))
            .build();
        if !TABLE_READY.load(Ordering::Acquire) {
            backend.ensure_table().await?;
            TABLE_READY.store(true, Ordering::Release);
        }
        Ok(backend)
    }
}

#[async_trait]
impl Harness for DynamoHarness {
    async fn open(&self, config: QueueConfig) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(self.backend(config).await?))
    }

    fn faults(&self) -> Vec<Fault> {
        Fault::ALL.to_vec()
    }

    async fn inject(&self, _backend: &Arc<dyn Backend>, fault: Fault) -> Result<()> {
        self.faults.fail_next_call(fault);
        Ok(())
    }
}
