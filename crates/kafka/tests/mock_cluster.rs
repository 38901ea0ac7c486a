//! The scaler against librdkafka's in-process mock cluster: real Kafka protocol, no services.

#![allow(clippy::expect_used)] // test helpers: a failure is the test failing

use std::time::{Duration, Instant};

use jobtide_api::trigger::connection::{KafkaConnection, Sasl};
use jobtide_core::kafka::{LagPolicy, OffsetResetPolicy};
use jobtide_core::lag::PersistentLagMemory;
use jobtide_kafka::client_config::Isolation;
use jobtide_kafka::ffi::MockKafka;
use jobtide_kafka::problem::BrokerProblem;
use jobtide_kafka::scaler::{LagTarget, ScalerError, Topics, measure};
use jobtide_kafka::source::SourcePool;
use jobtide_kafka::tools::{StartFrom, consume, produce};

const TIMEOUT: Duration = Duration::from_secs(10);

fn target(mock: &MockKafka, group: &str, topics: Topics, policy: LagPolicy) -> LagTarget {
    LagTarget {
        connection: KafkaConnection {
            bootstrap_servers: vec![mock.bootstrap_servers()],
            tls: None,
            sasl: Sasl::None,
        },
        group: group.into(),
        topics,
        policy,
        isolation: Isolation::default(),
    }
}

fn records(n: usize) -> Vec<(Option<String>, String)> {
    (0..n)
        .map(|i| (Some(format!("k{i}")), format!("{{\"orderid\":{i}}}")))
        .collect()
}

fn earliest() -> LagPolicy {
    LagPolicy {
        lag_threshold: 1,
        offset_reset_policy: OffsetResetPolicy::Earliest,
        ..LagPolicy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_produced_minus_consumed() {
    let mock = MockKafka::start(3).expect("mock");
    mock.create_topic("orders", 3).expect("topic");
    let servers = mock.bootstrap_servers();
    produce(&servers, "orders", &records(10), TIMEOUT)
        .await
        .expect("produce");
    let consumed = consume(&servers, "orders", "g", 4, StartFrom::Earliest, TIMEOUT)
        .await
        .expect("consume");
    assert_eq!(consumed.len(), 4);

    let pool = SourcePool::new();
    let target = target(&mock, "g", Topics::Named(vec!["orders".into()]), earliest());
    let measurement = measure(&pool, &target, &PersistentLagMemory::new(), TIMEOUT)
        .await
        .expect("measure");
    assert_eq!(measurement.partitions.len(), 3);
    assert_eq!(
        measurement.partitions.iter().map(|p| p.end).sum::<i64>(),
        10
    );
    assert_eq!(measurement.total_lag, 6, "{measurement:#?}");
    assert!(measurement.active);
    let committed: i64 = measurement
        .partitions
        .iter()
        .filter_map(|p| p.committed)
        .sum();
    assert_eq!(committed, 4, "every consumed message was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_without_commits_counts_one_per_partition_under_latest() {
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("t", 4).expect("topic");
    produce(&mock.bootstrap_servers(), "t", &records(3), TIMEOUT)
        .await
        .expect("produce");
    let pool = SourcePool::new();
    let latest = LagPolicy {
        lag_threshold: 1,
        ..LagPolicy::default()
    };
    let measurement = measure(
        &pool,
        &target(&mock, "new-group", Topics::Named(vec!["t".into()]), latest),
        &PersistentLagMemory::new(),
        TIMEOUT,
    )
    .await
    .expect("measure");
    assert_eq!(measurement.total_lag, 4);
    assert!(measurement.partitions.iter().all(|p| p.committed.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earliest_without_commits_counts_what_is_retained() {
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("t", 2).expect("topic");
    produce(&mock.bootstrap_servers(), "t", &records(5), TIMEOUT)
        .await
        .expect("produce");
    let pool = SourcePool::new();
    let measurement = measure(
        &pool,
        &target(&mock, "fresh", Topics::Named(vec!["t".into()]), earliest()),
        &PersistentLagMemory::new(),
        TIMEOUT,
    )
    .await
    .expect("measure");
    assert_eq!(measurement.total_lag, 5);
    assert!(
        measurement
            .partitions
            .iter()
            .all(|p| p.log_start == Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_kedas_error() {
    let mock = MockKafka::start(1).expect("mock");
    let pool = SourcePool::new();
    let error = measure(
        &pool,
        &target(
            &mock,
            "g",
            Topics::Named(vec!["test-topic".into()]),
            LagPolicy::default(),
        ),
        &PersistentLagMemory::new(),
        TIMEOUT,
    )
    .await
    .expect_err("no such topic");
    assert_eq!(
        error.to_string(),
        "expected at least one active partition within the topic 'test-topic'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_limitation_naming_missing_partitions_is_an_error() {
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("t", 2).expect("topic");
    let pool = SourcePool::new();
    let policy = LagPolicy {
        partition_limitation: Some(vec![7, 8]),
        ..LagPolicy::default()
    };
    let error = measure(
        &pool,
        &target(&mock, "g", Topics::Named(vec!["t".into()]), policy),
        &PersistentLagMemory::new(),
        TIMEOUT,
    )
    .await
    .expect_err("no partition left");
    assert_eq!(error, ScalerError::NoActivePartition("t".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_less_trigger_measures_the_topics_the_group_committed() {
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("a", 1).expect("topic");
    mock.create_topic("b", 1).expect("topic");
    let servers = mock.bootstrap_servers();
    produce(&servers, "a", &records(3), TIMEOUT)
        .await
        .expect("produce");
    produce(&servers, "b", &records(2), TIMEOUT)
        .await
        .expect("produce");
    consume(&servers, "a", "g", 1, StartFrom::Earliest, TIMEOUT)
        .await
        .expect("consume");
    let pool = SourcePool::new();
    let measurement = measure(
        &pool,
        &target(&mock, "g", Topics::Committed, earliest()),
        &PersistentLagMemory::new(),
        TIMEOUT,
    )
    .await
    .expect("measure");
    let topics: Vec<&str> = measurement
        .partitions
        .iter()
        .map(|p| p.topic.as_str())
        .collect();
    assert_eq!(topics, vec!["a"], "only the topic the group committed");
    assert_eq!(measurement.total_lag, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_on_the_same_cluster_share_one_client() {
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("t", 1).expect("topic");
    let pool = SourcePool::new();
    for group in ["g1", "g2", "g3"] {
        measure(
            &pool,
            &target(
                &mock,
                group,
                Topics::Named(vec!["t".into()]),
                LagPolicy::default(),
            ),
            &PersistentLagMemory::new(),
            TIMEOUT,
        )
        .await
        .expect("measure");
    }
    assert_eq!(pool.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_within_the_poll_timeout() {
    let pool = SourcePool::new();
    let target = LagTarget {
        connection: KafkaConnection {
            bootstrap_servers: vec!["127.0.0.1:1".into()],
            tls: None,
            sasl: Sasl::None,
        },
        group: "g".into(),
        topics: Topics::Named(vec!["t".into()]),
        policy: LagPolicy::default(),
        isolation: Isolation::default(),
    };
    let started = Instant::now();
    let error = measure(
        &pool,
        &target,
        &PersistentLagMemory::new(),
        Duration::from_secs(2),
    )
    .await
    .expect_err("unreachable");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    // Nothing listens on port 1: librdkafka logs the refusal, and the error says so.
    assert_eq!(
        error,
        ScalerError::Unreachable {
            problem: BrokerProblem::ConnectionRefused,
            after: Duration::from_secs(2)
        },
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_triggers_get_their_own_answers_from_merged_requests() {
    let mock = MockKafka::start(3).expect("mock");
    for topic in ["a", "b"] {
        mock.create_topic(topic, 3).expect("topic");
    }
    let servers = mock.bootstrap_servers();
    produce(&servers, "a", &records(9), TIMEOUT)
        .await
        .expect("produce");
    produce(&servers, "b", &records(4), TIMEOUT)
        .await
        .expect("produce");
    consume(&servers, "a", "g1", 2, StartFrom::Earliest, TIMEOUT)
        .await
        .expect("consume");
    let pool = SourcePool::new();
    let memory = PersistentLagMemory::new();
    let cases = [
        ("g1", "a", 7),
        ("g1", "b", 4),
        ("g2", "a", 9),
        ("g2", "b", 4),
    ];
    let targets: Vec<LagTarget> = cases
        .iter()
        .map(|(g, t, _)| target(&mock, g, Topics::Named(vec![(*t).into()]), earliest()))
        .collect();
    let results = tokio::join!(
        measure(&pool, &targets[0], &memory, TIMEOUT),
        measure(&pool, &targets[1], &memory, TIMEOUT),
        measure(&pool, &targets[2], &memory, TIMEOUT),
        measure(&pool, &targets[3], &memory, TIMEOUT),
    );
    let lags = [results.0, results.1, results.2, results.3].map(|r| r.expect("measure").total_lag);
    assert_eq!(lags, cases.map(|(_, _, lag)| lag));
    assert_eq!(pool.len(), 1);
}

/// The committed offsets of a batch's groups are fetched by calls in flight together on one
/// queue: each answer must reach its own group (five groups, five different commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_in_one_batch_each_get_their_own_committed_offsets() {
    let mock = MockKafka::start(3).expect("mock");
    mock.create_topic("a", 3).expect("topic");
    let servers = mock.bootstrap_servers();
    produce(&servers, "a", &records(9), TIMEOUT)
        .await
        .expect("produce");
    for consumed in 1..=5 {
        let group = format!("g{consumed}");
        consume(
            &servers,
            "a",
            &group,
            consumed,
            StartFrom::Earliest,
            TIMEOUT,
        )
        .await
        .expect("consume");
    }
    let pool = SourcePool::new();
    let memory = PersistentLagMemory::new();
    let targets: Vec<LagTarget> = (1..=5)
        .map(|consumed| {
            target(
                &mock,
                &format!("g{consumed}"),
                Topics::Named(vec!["a".into()]),
                earliest(),
            )
        })
        .collect();
    let m = |i: usize| measure(&pool, &targets[i], &memory, TIMEOUT);
    let measured = tokio::join!(m(0), m(1), m(2), m(3), m(4));
    let lags = [measured.0, measured.1, measured.2, measured.3, measured.4]
        .map(|r| r.expect("measure").total_lag);
    assert_eq!(lags, [8, 7, 6, 5, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_errors_are_named_and_the_next_poll_recovers() {
    use jobtide_kafka::ffi::{MockApi, MockError};
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("t", 1).expect("topic");
    produce(&mock.bootstrap_servers(), "t", &records(2), TIMEOUT)
        .await
        .expect("produce");
    let pool = SourcePool::new();
    let target = target(&mock, "g", Topics::Named(vec!["t".into()]), earliest());
    measure(&pool, &target, &PersistentLagMemory::new(), TIMEOUT)
        .await
        .expect("warm up");

    mock.fail_next(MockApi::OffsetFetch, MockError::GroupAuthorizationFailed, 1);
    let error = measure(&pool, &target, &PersistentLagMemory::new(), TIMEOUT)
        .await
        .expect_err("denied");
    assert!(
        matches!(error, ScalerError::CommittedOffsets(_)),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with("error listing consumer group offsets: "),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("authoriz"),
        "names the cause: {text}"
    );

    // A poll sends two ListOffsets at once (log end and log start, which can't share a request:
    // one timestamp per partition), in no fixed order: fail both, so the end fetch fails whichever
    // goes first (a failed log-start fetch alone is tolerated, as KEDA does).
    mock.fail_next(MockApi::ListOffsets, MockError::TopicAuthorizationFailed, 2);
    let error = measure(&pool, &target, &PersistentLagMemory::new(), TIMEOUT)
        .await
        .expect_err("denied");
    assert!(matches!(error, ScalerError::EndOffsets(_)), "{error:?}");

    let recovered = measure(&pool, &target, &PersistentLagMemory::new(), TIMEOUT)
        .await
        .expect("recovers");
    assert_eq!(recovered.total_lag, 2);
    assert_eq!(pool.len(), 1, "the client was not rebuilt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_refused_by_a_rebalance_is_read_again_not_lost_nor_a_failure() {
    use jobtide_kafka::ffi::{MockApi, MockError};
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("rebalancing", 1).expect("topic");
    let servers = mock.bootstrap_servers();
    produce(&servers, "rebalancing", &records(3), TIMEOUT)
        .await
        .expect("produce");
    // The first commit meets a rebalance: the consumer reads the same message again and commits
    // it (committing the next one instead would skip it unprocessed).
    mock.fail_next(MockApi::OffsetCommit, MockError::RebalanceInProgress, 1);
    let consumed = consume(
        &servers,
        "rebalancing",
        "g",
        1,
        StartFrom::Earliest,
        TIMEOUT,
    )
    .await
    .expect("a refused commit is not a failure");
    assert_eq!(consumed.len(), 1);
    assert_eq!(consumed[0].offset, 0, "{consumed:?}");
    let measurement = measure(
        &SourcePool::new(),
        &target(
            &mock,
            "g",
            Topics::Named(vec!["rebalancing".into()]),
            earliest(),
        ),
        &PersistentLagMemory::new(),
        TIMEOUT,
    )
    .await
    .expect("measure");
    assert_eq!(
        measurement.partitions[0].committed,
        Some(1),
        "{measurement:#?}"
    );
    assert_eq!(measurement.total_lag, 2);

    // Any other commit error still fails the consume.
    mock.fail_next(
        MockApi::OffsetCommit,
        MockError::GroupAuthorizationFailed,
        1,
    );
    let error = consume(
        &servers,
        "rebalancing",
        "g",
        1,
        StartFrom::Earliest,
        TIMEOUT,
    )
    .await
    .expect_err("an authorization error fails");
    assert!(
        error.to_string().contains("GroupAuthorizationFailed"),
        "{error}"
    );
}
