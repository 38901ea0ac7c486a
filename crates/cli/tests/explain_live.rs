//! `jobtide explain --server`: live Job counts from an API server (the embedded one) and the
//! next poll's decision with its arithmetic, on librdkafka's mock cluster.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

use std::path::Path;
use std::time::Duration;

use jobtide_devcluster::DevCluster;
use jobtide_kafka::ffi::MockKafka;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

fn job(name: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"scaledjob.keda.sh/name": "live"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_live_jobs_and_the_next_decision() {
    // No runner and no operator: the Jobs stay as this test writes them.
    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.create(&PostParams::default(), &job("live-running"))
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &job("live-done"))
        .await
        .unwrap();
    jobs.patch_status(
        "live-done",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"succeeded": 1, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}})),
    )
    .await
    .unwrap();

    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("orders", 1).unwrap();
    let records: Vec<_> = (0..5).map(|i| (None, format!("m{i}"))).collect();
    jobtide_kafka::tools::produce(
        &kafka.bootstrap_servers(),
        "orders",
        &records,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("live.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: live, namespace: default}\nspec:\n  jobTargetRef: {template: {spec: {containers: [{name: main, image: busybox}], restartPolicy: Never}}}\n  maxReplicaCount: 30\n  triggers:\n    - type: kafka\n      metadata: {bootstrapServers: 'kafka:9092', consumerGroup: g, topic: orders, lagThreshold: '1', offsetResetPolicy: earliest, allowIdleConsumers: 'true'}\n",
    )
    .unwrap();
    let manifest_again = manifest.clone();
    let (url, servers) = (cluster.url(), kafka.bootstrap_servers());
    let run = move |output: &str| {
        let output = std::process::Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
            .args(["explain", "-f"])
            .arg(&manifest)
            .args([
                "--server",
                &url,
                "--bootstrap-servers",
                &servers,
                "-o",
                output,
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let run_again = run.clone();
    let json_text = tokio::task::spawn_blocking(move || (run("json"), run("text")))
        .await
        .unwrap();
    let (json_out, text_out) = json_text;
    let parsed: Value = serde_json::from_str(&json_out).unwrap();
    let live = &parsed["scaledJobs"][0]["live"];
    assert_eq!(live["running"], json!(1), "{live}");
    // No pod yet: pending (KEDA's rule), and pending Jobs count among the running ones.
    assert_eq!(live["pending"], json!(1));
    assert_eq!(live["succeeded"], json!(1));
    // Lag 5, threshold 1: maxScale 5; default strategy: 5 − 1 running = 4.
    assert_eq!(live["create"], json!(4), "{live}");
    assert_eq!(live["delete"], json!([]));
    assert_eq!(
        live["arithmetic"][1],
        json!("default: effectiveMaxScale = maxScale − running = 5 − 1 = 4")
    );
    assert!(
        text_out.contains(
            "live Jobs: 1 running (1 of them pending), 0 finishing, 1 succeeded, 0 failed"
        ),
        "{text_out}"
    );
    assert!(
        text_out.contains("create = min(scaleTo, max(effectiveMaxScale, 0)) = min(5, 4) = 4"),
        "{text_out}"
    );
    assert_eq!(live["capacity"], Value::Null, "nothing waits");

    // The running Job's pod waits for capacity: with a pending budget of 2, one more Job may
    // wait, and explain says why no more is created.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "live-running-x", "labels": {"scaledjob.keda.sh/name": "live", "job-name": "live-running"}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    pods.patch_status(
        "live-running-x",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}]}})),
    )
    .await
    .unwrap();
    let text = std::fs::read_to_string(&manifest_again).unwrap().replace(
        "metadata: {name: live, namespace: default}",
        "metadata: {name: live, namespace: default, annotations: {jobtide.io/pending-budget: '2'}}",
    );
    std::fs::write(&manifest_again, text).unwrap();
    let (json_out, text_out) =
        tokio::task::spawn_blocking(move || (run_again("json"), run_again("text")))
            .await
            .unwrap();
    let parsed: Value = serde_json::from_str(&json_out).unwrap();
    let live = &parsed["scaledJobs"][0]["live"];
    assert_eq!(live["create"], json!(1), "budget 2 − 1 waiting: {live}");
    let capacity = live["capacity"].as_str().unwrap_or_default();
    assert!(
        capacity.starts_with("CapacityAvailable False (Unschedulable)")
            && capacity.contains("1 Insufficient cpu"),
        "{capacity}"
    );
    assert!(
        text_out.contains("capacity: CapacityAvailable False (Unschedulable)"),
        "{text_out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_a_dispatch_scaled_jobs_backlog_and_ledger_without_a_lag_decision() {
    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in jobtide_api::crd::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let manifest_text = "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: live, namespace: default}\nspec:\n  jobTargetRef: {template: {spec: {containers: [{name: main, image: busybox}], restartPolicy: Never}}}\n  maxReplicaCount: 4\n  triggers:\n    - type: kafka-dispatch\n      metadata: {bootstrapServers: 'kafka:9092', consumerGroup: g, topic: orders, offsetResetPolicy: earliest}\n";
    let scaled_jobs: Api<jobtide_api::ScaledJob> = Api::namespaced(client.clone(), "default");
    let stored: jobtide_api::ScaledJob = serde_saphyr::from_str(manifest_text).unwrap();
    scaled_jobs
        .create(&PostParams::default(), &stored)
        .await
        .unwrap();
    scaled_jobs
        .patch_status(
            "live",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"dispatch": {"committed": {"0": 2}, "inFlight": 1,
                "queued": 0, "deadLettered": 1, "failed": 0}}}),
            ),
        )
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.create(&PostParams::default(), &job("live-running"))
        .await
        .unwrap();

    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("orders", 1).unwrap();
    let records: Vec<_> = (0..5).map(|i| (None, format!("m{i}"))).collect();
    jobtide_kafka::tools::produce(
        &kafka.bootstrap_servers(),
        "orders",
        &records,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("live.yaml");
    std::fs::write(&manifest, manifest_text).unwrap();
    let (url, servers) = (cluster.url(), kafka.bootstrap_servers());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
            .args(["explain", "-f"])
            .arg(&manifest)
            .args([
                "--server",
                &url,
                "--bootstrap-servers",
                &servers,
                "-o",
                "json",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let explained = &parsed["scaledJobs"][0];
    // The backlog: five messages, no commit yet, one counts one.
    assert_eq!(
        explained["triggers"][0]["totalLag"],
        json!(5),
        "{explained}"
    );
    let live = &explained["live"];
    assert_eq!(live["mode"], json!("dispatch"), "{live}");
    assert_eq!(live["create"], json!(0), "no lag decision in dispatch mode");
    assert_eq!(live["running"], json!(1));
    assert_eq!(live["dispatch"]["inFlight"], json!(1));
    assert_eq!(live["dispatch"]["deadLettered"], json!(1));
    assert_eq!(live["dispatch"]["committed"], json!({"0": 2}));
}
