//! Dispatch mode under faults: API errors on a tenth of the operator's calls (500, 429, 409, and
//! writes carried out whose answer is lost), and the Kafka broker down for 30 s mid-burst. Either
//! way: exactly one successful Job per message, nothing lost, every partition committed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Harness, eventually, harness, has_condition, jobs_of, start_operator, uncommitted};
use jobtide_api::ScaledJob;
use jobtide_controller::operator::Leadership;
use jobtide_devcluster::faults::{Failure, Matcher};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

fn dispatch_job(name: &str, servers: &str, script: &str) -> ScaledJob {
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "busybox", "command": ["/bin/sh", "-c"],
                 "args": [script]}]}}},
            "pollingInterval": 1, "maxReplicaCount": 6,
            "successfulJobsHistoryLimit": 1000, "failedJobsHistoryLimit": 1000,
            "triggers": [{"type": "kafka-dispatch", "metadata": {"bootstrapServers": servers,
                "consumerGroup": format!("{name}-dispatch"), "topic": "orders", "offsetResetPolicy": "earliest"}}],
        },
    }))
    .unwrap()
}

async fn produce(h: &Harness, from: usize, count: usize) {
    let records: Vec<_> = (from..from + count)
        .map(|i| (Some(format!("k{i}")), format!("m{i}")))
        .collect();
    jobtide_kafka::tools::produce(&h.kafka.bootstrap_servers(), "orders", &records, TIMEOUT)
        .await
        .unwrap();
}

/// Exactly one Job per message, every one succeeded, nothing committed short.
async fn assert_exactly_once(h: &Harness, name: &str, messages: usize) {
    let jobs = eventually(&format!("{messages} completed Jobs"), 120, async || {
        let jobs = jobs_of(&h.client, name).await;
        let complete = jobs.iter().filter(|j| has_condition(j, "Complete")).count();
        (complete >= messages).then_some(jobs)
    })
    .await;
    eventually("everything committed", 60, async || {
        (uncommitted(&h.kafka, &format!("{name}-dispatch"), "orders").await == Some(0))
            .then_some(())
    })
    .await;
    let mut per_message: BTreeMap<(String, String), Vec<&Job>> = BTreeMap::new();
    for job in &jobs {
        let labels = job.metadata.labels.as_ref().unwrap();
        per_message
            .entry((
                labels["jobtide.io/partition"].clone(),
                labels["jobtide.io/offset"].clone(),
            ))
            .or_default()
            .push(job);
    }
    assert_eq!(per_message.len(), messages, "every message has a Job");
    for (message, jobs) in &per_message {
        assert_eq!(jobs.len(), 1, "one Job for message {message:?}");
    }
    let names: BTreeSet<_> = jobs.iter().map(|j| j.metadata.name.clone()).collect();
    assert_eq!(names.len(), jobs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_on_a_tenth_of_the_operators_calls_create_no_duplicate_and_lose_nothing() {
    let h = harness(8).await;
    h.kafka.create_topic("orders", 3).unwrap();
    h.cluster.faults.fail_every(
        10,
        Matcher::default(),
        Some(jobtide_controller::USER_AGENT),
        vec![
            Failure::InternalError,
            Failure::TooManyRequests {
                retry_after_seconds: 1,
            },
            Failure::Conflict,
            Failure::LostResponse,
        ],
    );
    let operator = start_operator(&h, "faults", Leadership::Always);
    Api::<ScaledJob>::namespaced(h.client.clone(), "default")
        .create(
            &PostParams::default(),
            &dispatch_job(
                "faults",
                &h.kafka.bootstrap_servers(),
                r#"cat "$JOBTIDE_MESSAGE_DIR/value""#,
            ),
        )
        .await
        .unwrap();
    produce(&h, 0, 60).await;
    assert_exactly_once(&h, "faults", 60).await;
    // The faults really hit the operator's writes: some Job creations failed or lost answers.
    let failed_creates = h
        .cluster
        .faults
        .requests()
        .iter()
        .filter(|r| {
            r.method == "POST"
                && r.resource.as_deref() == Some("jobs")
                && r.user_agent.as_deref() == Some(jobtide_controller::USER_AGENT)
                && r.status >= 400
        })
        .count();
    assert!(
        failed_creates >= 2,
        "faults hit Job creations: {failed_creates}"
    );
    h.cluster.faults.clear_periodic();
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_down_for_30_seconds_mid_burst_loses_nothing_and_duplicates_nothing() {
    let h = harness(8).await;
    h.kafka.create_topic("orders", 2).unwrap();
    produce(&h, 0, 20).await;
    let operator = start_operator(&h, "outage", Leadership::Always);
    Api::<ScaledJob>::namespaced(h.client.clone(), "default")
        .create(
            &PostParams::default(),
            // Jobs that take a moment, so that the outage comes mid-burst.
            &dispatch_job(
                "outage",
                &h.kafka.bootstrap_servers(),
                r#"sleep 0.5; cat "$JOBTIDE_MESSAGE_DIR/value""#,
            ),
        )
        .await
        .unwrap();
    eventually("the burst under way", 30, async || {
        (!jobs_of(&h.client, "outage").await.is_empty()).then_some(())
    })
    .await;
    let done = jobs_of(&h.client, "outage")
        .await
        .iter()
        .filter(|j| has_condition(j, "Complete"))
        .count();
    assert!(done < 20, "the outage comes mid-burst ({done} of 20 done)");
    h.kafka.set_broker_up(1, false);
    tokio::time::sleep(Duration::from_secs(30)).await;
    h.kafka.set_broker_up(1, true);
    produce(&h, 20, 10).await;
    assert_exactly_once(&h, "outage", 30).await;
    operator.stop().await;
}
