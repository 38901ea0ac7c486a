//! Dispatch mode's consumer against librdkafka's in-process mock cluster: start positions,
//! reading by assignment, commits without group membership (read back by another client), pause
//! and resume, dead letters with their headers.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::time::Duration;

use jobtide_api::trigger::connection::{KafkaConnection, Sasl};
use jobtide_api::trigger::{CommitOn, IsolationLevel, KafkaDispatchTrigger, Payload};
use jobtide_core::dispatch::Message;
use jobtide_core::kafka::{LagPolicy, OffsetResetPolicy};
use jobtide_core::lag::PersistentLagMemory;
use jobtide_kafka::dispatch::{DispatchConsumer, DispatchError};
use jobtide_kafka::ffi::MockKafka;
use jobtide_kafka::kerberos::GssapiSupport;
use jobtide_kafka::scaler::{LagTarget, Topics, measure};
use jobtide_kafka::source::SourcePool;
use jobtide_kafka::tools::{StartFrom, consume, produce};

const TIMEOUT: Duration = Duration::from_secs(10);

fn trigger(mock: &MockKafka, reset: OffsetResetPolicy, dlq: Option<&str>) -> KafkaDispatchTrigger {
    KafkaDispatchTrigger {
        connection: KafkaConnection {
            bootstrap_servers: vec![mock.bootstrap_servers()],
            tls: None,
            sasl: Sasl::None,
        },
        consumer_group: "dispatch".into(),
        topic: "orders".into(),
        backlog: LagPolicy {
            lag_threshold: 1,
            offset_reset_policy: reset,
            allow_idle_consumers: true,
            ..LagPolicy::default()
        },
        isolation_level: IsolationLevel::ReadCommitted,
        commit_on: CommitOn::Complete,
        max_attempts: 1,
        dead_letter_topic: dlq.map(Into::into),
        results_topic: None,
        payload: Payload::File,
    }
}

async fn produce_n(mock: &MockKafka, n: usize) {
    let records: Vec<_> = (0..n)
        .map(|i| (Some(format!("k{i}")), format!("v{i}")))
        .collect();
    produce(&mock.bootstrap_servers(), "orders", &records, TIMEOUT)
        .await
        .expect("produce");
}

async fn read(consumer: &DispatchConsumer, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            tokio::time::timeout(TIMEOUT, consumer.recv())
                .await
                .expect("a message in time")
                .expect("recv"),
        );
    }
    out
}

/// The group's backlog as the lag scaler (a different client) sees it.
async fn backlog(mock: &MockKafka) -> i64 {
    let target = LagTarget {
        connection: KafkaConnection {
            bootstrap_servers: vec![mock.bootstrap_servers()],
            tls: None,
            sasl: Sasl::None,
        },
        group: "dispatch".into(),
        topics: Topics::Named(vec!["orders".into()]),
        policy: LagPolicy {
            lag_threshold: 1,
            offset_reset_policy: OffsetResetPolicy::Earliest,
            ..LagPolicy::default()
        },
        isolation: IsolationLevel::ReadUncommitted,
    };
    measure(
        &SourcePool::new(),
        &target,
        &PersistentLagMemory::new(),
        TIMEOUT,
    )
    .await
    .expect("measure")
    .total_lag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_starts_where_its_reset_policy_says_and_commits_without_joining() {
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("orders", 2).expect("topic");
    produce_n(&mock, 6).await;

    let latest = DispatchConsumer::connect(
        &trigger(&mock, OffsetResetPolicy::Latest, None),
        None,
        &GssapiSupport::default(),
    )
    .unwrap();
    let ends = latest.start_positions().await.unwrap();
    assert_eq!(ends.values().sum::<i64>(), 6, "latest: the log ends");

    let consumer = DispatchConsumer::connect(
        &trigger(&mock, OffsetResetPolicy::Earliest, None),
        None,
        &GssapiSupport::default(),
    )
    .unwrap();
    let starts = consumer.start_positions().await.unwrap();
    assert_eq!(starts, BTreeMap::from([(0, 0), (1, 0)]), "earliest");
    consumer.assign(&starts).unwrap();
    let messages = read(&consumer, 6).await;
    let mut values: Vec<String> = messages
        .iter()
        .map(|m| String::from_utf8(m.value.clone().unwrap()).unwrap())
        .collect();
    values.sort();
    assert_eq!(values, ["v0", "v1", "v2", "v3", "v4", "v5"]);
    assert!(messages.iter().all(|m| m.timestamp_ms.is_some()));

    // Commit everything of partition 0 and one message of partition 1.
    let on_0 = messages.iter().filter(|m| m.partition == 0).count();
    let on_1 = 6 - on_0;
    assert!(on_1 >= 1, "both partitions got messages");
    consumer
        .commit(&[(0, i64::try_from(on_0).unwrap()), (1, 1)])
        .await
        .unwrap();
    assert_eq!(
        backlog(&mock).await,
        i64::try_from(on_1).unwrap() - 1,
        "another client sees the commits"
    );
    // A restarted consumer starts at the commits.
    let again = DispatchConsumer::connect(
        &trigger(&mock, OffsetResetPolicy::Earliest, None),
        None,
        &GssapiSupport::default(),
    )
    .unwrap();
    let positions = again.start_positions().await.unwrap();
    assert_eq!(positions[&0], i64::try_from(on_0).unwrap());
    assert_eq!(positions[&1], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_consumer_reads_nothing_until_resumed() {
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("orders", 1).expect("topic");
    let consumer = DispatchConsumer::connect(
        &trigger(&mock, OffsetResetPolicy::Earliest, None),
        None,
        &GssapiSupport::default(),
    )
    .unwrap();
    consumer
        .assign(&consumer.start_positions().await.unwrap())
        .unwrap();
    produce_n(&mock, 1).await;
    assert_eq!(read(&consumer, 1).await[0].offset, 0, "reading works");
    consumer.pause().unwrap();
    produce_n(&mock, 2).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(2), consumer.recv())
            .await
            .is_err(),
        "nothing while paused"
    );
    consumer.resume().unwrap();
    let offsets: Vec<i64> = read(&consumer, 2).await.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_keeps_the_message_and_says_where_it_came_from() {
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("orders", 1).expect("topic");
    mock.create_topic("orders-dlq", 1).expect("topic");
    let consumer = DispatchConsumer::connect(
        &trigger(&mock, OffsetResetPolicy::Earliest, Some("orders-dlq")),
        None,
        &GssapiSupport::default(),
    )
    .unwrap();
    let message = Message {
        partition: 0,
        offset: 41,
        timestamp_ms: None,
        key: Some(b"18".to_vec()),
        value: Some(b"{\"orderid\":18}".to_vec()),
        headers: vec![("traceparent".into(), Some(b"00-x".to_vec()))],
    };
    consumer
        .dead_letter(
            &message,
            3,
            "BackoffLimitExceeded: Job has reached the specified backoff limit",
        )
        .await
        .unwrap();
    let records = consume(
        &mock.bootstrap_servers(),
        "orders-dlq",
        "reader",
        1,
        StartFrom::Earliest,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key.as_deref(), Some("18"));
    assert_eq!(records[0].value, "{\"orderid\":18}");
    // Headers are checked by the outside client in the end-to-end tests; here, that a consumer
    // without a dead-letter topic refuses.
    let plain = DispatchConsumer::connect(
        &trigger(&mock, OffsetResetPolicy::Earliest, None),
        None,
        &GssapiSupport::default(),
    )
    .unwrap();
    assert!(matches!(
        plain.dead_letter(&message, 1, "x").await,
        Err(DispatchError::DeadLetter { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_named() {
    let mock = MockKafka::start(1).expect("mock");
    let consumer = DispatchConsumer::connect(
        &trigger(&mock, OffsetResetPolicy::Earliest, None),
        None,
        &GssapiSupport::default(),
    )
    .unwrap();
    let error = consumer.start_positions().await.unwrap_err();
    assert!(error.to_string().contains("orders"), "{error}");
}
