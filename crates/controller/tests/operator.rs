//! The operator end to end on one machine: the embedded API server with its local job runner,
//! librdkafka's mock Kafka cluster, and the controller — the seed walkthrough's steps.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

use std::sync::Arc;
use std::time::Duration;

use jobtide_api::ScaledJob;
use jobtide_controller::operator::{self, Leadership};
use jobtide_controller::{Config as OperatorConfig, Context};
use jobtide_devcluster::DevCluster;
use jobtide_devcluster::runner::RunnerConfig;
use jobtide_kafka::ffi::MockKafka;
use jobtide_kafka::tools::produce;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;

async fn setup() -> (DevCluster, Client, MockKafka) {
    let cluster = DevCluster::start_with_runner(
        "127.0.0.1:0".parse().unwrap(),
        None,
        RunnerConfig::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jobtide_api::crd::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let kafka = MockKafka::start(1).unwrap();
    let context = Arc::new(Context::new(
        client.clone(),
        OperatorConfig::new("test", "jobtide-test"),
    ));
    let _ = operator::spawn(context, Leadership::Always, std::future::pending());
    (cluster, client, kafka)
}

fn scaled_job(name: &str, servers: &str, topic: &str) -> ScaledJob {
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 4, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "kafka", "image": "confluentinc/cp-kafka:7.6.1", "command": ["/bin/sh", "-c"], "args": ["echo start; echo end!"]}]}}},
            "pollingInterval": 1, "maxReplicaCount": 30, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 2,
            "triggers": [{"type": "kafka", "metadata": {"bootstrapServers": servers, "consumerGroup": "my-group",
                "topic": topic, "lagThreshold": "1", "offsetResetPolicy": "earliest"}}],
        },
    }))
    .unwrap()
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn condition(sj: &ScaledJob, type_: &str) -> Option<(String, String)> {
    let c = sj
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

async fn events_of(client: &Client, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
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
    eventually("Ready True and Active False", async || {
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
    let job = eventually("a completed Job", async || {
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
    eventually("history limited to 3 completed Jobs", async || {
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

    // Deleting the ScaledJob runs the finalizer; its Jobs are garbage-collected.
    api.delete("kafka-scaledjob", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the ScaledJob and its Jobs gone", async || {
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
    eventually("Ready False TriggerError", async || {
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
    eventually("Ready True once the topic exists", async || {
        let sj = api.get("orders").await.ok()?;
        (condition(&sj, "Ready")?.0 == "True").then_some(())
    })
    .await;
}
