//! One offsets source per (bootstrap servers, security settings, isolation level), shared by every
//! trigger of every ScaledJob that talks to the same cluster with the same credentials (D11).
//!
//! A source is one librdkafka client. It answers three questions, each as one batched request
//! round: partitions of topics (Metadata, for the topics asked only), committed offsets of a
//! group (one OffsetFetch to the group coordinator), and log start / end offsets (ListOffsets,
//! grouped by partition leader by librdkafka: one request per broker). librdkafka reconnects
//! with exponential backoff by itself; the client is never rebuilt because a poll failed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobtide_api::trigger::connection::KafkaConnection;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::client_config::{ConfigError, ConfigFiles, Isolation, client_config};
use crate::ffi;

/// A partition key.
pub type TopicPartition = (String, i32);

/// Why a source request failed (texts are librdkafka's).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SourceError(pub String);

impl From<KafkaError> for SourceError {
    fn from(error: KafkaError) -> Self {
        Self(error.to_string())
    }
}

/// A shared connection to one Kafka cluster.
pub struct OffsetsSource {
    consumer: Arc<BaseConsumer>,
    _files: ConfigFiles,
}

impl std::fmt::Debug for OffsetsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetsSource").finish_non_exhaustive()
    }
}

/// The partitions of a topic as the cluster reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPartitions {
    /// The topic exists with these partition ids.
    Found(Vec<i32>),
    /// The cluster doesn't know the topic.
    Unknown,
}

impl OffsetsSource {
    /// Creates the client (no network I/O happens until the first request).
    pub fn connect(
        connection: &KafkaConnection,
        isolation: Isolation,
    ) -> Result<Self, ConfigError> {
        let (config, files) = client_config(connection, isolation)?;
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(Self {
            consumer: Arc::new(consumer),
            _files: files,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&BaseConsumer) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, SourceError> {
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || work(&consumer))
            .await
            .map_err(|e| SourceError(format!("offsets task failed: {e}")))?
    }

    /// The partitions of `topics` (one Metadata request per topic; librdkafka caches).
    pub async fn partitions(
        &self,
        topics: Vec<String>,
        timeout: Duration,
    ) -> Result<BTreeMap<String, TopicPartitions>, SourceError> {
        self.blocking(move |consumer| {
            let mut out = BTreeMap::new();
            for topic in topics {
                let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
                let found = metadata.topics().iter().find(|t| t.name() == topic);
                let partitions = match found {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        TopicPartitions::Found(
                            t.partitions()
                                .iter()
                                .map(rdkafka::metadata::MetadataPartition::id)
                                .collect(),
                        )
                    }
                    _ => TopicPartitions::Unknown,
                };
                out.insert(topic, partitions);
            }
            Ok(out)
        })
        .await
    }

    /// Every partition of every topic the cluster reports (internal topics excluded).
    pub async fn all_partitions(
        &self,
        timeout: Duration,
    ) -> Result<Vec<TopicPartition>, SourceError> {
        self.blocking(move |consumer| {
            let metadata = consumer.fetch_metadata(None, timeout)?;
            Ok(metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.name().starts_with("__"))
                .flat_map(|t| {
                    t.partitions()
                        .iter()
                        .map(move |p| (t.name().to_owned(), p.id()))
                })
                .collect())
        })
        .await
    }

    /// `group`'s committed offsets for `partitions`, or with `None` for every partition it has
    /// committed: one OffsetFetch. A partition without a commit maps to `None`.
    pub async fn committed(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartition>>,
        timeout: Duration,
    ) -> Result<HashMap<TopicPartition, Option<i64>>, SourceError> {
        let group = group.to_owned();
        self.blocking(move |consumer| {
            let list = partitions.map(|parts| {
                let mut list = TopicPartitionList::new();
                for (topic, partition) in parts {
                    list.add_partition(&topic, partition);
                }
                list
            });
            let offsets =
                ffi::list_group_offsets(consumer.client(), &group, list.as_ref(), timeout)
                    .map_err(SourceError)?;
            let mut out = HashMap::new();
            for offset in offsets {
                if let Some(error) = offset.error {
                    return Err(SourceError(format!(
                        "{} partition {}: {error}",
                        offset.topic, offset.partition
                    )));
                }
                out.insert(
                    (offset.topic, offset.partition),
                    (offset.offset >= 0).then_some(offset.offset),
                );
            }
            Ok(out)
        })
        .await
    }

    /// Log end offsets (or, with `start`, log start offsets) for `partitions`: librdkafka sends
    /// one ListOffsets per partition leader.
    pub async fn offsets(
        &self,
        partitions: Vec<TopicPartition>,
        start: bool,
        timeout: Duration,
    ) -> Result<HashMap<TopicPartition, i64>, SourceError> {
        if partitions.is_empty() {
            return Ok(HashMap::new());
        }
        self.blocking(move |consumer| {
            let mut list = TopicPartitionList::new();
            let which = if start {
                Offset::Beginning
            } else {
                Offset::End
            };
            for (topic, partition) in &partitions {
                list.add_partition_offset(topic, *partition, which)?;
            }
            let result = consumer.offsets_for_times(list, timeout)?;
            let mut out = HashMap::new();
            for element in result.elements() {
                if let Err(error) = element.error() {
                    return Err(SourceError(format!(
                        "{} partition {}: {error}",
                        element.topic(),
                        element.partition()
                    )));
                }
                let offset = match element.offset() {
                    Offset::Offset(o) => o,
                    other => {
                        return Err(SourceError(format!(
                            "{} partition {}: no offset ({other:?})",
                            element.topic(),
                            element.partition()
                        )));
                    }
                };
                out.insert((element.topic().to_owned(), element.partition()), offset);
            }
            Ok(out)
        })
        .await
    }
}

/// The shared sources, keyed by everything that decides which cluster and which identity.
#[derive(Debug, Default)]
pub struct SourcePool {
    sources: Mutex<HashMap<SourceKey, Arc<OffsetsSource>>>,
}

/// What makes two triggers share a source: the whole connection (secrets included; its
/// `Debug` redacts them) and the isolation level.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SourceKey {
    connection: KafkaConnection,
    isolation: Isolation,
}

impl SourcePool {
    /// A new, empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The source for `connection`, created on first use.
    pub fn source(
        &self,
        connection: &KafkaConnection,
        isolation: Isolation,
    ) -> Result<Arc<OffsetsSource>, ConfigError> {
        let key = SourceKey {
            connection: connection.clone(),
            isolation,
        };
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(source) = sources.get(&key) {
            return Ok(Arc::clone(source));
        }
        let source = Arc::new(OffsetsSource::connect(connection, isolation)?);
        sources.insert(key, Arc::clone(&source));
        Ok(source)
    }

    /// How many distinct sources (clients) exist.
    pub fn len(&self) -> usize {
        self.sources.lock().map_or(0, |s| s.len())
    }

    /// Whether no source exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
