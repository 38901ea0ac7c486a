//! Dispatch mode end to end on the embedded API server, its local runner and librdkafka's mock
//! cluster: one Job per message with the message in its files, commits at the end, the
//! in-flight cap, retries and dead letters, and a restart mid-burst that dispatches nothing twice.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{
    Harness, events_of, eventually, harness, has_condition, jobs_of, log_of, start_operator,
    uncommitted,
};
use jobtide_api::ScaledJob;
use jobtide_controller::operator::Leadership;
use jobtide_kafka::tools::{StartFrom, consume};
use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A dispatch ScaledJob whose Jobs print their message and fail for values containing "bad".
fn dispatch_job(name: &str, servers: &str, metadata: Value, extra: Value) -> ScaledJob {
    let mut trigger_metadata = json!({"bootstrapServers": servers, "consumerGroup": format!("{name}-dispatch"),
        "topic": "orders", "offsetResetPolicy": "earliest"});
    for (key, value) in metadata.as_object().into_iter().flatten() {
        trigger_metadata[key] = value.clone();
    }
    // Each Job takes a moment, so that the cap is seen holding Jobs back.
    let script = r#"sleep 0.2; value="$(cat "$JOBTIDE_MESSAGE_DIR/value")"; echo "$JOBTIDE_PARTITION/$JOBTIDE_OFFSET/$JOBTIDE_ATTEMPT $value"; case "$value" in *bad*) exit 1;; esac"#;
    let mut spec = json!({
        "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": "busybox", "command": ["/bin/sh", "-c"], "args": [script]}]}}},
        "pollingInterval": 1, "maxReplicaCount": 4, "successfulJobsHistoryLimit": 100, "failedJobsHistoryLimit": 100,
        "triggers": [{"type": "kafka-dispatch", "metadata": trigger_metadata}],
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        spec[key] = value.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

async fn produce_values(h: &Harness, values: &[String]) {
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (Some(format!("k{i}")), v.clone()))
        .collect();
    jobtide_kafka::tools::produce(&h.kafka.bootstrap_servers(), "orders", &records, TIMEOUT)
        .await
        .unwrap();
}

fn coordinates(job: &Job) -> (i32, i64, u32) {
    let labels = job.metadata.labels.as_ref().unwrap();
    (
        labels["jobtide.io/partition"].parse().unwrap(),
        labels["jobtide.io/offset"].parse().unwrap(),
        labels["jobtide.io/attempt"].parse().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_gets_one_job_that_reads_it_and_the_offsets_are_committed() {
    let h = harness(8).await;
    h.kafka.create_topic("orders", 3).unwrap();
    let values: Vec<String> = (0..24).map(|i| format!("{{\"orderid\":{i}}}")).collect();
    produce_values(&h, &values).await;
    let operator = start_operator(&h, "dispatch", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &dispatch_job("orders", &h.kafka.bootstrap_servers(), json!({}), json!({})),
    )
    .await
    .unwrap();

    // Sample the Jobs in flight while the burst runs: never more than maxReplicaCount (4), as
    // the API lists them and as the dispatcher counts them.
    let mut most_running = 0;
    let mut most_in_flight = 0;
    let in_flight = r#"jobtide_dispatch_in_flight{namespace="default",scaledJob="orders"}"#;
    let jobs = eventually("24 completed Jobs", 90, async || {
        let jobs = jobs_of(&h.client, "orders").await;
        let running = jobs
            .iter()
            .filter(|j| !has_condition(j, "Complete") && !has_condition(j, "Failed"))
            .count();
        most_running = most_running.max(running);
        most_in_flight = most_in_flight.max(common::sample(&operator.metrics(), in_flight));
        let complete = jobs.iter().filter(|j| has_condition(j, "Complete")).count();
        (complete == 24).then_some(jobs)
    })
    .await;
    assert!(
        most_running <= 4,
        "at most maxReplicaCount in flight, saw {most_running}"
    );
    assert!(most_running >= 1, "the sampling saw Jobs running");
    assert!(
        (1..=4).contains(&most_in_flight),
        "the dispatcher's count: {most_in_flight}"
    );
    let distinct: BTreeSet<(i32, i64, u32)> = jobs.iter().map(coordinates).collect();
    assert_eq!(distinct.len(), 24, "one Job per message");
    assert!(distinct.iter().all(|(_, _, attempt)| *attempt == 1));
    // Each Job printed its own message, read from $JOBTIDE_MESSAGE_DIR.
    let mut seen = BTreeSet::new();
    for job in &jobs {
        let (partition, offset, _) = coordinates(job);
        let log = log_of(&h.client, &job.name_any()).await;
        let (position, value) = log.trim().split_once(' ').expect("a line");
        assert_eq!(position, format!("{partition}/{offset}/1"));
        seen.insert(value.to_owned());
    }
    assert_eq!(seen, values.iter().cloned().collect::<BTreeSet<_>>());
    // The commits reach every partition's end, as another client sees them.
    eventually("everything committed", 30, async || {
        (uncommitted(&h.kafka, "orders-dispatch", "orders").await == Some(0)).then_some(())
    })
    .await;
    let status = eventually("the dispatch status", 30, async || {
        let status = api.get("orders").await.ok()?.status?.dispatch?;
        (status.committed.values().sum::<i64>() == 24 && status.in_flight == 0).then_some(status)
    })
    .await;
    assert_eq!(status.committed.len(), 3);
    let metrics = operator.metrics();
    assert!(
        metrics.contains(r#"jobtide_dispatch_messages_total{outcome="created"} 24"#),
        "{metrics}"
    );
    // KEDA's aggregated creation event, one per reconcile that saw new Jobs.
    let events = events_of(&h.client, "orders").await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "KEDAJobsCreated" && note.starts_with("Created ")),
        "{events:?}"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_message_is_retried_then_dead_lettered_and_the_rest_moves_on() {
    let h = harness(8).await;
    h.kafka.create_topic("orders", 1).unwrap();
    h.kafka.create_topic("orders-dlq", 1).unwrap();
    produce_values(&h, &["good-0".into(), "bad-1".into(), "good-2".into()]).await;
    let operator = start_operator(&h, "dispatch", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &dispatch_job(
            "retry",
            &h.kafka.bootstrap_servers(),
            json!({"maxAttempts": "2", "deadLetterTopic": "orders-dlq"}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    eventually(
        "the bad message dead-lettered and everything committed",
        60,
        async || (uncommitted(&h.kafka, "retry-dispatch", "orders").await == Some(0)).then_some(()),
    )
    .await;
    let jobs = jobs_of(&h.client, "retry").await;
    let by_coordinates: BTreeMap<(i32, i64, u32), &Job> =
        jobs.iter().map(|j| (coordinates(j), j)).collect();
    assert_eq!(
        by_coordinates.keys().copied().collect::<Vec<_>>(),
        [(0, 0, 1), (0, 1, 1), (0, 1, 2), (0, 2, 1)],
        "two attempts for the bad message, one Job for each good one"
    );
    assert!(has_condition(by_coordinates[&(0, 1, 2)], "Failed"));
    let last = by_coordinates[&(0, 1, 2)];
    assert_eq!(
        last.annotations()
            .get("jobtide.io/dead-lettered")
            .map(String::as_str),
        Some("true")
    );
    let dead = consume(
        &h.kafka.bootstrap_servers(),
        "orders-dlq",
        "reader",
        1,
        StartFrom::Earliest,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value, "bad-1");
    assert_eq!(dead[0].key.as_deref(), Some("k1"));
    let events = events_of(&h.client, "retry").await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "MessageDeadLettered"
                && note
                    .starts_with("message orders/0/1 failed 2 attempt(s) and went to orders-dlq")),
        "{events:?}"
    );
    // The run in metrics: 2 successes, 2 failures (one a retry), 1 dead letter; every Job's
    // duration and queue time observed once.
    let metrics = operator.metrics();
    let samples: BTreeSet<&str> = metrics.lines().collect();
    let ours = r#"namespace="default",scaledJob="retry""#;
    for line in [
        format!(r#"jobtide_jobs_finished_total{{{ours},outcome="succeeded"}} 2"#),
        format!(r#"jobtide_jobs_finished_total{{{ours},outcome="failed"}} 2"#),
        format!("jobtide_job_duration_seconds_count{{{ours}}} 4"),
        format!("jobtide_job_queue_seconds_count{{{ours}}} 4"),
        format!("jobtide_dispatch_retries_total{{{ours}}} 1"),
        format!("jobtide_dispatch_dead_letters_total{{{ours}}} 1"),
        r#"jobtide_dispatch_messages_total{outcome="created"} 4"#.to_owned(),
        r#"jobtide_dispatch_messages_total{outcome="succeeded"} 2"#.to_owned(),
        r#"jobtide_dispatch_messages_total{outcome="failed"} 2"#.to_owned(),
        r#"jobtide_dispatch_messages_total{outcome="dead_lettered"} 1"#.to_owned(),
        "jobtide_dispatch_message_to_job_seconds_count 3".to_owned(),
    ] {
        assert!(samples.contains(line.as_str()), "{line} in\n{metrics}");
    }
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_burst_dispatches_nothing_twice_and_loses_nothing() {
    let h = harness(2).await;
    h.kafka.create_topic("orders", 2).unwrap();
    let values: Vec<String> = (0..16).map(|i| format!("m{i}")).collect();
    produce_values(&h, &values).await;
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    // Slow Jobs, so that the restart finds some running and some not yet created.
    let mut sj = dispatch_job("burst", &h.kafka.bootstrap_servers(), json!({}), json!({}));
    sj.spec
        .job_target_ref
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .args = Some(vec![
        r#"sleep 0.3; cat "$JOBTIDE_MESSAGE_DIR/value""#.into(),
    ]);
    api.create(&PostParams::default(), &sj).await.unwrap();
    for round in 0..3 {
        let operator = start_operator(&h, &format!("burst-{round}"), Leadership::Always);
        eventually("some progress", 60, async || {
            let done = jobs_of(&h.client, "burst")
                .await
                .iter()
                .filter(|j| has_condition(j, "Complete"))
                .count();
            (done >= 4 * (round + 1)).then_some(())
        })
        .await;
        operator.stop().await;
    }
    let operator = start_operator(&h, "burst-last", Leadership::Always);
    let jobs = eventually("16 completed Jobs", 90, async || {
        let jobs = jobs_of(&h.client, "burst").await;
        (jobs.iter().filter(|j| has_condition(j, "Complete")).count() >= 16).then_some(jobs)
    })
    .await;
    eventually("everything committed", 30, async || {
        (uncommitted(&h.kafka, "burst-dispatch", "orders").await == Some(0)).then_some(())
    })
    .await;
    let jobs_now = jobs_of(&h.client, "burst").await;
    assert_eq!(
        jobs_now.len(),
        16,
        "no Job twice: {:?}",
        jobs.iter().map(coordinates).collect::<Vec<_>>()
    );
    let distinct: BTreeSet<(i32, i64, u32)> = jobs_now.iter().map(coordinates).collect();
    assert_eq!(distinct.len(), 16);
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_without_its_message_secret_at_the_cap_gets_it_after_a_restart() {
    use jobtide_api::delivery::{Delivery, message_job};
    use jobtide_api::trigger::Payload;
    use jobtide_core::dispatch::{DispatchHash, JobCoordinates, job_name};

    let h = harness(2).await;
    h.kafka.create_topic("orders", 1).unwrap();
    produce_values(&h, &["m0".into(), "m1".into()]).await;
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let mut sj = dispatch_job(
        "lonely",
        &h.kafka.bootstrap_servers(),
        json!({}),
        json!({"maxReplicaCount": 1}),
    );
    sj.spec
        .job_target_ref
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .args = Some(vec![r#"cat "$JOBTIDE_MESSAGE_DIR/value""#.into()]);
    let sj = api.create(&PostParams::default(), &sj).await.unwrap();

    // An operator killed between creating the first message's Job and its Secret: the Job
    // exists, its pod waits for the Secret (as the kubelet's would), and it fills the cap.
    let name = job_name("lonely", "orders", 0, 0, 1);
    let labels = JobCoordinates {
        partition: 0,
        offset: 0,
        attempt: 1,
        hash: DispatchHash::of("lonely", "orders"),
    }
    .labels();
    let (job, secret) = message_job(
        &sj,
        "test",
        &Delivery {
            job_name: &name,
            labels: &labels,
            topic: "orders",
            partition: 0,
            offset: 0,
            attempt: 1,
            timestamp_ms: None,
            key: Some(b"k0"),
            value: Some(b"m0"),
            headers: &[],
            payload: Payload::File,
            traceparent: None,
        },
    )
    .unwrap();
    assert!(secret.is_some(), "payload: file has a message Secret");
    Api::<Job>::namespaced(h.client.clone(), "default")
        .create(&PostParams::default(), &job)
        .await
        .unwrap();

    // The restarted operator reads the message again for the Secret, though the cap is full.
    let operator = start_operator(&h, "restarted", Leadership::Always);
    let jobs = eventually("both messages' Jobs complete", 30, async || {
        let jobs = jobs_of(&h.client, "lonely").await;
        (jobs.iter().filter(|j| has_condition(j, "Complete")).count() == 2).then_some(jobs)
    })
    .await;
    assert_eq!(log_of(&h.client, &name).await, "m0");
    assert_eq!(jobs.len(), 2);
    eventually("everything committed", 30, async || {
        (uncommitted(&h.kafka, "lonely-dispatch", "orders").await == Some(0)).then_some(())
    })
    .await;
    operator.stop().await;
}
