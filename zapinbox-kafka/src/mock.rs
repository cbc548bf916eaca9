//! librdkafka's in-process mock cluster, for examples and tests that have
//! no broker.

use std::sync::mpsc;
use std::thread;

use rdkafka::mocking::MockCluster;
use zapinbox_core::{Error, Result};

use crate::KafkaConfig;

/// A Kafka-protocol cluster inside this process (librdkafka's mock
/// broker), listening on 127.0.0.1: for tests and demos on a machine
/// without Kafka. It has no admin API (create topics with
/// [`MockBroker::create_topic`]) and no compaction, and keeps only a few
/// megabytes per partition. It stops when dropped.
pub struct MockBroker {
    brokers: String,
    commands: mpsc::Sender<Command>,
}

enum Command {
    CreateTopic(String, i32, mpsc::Sender<Result<()>>),
}

impl MockBroker {
    /// Starts a cluster of one broker.
    pub fn start() -> Result<Self> {
        let (commands, inbox) = mpsc::channel::<Command>();
        let (started, addresses) = mpsc::channel();
        // The cluster's handle stays on the thread that made it.
        thread::Builder::new()
            .name("zapinbox-mock-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = started.send(Err(Error::permanent(e)));
                        return;
                    }
                };
                let _ = started.send(Ok(cluster.bootstrap_servers()));
                while let Ok(Command::CreateTopic(topic, partitions, reply)) = inbox.recv() {
                    let created = cluster
                        .create_topic(&topic, partitions, 1)
                        .map_err(Error::permanent);
                    let _ = reply.send(created);
                }
            })
            .map_err(Error::permanent)?;
        let brokers = addresses
            .recv()
            .map_err(|_| Error::permanent("the mock cluster's thread ended before it started"))??;
        Ok(MockBroker { brokers, commands })
    }

    /// The cluster's `bootstrap.servers`.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Settings for a backend on this cluster's `topic`: its brokers, and
    /// fetches that wait 5 ms. The mock answers a fetch only when its wait
    /// is over, and a write waits for its record to come back: each write
    /// then takes about that long. 1 ms writes faster, at the cost of a
    /// thousand fetches a second per idle instance.
    pub fn config(&self, topic: &str) -> KafkaConfig {
        KafkaConfig::new(&self.brokers)
            .topic(topic)
            .fetch_wait(std::time::Duration::from_millis(5))
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let (reply, answer) = mpsc::channel();
        let stopped = || Error::permanent("the mock cluster stopped");
        self.commands
            .send(Command::CreateTopic(topic.to_owned(), partitions, reply))
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
}

impl std::fmt::Debug for MockBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockBroker")
            .field("brokers", &self.brokers)
            .finish()
    }
}
