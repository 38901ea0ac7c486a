//! The deployment manifests: the kustomize base renders with `kubectl kustomize`, applies to the
//! embedded API server, and its Deployment's command runs the operator (leader election on the
//! Lease, released on SIGTERM); the Helm chart is checked as far as the tools here allow (no helm
//! binary on these machines): same CRDs and RBAC rules as the base, every `.Values` path defined,
//! every operator flag it passes known to the binary.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use common::kubectl;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobtide_devcluster::DevCluster;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client, Config};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn documents(text: &str) -> Vec<Value> {
    text.split("\n---")
        .map(|d| d.trim_start_matches('-').trim())
        .filter(|d| !d.is_empty() && d.lines().any(|l| !l.trim_start().starts_with('#')))
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

type Rules = BTreeSet<(String, String, String)>;

fn rules(objects: &[Value]) -> Rules {
    let mut out = Rules::new();
    for object in objects {
        if !matches!(object["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in object["rules"].as_array().unwrap() {
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        out.insert((
                            group.as_str().unwrap().into(),
                            resource.as_str().unwrap().into(),
                            verb.as_str().unwrap().into(),
                        ));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kustomize_base_renders_applies_and_runs_the_operator() {
    let Some(kubectl) = kubectl() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have kubectl"
        );
        eprintln!("skipped: no kubectl found (set JOBTIDE_KUBECTL)");
        return;
    };
    let rendered = Command::new(&kubectl)
        .arg("kustomize")
        .arg(root().join("deploy"))
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).unwrap();
    let objects = documents(&text);
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }

    // Applied to the embedded API server as to a cluster.
    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig()).unwrap();
    let mut apply = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["apply", "--validate=false", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let applied = apply.wait_with_output().unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let out = String::from_utf8_lossy(&applied.stdout);
    assert!(
        out.contains("deployment.apps/jobtide-operator created"),
        "{out}"
    );
    assert!(
        out.contains("clusterrole.rbac.authorization.k8s.io/jobtide-operator created"),
        "{out}"
    );

    // The Deployment's container, run here: its args and env, with the pod's fields filled in.
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let mut command = Command::new(assert_cmd::cargo::cargo_bin!("jobtide"));
    command
        .args(&args)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("JOBTIDE_METRICS_BIND_ADDRESS", "127.0.0.1:0")
        .env("JOBTIDE_HEALTH_PROBE_BIND_ADDRESS", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for env in container["env"].as_array().unwrap() {
        let name = env["name"].as_str().unwrap();
        let value = match env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => "jobtide-operator-abc12".to_owned(),
            Some("metadata.namespace") => "jobtide".to_owned(),
            Some(other) => panic!("unexpected fieldRef {other}"),
            None => env["value"].as_str().unwrap_or_default().to_owned(),
        };
        command.env(name, value);
    }
    let mut operator = command.spawn().unwrap();
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    let leases: Api<Lease> = Api::namespaced(client, "jobtide");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let holder = leases
            .get_opt("jobtide-operator")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity);
        if holder.as_deref() == Some("jobtide-operator-abc12") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the operator did not take the lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Command::new("kill")
        .args(["-TERM", &operator.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || operator.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let lease = leases.get("jobtide-operator").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "the lease was not released"
    );
}

/// `.Values.a.b` paths used in a template.
fn values_paths(template: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = template;
    while let Some(at) = rest.find(".Values.") {
        rest = &rest[at + ".Values.".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
            .collect();
        out.insert(path.trim_end_matches('.').to_owned());
    }
    out
}

#[test]
fn the_helm_chart_agrees_with_the_base_and_the_binary() {
    let chart = root().join("charts/jobtide");
    let meta: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["appVersion"], env!("CARGO_PKG_VERSION"));

    // The chart installs the generated CRDs (the base's copies, which a test keeps generated).
    for entry in std::fs::read_dir(root().join("deploy/crds")).unwrap() {
        let entry = entry.unwrap();
        let in_chart = chart.join("crds").join(entry.file_name());
        assert_eq!(
            std::fs::read_to_string(entry.path()).unwrap(),
            std::fs::read_to_string(&in_chart).unwrap_or_default(),
            "{} differs from deploy/crds (copy it)",
            in_chart.display()
        );
    }

    // Every value a template reads is defined.
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .unwrap();
    let mut templates = String::new();
    for entry in std::fs::read_dir(chart.join("templates")).unwrap() {
        templates.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    for path in values_paths(&templates) {
        let mut node = &values;
        for key in path.split('.') {
            node = node
                .get(key)
                .unwrap_or_else(|| panic!(".Values.{path} is not in values.yaml"));
        }
    }

    // The same RBAC rules as deploy/rbac.yaml (template lines dropped).
    let template = std::fs::read_to_string(chart.join("templates/rbac.yaml")).unwrap();
    let plain = template
        .lines()
        .filter(|l| !l.contains("{{"))
        .collect::<Vec<_>>()
        .join("\n");
    let base = std::fs::read_to_string(root().join("deploy/rbac.yaml")).unwrap();
    assert_eq!(rules(&documents(&plain)), rules(&documents(&base)));

    // Every flag the Deployment template and the base pass is one `jobtide operator` knows.
    let help = Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
        .args(["operator", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let deployment = std::fs::read_to_string(chart.join("templates/deployment.yaml")).unwrap()
        + &std::fs::read_to_string(root().join("deploy/deployment.yaml")).unwrap();
    let flags: BTreeSet<&str> = deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- --"))
        .map(|f| f.split('=').next().unwrap())
        .collect();
    assert!(flags.len() >= 8, "{flags:?}");
    for flag in flags {
        assert!(
            help.contains(&format!("--{flag}")),
            "--{flag} unknown to jobtide operator"
        );
    }
    // And the env names it sets.
    for env in [
        "WATCH_NAMESPACE",
        "KEDA_CLUSTER_OBJECT_NAMESPACE",
        "POD_NAMESPACE",
        "OTEL_TRACES_EXPORTER",
    ] {
        assert!(help.contains(env), "{env} is read by no flag");
    }
}
