//! The storage an example runs on, chosen by `ZAPINBOX_BACKEND`:
//!
//! - `sqlite` (default): a fresh file in the temp directory, or the file
//!   `ZAPINBOX_DB` names, or the one ZapStream's `DATABASE_URL=sqlite:///…`
//!   names;
//! - `memory`: process memory;
//! - `kafka` (build with `--features kafka`): the brokers in
//!   `ZAPINBOX_KAFKA_BROKERS`, on the existing topic `ZAPINBOX_KAFKA_TOPIC`
//!   (default `zapinbox`); with no brokers given, a Kafka cluster started
//!   inside the process, so the example runs anywhere;
//! - `dynamo` (build with `--features dynamo`): DynamoDB at
//!   `ZAPINBOX_DYNAMO_ENDPOINT` (DynamoDB Local, say) or, without it, AWS
//!   by the usual settings; in the table `ZAPINBOX_DYNAMO_TABLE`, or in
//!   the example's own table, `zapinbox-example-<name>`, made afresh on
//!   every run.

use std::path::PathBuf;
use std::sync::Arc;

use zapinbox::sqlite::SqliteBackend;
use zapinbox::{Backend, Error, MemoryBackend, QueueConfig, Result};

/// An opened backend, what it is, and whatever must live as long as it.
pub struct Storage {
    pub backend: Arc<dyn Backend>,
    pub description: String,
    /// The in-process broker, when one was started.
    #[cfg(feature = "kafka")]
    _broker: Option<zapinbox::kafka::MockBroker>,
}

impl Storage {
    fn new(backend: Arc<dyn Backend>, description: String) -> Self {
        Storage {
            backend,
            description,
            #[cfg(feature = "kafka")]
            _broker: None,
        }
    }
}

/// Opens the storage `ZAPINBOX_BACKEND` names for the example `example`.
pub async fn open(example: &str, config: QueueConfig) -> Result<Storage> {
    let choice = std::env::var("ZAPINBOX_BACKEND").unwrap_or_else(|_| "sqlite".into());
    match choice.as_str() {
        "sqlite" => {
            let path = database_path(example)?;
            let backend = SqliteBackend::builder(&path).config(config).open().await?;
            Ok(Storage::new(
                Arc::new(backend),
                format!("SQLite at {}", path.display()),
            ))
        }
        "memory" => Ok(Storage::new(
            Arc::new(MemoryBackend::with_config(config)),
            "memory".into(),
        )),
        "kafka" => open_kafka(config).await,
        "dynamo" => open_dynamo(example, config).await,
        other => Err(Error::invalid(format!(
            "ZAPINBOX_BACKEND={other}: choose sqlite, memory, kafka or dynamo"
        ))),
    }
}

#[cfg(feature = "kafka")]
async fn open_kafka(config: QueueConfig) -> Result<Storage> {
    use zapinbox::kafka::{KafkaBackend, KafkaConfig, MockBroker};
    let topic = std::env::var("ZAPINBOX_KAFKA_TOPIC").unwrap_or_else(|_| "zapinbox".into());
    let (kafka, brokers, broker) = match std::env::var("ZAPINBOX_KAFKA_BROKERS") {
        Ok(brokers) => (KafkaConfig::new(&brokers).topic(&topic), brokers, None),
        Err(_) => {
            let broker = MockBroker::start()?;
            broker.create_topic(&topic, 4)?;
            (broker.config(&topic), String::new(), Some(broker))
        }
    };
    let backend = KafkaBackend::open(kafka, config).await?;
    let place = if broker.is_some() {
        "an in-process mock cluster"
    } else {
        &brokers
    };
    let mut storage = Storage::new(Arc::new(backend), format!("Kafka topic {topic} on {place}"));
    storage._broker = broker;
    Ok(storage)
}

#[cfg(not(feature = "kafka"))]
async fn open_kafka(_config: QueueConfig) -> Result<Storage> {
    Err(Error::invalid(
        "ZAPINBOX_BACKEND=kafka needs the kafka feature: cargo run --features kafka --example …",
    ))
}

#[cfg(feature = "dynamo")]
async fn open_dynamo(example: &str, config: QueueConfig) -> Result<Storage> {
    use aws_config::BehaviorVersion;
    use aws_sdk_dynamodb::config::{Credentials, Region};
    use zapinbox::dynamo::DynamoBackend;
    let mut settings = aws_config::defaults(BehaviorVersion::latest());
    let endpoint = std::env::var("ZAPINBOX_DYNAMO_ENDPOINT").ok();
    if let Some(endpoint) = &endpoint {
        // DynamoDB Local takes any region and any key of letters and digits.
        let local = Credentials::new("AKIDLOCAL", "secretlocal", None, None, "example");
        settings = settings
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(local);
    }
    let sdk = settings.load().await;
    let (table, fresh) = match std::env::var("ZAPINBOX_DYNAMO_TABLE") {
        Ok(table) => (table, false),
        Err(_) => (format!("zapinbox-example-{example}"), true),
    };
    if fresh {
        // The example's own table starts empty on every run, as its SQLite
        // file does.
        drop_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await?;
    }
    let backend = DynamoBackend::builder(&sdk)
        .table(&table)
        .config(config)
        .build();
    backend.ensure_table().await?;
    let place = endpoint.unwrap_or_else(|| "AWS".into());
    Ok(Storage::new(
        Arc::new(backend),
        format!("DynamoDB table {table} on {place}"),
    ))
}

/// Deletes `table` if it exists, and waits until it is gone (on AWS that
/// takes a while; DynamoDB Local drops it at once).
#[cfg(feature = "dynamo")]
async fn drop_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<()> {
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    const MISSING: Option<&str> = Some("ResourceNotFoundException");
    match client.delete_table().table_name(table).send().await {
        Ok(_) => {}
        Err(e) if e.code() == MISSING => return Ok(()),
        Err(e) => return Err(Error::permanent(format!("deleting table {table}: {e}"))),
    }
    for _ in 0..120 {
        match client.describe_table().table_name(table).send().await {
            Err(e) if e.code() == MISSING => return Ok(()),
            Err(e) => return Err(Error::permanent(format!("describing table {table}: {e}"))),
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    }
    Err(Error::transient(format!(
        "table {table} is still being deleted after a minute"
    )))
}

#[cfg(not(feature = "dynamo"))]
async fn open_dynamo(_example: &str, _config: QueueConfig) -> Result<Storage> {
    Err(Error::invalid(
        "ZAPINBOX_BACKEND=dynamo needs the dynamo feature: cargo run --features dynamo --example …",
    ))
}

/// `ZAPINBOX_DB`, or a fresh file in the temp directory.
fn database_path(example: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ZAPINBOX_DB") {
        return Ok(PathBuf::from(path));
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        // ZapStream's setting: `sqlite:///relative/or/absolute/path`.
        let path = url.strip_prefix("sqlite:///").ok_or_else(|| {
            Error::invalid(format!(
                "DATABASE_URL={url}: only sqlite:///PATH is understood"
            ))
        })?;
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(Error::permanent)?;
        }
        return Ok(path);
    }
    let path = std::env::temp_dir().join(format!("zapinbox-{example}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::permanent(e)),
        }
    }
    Ok(path)
}
