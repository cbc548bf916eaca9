//! How an instance reaches its log: brokers, topic, client settings.

use std::time::Duration;

/// Where the log is and how the clients talk to it. Start with
/// [`KafkaConfig::new`] and the brokers' addresses.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `host:port` of one or more brokers, comma-separated.
    pub brokers: String,
    /// The topic holding every tenant's log (one partition per tenant;
    /// several tenants share a partition), or with a topic per tenant the
    /// prefix of their names. Default `zapinbox`.
    pub topic: String,
    /// One topic for every tenant (default), or a topic per tenant.
    pub layout: Layout,
    /// How long the producer may wait to batch records (`linger.ms`).
    /// Default 1 ms: every write waits for its own record, so latency
    /// counts; see [`KafkaConfig::batched`] for throughput first.
    pub linger: Duration,
    /// Most records in one batch to a partition (`batch.num.messages`).
    /// Default 10 000 (librdkafka's).
    pub batch_records: usize,
    /// How batches are compressed on the wire and in the log. Default
    /// none.
    pub compression: Compression,
    /// Longest a fetch waits at the broker for records to arrive
    /// (`fetch.wait.max.ms`). Default 100 ms: a broker answers as soon as
    /// records arrive. librdkafka's mock cluster answers only when the wait
    /// is over, so [`MockBroker::config`](crate::MockBroker::config) sets
    /// 5 ms.
    pub fetch_wait: Duration,
    /// How long a write may wait for its record to be applied. Default 30 s.
    pub apply_timeout: Duration,
    /// How long opening may take to replay the log. Default 5 min.
    pub replay_timeout: Duration,
    /// Largest record the producer sends, in bytes: at most the broker's
    /// `message.max.bytes`. Default 1 000 000.
    pub max_record_bytes: usize,
    /// Where snapshots go. Default: the topic `<topic>.snapshots`
    /// (`<topic>._snapshots` with a topic per tenant), used if it exists.
    pub snapshots: SideTopic,
    /// Where payloads too large for one record go, in chunks (see
    /// [`KafkaConfig::max_payload_bytes`]). Default: the topic
    /// `<topic>.chunks` (`<topic>._chunks` with a topic per tenant), used
    /// if it exists.
    pub chunks: SideTopic,
    /// Largest payload accepted when the chunk topic exists, in bytes of
    /// JSON text (raise the inbox's `Limits` too: they default to
    /// 512 KiB). Default 64 MiB. Without a chunk topic, a payload must fit
    /// one record (half of `max_record_bytes`, at most 512 KiB).
    pub max_payload_bytes: usize,
    /// Extra librdkafka settings for every client (`security.protocol`,
    /// `sasl.*`, …), applied last.
    pub client: Vec<(String, String)>,
}

/// Where tenants' logs are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// Every tenant's log in a partition of [`KafkaConfig::topic`], chosen
    /// by FNV-1a of the tenant id; tenants share partitions. Snapshots and
    /// chunks go to `<topic>.snapshots` and `<topic>.chunks`.
    #[default]
    Shared,
    /// Each tenant's log in a topic of its own, `<topic>.<tenant>`, with
    /// `:`, `@`, `.` and `_` written `_3a`, `_40`, `_2e` and `_5f` (topic
    /// names cannot hold the first two, and Kafka takes the last two for
    /// one character): `team.a:1` is `<topic>.team_2ea_3a1`. A tenant id
    /// whose topic name would pass Kafka's 249 characters is refused with
    /// `InvalidInput`. The topic is made on the tenant's first write and deleted with
    /// [`KafkaBackend::delete_tenant`](crate::KafkaBackend::delete_tenant).
    /// Instances hear of tenants' topics made and deleted on the registry
    /// topic `<topic>._tenants` (made at open if missing, one partition).
    /// Snapshots and chunks go to `<topic>._snapshots` and
    /// `<topic>._chunks`: no tenant's topic can have these names.
    TopicPerTenant(TenantTopics),
}

/// How each tenant's topic is made, with [`Layout::TopicPerTenant`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantTopics {
    /// Partitions of each topic. Default 1: the inbox writes a tenant's
    /// records to partition 0, its one order; more partitions serve other
    /// producers and consumers of the topic.
    pub partitions: i32,
    /// Replicas of each partition. Default 1; 3 on a production cluster.
    pub replication: i32,
    /// The topics' `retention.ms`; `None` (default) keeps the broker's
    /// default. An instance replays a tenant's log from its start or from
    /// a snapshot: keep it longer than the inbox's retention, and write
    /// snapshots.
    pub retention: Option<Duration>,
    /// Who makes a tenant's topic: this instance through the admin API
    /// (default), or the broker itself on first use
    /// (`auto.create.topics.enable`, as librdkafka's mock cluster does,
    /// with its own partitions and settings).
    pub creation: TopicCreation,
}

/// Who makes a tenant's topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicCreation {
    /// The instance that first writes for the tenant, with the admin API.
    #[default]
    AdminApi,
    /// The broker, when a client first asks for the topic's metadata.
    Broker,
}

impl Default for TenantTopics {
    fn default() -> Self {
        TenantTopics {
            partitions: 1,
            replication: 1,
            retention: None,
            creation: TopicCreation::AdminApi,
        }
    }
}

impl TenantTopics {
    /// With `partitions` partitions a topic.
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// With `replication` replicas a partition.
    pub fn replication(mut self, replication: i32) -> Self {
        self.replication = replication.max(1);
        self
    }

    /// With records kept for `retention`.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// With topics made by the broker on first use.
    pub fn created_by_broker(mut self) -> Self {
        self.creation = TopicCreation::Broker;
        self
    }
}

/// A compression codec for the producer's batches (`compression.type`);
/// consumers read any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Uncompressed.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy (the source system "Module 3.1" used it).
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Its name in librdkafka's settings.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// A topic beside the log: where snapshots are written to and read from
/// (see [`KafkaBackend::snapshot`](crate::KafkaBackend::snapshot)), or
/// where large payloads' chunks go.
///
/// Create the snapshot topic with `cleanup.policy=compact`; while it does
/// not exist, opening replays the whole log and `snapshot` fails. Give the
/// chunk topic the log's retention (or longer) and enough partitions to
/// spread a large payload (chunks go round the partitions); while it does
/// not exist, payloads must fit one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideTopic {
    /// `<topic>.snapshots`, or `<topic>.chunks` (with a topic per
    /// tenant, `<topic>._snapshots` and `<topic>._chunks`).
    Beside,
    /// This topic.
    Named(String),
    /// None: no snapshots (opening always replays the log from its
    /// start), or no chunks (payloads must fit one record).
    Off,
}

impl SideTopic {
    /// Its name beside `topic`, where `Beside` adds `.<suffix>`.
    fn name(&self, topic: &str, suffix: String) -> Option<String> {
        match self {
            SideTopic::Beside => Some(format!("{topic}.{suffix}")),
            SideTopic::Named(topic) => Some(topic.clone()),
            SideTopic::Off => None,
        }
    }
}

impl KafkaConfig {
    /// Settings for the brokers at `brokers` (`host:port,…`).
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            topic: "zapinbox".into(),
            layout: Layout::Shared,
            linger: Duration::from_millis(1),
            batch_records: 10_000,
            compression: Compression::None,
            fetch_wait: Duration::from_millis(100),
            apply_timeout: Duration::from_secs(30),
            replay_timeout: Duration::from_secs(300),
            max_record_bytes: 1_000_000,
            snapshots: SideTopic::Beside,
            chunks: SideTopic::Beside,
            max_payload_bytes: 64 * 1024 * 1024,
            client: Vec::new(),
        }
    }

    /// With the log on `topic`.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// With a topic per tenant, made as `topics` says.
    pub fn topic_per_tenant(mut self, topics: TenantTopics) -> Self {
        self.layout = Layout::TopicPerTenant(topics);
        self
    }

    /// With records batched as the source system "Module 3.1" batches
    /// them: up to `records` a batch or `linger` (it used 100 records or
    /// 500 ms, and snappy). Each write still waits for its own record, so
    /// a lone write takes up to `linger`; many concurrent writes share
    /// batches.
    pub fn batched(mut self, records: usize, linger: Duration) -> Self {
        self.batch_records = records.max(1);
        self.linger = linger;
        self
    }

    /// With batches compressed by `compression`.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// With fetches that wait at most `wait` at the broker.
    pub fn fetch_wait(mut self, wait: Duration) -> Self {
        self.fetch_wait = wait;
        self
    }

    /// With snapshots on `snapshots`.
    pub fn snapshots(mut self, snapshots: SideTopic) -> Self {
        self.snapshots = snapshots;
        self
    }

    /// With large payloads' chunks on `chunks`, and payloads up to
    /// `max_payload_bytes`.
    pub fn chunks(mut self, chunks: SideTopic, max_payload_bytes: usize) -> Self {
        self.chunks = chunks;
        self.max_payload_bytes = max_payload_bytes;
        self
    }

    /// The snapshot topic's name, unless snapshots are off.
    pub fn snapshot_topic(&self) -> Option<String> {
        self.snapshots
            .name(&self.topic, self.side_suffix("snapshots"))
    }

    /// The chunk topic's name, unless chunks are off.
    pub fn chunk_topic(&self) -> Option<String> {
        self.chunks.name(&self.topic, self.side_suffix("chunks"))
    }

    /// What a side topic adds to the topic's name: with a topic per
    /// tenant, a name no tenant's topic can have.
    fn side_suffix(&self, name: &'static str) -> String {
        match self.layout {
            Layout::Shared => name.to_owned(),
            Layout::TopicPerTenant(_) => format!("_{name}"),
        }
    }

    /// With a librdkafka setting for every client.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.client.push((key.into(), value.into()));
        self
    }
}
