//! The simulated node pool end to end through the binary: `jobtide dev --node-pool …` as a
//! process, a ScaledJob whose pods request more cpu than the runner's own node has (8), observed
//! with kubectl and kube-rs as a user would: the pods wait `Unschedulable`, the autoscaler's
//! `TriggeredScaleUp` events name them, pool nodes register after the pool's delay, the pods run
//! there and their Jobs complete, and the nodes, empty again, are removed after
//! `scale-down-after` (`ScaleDownEmpty`).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::dev::{completed, eventually, start_dev};
use jiff::Timestamp;
use jobtide_api::ScaledJob;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// The pool: nodes of 12 cpus (one 10-cpu pod each), Ready 3 s after the decision, removed when
/// empty for 4 s.
const POOL: &str = "min=0,max=3,cpu=12,memory=8Gi,pods=2,delay=3s,scale-down-after=4s";
const DELAY: Duration = Duration::from_secs(3);
const SCALE_DOWN_AFTER: Duration = Duration::from_secs(4);

/// One Job per message (dispatch mode), each pod requesting 10 cpus: more than the runner's node.
fn big_jobs() -> ScaledJob {
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "big", "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["/bin/sh", "-c"],
                    "args": ["echo \"offset $JOBTIDE_OFFSET\"; sleep 2"],
                    "resources": {"requests": {"cpu": "10"}}}]}}},
            "pollingInterval": 1, "maxReplicaCount": 5,
            "triggers": [{"type": "kafka-dispatch", "metadata": {
                "bootstrapServers": "kafka.example:9092", "consumerGroup": "big-dispatch",
                "topic": "big", "offsetResetPolicy": "earliest", "payload": "none"}}],
        },
    }))
    .unwrap()
}

async fn events(client: &Client, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

fn first_time(event: &Event) -> Timestamp {
    event
        .first_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .expect("an event with a time")
}

fn pool_nodes(nodes: &[Node]) -> Vec<&Node> {
    nodes
        .iter()
        .filter(|n| n.name_any().starts_with("jobtide-pool-"))
        .collect()
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn unschedulable(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
}

/// `kubectl get nodes -o name`, sorted (None without kubectl; CI requires it).
fn kubectl_nodes(dev: &common::dev::Dev) -> Option<Vec<String>> {
    let out = dev.kubectl(&["get", "nodes", "-o", "name"])?;
    let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
    names.sort();
    Some(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_for_pods_larger_than_the_runner_node_and_shrinks_when_they_are_done() {
    let mut dev = start_dev(&[
        "--kafka-addr",
        "127.0.0.1:0",
        "--create-topic",
        "big:1",
        "--node-pool",
        POOL,
    ]);
    let client = dev.client();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");

    // Before: the runner's node only (min=0).
    if let Some(names) = kubectl_nodes(&dev) {
        assert_eq!(names, ["node/jobtide-dev"]);
    }
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    Api::<ScaledJob>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &big_jobs())
        .await
        .unwrap();
    let messages: Vec<(Option<String>, String)> = (0..2)
        .map(|i| (Some(i.to_string()), format!("m{i}")))
        .collect();
    jobtide_kafka::tools::produce(&dev.kafka, "big", &messages, Duration::from_secs(30))
        .await
        .unwrap();

    // The two pods fit no node there is: Unschedulable, and the autoscaler triggers a scale-up
    // for each (one 10-cpu pod per 12-cpu node: two nodes).
    let triggered = eventually("TriggeredScaleUp for both pods", 60, async || {
        let said = events(&client, "TriggeredScaleUp").await;
        (said.len() == 2).then_some(said)
    })
    .await;
    for event in &triggered {
        let message = event.message.as_deref().unwrap_or_default();
        assert!(
            message.starts_with("pod triggered scale-up: [{jobtide-pool 0->"),
            "{message}"
        );
        assert_eq!(
            event.source.as_ref().and_then(|s| s.component.as_deref()),
            Some("cluster-autoscaler")
        );
        assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
    }
    let listed = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 2, "one pod per message");
    for event in &triggered {
        let pod = listed
            .iter()
            .find(|p| Some(p.name_any()) == event.involved_object.name)
            .expect("the event names a pod of the burst");
        // Until a pool node is Ready, the scheduler's verdict stands.
        assert!(
            node_of(pod).is_none_or(|n| n.starts_with("jobtide-pool-")),
            "{pod:?}"
        );
    }
    if let Some(table) = dev.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=TriggeredScaleUp",
    ]) {
        assert_eq!(table.matches("TriggeredScaleUp").count(), 2, "{table}");
    }

    // Two pool nodes register, each no sooner than the delay after the decision.
    let added = eventually("two pool nodes", 60, async || {
        let listed = nodes.list(&ListParams::default()).await.ok()?.items;
        let pool: Vec<Node> = pool_nodes(&listed).into_iter().cloned().collect();
        (pool.len() == 2).then_some(pool)
    })
    .await;
    let decided = triggered.iter().map(first_time).min().unwrap();
    for node in &added {
        let created = node.creation_timestamp().unwrap().0;
        let after = created.duration_since(decided);
        // Event and object times are whole seconds: one second of slack.
        assert!(
            after.as_secs() + 1 >= DELAY.as_secs().cast_signed(),
            "{} registered {after:?} after the scale-up decision",
            node.name_any()
        );
    }
    if let Some(names) = kubectl_nodes(&dev) {
        assert_eq!(
            names,
            [
                "node/jobtide-dev",
                "node/jobtide-pool-1",
                "node/jobtide-pool-2"
            ]
        );
    }

    // The Jobs complete, their pods having run on the pool's nodes (the runner's node can't
    // hold them).
    let done = eventually("two completed Jobs", 90, async || {
        let listed = jobs.list(&ListParams::default()).await.ok()?.items;
        (listed.len() == 2 && listed.iter().all(completed)).then_some(listed)
    })
    .await;
    let listed = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 2);
    let mut placed: Vec<String> = listed.iter().filter_map(node_of).collect();
    placed.sort();
    assert_eq!(
        placed,
        ["jobtide-pool-1", "jobtide-pool-2"],
        "one pod per pool node"
    );
    assert!(listed.iter().all(|p| !unschedulable(p)));
    assert!(events(&client, "NotTriggerScaleUp").await.is_empty());

    // Empty again, both nodes are removed after scale-down-after, never before the Jobs ended.
    let removed = eventually("both pool nodes removed", 60, async || {
        let listed = nodes.list(&ListParams::default()).await.ok()?.items;
        if !pool_nodes(&listed).is_empty() {
            return None;
        }
        let said = events(&client, "ScaleDownEmpty").await;
        (said.len() == 2).then_some(said)
    })
    .await;
    let finished = done
        .iter()
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .max()
        .expect("completion times");
    for event in &removed {
        let at = first_time(event);
        assert!(
            at.duration_since(finished).as_secs() + 1 >= SCALE_DOWN_AFTER.as_secs().cast_signed(),
            "{:?} at {at}, the last Job completed at {finished}",
            event.message
        );
        assert_eq!(event.involved_object.kind.as_deref(), Some("Node"));
    }
    if let Some(names) = kubectl_nodes(&dev) {
        assert_eq!(names, ["node/jobtide-dev"]);
    }
    // One Job per message throughout.
    assert_eq!(
        jobs.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    assert!(dev.stop().success());
}
