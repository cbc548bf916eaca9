//! A server on an ephemeral port of 127.0.0.1, on each storage the test
//! command starts: SQLite in a temporary file, Kafka on the tansu broker
//! (`ZAPINBOX_TANSU_BROKERS`), DynamoDB on DynamoDB Local
//! (`ZAPINBOX_DYNAMO_ENDPOINT`). A storage that is not running fails the
//! test, saying how to start it.

#![allow(dead_code)]

pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zapinbox_core::{Backend, QueueConfig};
use zapinbox_http::{App, Config};

/// The storage a server runs on.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Sqlite,
    Kafka,
    Dynamo,
}

pub fn sqlite() -> Kind {
    Kind::Sqlite
}
pub fn kafka() -> Kind {
    Kind::Kafka
}
pub fn dynamo() -> Kind {
    Kind::Dynamo
}

/// A server of two tenants, each with its key, on storage of `Kind`.
pub struct Server {
    pub url: String,
    pub http: reqwest::Client,
    /// The first tenant's API key and id.
    pub key: String,
    pub tenant: String,
    /// The second tenant's.
    pub other_key: String,
    pub other_tenant: String,
    pub kind: Kind,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// What came back: status, headers, and the body as JSON (`Null` if it
/// was not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The envelope's error code.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// `Retry-After`, in seconds.
    #[track_caller]
    pub fn retry_after(&self) -> u64 {
        let after = self.header("retry-after").expect("Retry-After");
        after.parse().expect("whole seconds")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, and that an error comes in the envelope,
    /// naming this response's request id.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{self:#?}");
        if status >= 400 {
            let id = self
                .header("x-request-id")
                .expect("X-Request-ID on every response");
            assert_eq!(self.body["error"]["requestId"], id, "{self:#?}");
            assert!(self.body["error"]["message"].is_string(), "{self:#?}");
        }
        self
    }
}

fn fresh(what: &str) -> String {
    format!("{what}-{:016x}", rand_u64())
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

impl Server {
    /// A server with no rate limit and `vars` set (over the defaults).
    pub async fn start(kind: Kind, vars: &[(&str, &str)]) -> Server {
        let (key, tenant) = (fresh("key"), fresh("tenant"));
        let (other_key, other_tenant) = (fresh("key"), fresh("tenant"));
        let keys = format!("{key}={tenant},{other_key}={other_tenant}");
        let mut all: Vec<(String, String)> = vars
            .iter()
            .map(|(n, v)| ((*n).into(), (*v).into()))
            .collect();
        all.push(("API_KEYS".into(), keys));
        all.push(("RATE_LIMIT_PER_MINUTE".into(), "0".into()));
        all.push(("HEARTBEAT_SECONDS".into(), "1".into()));
        let config =
            Config::from_vars(|name| all.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()))
                .expect("a valid configuration");
        let (backend, dir) = open(kind, config.queue_config()).await;
        let app = App::new(config.inbox(backend), config, zapinbox_http::prometheus());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("an ephemeral port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async {
            stopped.await.ok();
        }));
        Server {
            url,
            http: reqwest::Client::new(),
            key,
            tenant,
            other_key,
            other_tenant,
            kind,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Begins a graceful shutdown and waits for the server to finish.
    pub async fn shut_down(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops within 10 s")
            .expect("the server task")
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// `method path` with the first tenant's key.
    pub fn authed(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path).header("X-API-Key", &self.key)
    }

    /// `method path` with the second tenant's key.
    pub fn other(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path)
            .header("X-API-Key", &self.other_key)
    }

    /// Posts `body` as the first tenant.
    pub async fn post(&self, body: Value) -> Answer {
        send(self.authed(Method::POST, "/events").json(&body)).await
    }

    /// Posts a payload `{"n": n}` on `topic`; its id.
    pub async fn post_n(&self, n: u64, topic: &str) -> String {
        let answer = self
            .post(serde_json::json!({ "topic": topic, "type": "count", "payload": { "n": n } }))
            .await;
        answer.expect(200);
        answer.body["id"].as_str().expect("an id").to_owned()
    }

    pub async fn get(&self, path: &str) -> Answer {
        send(self.authed(Method::GET, path)).await
    }

    /// The ids the first tenant's inbox lists with `query`, every page.
    pub async fn listed(&self, query: &str) -> Vec<String> {
        let answer = self.get(&format!("/inbox?{query}")).await;
        answer.expect(200);
        ids(&answer.body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

/// The ids of a page.
pub fn ids(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_owned())
        .collect()
}

pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn open(kind: Kind, config: QueueConfig) -> (Arc<dyn Backend>, Option<tempfile::TempDir>) {
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let backend = zapinbox_sqlite::SqliteBackend::builder(dir.path().join("inbox.db"))
                .config(config)
                .open()
                .await
                .expect("SQLite opens");
            (Arc::new(backend), Some(dir))
        }
        Kind::Kafka => {
            use zapinbox_kafka::{KafkaBackend, KafkaConfig, TenantTopics};
            let brokers = std::env::var("ZAPINBOX_TANSU_BROKERS").unwrap_or_else(|_| {
                panic!(
                    "ZAPINBOX_TANSU_BROKERS is not set: these tests need a tansu broker. \
                     ./scripts/test.sh builds and starts one"
                )
            });
            // A prefix of its own: a topic per tenant, made by the backend.
            let kafka = KafkaConfig::new(&brokers)
                .topic(fresh("http"))
                .topic_per_tenant(TenantTopics::default())
                .fetch_wait(Duration::from_millis(5));
            let backend = KafkaBackend::open(kafka, config)
                .await
                .expect("Kafka opens");
            (Arc::new(backend), None)
        }
        Kind::Dynamo => {
            use aws_sdk_dynamodb::config::{Credentials, Region};
            let endpoint = std::env::var("ZAPINBOX_DYNAMO_ENDPOINT").unwrap_or_else(|_| {
                panic!(
                    "ZAPINBOX_DYNAMO_ENDPOINT is not set: these tests need DynamoDB Local. \
                     ./scripts/test.sh installs and starts it"
                )
            });
            let local = Credentials::new("AKIDLOCAL", "secretlocal", None, None, "tests");
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(endpoint)
                .region(Region::new("us-east-1"))
                .credentials_provider(local)
                .load()
                .await;
            let backend = zapinbox_dynamo::DynamoBackend::builder(&sdk)
                .table("zapinbox-http-tests")
                .config(config)
                .build();
            static TABLE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
            TABLE
                .get_or_init(|| async { backend.ensure_table().await.expect("the table") })
                .await;
            (Arc::new(backend), None)
        }
    }
}
