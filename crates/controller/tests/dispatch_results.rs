//! Dispatch mode's outcome records (`resultsTopic`), read back by an outside client: Python
//! `confluent-kafka` consumes the results topic after a run with a success, a message that fails
//! twice and is dead-lettered, and a message with a producer's `traceparent`.
//!
//! Skips with a printed reason when `confluent_kafka` can't be imported, except under CI
//! (`CI=true`), where `.ci/run` installs it and a missing module is a failure.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{eventually, harness, jobs_of, start_operator, uncommitted};
use jobtide_api::ScaledJob;
use jobtide_controller::operator::Leadership;
use jobtide_kafka::tools::{RawRecord, produce_raw};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Reads every record of a topic's partition 0 from the start: `[{"key": …, "value": …}]`.
const READER: &str = r#"
import json, sys
from confluent_kafka import Consumer, TopicPartition
servers, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": servers, "group.id": "results-reader", "enable.auto.commit": False})
c.assign([TopicPartition(topic, 0, 0)])
out = []
while len(out) < count:
    m = c.poll(10)
    if m is None:
        break
    if m.error():
        raise SystemExit(str(m.error()))
    out.append({"key": m.key().decode(), "value": json.loads(m.value())})
c.close()
print(json.dumps(out))
"#;

fn python_reader() -> bool {
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
async fn every_finished_message_leaves_one_outcome_record_an_outside_client_reads() {
    if !python_reader() {
        return;
    }
    let h = harness(8).await;
    for topic in ["orders", "orders-dlq", "orders-results"] {
        h.kafka.create_topic(topic, 1).unwrap();
    }
    let servers = h.kafka.bootstrap_servers();
    let record = |value: &str, traceparent: Option<&str>| RawRecord {
        key: None,
        value: Some(value.as_bytes().to_vec()),
        headers: traceparent
            .map(|t| vec![("traceparent".to_owned(), Some(t.as_bytes().to_vec()))])
            .unwrap_or_default(),
    };
    produce_raw(
        &servers,
        "orders",
        &[
            record("good-0", Some(TRACEPARENT)),
            record("bad-1", None),
            record("good-2", None),
        ],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let operator = start_operator(&h, "results", Leadership::Always);
    let script = r#"case "$(cat "$JOBTIDE_MESSAGE_DIR/value")" in *bad*) exit 1;; esac"#;
    let scaled_job: ScaledJob = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "results", "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "busybox", "command": ["/bin/sh", "-c"], "args": [script]}]}}},
            "pollingInterval": 1, "maxReplicaCount": 4,
            "successfulJobsHistoryLimit": 100, "failedJobsHistoryLimit": 100,
            "triggers": [{"type": "kafka-dispatch", "metadata": {
                "bootstrapServers": servers, "consumerGroup": "results-dispatch", "topic": "orders",
                "offsetResetPolicy": "earliest", "maxAttempts": "2",
                "deadLetterTopic": "orders-dlq", "resultsTopic": "orders-results"}}],
        },
    }))
    .unwrap();
    Api::<ScaledJob>::namespaced(h.client.clone(), "default")
        .create(&PostParams::default(), &scaled_job)
        .await
        .unwrap();
    eventually("every message done and committed", 60, async || {
        (uncommitted(&h.kafka, "results-dispatch", "orders").await == Some(0)).then_some(())
    })
    .await;
    // The commit waits for the records: they are all there now.
    let output = tokio::process::Command::new("python3")
        .args(["-c", READER, &servers, "orders-results", "4"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the reader failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let by_key: BTreeMap<String, Value> = records
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_owned(), r["value"].clone()))
        .collect();
    assert_eq!(records.len(), 3, "one record per message: {records:#?}");
    assert_eq!(
        by_key.keys().map(String::as_str).collect::<Vec<_>>(),
        ["orders/0/0", "orders/0/1", "orders/0/2"]
    );
    let jobs = jobs_of(&h.client, "results").await;
    let job_name = |offset: &str, attempt: &str| {
        jobs.iter()
            .find(|j| {
                let labels = j.metadata.labels.as_ref().unwrap();
                labels["jobtide.io/offset"] == offset && labels["jobtide.io/attempt"] == attempt
            })
            .and_then(|j| j.metadata.name.clone())
            .unwrap()
    };
    let good = &by_key["orders/0/0"];
    assert_eq!(good["topic"], "orders");
    assert_eq!(good["partition"], 0);
    assert_eq!(good["offset"], 0);
    assert_eq!(good["scaledJob"], "default/results");
    assert_eq!(good["job"], job_name("0", "1"));
    assert_eq!(good["outcome"], "succeeded");
    assert_eq!(good["attempts"], 1);
    assert_eq!(good["traceId"], &TRACEPARENT[3..35], "the producer's trace");
    assert!(good.get("reason").is_none(), "{good}");
    for time in ["jobCreated", "jobStarted", "finished"] {
        let text = good[time].as_str().unwrap_or_default();
        assert!(text.parse::<jiff::Timestamp>().is_ok(), "{time}: {good}");
    }
    assert!(good["messageTimestamp"].as_i64().is_some(), "{good}");
    let bad = &by_key["orders/0/1"];
    assert_eq!(bad["outcome"], "dead_lettered");
    assert_eq!(bad["attempts"], 2);
    assert_eq!(bad["job"], job_name("1", "2"));
    assert!(
        bad["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{bad}"
    );
    let trace = bad["traceId"].as_str().unwrap();
    assert!(
        trace.len() == 32 && trace != &TRACEPARENT[3..35],
        "no traceparent: a trace of its own ({trace})"
    );
    assert_eq!(by_key["orders/0/2"]["outcome"], "succeeded");
    operator.stop().await;
}
