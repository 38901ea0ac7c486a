//! kubectl, a real client, against the embedded API server: apply CRDs and the seed manifest,
//! get with printer columns, describe, JSON output, delete — and the documented refusal of
//! protobuf bodies (`kubectl create <built-in>`). Skips with a printed reason without kubectl.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failure is the test failing

use std::path::{Path, PathBuf};
use std::process::Command;

use jobtide_devcluster::DevCluster;

fn kubectl() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("JOBTIDE_KUBECTL") {
        return Some(path.into());
    }
    let pinned = Path::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.33");
    if pinned.exists() {
        return Some(pinned.to_path_buf());
    }
    let found = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "kubectl".into());
    // Under CI a missing kubectl is a failure, never a silent skip.
    assert!(
        found.is_some() || std::env::var("CI").as_deref() != Ok("true"),
        "CI must provide kubectl (on PATH, the machine image's kubectl.1.33, or JOBTIDE_KUBECTL)"
    );
    found
}

struct Kubectl {
    binary: PathBuf,
    kubeconfig: tempfile::NamedTempFile,
}

impl Kubectl {
    fn new(binary: PathBuf, url: &str) -> Self {
        let kubeconfig = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            kubeconfig.path(),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: dev\n  cluster:\n    server: {url}\nusers:\n- name: dev\n  user: {{}}\ncontexts:\n- name: dev\n  context: {{cluster: dev, user: dev, namespace: default}}\ncurrent-context: dev\n"
            ),
        )
        .unwrap();
        Self { binary, kubeconfig }
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(&self.binary)
            .env("KUBECONFIG", self.kubeconfig.path())
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
            .args(args)
            .output()
            .expect("run kubectl");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args);
        assert!(ok, "kubectl {args:?} failed: {stderr}");
        stdout
    }
}

fn json_uid(text: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    value["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_describe_delete() {
    let Some(binary) = kubectl() else {
        eprintln!("skipped: no kubectl found (set JOBTIDE_KUBECTL)");
        return;
    };
    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .expect("start");
    let kubectl = Kubectl::new(binary, &cluster.url());

    // No OpenAPI documents are served: client-side validation must be turned off.
    let (ok, _, stderr) = kubectl.run(&["apply", "-f", "deploy/crds/"]);
    assert!(!ok && stderr.contains("--validate=false"), "{stderr}");
    let applied = kubectl.ok(&["apply", "--validate=false", "-f", "deploy/crds/"]);
    assert_eq!(applied.matches(" created").count(), 3, "{applied}");
    kubectl.ok(&[
        "apply",
        "--validate=false",
        "-f",
        "examples/seed-scaledjob.yaml",
    ]);
    assert!(
        kubectl
            .ok(&[
                "apply",
                "--validate=false",
                "-f",
                "examples/seed-scaledjob.yaml"
            ])
            .contains("unchanged")
    );

    let table = kubectl.ok(&["get", "scaledjob"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "MIN",
            "MAX",
            "READY",
            "ACTIVE",
            "PAUSED",
            "TRIGGERS",
            "AUTHENTICATIONS",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row.first(), Some(&"kafka-scaledjob"));
    assert!(row.contains(&"30"), "{table}");
    assert!(
        row.last().is_some_and(|age| age.ends_with('s')),
        "age like 3s: {table}"
    );
    assert!(
        kubectl.ok(&["get", "sj"]).contains("kafka-scaledjob"),
        "short name"
    );

    // An event written through events.k8s.io/v1 (as the operator writes them) shows up in
    // `kubectl describe`, which reads core/v1 events.
    let uid = json_uid(&kubectl.ok(&["get", "sj", "kafka-scaledjob", "-o", "json"]));
    let event = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        event.path(),
        format!(
            "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: kafka-scaledjob.1\neventTime: \"2026-11-28T08:00:00.000000Z\"\nreportingController: scale-handler\nreportingInstance: jobtide-0\naction: Started scalers watch\nreason: KEDAScalersStarted\ntype: Normal\nnote: Started scalers watch\nregarding:\n  apiVersion: keda.sh/v1alpha1\n  kind: ScaledJob\n  name: kafka-scaledjob\n  namespace: default\n  uid: {uid}\n"
        ),
    )
    .unwrap();
    kubectl.ok(&[
        "apply",
        "--validate=false",
        "-f",
        event.path().to_str().unwrap(),
    ]);
    let described = kubectl.ok(&["describe", "scaledjob", "kafka-scaledjob"]);
    assert!(
        described
            .lines()
            .any(|l| l.contains("KEDAScalersStarted") && l.contains("Started scalers watch")),
        "{described}"
    );
    assert!(
        described
            .lines()
            .any(|l| l.trim_start().starts_with("Max Replica Count:")
                && l.trim_end().ends_with(" 30")),
        "{described}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&kubectl.ok(&["get", "sj", "kafka-scaledjob", "-o", "json"])).unwrap();
    assert_eq!(
        json["spec"]["triggers"][0]["metadata"]["topic"],
        "test-topic"
    );

    // Built-in types created imperatively travel as protobuf, which is refused, not faked.
    let (ok, _, stderr) = kubectl.run(&["create", "configmap", "demo", "--from-literal=a=b"]);
    assert!(
        !ok && stderr.contains("application/vnd.kubernetes.protobuf is not emulated"),
        "{stderr}"
    );

    assert!(
        kubectl
            .ok(&["delete", "scaledjob", "kafka-scaledjob"])
            .contains("deleted")
    );
    let (_, stdout, stderr) = kubectl.run(&["get", "sj"]);
    assert!(
        format!("{stdout}{stderr}").contains("No resources found"),
        "{stdout}{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_pods_and_logs_of_a_job_run_by_the_local_runner() {
    let Some(binary) = kubectl() else {
        eprintln!("skipped: no kubectl found (set JOBTIDE_KUBECTL)");
        return;
    };
    let cluster = DevCluster::start_with_runner(
        "127.0.0.1:0".parse().unwrap(),
        None,
        jobtide_devcluster::runner::RunnerConfig::default(),
    )
    .await
    .expect("start");
    let kubectl = Kubectl::new(binary, &cluster.url());
    let job = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        job.path(),
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: hello\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: c\n          image: busybox\n          command: [\"/bin/sh\", \"-c\"]\n          args: [\"echo start; sleep 1; echo 18 '{\\\"orderid\\\":18}'; echo end!\"]\n",
    )
    .unwrap();
    kubectl.ok(&[
        "apply",
        "--validate=false",
        "-f",
        job.path().to_str().unwrap(),
    ]);
    // Follow the logs while the pod runs: the stream ends when the process does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let followed = loop {
        let (ok, stdout, _) = kubectl.run(&["logs", "-f", "job/hello"]);
        if ok && stdout.contains("end!") {
            break stdout;
        }
        assert!(std::time::Instant::now() < deadline, "no logs: {stdout}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(followed, "start\n18 {\"orderid\":18}\nend!\n");
    let jobs = kubectl.ok(&["get", "jobs"]);
    assert!(
        jobs.lines()
            .nth(1)
            .is_some_and(|row| row.contains("Complete") && row.contains("1/1")),
        "{jobs}"
    );
    let pods = kubectl.ok(&["get", "pods"]);
    let row: Vec<&str> = pods
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert!(
        row.first().is_some_and(|n| n.starts_with("hello-")),
        "{pods}"
    );
    assert_eq!(row.get(1..3), Some(&["0/1", "Completed"][..]), "{pods}");
    let pod = row[0];
    assert_eq!(
        kubectl.ok(&["logs", pod]),
        "start\n18 {\"orderid\":18}\nend!\n"
    );
}
