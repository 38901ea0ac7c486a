//! Helpers of the tests against the real control plane (`kube_apiserver.rs`): kubectl and helm
//! runs, the CRDs installed once, the chart's RBAC for a release, `jobtide operator` processes;
//! [`capacity`]: what the capacity tests share; [`node`]: jobtide's node agent as a kubelet.

pub mod capacity;
pub mod node;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jobtide_testpeers::ControlPlane;
use serde_json::Value;

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `command` (with `stdin` piped in, if any) and returns its output.
pub fn output(command: &mut Command, stdin: Option<&str>) -> Output {
    command
        .current_dir(root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start the command");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for the command")
}

/// Runs `command`, fails the test unless it succeeds, returns its stdout.
pub fn ok(command: &mut Command, stdin: Option<&str>) -> String {
    let shown = format!("{command:?}");
    let out = output(command, stdin);
    assert!(
        out.status.success(),
        "{shown} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl get … -o json` as the admin.
pub fn get_json(plane: &ControlPlane, args: &[&str]) -> Value {
    let text = ok(
        plane.kubectl().arg("get").args(args).args(["-o", "json"]),
        None,
    );
    serde_json::from_str(&text).expect("kubectl's JSON")
}

/// The items of `kubectl get <kind> -n <namespace>`.
pub fn items(plane: &ControlPlane, kind: &str, namespace: &str) -> Vec<Value> {
    get_json(plane, &[kind, "-n", namespace])["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// `jobtide …`.
pub fn jobtide() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
}

/// Applies `jobtide crd`'s CRDs once per process and waits until they are Established.
///
/// Server-side: a client-side `kubectl apply` stores the whole object in the
/// last-applied-configuration annotation, and the ScaledJob CRD (with the Job template's schema,
/// 345 kB as JSON) is over the apiserver's 256 KiB limit for annotations.
pub fn install_crds(plane: &ControlPlane) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let crds = ok(jobtide().arg("crd"), None);
        ok(
            plane.kubectl().args(["apply", "--server-side", "-f", "-"]),
            Some(&crds),
        );
        // `kubectl wait` fails at once ("accessor error") on a CRD whose status has no
        // conditions yet, just after the apply: it is asked again until it waits.
        wait_for(
            "the CRDs Established",
            Duration::from_mins(1),
            || {
                output(
                    plane.kubectl().args([
                        "wait",
                        "--for=condition=Established",
                        "--timeout=60s",
                        "crd/scaledjobs.keda.sh",
                        "crd/triggerauthentications.keda.sh",
                        "crd/clustertriggerauthentications.keda.sh",
                    ]),
                    None,
                )
                .status
                .success()
                .then_some(())
            },
            String::new,
        );
    });
}

/// Polls `check` every 250 ms until it returns `Some`, failing with `what` (and `context()`)
/// after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The chart's RBAC (and ServiceAccount) for release `release` in `namespace`, as `helm
/// template` renders it, applied; returns the ServiceAccount's name.
pub fn apply_chart_rbac(plane: &ControlPlane, release: &str, namespace: &str) -> String {
    let rendered = ok(
        plane.helm().args([
            "template",
            release,
            "charts/jobtide",
            "--namespace",
            namespace,
        ]),
        None,
    );
    let mut service_account = None;
    let mut kept = Vec::new();
    for document in rendered.split("\n---") {
        let object: Value = match serde_saphyr::from_str(document) {
            Ok(Value::Null) | Err(_) => continue,
            Ok(object) => object,
        };
        let kind = object["kind"].as_str().unwrap_or_default();
        if kind == "ServiceAccount" {
            service_account = object["metadata"]["name"].as_str().map(str::to_owned);
        }
        if matches!(
            kind,
            "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
        ) {
            kept.push(object);
        }
    }
    assert_eq!(kept.len(), 5, "the chart's RBAC objects: {kept:#?}");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": kept});
    ok(
        plane.kubectl().args(["apply", "-n", namespace, "-f", "-"]),
        Some(&list.to_string()),
    );
    service_account.expect("the chart renders a ServiceAccount")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running `jobtide operator`, SIGKILLed on drop.
pub struct Operator {
    child: Child,
    /// Its leader-election identity (`POD_NAME`).
    pub name: String,
    /// Its log (stderr).
    pub log: PathBuf,
    /// Its metrics port.
    pub metrics_port: u16,
}

impl Operator {
    /// Starts `jobtide operator` named `name` with `kubeconfig`, scoped to `namespace` (its
    /// Lease there too), every trigger reading `kafka`, with `extra` flags; logs into `dir`.
    pub fn start(
        kubeconfig: &Path,
        namespace: &str,
        kafka: &str,
        name: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let metrics_port = free_port();
        let child = jobtide()
            .arg("operator")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", namespace])
            .args(["--leader-election-namespace", namespace])
            .args(["--bootstrap-servers-override", kafka])
            .args([
                "--metrics-bind-address",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .args(["--health-probe-bind-address", "127.0.0.1:0"])
            .args(extra)
            .env("POD_NAME", name)
            .env("JOBTIDE_LOG_LEVEL", "info,jobtide_controller=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("operator log"))
            .spawn()
            .expect("start jobtide operator");
        Self {
            child,
            name: name.to_owned(),
            log,
            metrics_port,
        }
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        jobtide_testpeers::tail(&self.log, 40)
    }

    /// The value of the counter/gauge `series` (summed over its labels), from `/metrics`.
    pub fn metric(&self, series: &str) -> f64 {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.metrics_port)).expect("connect to /metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("ask /metrics");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read /metrics");
        text.lines()
            .filter(|l| {
                l.strip_prefix(series)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Fails the test if it exited by itself.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "operator {} exited ({status}); its log ends:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// SIGKILL: no lease released.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
