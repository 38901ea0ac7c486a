//! The node agent against the embedded API server, through kube-rs only: it registers its Node
//! and Lease, runs the pods bound to it, reports their status with exit codes, kills a deleted
//! pod's processes and removes its output and volume directory with it.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failure is the test failing

use std::time::Duration;

use jobtide_devcluster::DevCluster;
use jobtide_devcluster::node::{NodeAgent, NodeConfig, Resources};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::json;

struct Setup {
    _cluster: DevCluster,
    client: Client,
    agent: NodeAgent,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .expect("start");
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).expect("client");
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = NodeConfig::new("agent-1", dir.path().join("volumes"));
    config.resources = Resources {
        cpu_millis: 1_500,
        memory_bytes: 2 << 30,
        pods: 3,
    };
    config.heartbeat = Duration::from_millis(100);
    let agent = NodeAgent::start(client.clone(), config)
        .await
        .expect("agent");
    Setup {
        _cluster: cluster,
        client,
        agent,
        dir,
    }
}

fn pod(name: &str, node: &str, script: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox",
            "command": ["/bin/sh", "-c", script]}]},
    }))
    .unwrap()
}

async fn wait_for_phase(pods: &Api<Pod>, name: &str, phase: &str) -> Pod {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let pod = pods.get(name).await.unwrap();
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return pod;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never reached {phase}: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn exit_code(pod: &Pod) -> Option<i32> {
    pod.status.as_ref()?.container_statuses.as_ref()?[0]
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

fn alive(pid: &str) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_is_registered_ready_with_its_capacity_and_its_lease_is_renewed() {
    let setup = setup().await;
    let nodes: Api<Node> = Api::all(setup.client.clone());
    let node = nodes.get("agent-1").await.unwrap();
    let status = node.status.expect("node status");
    let allocatable = status.allocatable.expect("allocatable");
    assert_eq!(allocatable["cpu"].0, "1500m");
    assert_eq!(allocatable["memory"].0, "2097152Ki");
    assert_eq!(allocatable["pods"].0, "3");
    assert_eq!(status.capacity.expect("capacity"), allocatable);
    let ready = status
        .conditions
        .expect("conditions")
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.status, "True");
    assert!(node.spec.and_then(|s| s.taints).is_none(), "no taints");

    let leases: Api<Lease> = Api::namespaced(setup.client.clone(), "kube-node-lease");
    let first = leases.get("agent-1").await.unwrap();
    let spec = first.spec.clone().expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("agent-1"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let owner = &first.metadata.owner_references.expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Node", "agent-1")
    );
    // Renewed at every heartbeat (100 ms here).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lease = leases.get("agent-1").await.unwrap();
        if lease.spec.and_then(|s| s.renew_time) != spec.renew_time {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease was never renewed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_pods_run_and_report_their_exit_codes_and_others_are_left_alone() {
    let setup = setup().await;
    let pods: Api<Pod> = Api::namespaced(setup.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("ok", "agent-1", "echo out; echo err >&2; echo $HOSTNAME"),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("bad", "agent-1", "exit 3"))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("elsewhere", "other-node", "exit 0"),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("unbound", "", "exit 0"))
        .await
        .unwrap();

    let ok = wait_for_phase(&pods, "ok", "Succeeded").await;
    assert_eq!(exit_code(&ok), Some(0));
    let reason = ok
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap()
        .reason
        .clone();
    assert_eq!(reason.as_deref(), Some("Completed"));
    let bad = wait_for_phase(&pods, "bad", "Failed").await;
    assert_eq!(exit_code(&bad), Some(3));
    let logs = String::from_utf8(setup.agent.logs("default", "ok").expect("logs")).unwrap();
    assert_eq!(logs, "out\nerr\nok\n");

    // The agent looked at its pods after both ended; the others never got a status from it.
    let passes = setup.agent.passes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while setup.agent.passes() < passes + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent stopped looking"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for name in ["elsewhere", "unbound"] {
        let other = pods.get(name).await.unwrap();
        assert!(
            other
                .status
                .as_ref()
                .and_then(|s| s.phase.as_ref())
                .is_none()
                || other.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"),
            "{name}: {:?}",
            other.status
        );
        assert!(setup.agent.logs("default", name).is_none());
    }
    assert_eq!(setup.agent.pods_held(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_is_killed_and_its_output_and_volumes_go_with_it() {
    let setup = setup().await;
    let secrets: Api<Secret> = Api::namespaced(setup.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "s"}, "stringData": {"token": "t0k"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(setup.client.clone(), "default");
    let long: Pod = serde_json::from_value(json!({
        "metadata": {"name": "long"},
        "spec": {"nodeName": "agent-1", "restartPolicy": "Never",
            "volumes": [{"name": "creds", "secret": {"secretName": "s"}}],
            "containers": [{"name": "main", "image": "busybox",
                "command": ["/bin/sh", "-c", "echo $$; cat \"$CREDS/token\"; echo; exec sleep 300"],
                "env": [{"name": "CREDS", "value": "/var/run/creds"}],
                "volumeMounts": [{"name": "creds", "mountPath": "/var/run/creds"}]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &long).await.unwrap();
    wait_for_phase(&pods, "long", "Running").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (pid, token) = loop {
        let logs = setup
            .agent
            .logs("default", "long")
            .map(|l| String::from_utf8(l).unwrap())
            .unwrap_or_default();
        let lines: Vec<&str> = logs.lines().collect();
        if lines.len() >= 2 {
            break (lines[0].to_owned(), lines[1].to_owned());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pid logged: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        token, "t0k",
        "the Secret volume was readable where the env pointed"
    );
    assert!(alive(&pid));
    let pod_dir = setup.dir.path().join("volumes/default/long");
    assert!(pod_dir.join("creds/token").exists());

    pods.delete("long", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while alive(&pid) || pod_dir.exists() || setup.agent.logs("default", "long").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alive {}, directory {}, output kept {}",
            alive(&pid),
            pod_dir.exists(),
            setup.agent.logs("default", "long").is_some()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(setup.agent.pods_held(), 0);
}
