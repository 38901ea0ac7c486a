//! Produce, consume and create topics: what `jobtide kafka …` runs for demos, tests and Jobs (the
//! seed's `kafka-console-consumer --max-messages 1 --property print.key=true`).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset};

/// A failed tool operation, with librdkafka's text.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Creating the client failed.
    #[error("creating the Kafka client: {0}")]
    Client(String),
    /// Producing failed.
    #[error("producing to {topic}: {message}")]
    Produce {
        /// Topic.
        topic: String,
        /// Cause.
        message: String,
    },
    /// Consuming or committing failed.
    #[error("consuming from {topic}: {message}")]
    Consume {
        /// Topic.
        topic: String,
        /// Cause.
        message: String,
    },
    /// Creating the topic failed.
    #[error("creating topic {topic}: {message}")]
    CreateTopic {
        /// Topic.
        topic: String,
        /// Cause.
        message: String,
    },
}

fn base(bootstrap_servers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap_servers)
        .set("client.id", "jobtide")
        .set_log_level(RDKafkaLogLevel::Warning);
    config
}

/// A record to produce or a record consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key, if any.
    pub key: Option<String>,
    /// The value.
    pub value: String,
    /// The partition (set when produced or consumed).
    pub partition: i32,
    /// The offset (set when produced or consumed).
    pub offset: i64,
}

/// Produces `records` (key, value) to `topic` and waits for every acknowledgement.
pub async fn produce(
    bootstrap_servers: &str,
    topic: &str,
    records: &[(Option<String>, String)],
    timeout: Duration,
) -> Result<Vec<Record>, ToolError> {
    let raw: Vec<RawRecord> = records
        .iter()
        .map(|(key, value)| RawRecord {
            key: key.as_ref().map(|k| k.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
        })
        .collect();
    let placed = produce_raw(bootstrap_servers, topic, &raw, timeout).await?;
    Ok(records
        .iter()
        .zip(placed)
        .map(|((key, value), (partition, offset))| Record {
            key: key.clone(),
            value: value.clone(),
            partition,
            offset,
        })
        .collect())
}

/// A record with bytes and headers, for [`produce_raw`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRecord {
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Produces `records` with any bytes and headers to `topic`; (partition, offset) of each.
pub async fn produce_raw(
    bootstrap_servers: &str,
    topic: &str,
    records: &[RawRecord],
    timeout: Duration,
) -> Result<Vec<(i32, i64)>, ToolError> {
    use rdkafka::message::{Header, OwnedHeaders};
    let producer: FutureProducer = base(bootstrap_servers)
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .create()
        .map_err(|e| ToolError::Client(e.to_string()))?;
    let mut out = Vec::with_capacity(records.len());
    for raw in records {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &raw.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = &raw.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &raw.value {
            record = record.payload(value.as_slice());
        }
        let delivery = producer
            .send(record, Timeout::After(timeout))
            .await
            .map_err(|(e, _)| ToolError::Produce {
                topic: topic.to_owned(),
                message: e.to_string(),
            })?;
        out.push((delivery.partition, delivery.offset));
    }
    Ok(out)
}

/// Where a group with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The log start (`auto.offset.reset=earliest`).
    Earliest,
    /// The log end (`auto.offset.reset=latest`).
    Latest,
}

/// Consumes up to `max_messages` from `topic` in `group`, committing each message's offset
/// synchronously after it is read; stops at `max_messages` or after `timeout`.
///
/// A commit the group refuses because it is rebalancing (or has moved on to a new generation) is
/// not a failure: the message is not counted, the consumer seeks back to it and goes on, so it
/// reads it again if the partition stays its own, else the partition's next owner does. (It
/// failed the whole consume before: a Job whose commit met a rebalance failed and, in lag mode,
/// KEDA's rule replaced it — docs/capacity.md.)
pub async fn consume(
    bootstrap_servers: &str,
    topic: &str,
    group: &str,
    max_messages: usize,
    start: StartFrom,
    timeout: Duration,
) -> Result<Vec<Record>, ToolError> {
    let consumer: StreamConsumer = base(bootstrap_servers)
        .set("group.id", group)
        // A one-shot consumer: a short session (the brokers' default minimum) frees its
        // partitions soon if it dies without leaving the group. It also bounds how long
        // librdkafka's mock cluster keeps an emptied group rebalancing (its session timeout
        // minus one second) before the next member's join completes.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "2000")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set(
            "auto.offset.reset",
            match start {
                StartFrom::Earliest => "earliest",
                StartFrom::Latest => "latest",
            },
        )
        .create()
        .map_err(|e| ToolError::Client(e.to_string()))?;
    let failed = |e: rdkafka::error::KafkaError| ToolError::Consume {
        topic: topic.to_owned(),
        message: e.to_string(),
    };
    consumer.subscribe(&[topic]).map_err(failed)?;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < max_messages {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(message) = tokio::time::timeout(left, consumer.recv()).await else {
            break;
        };
        let message = match message {
            Ok(message) => message,
            // A broker that is down or not reachable yet: librdkafka reconnects by itself, so
            // the consumer waits out its --timeout (it gave up at once before).
            Err(error) if transient(&error) => {
                tokio::time::sleep(left.min(Duration::from_millis(100))).await;
                continue;
            }
            Err(error) => return Err(failed(error)),
        };
        out.push(Record {
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: message
                .payload()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default(),
            partition: message.partition(),
            offset: message.offset(),
        });
        match consumer.commit_message(&message, CommitMode::Sync) {
            Ok(()) => {}
            Err(error) if rebalanced(&error) => {
                out.pop();
                // Not ours any more: the seek fails, and the partition's new owner starts at the
                // committed offset, which is still this message.
                let _ = consumer.seek(
                    message.topic(),
                    message.partition(),
                    Offset::Offset(message.offset()),
                    left.min(Duration::from_secs(5)),
                );
            }
            Err(error) => return Err(failed(error)),
        }
    }
    consumer.unsubscribe();
    Ok(out)
}

/// Whether a commit was refused because the group is rebalancing or has a new generation.
fn rebalanced(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    matches!(
        error,
        KafkaError::ConsumerCommit(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
        )
    )
}

/// Whether a consumer error is the connection's (reconnecting) rather than the request's.
fn transient(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    matches!(
        error,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
        )
    )
}

/// Creates `topic` with `partitions` partitions through the Admin API (the librdkafka mock
/// cluster lacks it: use [`crate::ffi::MockKafka::create_topic`] there). The whole call ends
/// within `timeout` (the admin client's own request timeout is a minute).
pub async fn create_topic(
    bootstrap_servers: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<(), ToolError> {
    let admin: AdminClient<DefaultClientContext> = base(bootstrap_servers)
        .create()
        .map_err(|e| ToolError::Client(e.to_string()))?;
    let failed = |message: String| ToolError::CreateTopic {
        topic: topic.to_owned(),
        message,
    };
    let options = AdminOptions::new()
        .operation_timeout(Some(Timeout::After(timeout)))
        .request_timeout(Some(Timeout::After(timeout)));
    let results = tokio::time::timeout(
        timeout,
        admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &options,
        ),
    )
    .await
    .map_err(|_| {
        failed(format!(
            "no answer from the Kafka cluster within {}s",
            timeout.as_secs()
        ))
    })?
    .map_err(|e| failed(e.to_string()))?;
    for result in results {
        result.map_err(|(_, code)| failed(code.to_string()))?;
    }
    Ok(())
}
