//! KEDA's Kafka lag scaler over a shared [`OffsetsSource`]: topic discovery (keda-compat §7.2),
//! offsets (§7.3) and the lag rules of `jobtide-core` (§7.4–§7.6). Errors carry KEDA's texts.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jobtide_api::trigger::TriggerConfig;
use jobtide_api::trigger::connection::KafkaConnection;
use jobtide_core::kafka::LagPolicy;
use jobtide_core::lag::{PartitionOffsets, PersistentLagMemory, trigger_lag};
use jobtide_core::scaling::TriggerMeasurement;

use crate::client_config::{ConfigError, Isolation};
use crate::problem::BrokerProblem;
use crate::source::{OffsetsSource, SourceError, SourcePool, TopicPartition, TopicPartitions};

/// Which topics a trigger measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topics {
    /// These topics.
    Named(Vec<String>),
    /// `kafka` without a topic: every topic the group has committed offsets for.
    Committed,
}

/// What the scaler needs of a trigger, for `kafka` and `apache-kafka` (and the backlog of a
/// `kafka-dispatch` trigger's group, which `jobtide explain` shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagTarget {
    /// How to reach the cluster.
    pub connection: KafkaConnection,
    /// The consumer group.
    pub group: String,
    /// The topics.
    pub topics: Topics,
    /// The lag rules.
    pub policy: LagPolicy,
    /// High watermark (KEDA) or last stable offset.
    pub isolation: Isolation,
}

impl LagTarget {
    /// The target of a parsed trigger.
    pub fn from_trigger(config: &TriggerConfig) -> Result<Self, ScalerError> {
        Ok(match config {
            TriggerConfig::Kafka(kafka) => Self {
                connection: kafka.connection.clone(),
                group: kafka.consumer_group.clone(),
                topics: kafka
                    .topic
                    .as_ref()
                    .map_or(Topics::Committed, |t| Topics::Named(vec![t.clone()])),
                policy: kafka.lag.clone(),
                isolation: kafka.isolation_level,
            },
            TriggerConfig::ApacheKafka(apache) => {
                if apache.topics.is_empty() {
                    return Err(ScalerError::NotSupported(
                        "apache-kafka without a topic (KEDA scans every topic of the cluster and \
                         requires active group members)",
                    ));
                }
                Self {
                    connection: apache.connection.clone(),
                    group: apache.consumer_group.clone(),
                    topics: Topics::Named(apache.topics.clone()),
                    policy: apache.lag.clone(),
                    isolation: apache.isolation_level,
                }
            }
            // The dispatch group's backlog: every message not yet committed counts one.
            TriggerConfig::KafkaDispatch(dispatch) => Self {
                connection: dispatch.connection.clone(),
                group: dispatch.consumer_group.clone(),
                topics: Topics::Named(vec![dispatch.topic.clone()]),
                policy: dispatch.backlog.clone(),
                isolation: dispatch.isolation_level,
            },
        })
    }
}

/// Why a measurement failed. The texts are KEDA's where KEDA has one.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ScalerError {
    /// The client could not be configured.
    #[error("{0}")]
    Config(String),
    /// Metadata for the topics failed.
    #[error("error describing topics: {0}")]
    DescribeTopics(SourceError),
    /// The topic has no partition (it doesn't exist, or `partitionLimitation` excludes all).
    #[error("expected at least one active partition within the topic '{0}'")]
    NoActivePartition(String),
    /// Listing the topics the group committed (topic-less trigger) failed.
    #[error("error listing cg offset: {0}")]
    ListGroupTopics(SourceError),
    /// Fetching the committed offsets failed.
    #[error("error listing consumer group offsets: {0}")]
    CommittedOffsets(SourceError),
    /// Fetching the log end offsets failed.
    #[error("error listing latest offsets: {0}")]
    EndOffsets(SourceError),
    /// The measurement didn't finish within the poll's time, and librdkafka logged nothing
    /// about why.
    #[error("timed out after {0:?} waiting for the Kafka cluster")]
    Timeout(Duration),
    /// The measurement didn't finish because the cluster can't be reached, for the reason
    /// librdkafka logged meanwhile.
    #[error("{problem} (gave up after {after:?})")]
    Unreachable {
        /// What librdkafka saw.
        problem: BrokerProblem,
        /// How long the measurement waited.
        after: Duration,
    },
    /// KEDA accepts the trigger, jobtide can't measure it yet.
    #[error("{0} is not supported by jobtide yet")]
    NotSupported(&'static str),
}

impl ScalerError {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::DescribeTopics(_) => "metadata",
            Self::NoActivePartition(_) => "no_partition",
            Self::ListGroupTopics(_) | Self::CommittedOffsets(_) => "committed_offsets",
            Self::EndOffsets(_) => "end_offsets",
            Self::Timeout(_) => "timeout",
            Self::Unreachable { problem, .. } => problem.category(),
            Self::NotSupported(_) => "not_supported",
        }
    }
}

impl From<ConfigError> for ScalerError {
    fn from(error: ConfigError) -> Self {
        Self::Config(error.to_string())
    }
}

/// One partition's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset; `None` when the group has none.
    pub committed: Option<i64>,
    /// Log start offset, when fetched (`earliest` with no commit).
    pub log_start: Option<i64>,
    /// Log end offset.
    pub end: i64,
    /// Lag including persistent lag.
    pub lag: i64,
    /// Lag counted toward the metric.
    pub counted_lag: i64,
}

/// A trigger's measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// Per partition, sorted by topic and partition.
    pub partitions: Vec<PartitionReport>,
    /// Σ counted lag before caps.
    pub total_lag: i64,
    /// The metric value (capped).
    pub metric_value: i64,
    /// Activity.
    pub active: bool,
    /// Memory for `excludePersistentLag` at the next poll.
    pub memory: PersistentLagMemory,
}

/// How far back a connection problem librdkafka logged still explains a timeout: librdkafka
/// retries a failing broker at most `reconnect.backoff.max.ms` (10 s) apart, logging each
/// failure, so a problem older than that plus the measurement's own time is not the current one.
const PROBLEM_RELEVANCE: Duration = Duration::from_secs(10);

/// Measures `target`'s lag, within `timeout`. When librdkafka logs that the cluster refused the
/// client (authentication or TLS failed), it fails at once with [`ScalerError::Unreachable`].
/// When it times out (or librdkafka's own request
/// does), a connection problem librdkafka logged meanwhile becomes
/// [`ScalerError::Unreachable`]: connection refused, not a Kafka broker, …
pub async fn measure(
    pool: &SourcePool,
    target: &LagTarget,
    previous: &PersistentLagMemory,
    timeout: Duration,
) -> Result<Measurement, ScalerError> {
    let started = Instant::now();
    let source = pool.source(&target.connection, target.isolation)?;
    let measured = tokio::time::timeout(timeout, measure_inner(&source, target, previous, timeout));
    let result = tokio::select! {
        result = measured => result.unwrap_or(Err(ScalerError::Timeout(timeout))),
        // Authentication or TLS refused: fail now, not at the timeout.
        problem = source.refused_since(started) => Err(ScalerError::Unreachable {
            problem,
            // Whole milliseconds: "(gave up after 12ms)".
            after: Duration::from_millis(
                u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ),
        }),
    };
    result.map_err(|error| {
        if !unanswered(&error) {
            return error;
        }
        let since = started.checked_sub(PROBLEM_RELEVANCE).unwrap_or(started);
        match source.problem_since(since) {
            Some(problem) => ScalerError::Unreachable {
                problem,
                after: timeout,
            },
            None => ScalerError::Timeout(timeout),
        }
    })
}

/// Whether `error` means the cluster didn't answer: our deadline, or librdkafka's own request
/// ending at its timeout — with `Timed out`, or, when it gave up on the connection meanwhile,
/// `Broker transport failure` (which of the two comes first is a race at the deadline).
fn unanswered(error: &ScalerError) -> bool {
    const NO_ANSWER: [&str; 3] = [
        "Timed out",
        "Broker transport failure",
        "All broker connections are down",
    ];
    match error {
        ScalerError::Timeout(_) => true,
        ScalerError::DescribeTopics(e)
        | ScalerError::ListGroupTopics(e)
        | ScalerError::CommittedOffsets(e)
        | ScalerError::EndOffsets(e) => NO_ANSWER.iter().any(|text| e.0.contains(text)),
        _ => false,
    }
}

async fn measure_inner(
    source: &OffsetsSource,
    target: &LagTarget,
    previous: &PersistentLagMemory,
    timeout: Duration,
) -> Result<Measurement, ScalerError> {
    let topics: Vec<String> = match &target.topics {
        Topics::Named(topics) => topics.clone(),
        Topics::Committed => committed_topics(source, &target.group, timeout).await?,
    };
    if topics.is_empty() {
        // KEDA: a group with no committed offsets has no topics, hence lag 0.
        return Ok(Measurement {
            partitions: Vec::new(),
            total_lag: 0,
            metric_value: 0,
            active: false,
            memory: PersistentLagMemory::new(),
        });
    }
    let metadata = source
        .partitions(topics.clone(), timeout)
        .await
        .map_err(ScalerError::DescribeTopics)?;
    let mut partitions: Vec<TopicPartition> = Vec::new();
    for topic in &topics {
        let ids: Vec<i32> = match metadata.get(topic) {
            Some(TopicPartitions::Found(ids)) => ids
                .iter()
                .copied()
                .filter(|id| target.policy.counts_partition(*id))
                .collect(),
            Some(TopicPartitions::Unknown) | None => Vec::new(),
        };
        if ids.is_empty() {
            return Err(ScalerError::NoActivePartition(topic.clone()));
        }
        partitions.extend(ids.into_iter().map(|id| (topic.clone(), id)));
    }
    partitions.sort();
    // D3: the log start of every partition, in the same round (batched like the log ends: one
    // ListOffsets per leader for the starts, one for the ends, sent concurrently): for `earliest`
    // without a commit, and for commits below it (records deleted by retention). If that fetch
    // fails, the lag is computed without it, as KEDA does.
    let (committed, ends, starts) = tokio::join!(
        source.committed(&target.group, Some(partitions.clone()), timeout),
        source.offsets(partitions.clone(), false, timeout),
        source.offsets(partitions.clone(), true, timeout),
    );
    let committed = committed.map_err(ScalerError::CommittedOffsets)?;
    let ends = ends.map_err(ScalerError::EndOffsets)?;
    let starts = starts.unwrap_or_default();
    let offsets: Vec<PartitionOffsets> = partitions
        .iter()
        .filter_map(|key| {
            // KEDA: a partition missing from the end offsets counts 0 (Event Hubs tolerance).
            let end = *ends.get(key)?;
            Some(PartitionOffsets {
                topic: key.0.clone(),
                partition: key.1,
                committed: committed.get(key).copied().flatten(),
                log_start: starts.get(key).copied(),
                end,
            })
        })
        .collect();
    let lag = trigger_lag(&offsets, &target.policy, previous);
    let partitions = offsets
        .iter()
        .zip(&lag.partitions)
        .map(|(o, l)| PartitionReport {
            topic: o.topic.clone(),
            partition: o.partition,
            committed: o.committed,
            log_start: o.log_start,
            end: o.end,
            lag: l.lag_with_persistent,
            counted_lag: l.lag,
        })
        .collect();
    Ok(Measurement {
        partitions,
        total_lag: lag.total_lag,
        metric_value: lag.metric_value,
        active: lag.active,
        memory: lag.memory,
    })
}

/// The topics `group` has committed offsets for. First the all-topics OffsetFetch (one request);
/// when that answers nothing — a group without commits, or a broker that doesn't implement the
/// all-topics form, like librdkafka's mock cluster — the explicit form over every partition of
/// every topic in the cluster's metadata.
async fn committed_topics(
    source: &OffsetsSource,
    group: &str,
    timeout: Duration,
) -> Result<Vec<String>, ScalerError> {
    let committed = source
        .committed(group, None, timeout)
        .await
        .map_err(ScalerError::ListGroupTopics)?;
    let mut topics: BTreeSet<String> = committed
        .iter()
        .filter(|(_, o)| o.is_some())
        .map(|((t, _), _)| t.clone())
        .collect();
    if topics.is_empty() {
        let all = source
            .all_partitions(timeout)
            .await
            .map_err(ScalerError::ListGroupTopics)?;
        if !all.is_empty() {
            let committed = source
                .committed(group, Some(all), timeout)
                .await
                .map_err(ScalerError::ListGroupTopics)?;
            topics = committed
                .iter()
                .filter(|(_, o)| o.is_some())
                .map(|((t, _), _)| t.clone())
                .collect();
        }
    }
    Ok(topics.into_iter().collect())
}

impl Measurement {
    /// This measurement as `jobtide-core`'s scaling input: the metric value against the
    /// trigger's `lagThreshold` (the AverageValue target KEDA uses for ScaledJobs).
    pub fn to_scaling(&self, policy: &LagPolicy) -> TriggerMeasurement {
        #[allow(clippy::cast_precision_loss)] // lags far below 2^52
        TriggerMeasurement {
            queue_length: self.metric_value as f64,
            target: policy.lag_threshold as f64,
            active: self.active,
        }
    }
}

/// Measures a parsed trigger: [`LagTarget::from_trigger`], then [`measure`]; `brokers` replaces
/// the trigger's `bootstrapServers` when given.
pub async fn measure_trigger(
    pool: &SourcePool,
    config: &TriggerConfig,
    brokers: Option<&[String]>,
    previous: &PersistentLagMemory,
    timeout: Duration,
) -> Result<Measurement, ScalerError> {
    let mut target = LagTarget::from_trigger(config)?;
    if let Some(brokers) = brokers {
        target.connection.bootstrap_servers = brokers.to_vec();
    }
    measure(pool, &target, previous, timeout).await
}
