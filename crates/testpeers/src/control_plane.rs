//! A Kubernetes control plane on loopback: etcd, kube-apiserver (client certificates, service
//! account tokens, `Node,RBAC` authorization, the NodeRestriction admission plugin),
//! kube-controller-manager and kube-scheduler under their own identities. No node of its own:
//! pods stay Pending unless a test runs a node agent (`jobtide_devcluster::node`) with the
//! credentials of [`ControlPlane::node_kubeconfig`].

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::install::KubeInstall;
use crate::kubeconfig::{self, Credentials};
use crate::pki::{KeyPair, Pki};
use crate::supervise::{Janitor, Supervised};
use crate::{PeerError, io, run, tail};

/// How long each component may take to become ready (a cold start on two busy cores).
const READY_TIMEOUT: Duration = Duration::from_mins(3);
/// The Service CIDR (no Service is used; the apiserver needs one).
const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The controllers kube-controller-manager runs: Jobs and their pods, garbage collection,
/// ServiceAccounts and their tokens, quotas, namespace deletion, Job TTLs, the root CA ConfigMap,
/// and node lifecycle (it lifts the `node.kubernetes.io/not-ready` taint a new Node gets from the
/// TaintNodesByCondition admission plugin once the node reports Ready, and taints a node whose
/// Lease and status go stale; its taint-based eviction is a separate controller, not run).
const CONTROLLERS: &str = "job-controller,garbage-collector-controller,serviceaccount-controller,\
                           serviceaccount-token-controller,resourcequota-controller,\
                           namespace-controller,ttl-after-finished-controller,\
                           root-ca-certificate-publisher-controller,node-lifecycle-controller";

/// How long each part of starting took.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartTimes {
    /// Making the certificates and keys.
    pub certificates: Duration,
    /// etcd: start to accepting connections.
    pub etcd: Duration,
    /// kube-apiserver: start to `/readyz` ok.
    pub apiserver: Duration,
    /// kube-controller-manager: start to `/healthz` ok and the `default` ServiceAccount made.
    pub controller_manager: Duration,
    /// kube-scheduler: start to `/healthz` ok (started alongside the controller manager).
    pub scheduler: Duration,
    /// All of it.
    pub total: Duration,
}

/// A running control plane; every process is killed and its directory removed on drop.
#[derive(Debug)]
pub struct ControlPlane {
    /// The binaries it runs.
    pub install: KubeInstall,
    /// Its directory (certificates, kubeconfigs, logs, etcd's data).
    pub dir: PathBuf,
    /// The apiserver's URL (`https://127.0.0.1:PORT`).
    pub server: String,
    /// The CA that signed the apiserver's certificate.
    pub ca: PathBuf,
    /// A kubeconfig of `system:masters`.
    pub admin_kubeconfig: PathBuf,
    /// The apiserver's version (`gitVersion` of `/version`).
    pub version: String,
    /// How long starting took.
    pub start_times: StartTimes,
    pki: Pki,
    /// Node certificates made so far (their serial numbers follow the components').
    nodes_made: std::sync::atomic::AtomicU32,
    processes: Vec<Supervised>,
    _janitor: Janitor,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Controllers first, etcd last.
        while let Some(process) = self.processes.pop() {
            process.stop();
        }
    }
}

static SHARED: OnceLock<Result<Option<ControlPlane>, String>> = OnceLock::new();

impl ControlPlane {
    /// The control plane every test of this process shares (started on first use, killed when
    /// the process exits), or `None` when the tests skip (see [`KubeInstall::from_env`]). Its
    /// versions are recorded once (`JOBTIDE_PEERS_FILE`).
    ///
    /// # Panics
    /// When it can't be started: every test using it fails with the reason.
    #[expect(
        clippy::panic,
        reason = "a test harness: the tests fail with the reason"
    )]
    pub fn shared() -> Option<&'static Self> {
        let shared = SHARED.get_or_init(|| {
            let Some(install) = KubeInstall::from_env() else {
                return Ok(None);
            };
            let plane = Self::start(install).map_err(|e| e.to_string())?;
            plane
                .install
                .record_versions(&plane.version)
                .map_err(|e| e.to_string())?;
            eprintln!(
                "kubernetes control plane {} at {}: {:?}",
                plane.version, plane.server, plane.start_times
            );
            Ok(Some(plane))
        });
        match shared {
            Ok(plane) => plane.as_ref(),
            Err(message) => panic!("starting the Kubernetes control plane failed: {message}"),
        }
    }

    /// Starts a control plane of its own and waits until it's ready.
    pub fn start(install: KubeInstall) -> Result<Self, PeerError> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("jobtide-kube-")
            .tempdir()
            .map_err(io("making the control plane's directory"))?
            .keep();
        let janitor = Janitor::watch(&dir)?;
        let mut times = StartTimes::default();

        let pki = Pki::make(&dir)?;
        times.certificates = started.elapsed();

        let [
            etcd_port,
            etcd_peer_port,
            apiserver_port,
            kcm_port,
            scheduler_port,
        ] = free_ports()?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        kubeconfig::write(
            &admin_kubeconfig,
            &server,
            Some(&pki.ca.cert),
            Credentials::Certificate(&pki.admin),
        )?;
        let mut plane = Self {
            install,
            dir: dir.clone(),
            server,
            ca: pki.ca.cert.clone(),
            admin_kubeconfig,
            version: String::new(),
            start_times: times,
            pki: pki.clone(),
            nodes_made: std::sync::atomic::AtomicU32::new(0),
            processes: Vec::new(),
            _janitor: janitor,
        };

        // etcd.
        let phase = Instant::now();
        let etcd_client = format!("http://127.0.0.1:{etcd_port}");
        let etcd_peer = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd = plane.spawn(
            "etcd",
            &[
                "--name=peer".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_client}"),
                format!("--advertise-client-urls={etcd_client}"),
                format!("--listen-peer-urls={etcd_peer}"),
                format!("--initial-advertise-peer-urls={etcd_peer}"),
                format!("--initial-cluster=peer={etcd_peer}"),
                "--listen-metrics-urls=".into(),
                "--log-level=warn".into(),
                // A test store: losing it on a crash is fine, waiting on fsync is not.
                "--unsafe-no-fsync".into(),
            ],
        )?;
        wait_until(&plane.processes[etcd], || {
            TcpStream::connect(("127.0.0.1", etcd_port)).is_ok()
        })?;
        plane.start_times.etcd = phase.elapsed();

        // kube-apiserver.
        let phase = Instant::now();
        let path = |p: &Path| p.display().to_string();
        let apiserver = plane.spawn(
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_client}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={apiserver_port}"),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", path(&pki.serving.cert)),
                format!("--tls-private-key-file={}", path(&pki.serving.key)),
                format!("--client-ca-file={}", path(&pki.ca.cert)),
                format!(
                    "--service-account-key-file={}",
                    path(&pki.service_account_public)
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    path(&pki.service_account_key)
                ),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                "--authorization-mode=Node,RBAC".into(),
                // A node agent's client certificate (`system:node:<name>`) may then change only
                // its own Node and Lease and the pods bound to it, as a kubelet.
                "--enable-admission-plugins=NodeRestriction".into(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                // The `kubernetes` Service's endpoints would be 127.0.0.1, which Endpoints
                // validation refuses (loopback): no reconciler.
                "--endpoint-reconciler-type=none".into(),
                "--profiling=false".into(),
            ],
        )?;
        let admin = plane.admin_kubeconfig.clone();
        wait_until(&plane.processes[apiserver], || {
            plane
                .kubectl_with(&admin)
                .args(["get", "--raw", "/readyz"])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"ok"))
        })?;
        plane.start_times.apiserver = phase.elapsed();
        let version: serde_json::Value = serde_json::from_str(&run(
            plane.kubectl().args(["get", "--raw", "/version"]),
            "kubectl get --raw /version",
        )?)
        .unwrap_or_default();
        version["gitVersion"]
            .as_str()
            .unwrap_or("unknown")
            .clone_into(&mut plane.version);

        // kube-controller-manager and kube-scheduler, each under its own identity.
        let phase = Instant::now();
        let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
        kubeconfig::write(
            &kcm_kubeconfig,
            &plane.server,
            Some(&pki.ca.cert),
            Credentials::Certificate(&pki.controller_manager),
        )?;
        let scheduler_kubeconfig = dir.join("scheduler.kubeconfig");
        kubeconfig::write(
            &scheduler_kubeconfig,
            &plane.server,
            Some(&pki.ca.cert),
            Credentials::Certificate(&pki.scheduler),
        )?;
        let serving = |name: &str, kubeconfig: &Path, port: u16| {
            vec![
                format!("--kubeconfig={}", path(kubeconfig)),
                format!("--authentication-kubeconfig={}", path(kubeconfig)),
                format!("--authorization-kubeconfig={}", path(kubeconfig)),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", dir.join(format!("{name}-certs")).display()),
                // One instance: no leader election to wait for.
                "--leader-elect=false".into(),
            ]
        };
        let mut kcm_args = serving("controller-manager", &kcm_kubeconfig, kcm_port);
        kcm_args.extend([
            format!("--controllers={CONTROLLERS}"),
            // Each controller as its own ServiceAccount, with the bootstrap RBAC roles.
            "--use-service-account-credentials=true".into(),
            format!(
                "--service-account-private-key-file={}",
                path(&pki.service_account_key)
            ),
            format!("--root-ca-file={}", path(&pki.ca.cert)),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        ]);
        let kcm = plane.spawn("kube-controller-manager", &kcm_args)?;
        let scheduler = plane.spawn(
            "kube-scheduler",
            &serving("scheduler", &scheduler_kubeconfig, scheduler_port),
        )?;
        let scheduler_probe = plane.health_probe("scheduler", scheduler_port, &pki.admin)?;
        wait_until(&plane.processes[scheduler], || {
            plane.healthz(&scheduler_probe)
        })?;
        plane.start_times.scheduler = phase.elapsed();
        let kcm_probe = plane.health_probe("controller-manager", kcm_port, &pki.admin)?;
        wait_until(&plane.processes[kcm], || {
            plane.healthz(&kcm_probe)
                && plane
                    .kubectl()
                    .args(["get", "serviceaccount", "default", "-n", "default"])
                    .output()
                    .is_ok_and(|o| o.status.success())
        })?;
        plane.start_times.controller_manager = phase.elapsed();
        plane.start_times.total = started.elapsed();
        Ok(plane)
    }

    /// kubectl as the admin (`system:masters`).
    pub fn kubectl(&self) -> Command {
        self.kubectl_with(&self.admin_kubeconfig)
    }

    /// kubectl with `kubeconfig` (its discovery cache in the control plane's directory).
    pub fn kubectl_with(&self, kubeconfig: &Path) -> Command {
        let mut command = Command::new(self.install.program("kubectl"));
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"));
        command
    }

    /// helm as the admin, its cache, configuration and data in the control plane's directory.
    pub fn helm(&self) -> Command {
        let mut command = Command::new(self.install.program("helm"));
        let home = self.dir.join("helm");
        command
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        command
    }

    /// Creates namespace `name` (the tests sharing a control plane each use their own).
    pub fn create_namespace(&self, name: &str) -> Result<(), PeerError> {
        run(
            self.kubectl().args(["create", "namespace", name]),
            &format!("creating namespace {name}"),
        )
        .map(drop)
    }

    /// A kubeconfig authenticating as ServiceAccount `namespace/name` (created if missing) with
    /// a token from the TokenRequest API, valid for `validity`.
    ///
    /// # Panics
    /// When `namespace` or `name` isn't a DNS label (they name a file).
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        validity: Duration,
    ) -> Result<PathBuf, PeerError> {
        // The names become a file name: DNS labels only, as the API requires anyway.
        for value in [namespace, name] {
            assert!(
                !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "not a DNS label: {value:?}"
            );
        }
        let created = self
            .kubectl()
            .args(["create", "serviceaccount", name, "-n", namespace])
            .output()
            .map_err(io("running kubectl create serviceaccount"))?;
        if !created.status.success()
            && !String::from_utf8_lossy(&created.stderr).contains("already exists")
        {
            return Err(PeerError::Command {
                what: format!("creating ServiceAccount {namespace}/{name}"),
                status: created.status,
                stderr: String::from_utf8_lossy(&created.stderr).into_owned(),
            });
        }
        let token = run(
            self.kubectl().args([
                "create",
                "token",
                name,
                "-n",
                namespace,
                &format!("--duration={}s", validity.as_secs()),
            ]),
            &format!("requesting a token for ServiceAccount {namespace}/{name}"),
        )?;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        kubeconfig::write(
            &path,
            &self.server,
            Some(&self.ca),
            Credentials::Token(token.trim()),
        )?;
        Ok(path)
    }

    /// A kubeconfig authenticating as node `node` (`system:node:<node>` in `system:nodes`, a
    /// client certificate from the control plane's CA), for a node agent.
    ///
    /// # Panics
    /// When `node` isn't a DNS subdomain.
    pub fn node_kubeconfig(&self, node: &str) -> Result<PathBuf, PeerError> {
        let serial = 100
            + self
                .nodes_made
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pair = self.pki.node(node, serial)?;
        let path = self.dir.join(format!("node-{node}.kubeconfig"));
        kubeconfig::write(
            &path,
            &self.server,
            Some(&self.ca),
            Credentials::Certificate(&pair),
        )?;
        Ok(path)
    }

    /// An error if a component has stopped (with the end of its log).
    pub fn check_running(&self) -> Result<(), PeerError> {
        match self.processes.iter().find(|p| p.exited().is_some()) {
            Some(process) => Err(not_ready(process, Duration::ZERO)),
            None => Ok(()),
        }
    }

    /// The log file of component `name` (`etcd`, `kube-apiserver`, …).
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn spawn(&mut self, name: &str, args: &[String]) -> Result<usize, PeerError> {
        let process = Supervised::spawn(name, &self.install.program(name), args, &self.log(name))?;
        self.processes.push(process);
        Ok(self.processes.len() - 1)
    }

    /// A kubeconfig for a component's health endpoint: its certificate is self-signed (not
    /// checked); the admin's client certificate authenticates (kubectl asks for a password
    /// instead of sending an anonymous request to an HTTPS server).
    fn health_probe(&self, name: &str, port: u16, admin: &KeyPair) -> Result<PathBuf, PeerError> {
        let path = self.dir.join(format!("{name}-health.kubeconfig"));
        kubeconfig::write(
            &path,
            &format!("https://127.0.0.1:{port}"),
            None,
            Credentials::Certificate(admin),
        )?;
        Ok(path)
    }

    fn healthz(&self, probe: &Path) -> bool {
        self.kubectl_with(probe)
            .args(["get", "--raw", "/healthz"])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"ok"))
    }
}

/// Polls `ready` until it holds, failing when `process` exits or after [`READY_TIMEOUT`].
pub(crate) fn wait_until(
    process: &Supervised,
    mut ready: impl FnMut() -> bool,
) -> Result<(), PeerError> {
    let started = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if process.exited().is_some() || started.elapsed() > READY_TIMEOUT {
            return Err(not_ready(process, started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn not_ready(process: &Supervised, waited: Duration) -> PeerError {
    PeerError::NotReady {
        what: match process.exited() {
            Some(status) => format!("{} (exited: {status})", process.name),
            None => process.name.clone(),
        },
        waited,
        log: process.log.clone(),
        tail: tail(&process.log, 30),
    }
}

/// Free loopback ports (held together while chosen, so they differ).
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N], PeerError> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("choosing free ports"))?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(io("choosing free ports"))?
            .port();
    }
    Ok(ports)
}
