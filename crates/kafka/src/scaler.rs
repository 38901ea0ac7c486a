//! KEDA's Kafka lag scaler over a shared [`OffsetsSource`]: topic discovery (keda-compat §7.2),
//! offsets (§7.3) and the lag rules of `jobtide-core` (§7.4–§7.6). Errors carry KEDA's texts.

use std::collections::BTreeSet;
use std::time::Duration;

use jobtide_api::secret::REDACTED;
use jobtide_api::trigger::TriggerConfig;
use jobtide_api::trigger::connection::{KafkaConnection, Sasl};
use jobtide_core::kafka::LagPolicy;
use jobtide_core::lag::{PartitionOffsets, PersistentLagMemory, trigger_lag};
use jobtide_core::scaling::TriggerMeasurement;

use crate::client_config::{ConfigError, Isolation};
use crate::source::{SourceError, SourcePool, TopicPartition, TopicPartitions};

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
    /// The cluster refused the connection: authentication or TLS failed (librdkafka's text).
    #[error("connecting to the Kafka cluster failed: {0}")]
    Connection(String),
    /// The measurement didn't finish within the poll's time; with the connection error
    /// librdkafka reported meanwhile, if any.
    #[error(
        "timed out after {0:?} waiting for the Kafka cluster{last}",
        last = .1.as_ref().map(|e| format!("; last connection error: {e}")).unwrap_or_default()
    )]
    Timeout(Duration, Option<String>),
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
            Self::Connection(_) => "connection",
            Self::Timeout(..) => "timeout",
            Self::NotSupported(_) => "not_supported",
        }
    }
}

impl ScalerError {
    /// This error with librdkafka's connection error appended, when it reported one: requests
    /// only fail with "timed out" or "broker transport failure", the connection error says why.
    #[must_use]
    fn with_connection_error(self, last: Option<String>) -> Self {
        let Some(last) = last else {
            return self;
        };
        let add = |e: SourceError| SourceError(format!("{e}; last connection error: {last}"));
        match self {
            Self::DescribeTopics(e) => Self::DescribeTopics(add(e)),
            Self::ListGroupTopics(e) => Self::ListGroupTopics(add(e)),
            Self::CommittedOffsets(e) => Self::CommittedOffsets(add(e)),
            Self::EndOffsets(e) => Self::EndOffsets(add(e)),
            Self::Timeout(after, None) => Self::Timeout(after, Some(last)),
            other => other,
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

/// Measures `target`'s lag, within `timeout`. Fails as soon as librdkafka reports that the
/// cluster refused the connection (authentication or TLS failed) rather than at the timeout.
pub async fn measure(
    pool: &SourcePool,
    target: &LagTarget,
    previous: &PersistentLagMemory,
    timeout: Duration,
) -> Result<Measurement, ScalerError> {
    let started = std::time::Instant::now();
    let source = pool.source(&target.connection, target.isolation)?;
    tokio::select! {
        measured = tokio::time::timeout(timeout, measure_inner(&source, target, previous, timeout)) => {
            measured
                .unwrap_or(Err(ScalerError::Timeout(timeout, None)))
                .map_err(|e| {
                    let last = source.connection_error_since(started);
                    e.with_connection_error(last.map(|text| shown(&text, &target.connection)))
                })
        }
        refused = source.refused_since(started) => {
            Err(ScalerError::Connection(shown(&refused, &target.connection)))
        }
    }
}

/// A connection error of librdkafka as errors may show it (the operator's events and status,
/// `jobtide explain`): without librdkafka's broker prefix (`sasl_ssl://host:9093/bootstrap: `),
/// and with every value of the connection that may come from a Secret replaced by
/// `<redacted>` — broker names (a DNS failure repeats them), SASL and OAuth credentials, the token
/// endpoint and its host (an OIDC failure repeats them), Kerberos names.
fn shown(text: &str, connection: &KafkaConnection) -> String {
    let text = match text.split_once(": ") {
        Some((broker, rest)) if broker.contains('/') && !broker.contains(' ') => rest,
        _ => text,
    };
    let mut values: Vec<String> = Vec::new();
    for server in &connection.bootstrap_servers {
        values.push(server.clone());
        if let Some((host, _port)) = server.rsplit_once(':') {
            values.push(host.to_owned());
        }
    }
    match &connection.sasl {
        Sasl::None => {}
        Sasl::Plain(c) | Sasl::ScramSha256(c) | Sasl::ScramSha512(c) => {
            values.extend([c.username.clone(), c.password.expose().to_owned()]);
        }
        Sasl::OAuthBearer(oauth) => {
            let uri = &oauth.token_endpoint_uri;
            values.extend([
                uri.clone(),
                oauth.client_id.clone(),
                oauth.client_secret.expose().to_owned(),
            ]);
            let authority = uri.split_once("://").map_or(uri.as_str(), |(_, r)| r);
            let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
            values.push(authority.to_owned());
            if let Some((host, _)) = authority.rsplit_once(':') {
                values.push(host.to_owned());
            }
            values.extend(oauth.scopes.iter().cloned());
            values.extend(oauth.extensions.values().cloned());
        }
        Sasl::Gssapi(gssapi) => {
            values.extend([
                format!("{}@{}", gssapi.username, gssapi.realm),
                gssapi.username.clone(),
                gssapi.realm.clone(),
            ]);
        }
    }
    // Short values would replace common words; librdkafka's texts hold none of them whole.
    values.retain(|v| v.len() >= 4);
    values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    values.dedup();
    values.iter().fold(text.to_owned(), |text, value| {
        text.replace(value.as_str(), REDACTED)
    })
}

async fn measure_inner(
    source: &crate::source::OffsetsSource,
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
    source: &crate::source::OffsetsSource,
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

#[cfg(test)]
mod tests {
    use jobtide_api::secret::Secret;
    use jobtide_api::trigger::connection::{Credentials, OAuthBearer};

    use super::*;

    fn connection(sasl: Sasl) -> KafkaConnection {
        KafkaConnection {
            bootstrap_servers: vec!["kafka-0.secret.internal:9093".into()],
            tls: None,
            sasl,
        }
    }

    #[test]
    fn a_connection_error_is_shown_without_the_broker_prefix_or_secret_values() {
        let scram = connection(Sasl::ScramSha256(Credentials {
            username: "svc-orders".into(),
            password: Secret::new("hunter22"),
        }));
        assert_eq!(
            shown(
                "sasl_ssl://kafka-0.secret.internal:9093/bootstrap: SASL authentication error: \
                 Authentication failed (after 3ms in state AUTH_REQ)",
                &scram
            ),
            "SASL authentication error: Authentication failed (after 3ms in state AUTH_REQ)"
        );
        assert_eq!(
            shown(
                "kafka-0.secret.internal:9093/bootstrap: Failed to resolve \
                 'kafka-0.secret.internal:9093': Name or service not known",
                &scram
            ),
            "Failed to resolve '<redacted>': Name or service not known"
        );
        let oauth = connection(Sasl::OAuthBearer(OAuthBearer {
            client_id: "client-4711".into(),
            client_secret: Secret::new("s3cr3t"),
            token_endpoint_uri: "https://idp.secret.example:8443/oauth2/token".into(),
            scopes: vec![],
            extensions: std::collections::BTreeMap::new(),
        }));
        let text = shown(
            "Failed to acquire SASL OAUTHBEARER token: Could not resolve host: \
             idp.secret.example",
            &oauth,
        );
        assert!(!text.contains("secret"), "{text}");
        assert!(
            text.ends_with("Could not resolve host: <redacted>"),
            "{text}"
        );
    }
}
