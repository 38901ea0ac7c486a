//! Dispatch mode end to end, continued: binary payloads and headers reach the Job intact, a
//! message that can't be delivered as configured is dead-lettered without a Job, and a paused
//! ScaledJob dispatches nothing until unpaused.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{events_of, eventually, harness, has_condition, jobs_of, log_of, start_operator};
use jobtide_api::ScaledJob;
use jobtide_controller::operator::Leadership;
use jobtide_kafka::tools::{RawRecord, StartFrom, consume, produce_raw};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);

fn dispatch_job(
    name: &str,
    topic: &str,
    servers: &str,
    script: &str,
    metadata: Value,
) -> ScaledJob {
    let mut trigger_metadata = json!({"bootstrapServers": servers, "consumerGroup": format!("{name}-dispatch"),
        "topic": topic, "offsetResetPolicy": "earliest"});
    for (key, value) in metadata.as_object().into_iter().flatten() {
        trigger_metadata[key] = value.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "busybox", "command": ["/bin/sh", "-c"], "args": [script]}]}}},
            // No periodic reconcile within a test: the status follows the dispatcher's ledger.
            "pollingInterval": 3600, "maxReplicaCount": 4,
            "triggers": [{"type": "kafka-dispatch", "metadata": trigger_metadata}],
        },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_values_and_headers_reach_the_job_intact() {
    let h = harness(4).await;
    h.kafka.create_topic("bytes", 1).unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    produce_raw(
        &h.kafka.bootstrap_servers(),
        "bytes",
        &[RawRecord {
            key: Some(vec![0x00, 0x01]),
            value: Some(vec![0xff, 0x00, b'x', b'\n']),
            headers: vec![
                ("traceparent".into(), Some(traceparent.as_bytes().to_vec())),
                ("binary".into(), Some(vec![0xfe])),
                ("empty".into(), None),
            ],
        }],
        TIMEOUT,
    )
    .await
    .unwrap();
    let operator = start_operator(&h, "bytes", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let script = r#"od -An -tx1 "$JOBTIDE_MESSAGE_DIR/key" "$JOBTIDE_MESSAGE_DIR/value"; cat "$JOBTIDE_MESSAGE_DIR/headers.json"; echo; echo "trace=$TRACEPARENT ts=$JOBTIDE_TIMESTAMP""#;
    api.create(
        &PostParams::default(),
        &dispatch_job(
            "bytes",
            "bytes",
            &h.kafka.bootstrap_servers(),
            script,
            json!({}),
        ),
    )
    .await
    .unwrap();
    let job = eventually("the Job completed", 30, async || {
        jobs_of(&h.client, "bytes")
            .await
            .into_iter()
            .find(|j| has_condition(j, "Complete"))
    })
    .await;
    let log = log_of(&h.client, &job.name_any()).await;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["00", "01", "ff", "00", "78", "0a"],
        "{log}"
    );
    let headers: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(
        headers,
        json!([{"key": "traceparent", "value": traceparent}, {"key": "binary", "valueBase64": "/g=="},
            {"key": "empty", "value": null}])
    );
    assert!(
        lines[2].starts_with(&format!("trace={traceparent} ts=1")),
        "{log}"
    );
    // The status shows the commit soon after, without waiting for a pollingInterval.
    eventually("status.dispatch up to date", 10, async || {
        let status = api.get("bytes").await.ok()?.status?.dispatch?;
        (status.committed.get("0") == Some(&1) && status.in_flight == 0).then_some(())
    })
    .await;
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_message_is_dead_lettered_without_a_job() {
    let h = harness(4).await;
    h.kafka.create_topic("text", 1).unwrap();
    h.kafka.create_topic("text-dlq", 1).unwrap();
    produce_raw(
        &h.kafka.bootstrap_servers(),
        "text",
        &[
            RawRecord {
                value: Some(vec![0xff, 0xfe]),
                ..RawRecord::default()
            },
            RawRecord {
                value: Some(b"fine".to_vec()),
                ..RawRecord::default()
            },
        ],
        TIMEOUT,
    )
    .await
    .unwrap();
    let operator = start_operator(&h, "text", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &dispatch_job(
            "text",
            "text",
            &h.kafka.bootstrap_servers(),
            r#"echo "$JOBTIDE_MESSAGE_VALUE""#,
            json!({"payload": "env", "deadLetterTopic": "text-dlq", "maxAttempts": "3"}),
        ),
    )
    .await
    .unwrap();
    let dead = consume(
        &h.kafka.bootstrap_servers(),
        "text-dlq",
        "reader",
        1,
        StartFrom::Earliest,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(
        dead.len(),
        1,
        "the binary message went to the dead-letter topic"
    );
    let job = eventually("the text message's Job completed", 30, async || {
        jobs_of(&h.client, "text")
            .await
            .into_iter()
            .find(|j| has_condition(j, "Complete"))
    })
    .await;
    assert_eq!(log_of(&h.client, &job.name_any()).await.trim(), "fine");
    let jobs = jobs_of(&h.client, "text").await;
    assert_eq!(jobs.len(), 1, "no Job for the undeliverable message");
    let events = events_of(&h.client, "text").await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "MessageDeadLettered"
                && note.contains("not delivered: the message's value is not UTF-8")),
        "{events:?}"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_scaled_job_dispatches_nothing_until_unpaused() {
    let h = harness(4).await;
    h.kafka.create_topic("held", 1).unwrap();
    h.kafka.create_topic("witness", 1).unwrap();
    let operator = start_operator(&h, "pause", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let servers = h.kafka.bootstrap_servers();
    let mut held = dispatch_job("held", "held", &servers, "true", json!({}));
    held.metadata.annotations =
        Some([("autoscaling.keda.sh/paused".to_owned(), "true".to_owned())].into());
    api.create(&PostParams::default(), &held).await.unwrap();
    api.create(
        &PostParams::default(),
        &dispatch_job("witness", "witness", &servers, "true", json!({})),
    )
    .await
    .unwrap();
    let record = |value: &str| RawRecord {
        value: Some(value.as_bytes().to_vec()),
        ..RawRecord::default()
    };
    produce_raw(&servers, "held", &[record("a"), record("b")], TIMEOUT)
        .await
        .unwrap();
    produce_raw(&servers, "witness", &[record("w")], TIMEOUT)
        .await
        .unwrap();
    // The witness, produced after the held messages, proves dispatching runs meanwhile.
    eventually("the witness's Job", 30, async || {
        jobs_of(&h.client, "witness")
            .await
            .iter()
            .any(|j| has_condition(j, "Complete"))
            .then_some(())
    })
    .await;
    assert!(
        jobs_of(&h.client, "held").await.is_empty(),
        "paused: no Job"
    );
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused": "false"}}}),
        ),
    )
    .await
    .unwrap();
    eventually("both held messages dispatched", 30, async || {
        let jobs = jobs_of(&h.client, "held").await;
        (jobs.iter().filter(|j| has_condition(j, "Complete")).count() == 2).then_some(())
    })
    .await;
    operator.stop().await;
}
