//! At scale, what an idle ScaledJob costs: its polls make no API request (Secrets, ConfigMaps and
//! authentications come from watches and GETs on change, never a LIST per poll), a change of an
//! object its triggers read is still picked up at once, and a deleted ScaledJob leaves no series.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use common::{condition, eventually, harness, polls_pass, produce, scaled_job, start_operator};
use jobtide_api::{ScaledJob, TriggerAuthentication};
use jobtide_controller::operator::Leadership;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

async fn create<K>(client: &Client, object: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
    .unwrap();
}

fn secret(name: &str, tls: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "stringData": {"tls": tls}})
}

fn authentication(secret: &str) -> serde_json::Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "plain"},
        "spec": {"secretTargetRef": [{"parameter": "tls", "name": secret, "key": "tls"}]},
    })
}

/// A ScaledJob on an empty topic whose trigger reads TriggerAuthentication `plain`.
fn authenticated(name: &str, servers: &str, polling_interval: u64) -> ScaledJob {
    let mut sj = scaled_job(
        name,
        servers,
        "quiet",
        "true",
        json!({"pollingInterval": polling_interval}),
    );
    sj.spec.triggers[0].authentication_ref =
        serde_json::from_value(json!({"name": "plain"})).unwrap();
    sj
}

fn ready(sj: &ScaledJob) -> Option<String> {
    condition(sj, "Ready").map(|(status, _)| status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_polls_make_no_api_request() {
    let h = harness(4).await;
    h.kafka.create_topic("quiet", 1).unwrap();
    create::<Secret>(&h.client, secret("creds", "disable")).await;
    create::<TriggerAuthentication>(&h.client, authentication("creds")).await;
    create::<ConfigMap>(
        &h.client,
        json!({"metadata": {"name": "settings"}, "data": {"GROUP": "my-group"}}),
    )
    .await;
    let servers = h.kafka.bootstrap_servers();
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &authenticated("with-auth", &servers, 1),
    )
    .await
    .unwrap();
    // A second one reads a ConfigMap through its container's env (`consumerGroupFromEnv`).
    let mut from_env = scaled_job("from-env", &servers, "quiet", "true", json!({}));
    from_env
        .spec
        .job_target_ref
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .env = Some(vec![
        serde_json::from_value(json!({"name": "GROUP", "valueFrom":
                {"configMapKeyRef": {"name": "settings", "key": "GROUP"}}}))
        .unwrap(),
    ]);
    let trigger = &mut from_env.spec.triggers[0].metadata;
    trigger.remove("consumerGroup");
    trigger.insert("consumerGroupFromEnv".into(), "GROUP".into());
    api.create(&PostParams::default(), &from_env).await.unwrap();

    let operator = start_operator(&h, "idle", Leadership::Always);
    for name in ["with-auth", "from-env"] {
        eventually(&format!("{name} ready"), 30, async || {
            let sj = api.get(name).await.ok()?;
            (ready(&sj).as_deref() == Some("True")
                && condition(&sj, "Active").is_some_and(|(s, _)| s == "False"))
            .then_some(())
        })
        .await;
    }
    // Past the first polls (their status writes, events and status.scaledjobs of the
    // TriggerAuthentication), only idle polls are left.
    polls_pass(&operator, 4).await;
    h.cluster.faults.clear_requests();
    polls_pass(&operator, 10).await;
    let requests: Vec<String> = h
        .cluster
        .faults
        .requests()
        .into_iter()
        .filter(|r| {
            r.user_agent
                .as_deref()
                .is_some_and(|a| a.starts_with("jobtide-operator"))
                && r.verb != "watch"
        })
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert!(
        requests.is_empty(),
        "idle polls sent requests: {requests:#?}"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_secret_or_authentication_is_used_at_once() {
    let h = harness(4).await;
    h.kafka.create_topic("quiet", 1).unwrap();
    create::<Secret>(&h.client, secret("creds", "disable")).await;
    create::<Secret>(&h.client, secret("broken", "neither")).await;
    create::<TriggerAuthentication>(&h.client, authentication("creds")).await;
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    // The periodic poll is far away: only the watches can bring the changes in time.
    api.create(
        &PostParams::default(),
        &authenticated("rotated", &h.kafka.bootstrap_servers(), 600),
    )
    .await
    .unwrap();
    let operator = start_operator(&h, "rotate", Leadership::Always);
    let becomes = async |status: &str, what: &str| {
        eventually(what, 15, async || {
            let sj = api.get("rotated").await.ok()?;
            (ready(&sj).as_deref() == Some(status)).then_some(())
        })
        .await;
    };
    becomes("True", "ready with the Secret's tls").await;

    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    let merge = |value: serde_json::Value| Patch::Merge(value);
    secrets
        .patch(
            "creds",
            &PatchParams::default(),
            &merge(json!({"stringData": {"tls": "neither"}})),
        )
        .await
        .unwrap();
    becomes("False", "the changed Secret read (an invalid tls)").await;
    secrets
        .patch(
            "creds",
            &PatchParams::default(),
            &merge(json!({"stringData": {"tls": "disable"}})),
        )
        .await
        .unwrap();
    becomes("True", "the Secret changed back").await;

    let tas: Api<TriggerAuthentication> = Api::namespaced(h.client.clone(), "default");
    tas.patch(
        "plain",
        &PatchParams::default(),
        &merge(json!({"spec": {"secretTargetRef": [
            {"parameter": "tls", "name": "broken", "key": "tls"}]}})),
    )
    .await
    .unwrap();
    becomes("False", "the TriggerAuthentication's new Secret read").await;
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_scaled_job_leaves_no_metric_series() {
    let h = harness(4).await;
    h.kafka.create_topic("work", 1).unwrap();
    produce(&h.kafka, "work", 1).await;
    let servers = h.kafka.bootstrap_servers();
    // Trigger 0 makes a Job (deleted by the history limit once it succeeds); trigger 1 reads a
    // topic that doesn't exist and fails every poll.
    let mut sj = scaled_job(
        "short-lived",
        &servers,
        "work",
        "true",
        json!({"successfulJobsHistoryLimit": 0}),
    );
    let mut failing = sj.spec.triggers[0].clone();
    failing.metadata.insert("topic".into(), "missing".into());
    sj.spec.triggers.push(failing);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(&PostParams::default(), &sj).await.unwrap();
    let operator = start_operator(&h, "series", Leadership::Always);
    let series = |metrics: &str| -> Vec<String> {
        metrics
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("\"short-lived\""))
            .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
            .collect()
    };
    eventually(
        "a Job created, deleted, and a failed measurement",
        60,
        async || {
            let names = series(&operator.metrics());
            ([
                "jobtide_jobs_created_total",
                "jobtide_jobs_deleted_total",
                "keda_scaled_job_errors_total",
                "keda_scaler_metrics_value",
            ]
            .iter()
            .all(|n| names.iter().any(|s| s == n)))
            .then_some(())
        },
    )
    .await;

    api.delete("short-lived", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the ScaledJob gone", 30, async || {
        api.get_opt("short-lived")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(series(&operator.metrics()), Vec::<String>::new());
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_scaled_jobs_kafka_client_is_closed() {
    let h = harness(4).await;
    let other = jobtide_kafka::ffi::MockKafka::start(1).unwrap();
    for kafka in [&h.kafka, &other] {
        kafka.create_topic("quiet", 1).unwrap();
    }
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    for (name, kafka) in [("stays", &h.kafka), ("goes", &other)] {
        let sj = scaled_job(name, &kafka.bootstrap_servers(), "quiet", "true", json!({}));
        api.create(&PostParams::default(), &sj).await.unwrap();
    }
    let operator = start_operator(&h, "clients", Leadership::Always);
    let clients =
        |operator: &common::Operator| common::sample(&operator.metrics(), "jobtide_kafka_clients");
    eventually("a client per cluster", 30, async || {
        (clients(&operator) == 2).then_some(())
    })
    .await;
    api.delete("goes", &DeleteParams::default()).await.unwrap();
    // Closed once unused for 3 pollingIntervals, at least 10 s; looked for every 10 s.
    eventually("the deleted ScaledJob's client closed", 40, async || {
        (clients(&operator) == 1).then_some(())
    })
    .await;
    polls_pass(&operator, 3).await;
    assert_eq!(clients(&operator), 1, "the other one stays");
    operator.stop().await;
}
