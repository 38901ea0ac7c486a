//! The Kafka edge of dispatch mode: one consumer per `kafka-dispatch` trigger, reading every
//! partition of the topic by assignment (no group membership: only the leading operator reads,
//! and the Jobs never join the group), committing the offsets the ledger says are done, and
//! producing dead letters.
//!
//! What to do with a message is `jobtide_core::dispatch`'s business; this module only moves
//! bytes. Positions are explicit: [`DispatchConsumer::start`] reads the group's committed offsets
//! (or the reset policy's log start/end) and assigns the partitions there, and the ledger's
//! [`fetch_position`](jobtide_core::dispatch::Ledger::fetch_position) never passes a message
//! that isn't done.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jobtide_api::trigger::KafkaDispatchTrigger;
use jobtide_api::trigger::connection::KafkaConnection;
use jobtide_core::dispatch::Message;
use jobtide_core::kafka::OffsetResetPolicy;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::client_config::{ConfigError, ConfigFiles, client_config};
use crate::kerberos::GssapiSupport;

/// Why a dispatch consumer step failed. Texts name the topic and the operation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DispatchError {
    /// The client could not be configured.
    #[error("{0}")]
    Config(String),
    /// The topic's partitions could not be read.
    #[error("reading the partitions of topic {topic}: {message}")]
    Metadata {
        /// The topic.
        topic: String,
        /// The cause.
        message: String,
    },
    /// The topic doesn't exist (or has no partitions).
    #[error("topic {0} has no partitions (does it exist?)")]
    NoPartitions(String),
    /// Committed offsets or watermarks could not be read.
    #[error("reading the start positions of topic {topic}: {message}")]
    Positions {
        /// The topic.
        topic: String,
        /// The cause.
        message: String,
    },
    /// Reading a message failed.
    #[error("reading topic {topic}: {message}")]
    Receive {
        /// The topic.
        topic: String,
        /// The cause.
        message: String,
    },
    /// Committing failed.
    #[error("committing offsets of group {group} on topic {topic}: {message}")]
    Commit {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The cause.
        message: String,
    },
    /// Producing an outcome record failed.
    #[error("producing to results topic {topic}: {message}")]
    Results {
        /// The results topic.
        topic: String,
        /// The cause.
        message: String,
    },
    /// Producing a dead letter failed.
    #[error("producing to dead-letter topic {topic}: {message}")]
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
        /// The cause.
        message: String,
    },
}

impl DispatchError {
    /// A fixed label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Metadata { .. } | Self::NoPartitions(_) => "metadata",
            Self::Positions { .. } => "positions",
            Self::Receive { .. } => "receive",
            Self::Commit { .. } => "commit",
            Self::DeadLetter { .. } => "dead_letter",
            Self::Results { .. } => "results",
        }
    }
}

impl From<ConfigError> for DispatchError {
    fn from(error: ConfigError) -> Self {
        Self::Config(error.to_string())
    }
}

/// How long one broker round trip of the consumer's own calls may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer (and the dead-letter and results producer) of one dispatch trigger.
pub struct DispatchConsumer {
    consumer: Arc<StreamConsumer>,
    producer: Option<FutureProducer>,
    topic: String,
    group: String,
    dead_letter_topic: Option<String>,
    results_topic: Option<String>,
    reset: OffsetResetPolicy,
    _files: (ConfigFiles, Option<ConfigFiles>),
}

impl std::fmt::Debug for DispatchConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchConsumer")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl DispatchConsumer {
    /// A consumer for `trigger` (`bootstrap_override` replaces its brokers, as for lag
    /// triggers). No network I/O until [`Self::start`].
    pub fn connect(
        trigger: &KafkaDispatchTrigger,
        bootstrap_override: Option<&str>,
        gssapi: &GssapiSupport,
    ) -> Result<Self, DispatchError> {
        let connection = match bootstrap_override {
            Some(servers) => KafkaConnection {
                bootstrap_servers: vec![servers.to_owned()],
                ..trigger.connection.clone()
            },
            None => trigger.connection.clone(),
        };
        let (mut config, files) = client_config(&connection, trigger.isolation_level, gssapi)?;
        config
            .set("group.id", &trigger.consumer_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // Memory stays bounded by the ledger's cap: a paused partition's prefetch is
            // dropped, and what is prefetched meanwhile is small.
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.wait.max.ms", "100");
        let consumer: StreamConsumer = config
            .create()
            .map_err(|e| DispatchError::Config(format!("creating the Kafka consumer: {e}")))?;
        let (producer, producer_files) = match (&trigger.dead_letter_topic, &trigger.results_topic)
        {
            (Some(_), _) | (_, Some(_)) => {
                // Its own files (a keytab, a krb5.conf) live as long as the producer.
                let (mut config, files) =
                    client_config(&connection, trigger.isolation_level, gssapi)?;
                config
                    // A consumer property: librdkafka warns about it on a producer.
                    .remove("isolation.level")
                    .set("enable.idempotence", "true")
                    .set("message.timeout.ms", "30000");
                let producer = config.create().map_err(|e| {
                    DispatchError::Config(format!(
                        "creating the producer for dead letters and outcome records: {e}"
                    ))
                })?;
                (Some(producer), Some(files))
            }
            (None, None) => (None, None),
        };
        Ok(Self {
            consumer: Arc::new(consumer),
            producer,
            topic: trigger.topic.clone(),
            group: trigger.consumer_group.clone(),
            dead_letter_topic: trigger.dead_letter_topic.clone(),
            results_topic: trigger.results_topic.clone(),
            reset: trigger.backlog.offset_reset_policy,
            _files: (files, producer_files),
        })
    }

    /// The next offset to read of every partition: the group's committed offset, or where the
    /// reset policy starts a group without one (the log start or end as a number), never below
    /// the log start (records deleted by retention can't be read).
    pub async fn start_positions(&self) -> Result<BTreeMap<i32, i64>, DispatchError> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let reset = self.reset;
        tokio::task::spawn_blocking(move || start_positions(&consumer, &topic, reset))
            .await
            .map_err(|e| DispatchError::Positions {
                topic: self.topic.clone(),
                message: e.to_string(),
            })?
    }

    /// Reads from `positions` (partition → next offset) on.
    pub fn assign(&self, positions: &BTreeMap<i32, i64>) -> Result<(), DispatchError> {
        let mut list = TopicPartitionList::new();
        for (&partition, &offset) in positions {
            list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
                .map_err(|e| self.receive_error(&e))?;
        }
        self.consumer
            .assign(&list)
            .map_err(|e| self.receive_error(&e))
    }

    /// The next message.
    pub async fn recv(&self) -> Result<Message, DispatchError> {
        let message = self
            .consumer
            .recv()
            .await
            .map_err(|e| self.receive_error(&e))?;
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Message {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        })
    }

    /// Stops fetching every assigned partition (the ledger's cap is reached); what was
    /// prefetched is dropped and read again after [`Self::resume`].
    pub fn pause(&self) -> Result<(), DispatchError> {
        let assignment = self
            .consumer
            .assignment()
            .map_err(|e| self.receive_error(&e))?;
        self.consumer
            .pause(&assignment)
            .map_err(|e| self.receive_error(&e))
    }

    /// Fetches again after [`Self::pause`].
    pub fn resume(&self) -> Result<(), DispatchError> {
        let assignment = self
            .consumer
            .assignment()
            .map_err(|e| self.receive_error(&e))?;
        self.consumer
            .resume(&assignment)
            .map_err(|e| self.receive_error(&e))
    }

    /// Commits `offsets` (partition → next offset to read) for the group.
    pub async fn commit(&self, offsets: &[(i32, i64)]) -> Result<(), DispatchError> {
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in offsets {
            list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
                .map_err(|e| self.commit_error(&e))?;
        }
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|e| self.commit_error(&e))?
            .map_err(|e| self.commit_error(&e))
    }

    /// Produces `message` to the dead-letter topic with its key, value and headers plus
    /// `jobtide-original-topic`, `jobtide-original-partition`, `jobtide-original-offset`,
    /// `jobtide-attempts` and `jobtide-failure`.
    pub async fn dead_letter(
        &self,
        message: &Message,
        attempts: u32,
        reason: &str,
    ) -> Result<(), DispatchError> {
        let (Some(producer), Some(topic)) = (&self.producer, &self.dead_letter_topic) else {
            return Err(DispatchError::DeadLetter {
                topic: String::new(),
                message: "no dead-letter topic".into(),
            });
        };
        let mut headers = OwnedHeaders::new();
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let partition = message.partition.to_string();
        let offset = message.offset.to_string();
        let attempts = attempts.to_string();
        for (key, value) in [
            ("jobtide-original-topic", self.topic.as_str()),
            ("jobtide-original-partition", partition.as_str()),
            ("jobtide-original-offset", offset.as_str()),
            ("jobtide-attempts", attempts.as_str()),
            ("jobtide-failure", reason),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &message.value {
            record = record.payload(value.as_slice());
        }
        producer
            .send(record, REQUEST_TIMEOUT)
            .await
            .map(drop)
            .map_err(|(e, _)| DispatchError::DeadLetter {
                topic: topic.clone(),
                message: e.to_string(),
            })
    }

    /// Produces one outcome record (`key`: the message's coordinates, `value`: the record) to
    /// the results topic; waits for the broker's acknowledgement.
    pub async fn result(&self, key: &str, value: &[u8]) -> Result<(), DispatchError> {
        let (Some(producer), Some(topic)) = (&self.producer, &self.results_topic) else {
            return Err(DispatchError::Results {
                topic: String::new(),
                message: "no results topic".into(),
            });
        };
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key).payload(value);
        producer
            .send(record, REQUEST_TIMEOUT)
            .await
            .map(drop)
            .map_err(|(e, _)| DispatchError::Results {
                topic: topic.clone(),
                message: e.to_string(),
            })
    }

    fn receive_error(&self, error: &impl std::fmt::Display) -> DispatchError {
        DispatchError::Receive {
            topic: self.topic.clone(),
            message: error.to_string(),
        }
    }

    fn commit_error(&self, error: &impl std::fmt::Display) -> DispatchError {
        DispatchError::Commit {
            group: self.group.clone(),
            topic: self.topic.clone(),
            message: error.to_string(),
        }
    }
}

fn start_positions(
    consumer: &StreamConsumer,
    topic: &str,
    reset: OffsetResetPolicy,
) -> Result<BTreeMap<i32, i64>, DispatchError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| DispatchError::Metadata {
            topic: topic.to_owned(),
            message: e.to_string(),
        })?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| {
            t.partitions()
                .iter()
                .map(rdkafka::metadata::MetadataPartition::id)
        })
        .collect();
    if partitions.is_empty() {
        return Err(DispatchError::NoPartitions(topic.to_owned()));
    }
    let failed = |e: rdkafka::error::KafkaError| DispatchError::Positions {
        topic: topic.to_owned(),
        message: e.to_string(),
    };
    let mut list = TopicPartitionList::new();
    for &partition in &partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, REQUEST_TIMEOUT)
        .map_err(failed)?;
    let mut positions = BTreeMap::new();
    for &partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(failed)?;
        let commit = committed
            .find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(offset) if offset >= 0 => Some(offset),
                _ => None,
            });
        let position = match (commit, reset) {
            (Some(offset), _) => offset.max(low),
            (None, OffsetResetPolicy::Earliest) => low,
            (None, OffsetResetPolicy::Latest) => high,
        };
        positions.insert(partition, position);
    }
    Ok(positions)
}
