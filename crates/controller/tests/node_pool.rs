//! The simulated node pool (`jobtide dev --node-pool`) with the operator on the embedded API
//! server: a burst that doesn't fit makes the pool grow, the pods get scheduled on the new nodes,
//! and the operator's `CapacityAvailable` condition goes from waiting to available; a Job larger
//! than any node of the pool gets the autoscaler's `NotTriggerScaleUp` and stops creation.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    condition, eventually, harness, jobs_of, polls_pass, produce, scaled_job, start_operator,
};
use jobtide_api::ScaledJob;
use jobtide_controller::operator::Leadership;
use jobtide_devcluster::autoscaler::{Autoscaler, NodePool};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// A ScaledJob whose Jobs sleep and request `cpu`.
fn sleeping(h: &common::Harness, name: &str, cpu: &str) -> ScaledJob {
    let mut sj = scaled_job(
        name,
        &h.kafka.bootstrap_servers(),
        name,
        "sleep 60",
        json!({}),
    );
    if let Some(pod) = sj.spec.job_target_ref.template.spec.as_mut() {
        pod.containers[0].resources =
            Some(serde_json::from_value(json!({"requests": {"cpu": cpu}})).unwrap());
    }
    sj
}

async fn capacity(api: &Api<ScaledJob>, name: &str) -> Option<(String, String)> {
    condition(&api.get(name).await.ok()?, "CapacityAvailable")
}

async fn pods_of(client: &Client, name: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("scaledjob.keda.sh/name={name}")))
        .await
        .unwrap()
        .items
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

async fn autoscaler_events(client: &Client, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_that_does_not_fit_grows_the_pool_and_capacity_becomes_available() {
    // The runner's node takes 2 pods; the pool adds nodes of 2 cpus (two 1-cpu pods) after 2 s.
    let h = harness(2).await;
    let runner = Arc::clone(h.cluster.runner.as_ref().unwrap());
    let pool: NodePool = "min=0,max=3,cpu=2,memory=4Gi,pods=4,delay=2s"
        .parse()
        .unwrap();
    let autoscaler = Autoscaler::start(h.client.clone(), runner, pool, Duration::from_millis(200));
    h.kafka.create_topic("burst", 1).unwrap();
    produce(&h.kafka, "burst", 6).await;
    let operator = start_operator(&h, "pool", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(&PostParams::default(), &sleeping(&h, "burst", "1"))
        .await
        .unwrap();

    // 6 Jobs: 2 run on the runner's node, 4 wait, and the autoscaler triggers 2 nodes.
    let (status, _) = eventually(
        "CapacityAvailable False, waiting for the scale-up",
        30,
        async || {
            capacity(&api, "burst")
                .await
                .filter(|(_, r)| r == "WaitingForScaleUp")
        },
    )
    .await;
    assert_eq!(status, "False");
    // The verdicts are written at the scale-up's decision, before its nodes register (2 s).
    eventually("the pool's nodes", 30, async || {
        (autoscaler.nodes_added() == 2).then_some(())
    })
    .await;
    // One event per pod waiting when the scale-up was decided: all 4 if they were all
    // Unschedulable by then; a pod that came later fits an upcoming node and, as with the real
    // Cluster Autoscaler, gets no verdict. Under load the 4 pods can span two decisions.
    let triggered = autoscaler_events(&h.client, "TriggeredScaleUp").await;
    assert!(
        (1..=4).contains(&triggered.len()),
        "one event per pod waiting at the decision: {triggered:?}"
    );
    assert!(
        triggered.iter().all(|e| e
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("pod triggered scale-up: [{jobtide-pool ")
                && m.ends_with("->2 (max: 3)}]")
                || m == "pod triggered scale-up: [{jobtide-pool 0->1 (max: 3)}]")
            && e.source.as_ref().and_then(|s| s.component.as_deref())
                == Some("cluster-autoscaler")),
        "{triggered:?}"
    );

    // After the delay the nodes register, the pods are bound to them, capacity is available.
    eventually("CapacityAvailable True", 30, async || {
        capacity(&api, "burst").await.filter(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(autoscaler.nodes_added(), 2);
    let nodes = Api::<Node>::all(h.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut names: Vec<String> = nodes.iter().map(ResourceExt::name_any).collect();
    names.sort();
    assert_eq!(names, ["jobtide-dev", "jobtide-pool-1", "jobtide-pool-2"]);
    let pods = eventually("all 6 pods bound", 30, async || {
        let pods = pods_of(&h.client, "burst").await;
        (pods.len() == 6 && pods.iter().all(|p| node_of(p).is_some())).then_some(pods)
    })
    .await;
    let on_pool = pods
        .iter()
        .filter(|p| node_of(p).is_some_and(|n| n.starts_with("jobtide-pool-")))
        .count();
    assert_eq!(on_pool, 4);
    // One Job per message, none more while pods waited.
    assert_eq!(jobs_of(&h.client, "burst").await.len(), 6);
    assert!(
        autoscaler_events(&h.client, "NotTriggerScaleUp")
            .await
            .is_empty(),
        "the pool was below max throughout"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_larger_than_the_pools_nodes_gets_not_trigger_scale_up_and_no_more_jobs() {
    let h = harness(2).await;
    let runner = Arc::clone(h.cluster.runner.as_ref().unwrap());
    let pool: NodePool = "max=3,cpu=2,delay=1s".parse().unwrap();
    let autoscaler = Autoscaler::start(h.client.clone(), runner, pool, Duration::from_millis(200));
    h.kafka.create_topic("huge", 1).unwrap();
    produce(&h.kafka, "huge", 3).await;
    let operator = start_operator(&h, "pool", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    // 16 cpus: more than the runner's node (8) and a pool node (2).
    api.create(&PostParams::default(), &sleeping(&h, "huge", "16"))
        .await
        .unwrap();
    let (status, _) = eventually("NoScaleUp", 30, async || {
        capacity(&api, "huge")
            .await
            .filter(|(_, r)| r == "NoScaleUp")
    })
    .await;
    assert_eq!(status, "False");
    let refused = autoscaler_events(&h.client, "NotTriggerScaleUp").await;
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(
            |e| e.message.as_deref() == Some("pod didn't trigger scale-up: 1 Insufficient cpu")
        )
    );
    // More lag; polls pass; no Job is added and no node either.
    produce(&h.kafka, "huge", 5).await;
    let jobs = jobs_of(&h.client, "huge").await.len();
    polls_pass(&operator, 4).await;
    let rounds = autoscaler.rounds();
    eventually("the autoscaler looked again", 10, async || {
        (autoscaler.rounds() >= rounds + 3).then_some(())
    })
    .await;
    assert_eq!(jobs_of(&h.client, "huge").await.len(), jobs);
    assert!(jobs <= 3, "{jobs} Jobs for 3 messages");
    assert_eq!(autoscaler.nodes_added(), 0);
    operator.stop().await;
}
