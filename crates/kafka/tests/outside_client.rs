//! Agreement with an outside client: Python `confluent-kafka` (its own bundled librdkafka) reads
//! the same group's committed offsets and watermarks, and jobtide's numbers must match.
//!
//! Skips with a printed reason when `confluent_kafka` can't be imported, except under CI
//! (`CI=true`), where `.ci/run` installs it and a missing module is a failure.

#![allow(clippy::expect_used)] // test helpers: a failure is the test failing

use std::process::Command;
use std::time::Duration;

use jobtide_api::trigger::connection::{KafkaConnection, Sasl};
use jobtide_core::kafka::{LagPolicy, OffsetResetPolicy};
use jobtide_core::lag::PersistentLagMemory;
use jobtide_kafka::client_config::Isolation;
use jobtide_kafka::ffi::MockKafka;
use jobtide_kafka::scaler::{LagTarget, Topics, measure};
use jobtide_kafka::source::SourcePool;
use jobtide_kafka::tools::{StartFrom, consume, produce};

const ORACLE: &str = r#"
import json, sys
from confluent_kafka import Consumer, TopicPartition
servers, topic, group, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = Consumer({"bootstrap.servers": servers, "group.id": group, "enable.auto.commit": False})
tps = [TopicPartition(topic, p) for p in range(partitions)]
committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
out = {}
for p in range(partitions):
    low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
    out[p] = {"committed": committed[p] if committed[p] >= 0 else None, "low": low, "high": high}
c.close()
print(json.dumps(out))
"#;

fn oracle_available() -> bool {
    let available = Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have python3 with confluent-kafka (.ci/run installs it)"
        );
        eprintln!(
            "skipped: python3 with confluent_kafka is not available (pip install confluent-kafka)"
        );
    }
    available
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_matches_what_confluent_kafka_sees() {
    if !oracle_available() {
        return;
    }
    let mock = MockKafka::start(3).expect("mock");
    mock.create_topic("orders", 3).expect("topic");
    let servers = mock.bootstrap_servers();
    let timeout = Duration::from_secs(10);
    let records: Vec<(Option<String>, String)> = (0..17)
        .map(|i| (Some(format!("k{i}")), format!("v{i}")))
        .collect();
    produce(&servers, "orders", &records, timeout)
        .await
        .expect("produce");
    consume(
        &servers,
        "orders",
        "billing",
        6,
        StartFrom::Earliest,
        timeout,
    )
    .await
    .expect("consume");

    let target = LagTarget {
        connection: KafkaConnection {
            bootstrap_servers: vec![servers.clone()],
            tls: None,
            sasl: Sasl::None,
        },
        group: "billing".into(),
        topics: Topics::Named(vec!["orders".into()]),
        policy: LagPolicy {
            lag_threshold: 1,
            offset_reset_policy: OffsetResetPolicy::Earliest,
            ..LagPolicy::default()
        },
        isolation: Isolation::default(),
    };
    let ours = measure(
        &SourcePool::new(),
        &target,
        &PersistentLagMemory::new(),
        timeout,
    )
    .await
    .expect("measure");

    let output = Command::new("python3")
        .args(["-c", ORACLE, &servers, "orders", "billing", "3"])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&output.stdout).expect("oracle JSON");
    let mut their_lag = 0;
    for partition in &ours.partitions {
        let other = &theirs[partition.partition.to_string()];
        assert_eq!(
            Some(partition.end),
            other["high"].as_i64(),
            "high watermark of {}",
            partition.partition
        );
        assert_eq!(
            partition.committed,
            other["committed"].as_i64(),
            "committed offset of {}",
            partition.partition
        );
        let high = other["high"].as_i64().unwrap_or(0);
        their_lag += other["committed"]
            .as_i64()
            .map_or_else(|| high - other["low"].as_i64().unwrap_or(0), |c| high - c);
    }
    assert_eq!(ours.total_lag, their_lag);
    assert_eq!(ours.total_lag, 11);
}
