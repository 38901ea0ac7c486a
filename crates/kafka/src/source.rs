//! One offsets source per (bootstrap servers, security settings, isolation level), shared by every
//! trigger of every ScaledJob that talks to the same cluster with the same credentials (D11).
//!
//! A source is one librdkafka client plus a small batcher. Requests that arrive within
//! [`BATCH_WINDOW`] of each other are merged, so a poll round of many triggers costs:
//! - **ListOffsets**: one `offsets_for_times` call for every partition asked (log end, and log
//!   start where needed), which librdkafka sends as one request per partition leader;
//! - **OffsetFetch**: one per consumer group, for the union of the partitions its triggers ask
//!   (librdkafka takes one group per admin call; a batch's calls are all in flight at once and
//!   wait on one thread);
//! - **Metadata**: only for the topics in use, cached for [`METADATA_TTL`] (unknown topics are
//!   asked again every poll, so a topic created later is seen at the next poll).
//!
//! librdkafka reconnects with exponential backoff by itself; a client is never rebuilt because a
//! poll failed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobtide_api::trigger::connection::KafkaConnection;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use crate::client_config::{ConfigError, ConfigFiles, Isolation, client_config};
use crate::ffi;
use crate::kerberos::GssapiSupport;
use crate::problem::BrokerProblem;

/// A partition key.
pub type TopicPartition = (String, i32);

/// How long the batcher waits for more requests after the first one of a batch: long enough for
/// the triggers of a round (thousands of futures on two cores) to join one batch, short beside a
/// polling interval of seconds.
pub const BATCH_WINDOW: Duration = Duration::from_millis(25);
/// How long the partitions of a known topic are reused before being asked again.
pub const METADATA_TTL: Duration = Duration::from_secs(30);

/// Why a source request failed (texts are librdkafka's).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SourceError(pub String);

impl From<KafkaError> for SourceError {
    fn from(error: KafkaError) -> Self {
        Self(error.to_string())
    }
}

/// The client context: keeps librdkafka's latest statistics (request counts per broker) and
/// the latest connection problem it logged ([`BrokerProblem`]).
#[derive(Debug, Default)]
pub struct StatsContext {
    latest: Mutex<Option<Statistics>>,
    problem: Mutex<Option<(Instant, BrokerProblem)>>,
    /// Woken when a problem is recorded (a measurement fails at once on a refusal).
    problem_reported: tokio::sync::Notify,
}

impl ClientContext for StatsContext {
    /// Called on librdkafka's own threads as it logs (no poll needed): connection failures are
    /// classified, then every line is logged as rdkafka's default does.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if let Some(problem) = BrokerProblem::of_librdkafka(log_message)
            && let Ok(mut latest) = self.problem.lock()
        {
            *latest = Some((Instant::now(), problem));
            drop(latest);
            self.problem_reported.notify_waiters();
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {log_message}");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "librdkafka: {fac} {log_message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {log_message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", "librdkafka: {fac} {log_message}");
            }
        }
    }

    fn stats(&self, statistics: Statistics) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(statistics);
        }
    }
}

impl ConsumerContext for StatsContext {}

type Client = BaseConsumer<StatsContext>;

/// The partitions of a topic as the cluster reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPartitions {
    /// The topic exists with these partition ids.
    Found(Vec<i32>),
    /// The cluster doesn't know the topic.
    Unknown,
}

type OffsetsReply = Result<Arc<HashMap<TopicPartition, Result<i64, String>>>, SourceError>;
type CommittedReply = Result<HashMap<TopicPartition, Option<i64>>, SourceError>;
type CommittedAll = Result<Arc<HashMap<TopicPartition, Option<i64>>>, SourceError>;
/// Offsets requests waiting in a batch: partitions, timeout, where to answer.
type OffsetsWaiting = Vec<(Vec<TopicPartition>, Duration, oneshot::Sender<OffsetsReply>)>;
/// Committed-offsets requests waiting in a batch (per group).
type CommittedWaiting = Vec<(
    Option<Vec<TopicPartition>>,
    Duration,
    oneshot::Sender<CommittedReply>,
)>;

enum Request {
    Offsets {
        partitions: Vec<TopicPartition>,
        start: bool,
        timeout: Duration,
        reply: oneshot::Sender<OffsetsReply>,
    },
    Committed {
        group: String,
        partitions: Option<Vec<TopicPartition>>,
        timeout: Duration,
        reply: oneshot::Sender<CommittedReply>,
    },
}

/// A shared connection to one Kafka cluster.
pub struct OffsetsSource {
    client: Arc<Client>,
    requests: mpsc::UnboundedSender<Request>,
    metadata: Mutex<HashMap<String, (Instant, Vec<i32>)>>,
    metadata_refresh: tokio::sync::Mutex<()>,
    _files: ConfigFiles,
}

impl std::fmt::Debug for OffsetsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetsSource").finish_non_exhaustive()
    }
}

async fn blocking<T: Send + 'static>(
    client: &Arc<Client>,
    work: impl FnOnce(&Client) -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    let client = Arc::clone(client);
    tokio::task::spawn_blocking(move || work(&client))
        .await
        .map_err(|e| SourceError(format!("offsets task failed: {e}")))?
}

impl OffsetsSource {
    /// Creates the client and its batcher (must run inside a tokio runtime). No network I/O
    /// happens until the first request. `statistics` enables librdkafka's statistics (request
    /// counts) at that interval.
    pub fn connect(
        connection: &KafkaConnection,
        isolation: Isolation,
        statistics: Option<Duration>,
        gssapi: &GssapiSupport,
    ) -> Result<Self, ConfigError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ConfigError::Client("no async runtime to run the batcher on".into()))?;
        let (mut config, files) = client_config(connection, isolation, gssapi)?;
        if let Some(interval) = statistics {
            config.set(
                "statistics.interval.ms",
                interval.as_millis().max(5).to_string(),
            );
        }
        let client: Client = config
            .create_with_context(StatsContext::default())
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        let client = Arc::new(client);
        let (requests, receiver) = mpsc::unbounded_channel();
        runtime.spawn(batcher(Arc::clone(&client), receiver));
        runtime.spawn(serve_events(
            Arc::downgrade(&client),
            statistics.unwrap_or(EVENT_INTERVAL),
        ));
        Ok(Self {
            client,
            requests,
            metadata: Mutex::new(HashMap::new()),
            metadata_refresh: tokio::sync::Mutex::new(()),
            _files: files,
        })
    }

    /// The latest connection problem librdkafka logged at or after `since`, if any.
    pub fn problem_since(&self, since: Instant) -> Option<BrokerProblem> {
        let latest = *self.client.context().problem.lock().ok()?;
        latest
            .filter(|(at, _)| *at >= since)
            .map(|(_, problem)| problem)
    }

    /// Waits until librdkafka logs, at or after `since`, that the cluster refused this client
    /// ([`BrokerProblem::is_refusal`]: authentication or TLS failed); retrying with the same
    /// settings fails the same way, so a measurement needn't wait for its timeout.
    pub async fn refused_since(&self, since: Instant) -> BrokerProblem {
        let context = self.client.context();
        loop {
            let reported = context.problem_reported.notified();
            tokio::pin!(reported);
            reported.as_mut().enable();
            if let Some(problem) = self.problem_since(since).filter(|p| p.is_refusal()) {
                return problem;
            }
            reported.await;
        }
    }

    /// Requests sent so far by type (`Metadata`, `OffsetFetch`, `ListOffsets`, …), summed over
    /// brokers, from librdkafka's latest statistics (empty without statistics).
    pub fn requests_sent(&self) -> BTreeMap<String, i64> {
        let latest = self
            .client
            .context()
            .latest
            .lock()
            .ok()
            .and_then(|s| s.clone());
        let mut out = BTreeMap::new();
        for broker in latest.iter().flat_map(|s| s.brokers.values()) {
            for (kind, count) in &broker.req {
                *out.entry(kind.clone()).or_insert(0) += count;
            }
        }
        out.retain(|_, count| *count > 0);
        out
    }

    /// The partitions of `topics`, from the cache or one Metadata request per uncached topic.
    /// Cache hits take no await point, so a round of triggers passes through at once; misses are
    /// fetched by one caller at a time (the others then find the cache filled).
    pub async fn partitions(
        &self,
        topics: Vec<String>,
        timeout: Duration,
    ) -> Result<BTreeMap<String, TopicPartitions>, SourceError> {
        let (mut out, missing) = self.cached(topics);
        if missing.is_empty() {
            return Ok(out);
        }
        let _single_flight = self.metadata_refresh.lock().await;
        let (found, missing) = self.cached(missing);
        out.extend(found);
        if missing.is_empty() {
            return Ok(out);
        }
        let fetched = blocking(&self.client, move |client| {
            let mut fetched = Vec::new();
            for topic in missing {
                let metadata = client.fetch_metadata(Some(&topic), timeout)?;
                let ids = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map(|t| {
                        t.partitions()
                            .iter()
                            .map(rdkafka::metadata::MetadataPartition::id)
                            .collect::<Vec<_>>()
                    })
                    .filter(|ids| !ids.is_empty());
                fetched.push((topic, ids));
            }
            Ok(fetched)
        })
        .await?;
        let mut cache = self
            .metadata
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (topic, ids) in fetched {
            match ids {
                Some(ids) => {
                    cache.insert(topic.clone(), (Instant::now(), ids.clone()));
                    out.insert(topic, TopicPartitions::Found(ids));
                }
                None => {
                    cache.remove(&topic);
                    out.insert(topic, TopicPartitions::Unknown);
                }
            }
        }
        Ok(out)
    }

    /// The cached partitions of `topics`, and the topics not cached (or expired).
    fn cached(&self, topics: Vec<String>) -> (BTreeMap<String, TopicPartitions>, Vec<String>) {
        let cache = self
            .metadata
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for topic in topics {
            match cache.get(&topic) {
                Some((at, ids)) if at.elapsed() < METADATA_TTL => {
                    found.insert(topic, TopicPartitions::Found(ids.clone()));
                }
                _ => missing.push(topic),
            }
        }
        (found, missing)
    }

    /// Every partition of every topic the cluster reports (internal topics excluded).
    pub async fn all_partitions(
        &self,
        timeout: Duration,
    ) -> Result<Vec<TopicPartition>, SourceError> {
        blocking(&self.client, move |client| {
            let metadata = client.fetch_metadata(None, timeout)?;
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
    /// committed. Batched: one OffsetFetch per group per batch. No commit maps to `None`.
    pub async fn committed(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartition>>,
        timeout: Duration,
    ) -> Result<HashMap<TopicPartition, Option<i64>>, SourceError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Committed {
                group: group.to_owned(),
                partitions,
                timeout,
                reply,
            })
            .map_err(|_| SourceError("the offsets batcher stopped".into()))?;
        answer
            .await
            .map_err(|_| SourceError("the offsets batcher stopped".into()))?
    }

    /// Log end offsets (or, with `start`, log start offsets) for `partitions`. Batched: one
    /// ListOffsets per partition leader per batch.
    pub async fn offsets(
        &self,
        partitions: Vec<TopicPartition>,
        start: bool,
        timeout: Duration,
    ) -> Result<HashMap<TopicPartition, i64>, SourceError> {
        if partitions.is_empty() {
            return Ok(HashMap::new());
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Offsets {
                partitions: partitions.clone(),
                start,
                timeout,
                reply,
            })
            .map_err(|_| SourceError("the offsets batcher stopped".into()))?;
        let all = answer
            .await
            .map_err(|_| SourceError("the offsets batcher stopped".into()))??;
        let mut out = HashMap::with_capacity(partitions.len());
        for key in partitions {
            match all.get(&key) {
                Some(Ok(offset)) => {
                    out.insert(key, *offset);
                }
                Some(Err(error)) => {
                    return Err(SourceError(format!(
                        "{} partition {}: {error}",
                        key.0, key.1
                    )));
                }
                None => {}
            }
        }
        Ok(out)
    }
}

/// How often a source serves librdkafka's event queue (logs, errors, statistics) when statistics
/// are off. Unserved events would pile up in memory.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// How many events (log lines, errors, statistics) a source serves per [`EVENT_INTERVAL`] at
/// most; polling an empty queue costs next to nothing.
const EVENTS_PER_TICK: usize = 64;

/// Serves the client's events until the source is dropped.
async fn serve_events(client: std::sync::Weak<Client>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(client) = client.upgrade() else {
            return;
        };
        let served = tokio::task::spawn_blocking(move || {
            // A non-subscribed consumer yields no messages; polling runs the callbacks.
            // `poll` answers `None` for an empty queue and also after serving a log line or
            // statistics, so it runs a fixed number of times: stopping at the first `None`
            // served one event a tick, and the events queued behind it seconds later (found
            // against Apache Kafka).
            for _ in 0..EVENTS_PER_TICK {
                let _ = client.poll(Duration::ZERO);
            }
        })
        .await;
        if served.is_err() {
            return;
        }
    }
}

/// Collects requests for [`BATCH_WINDOW`] after the first, then answers them with merged calls.
async fn batcher(client: Arc<Client>, mut receiver: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while let Ok(Some(next)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
            batch.push(next);
        }
        let mut offsets: [OffsetsWaiting; 2] = [Vec::new(), Vec::new()];
        let mut committed: BTreeMap<(String, bool), CommittedWaiting> = BTreeMap::new();
        for request in batch {
            match request {
                Request::Offsets {
                    partitions,
                    start,
                    timeout,
                    reply,
                } => {
                    offsets[usize::from(start)].push((partitions, timeout, reply));
                }
                Request::Committed {
                    group,
                    partitions,
                    timeout,
                    reply,
                } => {
                    committed
                        .entry((group, partitions.is_none()))
                        .or_default()
                        .push((partitions, timeout, reply));
                }
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (index, waiting) in offsets.into_iter().enumerate() {
            if !waiting.is_empty() {
                tasks.spawn(answer_offsets(Arc::clone(&client), index == 1, waiting));
            }
        }
        if !committed.is_empty() {
            tasks.spawn(answer_committed(Arc::clone(&client), committed));
        }
        while tasks.join_next().await.is_some() {}
    }
}

async fn answer_offsets(client: Arc<Client>, start: bool, waiting: OffsetsWaiting) {
    let timeout = waiting
        .iter()
        .map(|(_, t, _)| *t)
        .max()
        .unwrap_or(Duration::from_secs(10));
    let partitions: BTreeSet<TopicPartition> = waiting
        .iter()
        .flat_map(|(p, _, _)| p.iter().cloned())
        .collect();
    let result = blocking(&client, move |client| {
        let mut list = TopicPartitionList::new();
        let which = if start {
            Offset::Beginning
        } else {
            Offset::End
        };
        for (topic, partition) in &partitions {
            list.add_partition_offset(topic, *partition, which)?;
        }
        let result = client.offsets_for_times(list, timeout)?;
        let mut out = HashMap::new();
        for element in result.elements() {
            let key = (element.topic().to_owned(), element.partition());
            let value = match (element.error(), element.offset()) {
                (Err(error), _) => Err(error.to_string()),
                (Ok(()), Offset::Offset(offset)) => Ok(offset),
                (Ok(()), other) => Err(format!("no offset ({other:?})")),
            };
            out.insert(key, value);
        }
        Ok(Arc::new(out))
    })
    .await;
    for (_, _, reply) in waiting {
        let _ = reply.send(result.clone());
    }
}

/// Answers the committed-offsets requests of a batch, every group's with one admin call, all
/// calls on one blocking thread ([`ffi::list_groups_offsets`]).
async fn answer_committed(
    client: Arc<Client>,
    committed: BTreeMap<(String, bool), CommittedWaiting>,
) {
    let timeout = committed
        .values()
        .flatten()
        .map(|(_, t, _)| *t)
        .max()
        .unwrap_or(Duration::from_secs(10));
    // Per group: the union of the partitions asked for, or `None` when one asked for all.
    let asks: Vec<(String, Option<BTreeSet<TopicPartition>>)> = committed
        .iter()
        .map(|((group, _), waiting)| {
            let union = if waiting.iter().any(|(p, _, _)| p.is_none()) {
                None
            } else {
                Some(
                    waiting
                        .iter()
                        .flat_map(|(p, _, _)| p.iter().flatten().cloned())
                        .collect(),
                )
            };
            (group.clone(), union)
        })
        .collect();
    let answers: Result<Vec<CommittedAll>, SourceError> = blocking(&client, move |client| {
        let lists: Vec<Option<TopicPartitionList>> = asks
            .iter()
            .map(|(_, union)| {
                union.as_ref().map(|parts| {
                    let mut list = TopicPartitionList::new();
                    for (topic, partition) in parts {
                        list.add_partition(topic, *partition);
                    }
                    list
                })
            })
            .collect();
        let groups: Vec<(&str, Option<&TopicPartitionList>)> = asks
            .iter()
            .zip(&lists)
            .map(|((group, _), list)| (group.as_str(), list.as_ref()))
            .collect();
        Ok(ffi::list_groups_offsets(client.client(), &groups, timeout)
            .into_iter()
            .map(committed_offsets)
            .collect())
    })
    .await;
    for (index, waiting) in committed.into_values().enumerate() {
        let result: CommittedAll = match &answers {
            Ok(answers) => answers
                .get(index)
                .cloned()
                .unwrap_or_else(|| Err(SourceError("no answer".into()))),
            Err(error) => Err(error.clone()),
        };
        for (partitions, _, reply) in waiting {
            let answer = result.clone().map(|all| match partitions {
                Some(partitions) => partitions
                    .into_iter()
                    .map(|p| {
                        let value = all.get(&p).copied().flatten();
                        (p, value)
                    })
                    .collect(),
                None => (*all).clone(),
            });
            let _ = reply.send(answer);
        }
    }
}

/// One group's answer as offsets by partition (`None`: nothing committed); a partition's error
/// fails the whole answer.
fn committed_offsets(answer: Result<Vec<ffi::GroupOffset>, String>) -> CommittedAll {
    let mut out = HashMap::new();
    for offset in answer.map_err(SourceError)? {
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
    Ok(Arc::new(out))
}

/// The shared sources, keyed by everything that decides which cluster and which identity.
#[derive(Debug, Default)]
pub struct SourcePool {
    sources: Mutex<HashMap<SourceKey, Pooled>>,
    statistics: Option<Duration>,
    gssapi: GssapiSupport,
}

/// A source and when it was last handed out.
#[derive(Debug)]
struct Pooled {
    source: Arc<OffsetsSource>,
    used: Instant,
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

    /// A pool whose clients report librdkafka statistics at `interval` (request counts).
    pub fn with_statistics(interval: Duration) -> Self {
        Self {
            statistics: Some(interval),
            ..Self::default()
        }
    }

    /// The same pool, with GSSAPI as `gssapi` says (disabled by default: see
    /// [`crate::kerberos`]).
    #[must_use]
    pub fn with_gssapi(self, gssapi: GssapiSupport) -> Self {
        Self { gssapi, ..self }
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
        if let Some(pooled) = sources.get_mut(&key) {
            pooled.used = Instant::now();
            return Ok(Arc::clone(&pooled.source));
        }
        let source = Arc::new(OffsetsSource::connect(
            connection,
            isolation,
            self.statistics,
            &self.gssapi,
        )?);
        sources.insert(
            key,
            Pooled {
                source: Arc::clone(&source),
                used: Instant::now(),
            },
        );
        Ok(source)
    }

    /// Closes the sources nobody asked for in the last `idle` and nobody holds (no request in
    /// flight): their client, its threads and connections, and their files. A trigger that
    /// needs one again gets a new one. Returns how many were closed.
    pub fn release_unused(&self, idle: Duration) -> usize {
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = sources.len();
        sources.retain(|_, pooled| {
            Arc::strong_count(&pooled.source) > 1 || pooled.used.elapsed() < idle
        });
        before - sources.len()
    }

    /// Every source, for statistics.
    pub fn sources(&self) -> Vec<Arc<OffsetsSource>> {
        self.sources
            .lock()
            .map(|s| s.values().map(|p| Arc::clone(&p.source)).collect())
            .unwrap_or_default()
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
