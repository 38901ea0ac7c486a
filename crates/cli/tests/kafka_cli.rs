//! `jobtide kafka …` and `jobtide explain` against librdkafka's mock cluster, run as a user runs
//! them: the built binary, real Kafka protocol, no services.

#![allow(clippy::expect_used)] // test helpers: a failure is the test failing

use std::path::Path;

use assert_cmd::Command;
use jobtide_kafka::ffi::MockKafka;
use serde_json::Value;

fn jobtide() -> Command {
    let mut command = Command::cargo_bin("jobtide").expect("the jobtide binary");
    command.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    command
}

fn manifest(dir: &Path, topic: &str, group: &str) -> String {
    let path = dir.join("sj.yaml");
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed-scaledjob.yaml"),
    )
    .expect("seed");
    let text = seed
        .replace("topic: test-topic", &format!("topic: {topic}"))
        .replace(
            "consumerGroup: my-group",
            &format!("consumerGroup: {group}"),
        )
        .replace("lagThreshold: \"50\"", "lagThreshold: \"2\"");
    std::fs::write(&path, text).expect("write manifest");
    path.display().to_string()
}

#[test]
fn produce_consume_and_explain_agree() {
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("test-topic", 2).expect("topic");
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tmp");

    jobtide()
        .args(["kafka", "produce", "--bootstrap-servers", &servers, "--topic", "test-topic", "--key-separator", ":"])
        .write_stdin("18:{\"orderid\":18}\n19:{\"orderid\":19}\n20:{\"orderid\":20}\n21:{\"orderid\":21}\n22:{\"orderid\":22}\n")
        .assert()
        .code(0);

    let consumed = jobtide()
        .args([
            "kafka",
            "consume",
            "--bootstrap-servers",
            &servers,
            "--topic",
            "test-topic",
            "--group",
            "my-group",
            "--max-messages",
            "2",
            "--from-beginning",
            "--print-key",
            "--timeout",
            "20",
        ])
        .output()
        .expect("consume");
    assert_eq!(
        consumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    let stdout = String::from_utf8_lossy(&consumed.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.lines().all(|l| l.contains("\t{\"orderid\":")),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&consumed.stderr).contains("Processed a total of 2 messages"));

    let output = jobtide()
        .args([
            "explain",
            "-f",
            &manifest(dir.path(), "test-topic", "my-group"),
            "--bootstrap-servers",
            &servers,
            "-o",
            "json",
        ])
        .output()
        .expect("explain");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    let trigger = &report["scaledJobs"][0]["triggers"][0];
    assert_eq!(report["scaledJobs"][0]["name"], "kafka-scaledjob");
    assert_eq!(trigger["metricName"], "s0-kafka-test-topic");
    assert_eq!(trigger["error"], Value::Null);
    let partitions = trigger["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 2);
    let ends: i64 = partitions.iter().filter_map(|p| p["end"].as_i64()).sum();
    assert_eq!(ends, 5);
    let committed: i64 = partitions
        .iter()
        .filter_map(|p| p["committed"].as_i64())
        .sum();
    // Two messages consumed and committed; a partition the group never read has committed null
    // and, under `latest`, counts 1 (KEDA's rule).
    let expected_lag: i64 = partitions
        .iter()
        .map(|p| {
            p["committed"]
                .as_i64()
                .map_or(1, |c| p["end"].as_i64().unwrap_or(0) - c)
        })
        .sum();
    assert!(committed <= 2);
    assert_eq!(trigger["totalLag"], expected_lag);
    assert_eq!(
        trigger["metricValue"].as_i64(),
        Some(expected_lag.min(4)),
        "capped at 2 partitions × lagThreshold 2"
    );
    assert_eq!(trigger["active"], true);
    assert_eq!(
        trigger["jobsWanted"].as_i64(),
        Some(expected_lag.min(4).div_euclid(2) + i64::from(expected_lag.min(4) % 2 != 0))
    );
}

#[test]
fn produce_count_generates_keyed_messages() {
    let mock = MockKafka::start(1).expect("mock");
    mock.create_topic("t", 1).expect("topic");
    let servers = mock.bootstrap_servers();
    jobtide()
        .args([
            "kafka",
            "produce",
            "--bootstrap-servers",
            &servers,
            "--topic",
            "t",
            "--count",
            "3",
        ])
        .assert()
        .code(0);
    let output = jobtide()
        .args([
            "kafka",
            "consume",
            "--bootstrap-servers",
            &servers,
            "--topic",
            "t",
            "--group",
            "g",
            "--max-messages",
            "3",
            "--from-beginning",
            "--print-key",
            "--timeout",
            "20",
        ])
        .output()
        .expect("consume");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "0\tmessage-0\n1\tmessage-1\n2\tmessage-2\n"
    );
    let output = jobtide()
        .args([
            "kafka",
            "consume",
            "--bootstrap-servers",
            &servers,
            "--topic",
            "t",
            "--group",
            "g",
            "--max-messages",
            "1",
            "--timeout",
            "2",
        ])
        .output()
        .expect("consume");
    assert_eq!(
        output.status.code(),
        Some(1),
        "nothing left for the group: fewer than --max-messages"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("Processed a total of 0 messages"));
}

#[test]
fn explain_names_the_missing_topic_and_exits_1() {
    let mock = MockKafka::start(1).expect("mock");
    let dir = tempfile::tempdir().expect("tmp");
    let output = jobtide()
        .args([
            "explain",
            "-f",
            &manifest(dir.path(), "test-topic", "my-group"),
            "--bootstrap-servers",
            &mock.bootstrap_servers(),
        ])
        .output()
        .expect("explain");
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "error: expected at least one active partition within the topic 'test-topic'"
        ),
        "{text}"
    );
}
