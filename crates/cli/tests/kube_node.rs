//! jobtide's node agent (`jobtide_devcluster::node`) as the kubelet of a real control plane
//! (issue 14): etcd, kube-apiserver, kube-controller-manager and kube-scheduler from
//! `scripts/install-kube-peers`, Apache Kafka from `scripts/install-peers`.
//!
//! The agent registers a Node with a kubelet's credentials (a client certificate for
//! `system:node:jobtide-node` in `system:nodes`, so the Node authorizer and the NodeRestriction
//! admission plugin confine it), heartbeats its Lease, and runs the pods the real scheduler binds
//! to it as local processes. On it:
//! - the seed walkthrough (lag mode): `jobtide operator` as the chart's ServiceAccount with
//!   exactly the chart's RBAC, real Kafka, one Job per message, the Jobs completed by the real Job
//!   controller, history cleanup deleting the oldest, the real garbage collector their pods;
//! - dispatch mode (examples/dev-dispatch.yaml): exactly one Job per message, each pod printing
//!   its message, the operator's group committed as Kafka's own tool reports it.
//!
//! This binary has its own control plane (not `kube_apiserver.rs`'s, whose tests expect pods to
//! stay Pending with no node). Without `JOBTIDE_KUBE_BIN` or `JOBTIDE_KAFKA_HOME` the tests skip
//! with a printed reason; under CI they fail.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code
#![allow(
    clippy::float_cmp,
    reason = "Prometheus counters: whole numbers, exact in f64"
)]

#[allow(
    dead_code,
    reason = "helpers shared with kube_apiserver.rs; not all used here"
)]
mod kube_peer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use jobtide_devcluster::node::{NodeAgent, NodeConfig};
use jobtide_testpeers::ControlPlane;
use jobtide_testpeers::kafka::Broker;
use kube_peer::{Operator, apply_chart_rbac, get_json, install_crds, items, ok, root, wait_for};
use serde_json::{Value, json};

/// The node the agent registers.
const NODE: &str = "jobtide-node";

/// The real peers, or `None` (skip) when one isn't installed.
fn peers() -> Option<(&'static ControlPlane, &'static Broker)> {
    let plane = ControlPlane::shared()?;
    let kafka = Broker::shared()?;
    Some((plane, kafka))
}

/// The node agent every test of this binary shares, on a runtime of its own (a test's runtime
/// ends with the test), with the node's own credentials. Pods get `JOBTIDE_BOOTSTRAP_SERVERS`
/// (the real broker) and the jobtide binary on their `PATH`.
fn node(plane: &ControlPlane, kafka: &Broker) -> &'static NodeAgent {
    static NODE_AGENT: OnceLock<NodeAgent> = OnceLock::new();
    NODE_AGENT.get_or_init(|| {
        let mut config = NodeConfig::new(NODE, plane.dir.join("node-volumes"));
        let jobtide = kube_peer::jobtide();
        config.path_prepend = vec![
            std::path::Path::new(jobtide.get_program())
                .parent()
                .unwrap()
                .to_path_buf(),
        ];
        config.default_env = BTreeMap::from([(
            "JOBTIDE_BOOTSTRAP_SERVERS".to_owned(),
            kafka.listeners.plaintext.clone(),
        )]);
        let (agent, _) = kube_peer::node::start(plane, config);
        agent
    })
}

fn has_condition(object: &Value, kind: &str) -> bool {
    object["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

/// The admin's `kubectl get <kind> -n <namespace>` table, one row per object: name → columns.
fn table(plane: &ControlPlane, kind: &str, namespace: &str) -> BTreeMap<String, Vec<String>> {
    ok(plane.kubectl().args(["get", kind, "-n", namespace]), None)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut columns = line.split_whitespace().map(str::to_owned);
            Some((columns.next()?, columns.collect()))
        })
        .collect()
}

fn operator_context(operator: &Operator, plane: &ControlPlane, namespace: &str) -> String {
    let pods = ok(
        plane
            .kubectl()
            .args(["get", "pods,jobs", "-n", namespace, "-o", "wide"]),
        None,
    );
    format!(
        "{pods}\noperator {} log:\n{}",
        operator.name,
        operator.log_tail()
    )
}

/// The operator's log lines that show a request refused for lack of permission.
fn forbidden(operator: &Operator) -> Vec<String> {
    std::fs::read_to_string(&operator.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden") || l.contains(" 403"))
        .map(str::to_owned)
        .collect()
}

/// `jobtide_dispatch_messages_total{outcome="<outcome>"}`, summed over ScaledJobs.
fn dispatch_messages(operator: &Operator, outcome: &str) -> f64 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", operator.metrics_port)).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).unwrap();
    let label = format!("outcome=\"{outcome}\"");
    text.lines()
        .filter(|l| l.starts_with("jobtide_dispatch_messages_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Starts `jobtide operator` in `namespace` as the chart's ServiceAccount (RBAC exactly as
/// `helm template` renders it), reading the real broker.
fn operator(
    plane: &ControlPlane,
    kafka: &Broker,
    namespace: &str,
    dir: &std::path::Path,
) -> Operator {
    install_crds(plane);
    plane.create_namespace(namespace).unwrap();
    let account = apply_chart_rbac(plane, namespace, namespace);
    let kubeconfig = plane
        .service_account_kubeconfig(namespace, &account, Duration::from_hours(1))
        .unwrap();
    Operator::start(
        &kubeconfig,
        namespace,
        &kafka.listeners.plaintext,
        &format!("{namespace}-operator"),
        dir,
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_walkthrough_runs_its_jobs_on_the_node_agent_and_history_is_cleaned_up() {
    let Some((plane, kafka)) = peers() else {
        return;
    };
    let node = node(plane, kafka);
    let namespace = "seed";
    kafka.create_topic("test-topic", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut operator = operator(plane, kafka, namespace, dir.path());
    // examples/dev-scaledjob.yaml: the seed with `jobtide kafka consume` for the console
    // consumer; a Job per message (lagThreshold 1, idle consumers allowed), polling every 2 s.
    let text = std::fs::read_to_string(root().join("examples/dev-scaledjob.yaml")).unwrap();
    let mut sj: Value = serde_saphyr::from_str(&text).unwrap();
    sj["metadata"]["namespace"] = json!(namespace);
    sj["spec"]["pollingInterval"] = json!(2);
    sj["spec"]["triggers"][0]["metadata"]["lagThreshold"] = json!("1");
    sj["spec"]["triggers"][0]["metadata"]["allowIdleConsumers"] = json!("true");
    assert_eq!(sj["spec"]["successfulJobsHistoryLimit"], 3);
    ok(
        plane.kubectl().args(["apply", "-f", "-"]),
        Some(&sj.to_string()),
    );
    let context = || operator_context(&operator, plane, namespace);
    wait_for(
        "the ScaledJob Ready",
        Duration::from_mins(1),
        || {
            has_condition(
                &get_json(plane, &["scaledjob", "kafka-scaledjob", "-n", namespace]),
                "Ready",
            )
            .then_some(())
        },
        context,
    );

    // Five messages: five Jobs, each consuming one; three kept (successfulJobsHistoryLimit).
    let messages: Vec<(Option<String>, String)> = (0..5)
        .map(|i| (Some(format!("key-{i}")), format!("seed-message-{i}")))
        .collect();
    jobtide_kafka::tools::produce(
        &kafka.listeners.plaintext,
        "test-topic",
        &messages,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let kept = wait_for(
        "five Jobs run, the group committed, three completed Jobs kept",
        Duration::from_mins(3),
        || {
            let jobs = items(plane, "jobs", namespace);
            let kept = operator.metric("jobtide_jobs_created_total") >= 5.0
                && jobs.len() == 3
                && jobs.iter().all(|j| has_condition(j, "Complete"));
            // Only then ask Kafka (a call of a JVM tool): the group's commits.
            let committed = || {
                let rows = kafka
                    .describe_group_if_known("my-group")
                    .unwrap_or_default();
                rows.iter().filter_map(|r| r.current).sum::<i64>() == 5
                    && rows.iter().all(|r| r.lag == Some(0))
            };
            (kept && committed()).then_some(jobs)
        },
        context,
    );
    assert_eq!(
        operator.metric("jobtide_jobs_created_total"),
        5.0,
        "one Job per message\n{}",
        context()
    );
    // The real Job controller's status: a succeeded pod, Complete; `kubectl get jobs` says so.
    let kept_names: BTreeSet<String> = kept
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    for job in &kept {
        assert_eq!(job["status"]["succeeded"], 1, "{job:#}");
        assert!(has_condition(job, "SuccessCriteriaMet"), "{job:#}");
    }
    let jobs_table = table(plane, "jobs", namespace);
    assert!(
        jobs_table
            .values()
            .all(|row| row.first().map(String::as_str) == Some("Complete")
                && row.get(1).map(String::as_str) == Some("1/1")),
        "{jobs_table:#?}"
    );
    // The deleted Jobs' pods are gone (the real garbage collector); the kept ones ran here.
    let pods = wait_for(
        "only the kept Jobs' pods left",
        Duration::from_mins(1),
        || {
            let pods = items(plane, "pods", namespace);
            (pods.len() == 3
                && pods.iter().all(|p| {
                    kept_names.contains(
                        p["metadata"]["labels"]["batch.kubernetes.io/job-name"]
                            .as_str()
                            .unwrap_or_default(),
                    )
                }))
            .then_some(pods)
        },
        context,
    );
    let pods_table = table(plane, "pods", namespace);
    let mut consumed = BTreeSet::new();
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert_eq!(pod["spec"]["nodeName"], NODE, "bound by the real scheduler");
        assert_eq!(pod["status"]["phase"], "Succeeded", "{pod:#}");
        let state = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(state["exitCode"], 0, "{pod:#}");
        assert_eq!(state["reason"], "Completed", "{pod:#}");
        // READY STATUS RESTARTS AGE
        assert_eq!(
            pods_table[name][..3],
            ["0/1", "Completed", "0"],
            "{pods_table:#?}"
        );
        let log = String::from_utf8(node.logs(namespace, name).unwrap()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.first(), Some(&"start"), "{log}");
        assert_eq!(lines.last(), Some(&"end!"), "{log}");
        let message = lines
            .iter()
            .find(|l| l.contains("seed-message-"))
            .unwrap_or_else(|| panic!("no message in {log}"));
        assert!(
            consumed.insert((*message).to_owned()),
            "consumed twice: {message}"
        );
    }
    operator.assert_running();
    let refused = forbidden(&operator);
    assert!(
        refused.is_empty(),
        "requests refused by RBAC:\n{refused:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_mode_runs_exactly_one_job_per_message_on_the_node_agent() {
    let Some((plane, kafka)) = peers() else {
        return;
    };
    let node = node(plane, kafka);
    let namespace = "dispatch";
    kafka.create_topic("orders", 2).await;
    kafka.create_topic("orders-dlq", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut operator = operator(plane, kafka, namespace, dir.path());
    let text = std::fs::read_to_string(root().join("examples/dev-dispatch.yaml")).unwrap();
    let mut sj: Value = serde_saphyr::from_str(&text).unwrap();
    sj["metadata"]["namespace"] = json!(namespace);
    ok(
        plane.kubectl().args(["apply", "-f", "-"]),
        Some(&sj.to_string()),
    );
    let messages: Vec<(Option<String>, String)> = (0..6)
        .map(|i| (Some(format!("order-{i}")), format!("{{\"order\":{i}}}")))
        .collect();
    jobtide_kafka::tools::produce(
        &kafka.listeners.plaintext,
        "orders",
        &messages,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let context = || operator_context(&operator, plane, namespace);
    let jobs = wait_for(
        "six completed dispatch Jobs",
        Duration::from_mins(3),
        || {
            let jobs = items(plane, "jobs", namespace);
            (jobs.len() == 6 && jobs.iter().all(|j| has_condition(j, "Complete"))).then_some(jobs)
        },
        context,
    );
    let pods = items(plane, "pods", namespace);
    let mut values = BTreeSet::new();
    for job in &jobs {
        let name = job["metadata"]["name"].as_str().unwrap();
        let owned: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["batch.kubernetes.io/job-name"] == name)
            .collect();
        assert_eq!(owned.len(), 1, "one pod per Job: {name}");
        let pod = owned[0]["metadata"]["name"].as_str().unwrap();
        assert_eq!(owned[0]["spec"]["nodeName"], NODE);
        let log = String::from_utf8(node.logs(namespace, pod).unwrap()).unwrap();
        let value = log
            .lines()
            .find_map(|l| l.strip_prefix("value: "))
            .unwrap_or_else(|| panic!("no value in {log}"));
        assert!(values.insert(value.to_owned()), "dispatched twice: {value}");
    }
    let expected: BTreeSet<String> = messages.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(values, expected);
    // Kafka's own view: the operator's group committed all six, on both partitions.
    let committed = wait_for(
        "the dispatch group's commits",
        Duration::from_secs(30),
        || {
            let rows = kafka
                .describe_group_if_known("orders-dispatch")
                .unwrap_or_default();
            let sum: i64 = rows.iter().filter_map(|r| r.current).sum();
            (sum == 6 && rows.iter().all(|r| r.lag == Some(0))).then_some(rows)
        },
        context,
    );
    assert_eq!(committed.len(), 2, "{committed:?}");
    // The operator's own count: six Jobs created, six succeeded, nothing in flight.
    for outcome in ["created", "succeeded"] {
        assert_eq!(
            dispatch_messages(&operator, outcome),
            6.0,
            "{outcome}\n{}",
            context()
        );
    }
    assert_eq!(operator.metric("jobtide_dispatch_in_flight"), 0.0);
    assert_eq!(items(plane, "jobs", namespace).len(), 6, "{}", context());
    operator.assert_running();
    let refused = forbidden(&operator);
    assert!(
        refused.is_empty(),
        "requests refused by RBAC:\n{refused:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pod_fails_its_job_through_the_real_job_controller() {
    let Some((plane, kafka)) = peers() else {
        return;
    };
    let node = node(plane, kafka);
    let namespace = "failing";
    plane.create_namespace(namespace).unwrap();
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "exits-3", "namespace": namespace},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox",
                "command": ["/bin/sh", "-c", "echo failing; exit 3"]}]}}}});
    ok(
        plane.kubectl().args(["create", "-f", "-"]),
        Some(&job.to_string()),
    );
    let failed = wait_for(
        "the Job Failed",
        Duration::from_mins(2),
        || {
            let job = get_json(plane, &["job", "exits-3", "-n", namespace]);
            has_condition(&job, "Failed").then_some(job)
        },
        || {
            ok(
                plane
                    .kubectl()
                    .args(["get", "pods,jobs", "-n", namespace, "-o", "yaml"]),
                None,
            )
        },
    );
    let reason = failed["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()["reason"]
        .clone();
    assert_eq!(reason, "BackoffLimitExceeded", "{failed:#}");
    assert_eq!(failed["status"]["failed"], 1, "{failed:#}");
    let pods = items(plane, "pods", namespace);
    assert_eq!(pods.len(), 1, "backoffLimit 0: one pod");
    let pod = &pods[0];
    assert_eq!(pod["status"]["phase"], "Failed", "{pod:#}");
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3, "{pod:#}");
    assert_eq!(terminated["reason"], "Error", "{pod:#}");
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert_eq!(table(plane, "pods", namespace)[name][1], "Error");
    assert_eq!(
        node.logs(namespace, name).as_deref(),
        Some(&b"failing\n"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_agent_is_confined_to_its_own_node_and_renews_its_lease() {
    let Some((plane, kafka)) = peers() else {
        return;
    };
    node(plane, kafka);
    let kubeconfig = plane.dir.join(format!("node-{NODE}.kubeconfig"));
    let as_node =
        |args: &[&str]| kube_peer::output(plane.kubectl_with(&kubeconfig).args(args), None);
    // Who the apiserver says the agent is.
    let whoami = as_node(&["auth", "whoami", "-o", "json"]);
    let whoami: Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        format!("system:node:{NODE}")
    );
    assert!(
        whoami["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("system:nodes"))
    );
    // The Node authorizer: no Secret a pod of this node doesn't reference.
    plane.create_namespace("confined").unwrap();
    ok(
        plane.kubectl().args(["create", "-f", "-"]),
        Some(
            &json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "unreferenced", "namespace": "confined"},
            "stringData": {"k": "v"}})
            .to_string(),
        ),
    );
    let read = as_node(&["get", "secret", "unreferenced", "-n", "confined"]);
    assert!(!read.status.success());
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    // NodeRestriction: not another Node, not a restricted label on its own.
    let other = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "another-node"}});
    let created = kube_peer::output(
        plane.kubectl_with(&kubeconfig).args(["create", "-f", "-"]),
        Some(&other.to_string()),
    );
    assert!(!created.status.success(), "a node created another Node");
    let labelled = as_node(&[
        "label",
        "node",
        NODE,
        "node-restriction.kubernetes.io/pool=mine",
    ]);
    assert!(!labelled.status.success());
    assert!(
        String::from_utf8_lossy(&labelled.stderr).contains("is not allowed to modify labels"),
        "{}",
        String::from_utf8_lossy(&labelled.stderr)
    );
    // Heartbeats: the Lease's renewTime moves (every 10 s) under the node's own identity.
    let renew_time = || {
        get_json(plane, &["lease", NODE, "-n", "kube-node-lease"])["spec"]["renewTime"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = renew_time();
    wait_for(
        "a Lease renewal",
        Duration::from_secs(30),
        || (renew_time() != first).then_some(()),
        || {
            format!(
                "{:#}",
                get_json(plane, &["lease", NODE, "-n", "kube-node-lease"])
            )
        },
    );
    let lease = get_json(plane, &["lease", NODE, "-n", "kube-node-lease"]);
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(lease["spec"]["holderIdentity"], NODE);
}
