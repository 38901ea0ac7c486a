//! jobtide against a real Kubernetes control plane (issue 14): etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler built from their Go modules by
//! `scripts/install-kube-peers` and started by `jobtide-testpeers` (one control plane for this
//! whole test binary; each test in its own namespace), with the kubectl and helm built alongside.
//!
//! - `jobtide crd`'s CRDs are accepted and Established;
//! - the seed ScaledJob applies with kubectl's validation on, and ScaledJobs that break the
//!   schema are refused naming the field — the same manifests sent to the embedded API server,
//!   and the messages compared;
//! - the Helm chart lints, renders and installs; the kustomize base applies;
//! - `jobtide operator`, as the chart's ServiceAccount with exactly the chart's RBAC, runs the
//!   seed walkthrough on librdkafka's mock cluster: finalizer, conditions, Jobs whose pods the
//!   real Job controller creates (Pending: no node), garbage collection after the ScaledJob is
//!   deleted, no request forbidden;
//! - two operators elect a leader on a real Lease; the leader is SIGKILLed and the other takes
//!   over within the lease period, creating no duplicate Job.
//!
//! Without `JOBTIDE_KUBE_BIN` the tests skip with a printed reason (under CI they fail).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

#[allow(
    dead_code,
    reason = "helpers shared with the other kube_*.rs; not all used here"
)]
mod kube_peer;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use jobtide_devcluster::DevCluster;
use jobtide_kafka::ffi::MockKafka;
use jobtide_testpeers::ControlPlane;
use kube_peer::{Operator, apply_chart_rbac, get_json, install_crds, ok, output, root, wait_for};
use serde_json::{Value, json};

/// The seed ScaledJob (examples/seed-scaledjob.yaml) as JSON, for variations.
fn seed() -> Value {
    let text = std::fs::read_to_string(root().join("examples/seed-scaledjob.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

#[test]
fn the_crds_of_jobtide_crd_are_accepted_and_established() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    install_crds(plane);
    for crd in [
        "scaledjobs.keda.sh",
        "triggerauthentications.keda.sh",
        "clustertriggerauthentications.keda.sh",
    ] {
        let object = get_json(plane, &["crd", crd]);
        let conditions = object["status"]["conditions"].as_array().unwrap();
        for wanted in ["NamesAccepted", "Established"] {
            assert!(
                conditions
                    .iter()
                    .any(|c| c["type"] == wanted && c["status"] == "True"),
                "{crd}: {wanted} is not True: {conditions:#?}"
            );
        }
        assert!(
            !conditions
                .iter()
                .any(|c| c["type"] == "NonStructuralSchema"),
            "{crd}: {conditions:#?}"
        );
    }
}

/// A schema violation: the manifest, the field the refusal must name.
struct Break {
    what: &'static str,
    field: &'static str,
    change: fn(&mut Value),
}

const BREAKS: &[Break] = &[
    Break {
        what: "a string for an integer",
        field: "spec.pollingInterval",
        change: |sj| sj["spec"]["pollingInterval"] = json!("ten"),
    },
    Break {
        what: "below the minimum",
        field: "spec.pollingInterval",
        change: |sj| sj["spec"]["pollingInterval"] = json!(0),
    },
    Break {
        what: "an unknown enum value",
        field: "spec.scalingStrategy.strategy",
        change: |sj| sj["spec"]["scalingStrategy"] = json!({"strategy": "fastest"}),
    },
    Break {
        what: "a missing required field",
        field: "spec.triggers",
        change: |sj| {
            sj["spec"].as_object_mut().unwrap().remove("triggers");
        },
    },
    Break {
        what: "a missing required field in a list item",
        field: "spec.triggers[0].type",
        change: |sj| {
            sj["spec"]["triggers"][0]
                .as_object_mut()
                .unwrap()
                .remove("type");
        },
    },
    Break {
        what: "a wrong type inside the Job template",
        field: "spec.jobTargetRef.template.spec.containers[0].image",
        change: |sj| {
            sj["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["image"] = json!(5);
        },
    },
];

/// The `kubectl create` error line for `manifest` (which must be refused).
fn refusal(kubectl: &mut std::process::Command, manifest: &Value) -> String {
    let out = output(
        kubectl.args(["create", "-f", "-"]),
        Some(&manifest.to_string()),
    );
    assert!(
        !out.status.success(),
        "created: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_applies_with_validation_and_schema_breaks_are_refused_naming_the_field() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    install_crds(plane);
    plane.create_namespace("schema").unwrap();
    let mut seed = seed();
    seed["metadata"]["namespace"] = json!("schema");

    // kubectl's own validation on (no --validate=false): the seed is accepted whole.
    ok(
        plane.kubectl().args(["apply", "-f", "-"]),
        Some(&seed.to_string()),
    );
    let stored = get_json(plane, &["scaledjob", "kafka-scaledjob", "-n", "schema"]);
    assert_eq!(
        stored["spec"], seed["spec"],
        "stored as applied, nothing pruned"
    );
    ok(
        plane.kubectl().args(["delete", "-f", "-", "--wait=false"]),
        Some(&seed.to_string()),
    );

    // The same manifests against the embedded API server (no OpenAPI there: --validate=false).
    let embedded = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let embedded_kubeconfig = plane.dir.join("embedded.kubeconfig");
    jobtide_testpeers::kubeconfig::write(
        &embedded_kubeconfig,
        &embedded.url(),
        None,
        jobtide_testpeers::kubeconfig::Credentials::Anonymous,
    )
    .unwrap();
    let crds = ok(kube_peer::jobtide().arg("crd"), None);
    ok(
        plane
            .kubectl_with(&embedded_kubeconfig)
            .args(["create", "--validate=false", "-f", "-"]),
        Some(&crds),
    );
    // (kubectl create namespace sends protobuf, which the embedded server refuses.)
    ok(
        plane
            .kubectl_with(&embedded_kubeconfig)
            .args(["create", "--validate=false", "-f", "-"]),
        Some(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "schema"}})
                .to_string(),
        ),
    );

    let mut report = String::new();
    let mut differences = Vec::new();
    for case in BREAKS {
        let mut manifest = seed.clone();
        manifest["metadata"]["name"] = json!("broken");
        (case.change)(&mut manifest);
        let real = refusal(&mut plane.kubectl(), &manifest);
        let double = refusal(
            plane
                .kubectl_with(&embedded_kubeconfig)
                .arg("--validate=false"),
            &manifest,
        );
        assert!(
            real.contains(case.field),
            "{}: the real apiserver's refusal names no {}: {real}",
            case.what,
            case.field
        );
        assert!(
            double.contains(case.field),
            "{}: the embedded server's refusal names no {}: {double}",
            case.what,
            case.field
        );
        writeln!(
            report,
            "{}:\n  real:     {real}\n  embedded: {double}",
            case.what
        )
        .unwrap();
        // The embedded server says word for word what the real one says.
        if real != double {
            differences.push(case.what);
        }
    }
    eprintln!("{report}");
    assert!(
        differences.is_empty(),
        "the embedded server's messages differ: {differences:?}\n{report}"
    );
}

#[test]
fn the_helm_chart_lints_renders_and_installs() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    let lint = ok(
        plane.helm().args(["lint", "--strict", "charts/jobtide"]),
        None,
    );
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let rendered = ok(
        plane.helm().args([
            "template",
            "jobtide",
            "charts/jobtide",
            "--namespace",
            "chart",
        ]),
        None,
    );
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            rendered.contains(&format!("\nkind: {kind}\n")),
            "helm template renders no {kind}:\n{rendered}"
        );
    }
    assert!(
        !rendered.contains("OTEL_TRACES_EXPORTER"),
        "traces are off by default"
    );
    // traces.enabled sets the standard OTEL_* variables the operator's exporter reads.
    let traced = ok(
        plane.helm().args([
            "template",
            "jobtide",
            "charts/jobtide",
            "--namespace",
            "chart",
            "--set",
            "traces.enabled=true",
            "--set",
            "traces.endpoint=http://otel.observability:4318",
            "--set",
            "traces.sampler=parentbased_traceidratio",
            "--set",
            "traces.samplerArg=0.25",
        ]),
        None,
    );
    let deployment = traced
        .split("\n---")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or(Value::Null))
        .find(|doc| doc["kind"] == "Deployment")
        .expect("a Deployment");
    let env: BTreeMap<String, String> =
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .collect();
    for (name, value) in [
        ("OTEL_TRACES_EXPORTER", "otlp"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://otel.observability:4318",
        ),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
    ] {
        assert_eq!(
            env.get(name).map(String::as_str),
            Some(value),
            "{name}: {env:?}"
        );
    }
    // The CRDs first (other tests may be applying them now): helm keeps existing CRDs.
    install_crds(plane);
    ok(
        plane.helm().args([
            "install",
            "jobtide",
            "charts/jobtide",
            "--namespace",
            "chart",
            "--create-namespace",
            "--wait=false",
        ]),
        None,
    );
    // Installed: RBAC and the Deployment as rendered.
    let deployment = get_json(plane, &["deployment", "jobtide", "-n", "chart"]);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "jobtide"
    );
    get_json(plane, &["clusterrole", "jobtide"]);
    get_json(plane, &["clusterrolebinding", "jobtide"]);
    get_json(plane, &["role", "jobtide-leader-election", "-n", "chart"]);
    get_json(plane, &["serviceaccount", "jobtide", "-n", "chart"]);
    // The ServiceAccount may do what the operator does (RBAC as installed, evaluated by the
    // apiserver's authorizer).
    for (verb, resource) in [
        ("watch", "scaledjobs.keda.sh"),
        ("patch", "scaledjobs.keda.sh/status"),
        ("create", "jobs.batch"),
        ("create", "events.events.k8s.io"),
    ] {
        let answer = ok(
            plane.kubectl().args([
                "auth",
                "can-i",
                verb,
                resource,
                "--as=system:serviceaccount:chart:jobtide",
                "-n",
                "chart",
            ]),
            None,
        );
        assert_eq!(answer.trim(), "yes", "{verb} {resource}");
    }
}

#[test]
fn the_kustomize_base_applies() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    // Server-side, as docs/install.md says: the ScaledJob CRD is too big for client-side apply's
    // last-applied annotation (install_crds).
    install_crds(plane);
    let applied = ok(
        plane
            .kubectl()
            .args(["apply", "--server-side", "-k", "deploy/"]),
        None,
    );
    for object in [
        "namespace/jobtide",
        "customresourcedefinition.apiextensions.k8s.io/scaledjobs.keda.sh",
        "serviceaccount/jobtide-operator",
        "clusterrole.rbac.authorization.k8s.io/jobtide-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/jobtide-operator",
        "role.rbac.authorization.k8s.io/jobtide-operator-leader-election",
        "rolebinding.rbac.authorization.k8s.io/jobtide-operator-leader-election",
        "deployment.apps/jobtide-operator",
    ] {
        assert!(
            applied.contains(&format!("{object} serverside-applied")),
            "{object} not applied:\n{applied}"
        );
    }
    let answer = ok(
        plane.kubectl().args([
            "auth",
            "can-i",
            "update",
            "leases.coordination.k8s.io",
            "--as=system:serviceaccount:jobtide:jobtide-operator",
            "-n",
            "jobtide",
        ]),
        None,
    );
    assert_eq!(answer.trim(), "yes");
}

/// The seed ScaledJob in `namespace`, a Job for every message (lagThreshold 1, earliest, idle
/// consumers allowed) and polling every 2 s.
fn walkthrough_scaled_job(namespace: &str) -> Value {
    let mut sj = seed();
    sj["metadata"]["namespace"] = json!(namespace);
    sj["spec"]["pollingInterval"] = json!(2);
    let metadata = &mut sj["spec"]["triggers"][0]["metadata"];
    metadata["lagThreshold"] = json!("1");
    metadata["offsetResetPolicy"] = json!("earliest");
    // One partition: without this KEDA caps the lag at one Job per partition.
    metadata["allowIdleConsumers"] = json!("true");
    sj
}

fn jobs(plane: &ControlPlane, namespace: &str) -> Vec<Value> {
    get_json(plane, &["jobs", "-n", namespace])["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn produce(kafka: &MockKafka, count: usize, from: usize) {
    let records: Vec<_> = (from..from + count)
        .map(|i| (None, format!("message-{i}")))
        .collect();
    jobtide_kafka::tools::produce(
        &kafka.bootstrap_servers(),
        "test-topic",
        &records,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
}

/// The operator's log lines that show a request the API refused for lack of permission.
fn forbidden(operator: &Operator) -> Vec<String> {
    std::fs::read_to_string(&operator.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden") || l.contains(" 403"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_as_its_service_account_runs_the_seed_walkthrough() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    let namespace = "walk";
    install_crds(plane);
    plane.create_namespace(namespace).unwrap();
    let account = apply_chart_rbac(plane, "walk", namespace);
    let kubeconfig = plane
        .service_account_kubeconfig(namespace, &account, Duration::from_hours(1))
        .unwrap();
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("test-topic", 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut operator = Operator::start(
        &kubeconfig,
        namespace,
        &kafka.bootstrap_servers(),
        "walk-operator",
        dir.path(),
        &[],
    );
    let sj = walkthrough_scaled_job(namespace);
    ok(
        plane.kubectl().args(["apply", "-f", "-"]),
        Some(&sj.to_string()),
    );
    let get_sj = || get_json(plane, &["scaledjob", "kafka-scaledjob", "-n", namespace]);
    let log = || operator_log(&operator);

    // The finalizer, and Ready with no lag (Active False).
    wait_for(
        "the finalizer and Ready=True",
        Duration::from_mins(1),
        || {
            let sj = get_sj();
            let finalized = sj["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "finalizer.keda.sh"));
            (finalized && condition(&sj, "Ready") == Some("True")).then_some(())
        },
        log,
    );

    // Three messages: three Jobs, each with its pod made by the real Job controller.
    produce(&kafka, 3, 0).await;
    let created = wait_for(
        "three Jobs",
        Duration::from_mins(1),
        || {
            let jobs = jobs(plane, namespace);
            (jobs.len() >= 3).then_some(jobs)
        },
        log,
    );
    wait_for(
        "Active=True",
        Duration::from_secs(30),
        || (condition(&get_sj(), "Active") == Some("True")).then_some(()),
        log,
    );
    for job in &created {
        let owner = &job["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ScaledJob");
        assert_eq!(owner["name"], "kafka-scaledjob");
    }
    let pods = wait_for(
        "a pod of each Job (by the Job controller)",
        Duration::from_mins(1),
        || {
            let pods = get_json(plane, &["pods", "-n", namespace])["items"]
                .as_array()
                .unwrap()
                .clone();
            (pods.len() >= 3).then_some(pods)
        },
        log,
    );
    for pod in &pods {
        assert_eq!(pod["status"]["phase"], "Pending", "no node runs it");
        assert!(
            pod["metadata"]["labels"]["batch.kubernetes.io/job-name"].is_string(),
            "{pod:#}"
        );
    }
    // Two more polls with the same lag: still exactly three Jobs (their pods pending count as
    // running).
    let polls = operator.metric("jobtide_polls_total");
    wait_for(
        "two more polls",
        Duration::from_secs(30),
        || (operator.metric("jobtide_polls_total") >= polls + 2.0).then_some(()),
        log,
    );
    assert_eq!(jobs(plane, namespace).len(), 3, "{}", log());

    // Events through events.k8s.io, as the operator's identity.
    let events = get_json(plane, &["events.events.k8s.io", "-n", namespace]);
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["regarding"]["kind"] == "ScaledJob"),
        "no event about the ScaledJob: {events:#}"
    );

    // Deleted: the finalizer is removed, and the real garbage collector deletes the Jobs.
    ok(
        plane.kubectl().args([
            "delete",
            "scaledjob",
            "kafka-scaledjob",
            "-n",
            namespace,
            "--timeout=60s",
        ]),
        None,
    );
    wait_for(
        "the Jobs garbage-collected",
        Duration::from_mins(1),
        || jobs(plane, namespace).is_empty().then_some(()),
        log,
    );
    operator.assert_running();
    let refused = forbidden(&operator);
    assert!(
        refused.is_empty(),
        "requests refused by RBAC:\n{refused:#?}"
    );
}

fn condition<'a>(sj: &'a Value, kind: &str) -> Option<&'a str> {
    sj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["status"]
        .as_str()
}

fn operator_log(operator: &Operator) -> String {
    format!("operator {} log:\n{}", operator.name, operator.log_tail())
}

fn holder(plane: &ControlPlane, namespace: &str) -> Option<String> {
    let out = output(
        plane.kubectl().args([
            "get",
            "lease",
            "jobtide-operator",
            "-n",
            namespace,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]),
        None,
    );
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !name.is_empty()).then_some(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_lease_and_no_job_is_duplicated() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    let namespace = "lead";
    install_crds(plane);
    plane.create_namespace(namespace).unwrap();
    let account = apply_chart_rbac(plane, "lead", namespace);
    let kubeconfig = plane
        .service_account_kubeconfig(namespace, &account, Duration::from_hours(1))
        .unwrap();
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("test-topic", 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut operators: Vec<Operator> = ["lead-a", "lead-b"]
        .into_iter()
        .map(|name| {
            Operator::start(
                &kubeconfig,
                namespace,
                &kafka.bootstrap_servers(),
                name,
                dir.path(),
                &["--leader-elect"],
            )
        })
        .collect();
    let logs = |ops: &[Operator]| ops.iter().map(operator_log).collect::<Vec<_>>().join("\n");
    let leader = wait_for(
        "a leader",
        Duration::from_mins(1),
        || holder(plane, namespace),
        || logs(&operators),
    );
    let (leader_index, standby_index) = if leader == "lead-a" { (0, 1) } else { (1, 0) };
    ok(
        plane.kubectl().args(["apply", "-f", "-"]),
        Some(&walkthrough_scaled_job(namespace).to_string()),
    );
    produce(&kafka, 2, 0).await;
    wait_for(
        "two Jobs from the leader",
        Duration::from_mins(1),
        || (jobs(plane, namespace).len() >= 2).then_some(()),
        || logs(&operators),
    );
    let standby_polls = operators[standby_index].metric("jobtide_polls_total");
    assert!(
        standby_polls < 1.0,
        "the standby polled {standby_polls} times"
    );

    // SIGKILL the leader: its Lease isn't released, so the standby waits for it to expire.
    operators[leader_index].kill();
    let killed = Instant::now();
    let standby_name = operators[standby_index].name.clone();
    wait_for(
        "the standby to take the Lease",
        Duration::from_mins(1),
        || (holder(plane, namespace).as_deref() == Some(standby_name.as_str())).then_some(()),
        || logs(&operators),
    );
    let takeover = killed.elapsed();
    eprintln!("takeover after {takeover:?}");
    // The lease is 15 s from the last renewal the standby saw (renewals every 2 s); the standby
    // retries every 2 s; 3 s for kubectl polling on a loaded machine.
    assert!(
        takeover < Duration::from_secs(15 + 2 * 2 + 3),
        "took {takeover:?}"
    );

    // The new leader polls: the same lag is already served by two Jobs (none more), and one
    // more message makes exactly one more.
    let standby = &operators[standby_index];
    wait_for(
        "two polls by the new leader",
        Duration::from_secs(30),
        || (standby.metric("jobtide_polls_total") >= 2.0).then_some(()),
        || logs(&operators),
    );
    assert_eq!(jobs(plane, namespace).len(), 2, "{}", logs(&operators));
    produce(&kafka, 1, 2).await;
    wait_for(
        "a third Job",
        Duration::from_mins(1),
        || (jobs(plane, namespace).len() >= 3).then_some(()),
        || logs(&operators),
    );
    let polls = standby.metric("jobtide_polls_total");
    wait_for(
        "two more polls",
        Duration::from_secs(30),
        || (standby.metric("jobtide_polls_total") >= polls + 2.0).then_some(()),
        || logs(&operators),
    );
    assert_eq!(jobs(plane, namespace).len(), 3, "{}", logs(&operators));
    operators[standby_index].assert_running();
    for operator in &operators {
        let refused = forbidden(operator);
        assert!(
            refused.is_empty(),
            "requests refused by RBAC:\n{refused:#?}"
        );
    }
}

/// The Deployment `helm template` renders with `set`.
fn rendered_deployment(plane: &ControlPlane, release: &str, set: &str) -> Value {
    let rendered = ok(
        plane.helm().args([
            "template",
            release,
            "charts/jobtide",
            "--namespace",
            "chart-sharded",
            "--set",
            set,
        ]),
        None,
    );
    rendered
        .split("\n---")
        .filter_map(|d| serde_saphyr::from_str::<Value>(d).ok())
        .find(|d| d["kind"] == "Deployment")
        .unwrap_or_else(|| panic!("no Deployment in:\n{rendered}"))
}

#[test]
fn the_helm_chart_with_several_replicas_shards_and_may_use_the_member_leases() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    let args = |deployment: &Value| -> Vec<String> {
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let one = rendered_deployment(plane, "sharded", "replicaCount=1");
    assert!(
        args(&one).contains(&"--leader-elect".into()) && !args(&one).contains(&"--sharded".into()),
        "one replica elects a leader: {:?}",
        args(&one)
    );
    let three = rendered_deployment(plane, "sharded", "replicaCount=3");
    assert_eq!(three["spec"]["replicas"], 3);
    assert!(
        args(&three).contains(&"--sharded".into())
            && !args(&three).contains(&"--leader-elect".into()),
        "three replicas share the ScaledJobs: {:?}",
        args(&three)
    );
    // Installed with three replicas: its ServiceAccount may do with Leases what `--sharded`
    // does (list the group's member Leases, get/create/update its own, delete a dead member's
    // and its own on shutdown), as the apiserver's authorizer evaluates the installed RBAC.
    install_crds(plane);
    ok(
        plane.helm().args([
            "install",
            "sharded",
            "charts/jobtide",
            "--namespace",
            "chart-sharded",
            "--create-namespace",
            "--set",
            "replicaCount=3",
            "--wait=false",
        ]),
        None,
    );
    let account = three["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_owned();
    let installed = get_json(
        plane,
        &[
            "deployment",
            three["metadata"]["name"].as_str().unwrap(),
            "-n",
            "chart-sharded",
        ],
    );
    assert_eq!(installed["spec"]["replicas"], 3);
    for verb in ["get", "list", "create", "update", "delete"] {
        let answer = ok(
            plane.kubectl().args([
                "auth",
                "can-i",
                verb,
                "leases.coordination.k8s.io",
                &format!("--as=system:serviceaccount:chart-sharded:{account}"),
                "-n",
                "chart-sharded",
            ]),
            None,
        );
        assert_eq!(answer.trim(), "yes", "{verb} leases");
    }
}
