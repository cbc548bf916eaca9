//! The storage an example runs on, chosen by `ZAPINBOX_BACKEND`:
//!
//! - `sqlite` (default): a fresh file in the temp directory, or the file
//!   `ZAPINBOX_DB` names;
//! - `memory`: process memory;
//! - `kafka` (build with `--features kafka`): the brokers in
//!   `ZAPINBOX_KAFKA_BROKERS`, on the existing topic `ZAPINBOX_KAFKA_TOPIC`
//!   (default `zapinbox`); with no brokers given, a Kafka cluster started
//!   inside the process, so the example runs anywhere.

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
        other => Err(Error::invalid(format!(
            "ZAPINBOX_BACKEND={other}: choose sqlite, memory or kafka"
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

/// `ZAPINBOX_DB`, or a fresh file in the temp directory.
fn database_path(example: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ZAPINBOX_DB") {
        return Ok(PathBuf::from(path));
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
