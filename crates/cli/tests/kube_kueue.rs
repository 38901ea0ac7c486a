//! Kueue against a real control plane (issue 16): Kueue's manager v0.17.0 built from its Go
//! module (`scripts/install-kueue`, `JOBTIDE_KUEUE`; `jobtide_testpeers::kueue` says how it runs
//! without root), on the control plane of `scripts/install-kube-peers`, with jobtide's node agent
//! as the kubelet (so admitted Jobs' pods run), librdkafka's mock cluster as the broker, and
//! `jobtide operator` as the chart's ServiceAccount.
//!
//! No admission webhook of Kueue's is installed, so the ScaledJob's `jobTargetRef` says
//! `suspend: true` (docs/capacity.md); Kueue's Job controller makes a Workload per Job, admits
//! what the ClusterQueue's quota holds and unsuspends those Jobs.
//!
//! - A LocalQueue whose ClusterQueue has quota for 2 Jobs: 6 messages make 6 Jobs, Kueue admits
//!   2 (their pods run), 4 wait as `QueuedByKueue` (Workload `QuotaReserved` False, reason
//!   `Pending`); with `jobtide.io/pending-budget: "4"` 5 more messages make no Job. The queue's
//!   `kueue.x-k8s.io/priority-class` reaches each Workload as its priority.
//! - A LocalQueue that doesn't exist: Kueue says `Inadmissible`, the condition is
//!   `KueueInadmissible` naming Kueue's words, a Warning event, and more messages make no Job
//!   although the pending budget has room.
//!
//! Without `JOBTIDE_KUBE_BIN` or `JOBTIDE_KUEUE` the tests skip with a printed reason (under CI
//! they fail).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

#[allow(
    dead_code,
    reason = "helpers shared with kube_apiserver.rs; not all used here"
)]
mod kube_peer;

use std::sync::OnceLock;
use std::time::Duration;

use jobtide_devcluster::node::{NodeAgent, NodeConfig};
use jobtide_kafka::ffi::MockKafka;
use jobtide_testpeers::{ControlPlane, Kueue};
use kube_peer::capacity::{capacity, polls_pass, produce, start_operator};
use kube_peer::{Operator, items, ok, wait_for};
use serde_json::{Value, json};

/// The node the agent registers.
const NODE: &str = "kueue-node";
/// The ClusterQueue's cpu quota, and each Job's pod's request: room for 2 Jobs.
const QUOTA_CPU: &str = "2";
const JOB_CPU: &str = "1";

/// The control plane and Kueue on it, or `None` (skip) when one isn't installed.
fn peers() -> Option<(&'static ControlPlane, &'static Kueue)> {
    let plane = ControlPlane::shared()?;
    let kueue = Kueue::shared(plane)?;
    Some((plane, kueue))
}

/// jobtide's node agent as this binary's kubelet (8 cpu).
fn node(plane: &ControlPlane) -> &'static NodeAgent {
    static NODE_AGENT: OnceLock<NodeAgent> = OnceLock::new();
    NODE_AGENT.get_or_init(|| {
        let config = NodeConfig::new(NODE, plane.dir.join("node-volumes"));
        kube_peer::node::start(plane, config).0
    })
}

/// The ends of the operator's and Kueue's logs (for failure messages).
fn logs(operator: &Operator, kueue: &Kueue) -> String {
    format!(
        "operator log:\n{}\nkueue log:\n{}",
        operator.log_tail(),
        kueue.log_tail()
    )
}

fn apply(plane: &ControlPlane, object: &Value) {
    ok(
        plane.kubectl().args(["apply", "-f", "-"]),
        Some(&object.to_string()),
    );
}

/// A ScaledJob on `topic` (one Job per message) whose Jobs go through Kueue's `queue`: created
/// suspended, each pod asking for [`JOB_CPU`] and sleeping.
fn scaled_job(
    namespace: &str,
    name: &str,
    queue: &str,
    labels: Value,
    annotations: Value,
) -> Value {
    let mut labels = labels;
    labels["kueue.x-k8s.io/queue-name"] = json!(queue);
    json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
            "annotations": annotations},
        "spec": {
            "jobTargetRef": {"suspend": true, "backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "600"],
                    "resources": {"requests": {"cpu": JOB_CPU}}}]}}},
            "pollingInterval": 1, "maxReplicaCount": 10,
            "triggers": [{"type": "kafka", "metadata": {"bootstrapServers": "kafka:9092",
                "consumerGroup": name, "topic": name, "lagThreshold": "1",
                "offsetResetPolicy": "earliest", "allowIdleConsumers": "true"}}],
        },
    })
}

/// Each Workload's `QuotaReserved` (status, reason).
fn reservations(plane: &ControlPlane, namespace: &str) -> Vec<(String, String)> {
    items(plane, "workloads.kueue.x-k8s.io", namespace)
        .iter()
        .map(|w| {
            let reserved = w["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "QuotaReserved"));
            let text = |key: &str| {
                reserved
                    .and_then(|c| c[key].as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            (text("status"), text("reason"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kueue_admits_what_its_quota_holds_and_the_rest_wait_as_queued_backlog_within_the_budget() {
    let Some((plane, kueue)) = peers() else {
        return;
    };
    node(plane);
    let namespace = "kueue-admit";
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("work", 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let operator = start_operator(plane, namespace, &kafka, dir.path());
    let log = || logs(&operator, kueue);
    apply(
        plane,
        &json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
            "metadata": {"name": "default-flavor"}}),
    );
    apply(
        plane,
        &json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
            "metadata": {"name": "jobtide-cq"},
            "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["cpu"],
                "flavors": [{"name": "default-flavor",
                    "resources": [{"name": "cpu", "nominalQuota": QUOTA_CPU}]}]}]}}),
    );
    apply(
        plane,
        &json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
            "metadata": {"name": "jobtide-lq", "namespace": namespace},
            "spec": {"clusterQueue": "jobtide-cq"}}),
    );
    apply(
        plane,
        &json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
            "metadata": {"name": "jobtide-batch"}, "value": 1000,
            "description": "jobtide's test Jobs"}),
    );
    produce(&kafka, "work", 6).await;
    apply(
        plane,
        &scaled_job(
            namespace,
            "work",
            "jobtide-lq",
            json!({"kueue.x-k8s.io/priority-class": "jobtide-batch"}),
            json!({"jobtide.io/pending-budget": "4"}),
        ),
    );

    // Kueue admits 2 Workloads and leaves 4 Pending for quota.
    let reserved = wait_for(
        "2 Workloads admitted, 4 pending",
        Duration::from_mins(2),
        || {
            let mut r = reservations(plane, namespace);
            r.sort();
            let admitted = r.iter().filter(|(s, _)| s == "True").count();
            let pending = r
                .iter()
                .filter(|(s, r)| s == "False" && r == "Pending")
                .count();
            (admitted == 2 && pending == 4).then_some(r)
        },
        || format!("{:?}\n{}", reservations(plane, namespace), log()),
    );
    assert_eq!(reserved.len(), 6, "one Workload per Job: {reserved:?}");
    // The admitted Jobs are unsuspended and their pods run on the node; the rest stay suspended.
    let jobs = items(plane, "jobs", namespace);
    assert_eq!(jobs.len(), 6, "6 messages, 6 Jobs\n{}", log());
    let suspended = jobs.iter().filter(|j| j["spec"]["suspend"] == true).count();
    wait_for(
        "2 pods running",
        Duration::from_mins(1),
        || {
            let running = items(plane, "pods", namespace)
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count();
            (running == 2).then_some(())
        },
        log,
    );
    assert_eq!(suspended, 4, "Kueue unsuspends only the admitted Jobs");
    // jobtide counts the 4 as queued backlog, in Kueue's words once its creating poll has read
    // the Workloads (the poll right after creating the Jobs saw none yet).
    let (status, _, message) = wait_for(
        "CapacityAvailable False QueuedByKueue with Kueue's words",
        Duration::from_mins(1),
        || {
            capacity(plane, namespace, "work")
                .filter(|(_, r, m)| r == "QueuedByKueue" && m.contains("insufficient"))
        },
        log,
    );
    assert_eq!(status, "False");
    assert!(
        message.contains("suspended by Kueue until admitted"),
        "{message}"
    );
    wait_for(
        "4 Jobs waiting as kueue_queued",
        Duration::from_mins(1),
        || {
            let queued = operator.metric(
                "jobtide_jobs_waiting_for_capacity{namespace=\"kueue-admit\",scaledJob=\"work\",reason=\"kueue_queued\"}",
            );
            ((queued - 4.0).abs() < 0.5).then_some(())
        },
        log,
    );
    // The priority class reached every Workload.
    for workload in items(plane, "workloads.kueue.x-k8s.io", namespace) {
        assert_eq!(
            workload["spec"]["priorityClassRef"]["name"], "jobtide-batch",
            "{workload:#}"
        );
        assert_eq!(workload["spec"]["priority"], 1000, "{workload:#}");
    }

    // The budget (4) is full: 5 more messages make no Job over several polls. Without the gate
    // the default strategy would create min(11, 10) − 6 = 4 more.
    produce(&kafka, "work", 5).await;
    polls_pass(&operator, 5.0, log);
    let jobs = items(plane, "jobs", namespace).len();
    assert_eq!(jobs, 6, "11 messages, {jobs} Jobs\n{}", log());
    assert!(jobs <= 11);
    let (_, reason, message) = capacity(plane, namespace, "work").unwrap();
    assert_eq!(reason, "QueuedByKueue");
    assert!(
        message.contains("insufficient"),
        "between Workload reads the condition keeps Kueue's words: {message}"
    );
    let created = operator.metric("jobtide_jobs_created_total");
    assert!(
        (created - 6.0).abs() < 0.5,
        "{created} Jobs created\n{}",
        log()
    );
    ok(
        plane.kubectl().args([
            "delete",
            "scaledjob",
            "work",
            "-n",
            namespace,
            "--wait=false",
        ]),
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_queue_that_does_not_exist_is_inadmissible_and_no_more_jobs_are_created() {
    let Some((plane, kueue)) = peers() else {
        return;
    };
    let namespace = "kueue-missing";
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("lost", 1).unwrap();
    produce(&kafka, "lost", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let operator = start_operator(plane, namespace, &kafka, dir.path());
    let log = || logs(&operator, kueue);
    apply(
        plane,
        &scaled_job(namespace, "lost", "no-such-queue", json!({}), json!({})),
    );
    let (status, _, message) = wait_for(
        "CapacityAvailable False KueueInadmissible",
        Duration::from_mins(2),
        || capacity(plane, namespace, "lost").filter(|(_, r, _)| r == "KueueInadmissible"),
        || format!("{:?}\n{}", reservations(plane, namespace), log()),
    );
    assert_eq!(status, "False");
    assert!(
        message.contains("LocalQueue no-such-queue doesn't exist"),
        "Kueue's words: {message}"
    );
    assert_eq!(
        reservations(plane, namespace),
        vec![("False".to_owned(), "Inadmissible".to_owned()); 2]
    );
    // Room in the default budget (10), but creation stops: 3 more messages, no Job.
    assert_eq!(items(plane, "jobs", namespace).len(), 2, "{}", log());
    produce(&kafka, "lost", 3).await;
    polls_pass(&operator, 5.0, log);
    assert_eq!(items(plane, "jobs", namespace).len(), 2, "{}", log());
    // Polls between Workload reads (a Job changed: an `update` poll, which doesn't list
    // Workloads) keep Kueue's verdict: no flip to QueuedByKueue and back, one event.
    let updates = operator.metric("jobtide_polls_total{kind=\"update\"}");
    let mut touch = 0;
    wait_for(
        "two update polls",
        Duration::from_mins(1),
        || {
            touch += 1;
            ok(
                plane.kubectl().args([
                    "annotate",
                    "jobs",
                    "--all",
                    "-n",
                    namespace,
                    "--overwrite",
                    &format!("jobtide.test/touch={touch}"),
                ]),
                None,
            );
            std::thread::sleep(Duration::from_millis(300));
            (operator.metric("jobtide_polls_total{kind=\"update\"}") >= updates + 2.0).then_some(())
        },
        log,
    );
    let (_, reason, _) = capacity(plane, namespace, "lost").unwrap();
    assert_eq!(reason, "KueueInadmissible", "{}", log());
    let events = items(plane, "events.events.k8s.io", namespace);
    let warnings: Vec<&Value> = events
        .iter()
        .filter(|e| e["reason"] == "KueueInadmissible")
        .collect();
    assert_eq!(warnings.len(), 1, "one event: {events:#?}");
    assert_eq!(warnings[0]["type"], "Warning");
    // A repeat would fold into the event's `series`: published once, never again.
    assert!(warnings[0]["series"].is_null(), "{events:#?}");
    // The first poll saw no Workload yet (QueuedByKueue); it never came back.
    for queued in events.iter().filter(|e| e["reason"] == "QueuedByKueue") {
        assert!(
            queued["series"].is_null(),
            "QueuedByKueue again: {events:#?}"
        );
    }
}
