//! The operator end to end on one machine: the embedded API server with its local job runner,
//! librdkafka's mock Kafka cluster, and the controller — the seed walkthrough's steps.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use common::{condition, events_of, eventually};

use std::time::Duration;

use jobtide_api::ScaledJob;
use jobtide_controller::operator::Leadership;
use jobtide_devcluster::DevCluster;
use jobtide_kafka::ffi::MockKafka;
use jobtide_kafka::tools::produce;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};

async fn setup() -> (DevCluster, Client, MockKafka) {
    let h = common::harness(8).await;
    let operator = common::start_operator(&h, "jobtide-test", Leadership::Always);
    // The operator runs for the whole test.
    std::mem::forget(operator);
    (h.cluster, h.client, h.kafka)
}

fn scaled_job(name: &str, servers: &str, topic: &str) -> ScaledJob {
    common::scaled_job(
        name,
        servers,
        topic,
        "echo start; echo end!",
        serde_json::json!({}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_become_jobs_that_run_and_history_is_limited() {
    let (_cluster, client, kafka) = setup().await;
    kafka.create_topic("test-topic", 1).unwrap();
    let api: Api<ScaledJob> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &scaled_job("kafka-scaledjob", &kafka.bootstrap_servers(), "test-topic"),
    )
    .await
    .unwrap();

    // Ready, not active: no messages yet.
    eventually("Ready True and Active False", 30, async || {
        let sj = api.get("kafka-scaledjob").await.ok()?;
        (condition(&sj, "Ready")? == ("True".into(), "ScaledJobReady".into())
            && condition(&sj, "Active")?.0 == "False")
            .then_some(())
    })
    .await;
    let sj = api.get("kafka-scaledjob").await.unwrap();
    assert!(sj.finalizers().iter().any(|f| f == "finalizer.keda.sh"));
    assert_eq!(
        sj.status.as_ref().and_then(|s| s.triggers_types.as_deref()),
        Some("kafka")
    );

    produce(
        &kafka.bootstrap_servers(),
        "test-topic",
        &[(Some("18".into()), "{\"orderid\":18}".into())],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job = eventually("a completed Job", 30, async || {
        let listed = jobs
            .list(&ListParams::default().labels("scaledjob.keda.sh/name=kafka-scaledjob"))
            .await
            .ok()?;
        listed.items.into_iter().find(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
    })
    .await;
    assert!(job.name_any().starts_with("kafka-scaledjob-"));
    let events = events_of(&client, "kafka-scaledjob").await;
    for expected in [
        ("KEDAScalersStarted", "Started scalers watch"),
        ("ScaledJobReady", "ScaledJob is ready for scaling"),
        ("KEDAScalersStarted", "Scaler kafka is built"),
        ("KEDAJobsCreated", "Created 1 jobs"),
    ] {
        assert!(
            events
                .iter()
                .any(|(r, m)| r == expected.0 && m == expected.1),
            "missing {expected:?} in {events:?}"
        );
    }
    // Nobody commits, so the lag stays and Jobs keep coming; history keeps 3 completed ones.
    eventually("history limited to 3 completed Jobs", 30, async || {
        let listed = jobs
            .list(&ListParams::default().labels("scaledjob.keda.sh/name=kafka-scaledjob"))
            .await
            .ok()?;
        let complete = listed
            .items
            .iter()
            .filter(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            })
            .count();
        let sj = api.get("kafka-scaledjob").await.ok()?;
        (complete == 3 && sj.status.as_ref()?.last_active_time.is_some()).then_some(())
    })
    .await;

    // Repeats of an event are one Event with a series (as client-go and kube-runtime publish).
    let new_events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let created: Vec<_> = new_events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("KEDAJobsCreated"))
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].note.as_deref(), Some("Created 1 jobs"));
    assert_eq!(
        created[0].reporting_controller.as_deref(),
        Some("scale-handler")
    );
    assert_eq!(
        created[0].reporting_instance.as_deref(),
        Some("jobtide-test")
    );
    assert!(
        created[0].series.as_ref().is_some_and(|s| s.count >= 2),
        "{created:?}"
    );

    // Deleting the ScaledJob runs the finalizer; its Jobs are garbage-collected.
    api.delete("kafka-scaledjob", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the ScaledJob and its Jobs gone", 30, async || {
        let gone = api.get_opt("kafka-scaledjob").await.ok()?.is_none();
        let left = jobs
            .list(&ListParams::default().labels("scaledjob.keda.sh/name=kafka-scaledjob"))
            .await
            .ok()?
            .items
            .len();
        (gone && left == 0).then_some(())
    })
    .await;
    assert!(
        events_of(&client, "kafka-scaledjob")
            .await
            .iter()
            .any(|(r, m)| r == "ScaledJobDeleted" && m == "ScaledJob was deleted")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_a_trigger_error_until_it_exists() {
    let (_cluster, client, kafka) = setup().await;
    let api: Api<ScaledJob> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &scaled_job("orders", &kafka.bootstrap_servers(), "test-topic"),
    )
    .await
    .unwrap();
    eventually("Ready False TriggerError", 30, async || {
        let sj = api.get("orders").await.ok()?;
        (condition(&sj, "Ready")? == ("False".into(), "TriggerError".into())).then_some(())
    })
    .await;
    let events = events_of(&client, "orders").await;
    assert!(
        events.iter().any(|(r, m)| r == "KEDAScalerFailed"
            && m == "expected at least one active partition within the topic 'test-topic'"),
        "{events:?}"
    );
    kafka.create_topic("test-topic", 1).unwrap();
    eventually("Ready True once the topic exists", 30, async || {
        let sj = api.get("orders").await.ok()?;
        (condition(&sj, "Ready")?.0 == "True").then_some(())
    })
    .await;
}
