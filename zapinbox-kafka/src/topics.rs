//! A topic per tenant: the names, and making, finding and deleting the
//! topics.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication, TopicResult};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use zapinbox_core::{Error, Result, TenantId};

use crate::backend::classify;
use crate::config::{KafkaConfig, TenantTopics, TopicCreation};
use crate::log::Registered;
use crate::metadata::partition_count;
use crate::open::client_config;

/// The longest topic name brokers accept.
const MAX_TOPIC_CHARS: usize = 249;

/// The topic of `tenant` under `prefix`: `<prefix>.<tenant>`, with `:` and
/// `@` (which topic names cannot hold) and `.` and `_` (which Kafka takes
/// for the same character, refusing a second topic that differs only
/// there) written `_3a`, `_40`, `_2e` and `_5f`. So no two tenants share
/// a name, and `<prefix>._<name>` (`_` and no hex pair) is left for side
/// topics.
pub(crate) fn tenant_topic(prefix: &str, tenant: &TenantId) -> Result<String> {
    let mut name = format!("{prefix}.");
    for c in tenant.as_str().chars() {
        match c {
            ':' | '@' | '.' | '_' => name.push_str(&format!("_{:02x}", c as u32)),
            c => name.push(c),
        }
    }
    if name.len() > MAX_TOPIC_CHARS {
        return Err(Error::InvalidInput(format!(
            "tenant {tenant}'s topic name would be {} characters, over Kafka's {MAX_TOPIC_CHARS}",
            name.len()
        )));
    }
    Ok(name)
}

/// The tenant whose topic under `prefix` is `topic`, if it is one.
pub(crate) fn tenant_of(prefix: &str, topic: &str) -> Option<TenantId> {
    let encoded = topic.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut id = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(c) = rest.chars().next() {
        let (decoded, len) = match (c, rest.get(1..3)) {
            ('_', Some("3a")) => (':', 3),
            ('_', Some("40")) => ('@', 3),
            ('_', Some("2e")) => ('.', 3),
            ('_', Some("5f")) => ('_', 3),
            ('_', _) | ('.', _) => return None,
            (c, _) => (c, c.len_utf8()),
        };
        id.push(decoded);
        rest = &rest[len..];
    }
    TenantId::new(id).ok()
}

/// Whether `topic` is a tenant's topic under `prefix`.
pub(crate) fn is_tenant_topic(prefix: &str, topic: &str) -> bool {
    tenant_of(prefix, topic).is_some()
}

/// The tenant topics under `prefix` that exist now.
pub(crate) fn list(consumer: &BaseConsumer, prefix: &str) -> Result<Vec<String>> {
    let metadata = crate::metadata::fetch(consumer.client(), None)?;
    let mut topics: Vec<String> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.name().to_owned())
        .filter(|name| is_tenant_topic(prefix, name))
        .collect();
    topics.sort();
    Ok(topics)
}

/// The topics whose last word in the registry, up to offset `end` of its
/// one partition, is that they were deleted.
pub(crate) fn deleted(
    consumer: &BaseConsumer,
    registry: &str,
    end: i64,
    within: Duration,
) -> Result<HashSet<String>> {
    let mut deleted = HashSet::new();
    let mut assignment = TopicPartitionList::new();
    // From wherever it begins now (retention may trim it meanwhile).
    assignment
        .add_partition_offset(registry, 0, Offset::Beginning)
        .map_err(classify)?;
    consumer.assign(&assignment).map_err(classify)?;
    let deadline = std::time::Instant::now() + within;
    let mut next = 0;
    while next < end {
        if std::time::Instant::now() > deadline {
            return Err(Error::transient(format!(
                "the registry {registry} was not read within {within:?}"
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.map_err(classify)?;
        next = message.offset() + 1;
        if message.offset() >= end {
            break;
        }
        match serde_json::from_slice(message.payload().unwrap_or_default()) {
            Ok(Registered::Joined(topic)) => deleted.remove(&topic),
            Ok(Registered::Left(topic)) => deleted.insert(topic),
            Err(_) => false,
        };
    }
    consumer.unassign().map_err(classify)?;
    Ok(deleted)
}

/// Makes and deletes tenants' topics, and says so on the registry.
pub(crate) struct Topics {
    /// The registry topic, `<prefix>._tenants`.
    pub registry: String,
    kafka: KafkaConfig,
    /// Made on first use: with topics made by the broker, only to delete.
    admin: OnceLock<AdminClient<DefaultClientContext>>,
    /// Asks for metadata the way that lets the broker make a topic.
    producer: FutureProducer,
    settings: TenantTopics,
    timeout: Duration,
}

impl Topics {
    pub fn new(kafka: &KafkaConfig, settings: TenantTopics, producer: FutureProducer) -> Self {
        Topics {
            registry: format!("{}._tenants", kafka.topic),
            kafka: kafka.clone(),
            admin: OnceLock::new(),
            producer,
            settings,
            timeout: kafka.apply_timeout,
        }
    }

    fn admin(&self) -> Result<&AdminClient<DefaultClientContext>> {
        if let Some(admin) = self.admin.get() {
            return Ok(admin);
        }
        let admin = client_config(&self.kafka, &[]).create().map_err(classify)?;
        Ok(self.admin.get_or_init(|| admin))
    }

    /// Makes `topic` unless it exists.
    pub async fn create(self: Arc<Self>, topic: &str) -> Result<()> {
        let (partitions, retention) = (self.settings.partitions, self.settings.retention);
        self.create_with(topic, partitions, retention).await
    }

    /// Makes the registry unless it exists: one partition, records kept
    /// as long as the broker keeps them.
    pub async fn create_registry(self: Arc<Self>) -> Result<()> {
        let registry = self.registry.clone();
        self.create_with(&registry, 1, None).await
    }

    async fn create_with(
        self: Arc<Self>,
        topic: &str,
        partitions: i32,
        retention: Option<Duration>,
    ) -> Result<()> {
        match self.settings.creation {
            TopicCreation::AdminApi => {
                self.create_with_admin_api(topic, partitions, retention)
                    .await
            }
            TopicCreation::Broker => {
                let topic = topic.to_owned();
                tokio::task::spawn_blocking(move || self.ask_broker_to_create(&topic))
                    .await
                    .map_err(Error::permanent)?
            }
        }
    }

    async fn create_with_admin_api(
        &self,
        topic: &str,
        partitions: i32,
        retention: Option<Duration>,
    ) -> Result<()> {
        let retention = retention.map(|r| r.as_millis().to_string());
        let replication = TopicReplication::Fixed(self.settings.replication);
        let mut new = NewTopic::new(topic, partitions, replication);
        if let Some(ms) = &retention {
            new = new.set("retention.ms", ms);
        }
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = self
            .admin()?
            .create_topics([&new], &options)
            .await
            .map_err(classify)?;
        done(results, RDKafkaErrorCode::TopicAlreadyExists, "create")
    }

    /// Asks for `topic`'s metadata until the broker has made it (a
    /// producer's metadata requests allow that; a consumer's do not).
    fn ask_broker_to_create(&self, topic: &str) -> Result<()> {
        let deadline = std::time::Instant::now() + self.timeout;
        while std::time::Instant::now() < deadline {
            if partition_count(self.producer.client(), topic)?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(Error::transient(format!(
            "the broker did not make topic {topic} within {:?}",
            self.timeout
        )))
    }

    /// Tells every instance, through the registry, that a tenant's topic
    /// was made or deleted.
    pub async fn announce(&self, registered: &Registered) -> Result<()> {
        let bytes = serde_json::to_vec(registered).map_err(Error::permanent)?;
        let record = FutureRecord::<(), _>::to(&self.registry)
            .partition(0)
            .payload(&bytes);
        self.producer
            .send(record, self.timeout)
            .await
            .map_err(|(e, _)| classify(e))?;
        Ok(())
    }

    /// Deletes `topic` and everything in it.
    pub async fn delete(&self, topic: &str) -> Result<()> {
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = self
            .admin()?
            .delete_topics(&[topic], &options)
            .await
            .map_err(classify)?;
        done(results, RDKafkaErrorCode::UnknownTopicOrPartition, "delete")
    }
}

/// Ok if the broker did what it was asked (`what`) to every topic, or
/// answered `already` (made already, deleted already).
fn done(results: Vec<TopicResult>, already: RDKafkaErrorCode, what: &str) -> Result<()> {
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, code)) if code == already => {}
            Err((topic, code)) => {
                return Err(Error::transient(format!(
                    "the broker did not {what} topic {topic}: {code}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_topic_names_are_distinct_and_never_side_topics() {
        let topic = |id: &str| tenant_topic("inbox", &TenantId::new(id).expect("valid"));
        assert_eq!(topic("acme").expect("fits"), "inbox.acme");
        assert_eq!(topic("a:b@c.d_e").expect("fits"), "inbox.a_3ab_40c_2ed_5fe");
        let names = [
            "a:", "a@", "a.", "a_", "a_3a", "a_5f", "_tenants", "_chunks", ".x",
        ];
        let topics: std::collections::HashSet<String> =
            names.iter().map(|n| topic(n).expect("fits")).collect();
        assert_eq!(topics.len(), names.len(), "{topics:?}");
        for side in ["inbox._tenants", "inbox._chunks", "inbox._snapshots"] {
            assert!(!topics.contains(side));
        }
        for name in [
            "acme", ":x", "@", "x.y-z", "a:b@c", "_tenants", "a_b", "a.b_c",
        ] {
            let tenant = TenantId::new(name).expect("valid");
            assert_eq!(
                tenant_of("inbox", &topic(name).expect("fits")),
                Some(tenant)
            );
        }
        let others = [
            "inbox",
            "inbox.",
            "inbox._chunks",
            "inbox._snapshots",
            "inbox._3",
            "inboxes.a",
        ];
        for other in others {
            assert!(!is_tenant_topic("inbox", other), "{other}");
        }
        let long = "_".repeat(100);
        assert!(matches!(topic(&long), Err(Error::InvalidInput(_))));
    }
}
