//! Kueue's manager on a [`ControlPlane`]: the binary `scripts/install-kueue` builds
//! (`JOBTIDE_KUEUE`) and the CRDs installed next to it (`../crds`).
//!
//! # How it runs without root or a cluster network
//! Kueue v0.17.0's `main.go` reads the metrics server's certificate from the hard-coded
//! `/etc/kueue/metrics/certs` whenever its internal certificate management is off (before looking
//! at `metrics.bindAddress`, so disabling the metrics server doesn't help; no configuration field
//! moves it). So it runs **with** internal certificate management, as a real install does: its
//! rotator (open-policy-agent/cert-controller) makes a CA and the webhook server's certificate
//! into the Secret `kueue-webhook-server-cert` in `kueue-system` (which must exist: we create it
//! empty, as Kueue's kustomize install does), then waits for the files in `webhook.certDir`,
//! which in a cluster the kubelet projects from that Secret — here `mount_certificates` copies
//! them into our directory. Then it injects the CA into
//! - the webhook configurations `kueue-{validating,mutating}-webhook-configuration` — none is
//!   installed (the rotator logs "Webhook not found" and goes on), so no admission webhook of
//!   Kueue's runs: Jobs must be created suspended (docs/capacity.md);
//! - the conversion webhooks of five CRDs, which must exist (cert-controller v0.16.0 fails the
//!   injection into a CRD without `spec.conversion.webhook.clientConfig`, and Kueue then never
//!   becomes ready). Kueue's kustomize install points them at its Service; here they point at the
//!   webhook server on `https://127.0.0.1:PORT/convert`. The apiserver can't verify that address
//!   against the certificate (made for `kueue-webhook-service.kueue-system.svc`: "x509: cannot
//!   validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"), so **a
//!   conversion fails**: objects are stored and read as `v1beta2` (the storage version), and a
//!   client asking for `v1beta1` gets an error from this peer where a real install converts.
//!
//! The metrics server is off (`bindAddress: "0"`), the visibility server (which wants its own
//! directory under `/`) is off by feature gate, leader election is off, only the `batch/job`
//! integration is on, and the manager uses the admin kubeconfig. Everything listens on 127.0.0.1.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::control_plane::{free_ports, not_ready, wait_until};
use crate::supervise::Supervised;
use crate::{ControlPlane, PeerError, io, run, under_ci};

/// The namespace Kueue's configuration names (its certificate Secret lives there).
pub const NAMESPACE: &str = "kueue-system";
/// The Secret of the webhook server's certificate (Kueue's default `webhookSecretName`).
const SECRET: &str = "kueue-webhook-server-cert";
/// The CRDs whose conversion webhook Kueue's certificate rotator injects its CA into.
const CONVERTED: &[&str] = &[
    "localqueues.kueue.x-k8s.io",
    "clusterqueues.kueue.x-k8s.io",
    "workloads.kueue.x-k8s.io",
    "cohorts.kueue.x-k8s.io",
    "multikueueclusters.kueue.x-k8s.io",
];

/// A running Kueue manager; killed on drop.
#[derive(Debug)]
pub struct Kueue {
    /// The manager binary.
    pub binary: PathBuf,
    /// Its version (the install directory's `kueue-<version>`).
    pub version: String,
    /// Its log.
    pub log: PathBuf,
    /// How long starting took (CRDs to ready).
    pub start_time: Duration,
    process: Supervised,
}

static SHARED: OnceLock<Result<Option<Kueue>, String>> = OnceLock::new();

impl Kueue {
    /// The manager `JOBTIDE_KUEUE` names, or `None` after printing why the caller's test is
    /// skipped (unset, or no binary or CRDs there). Under CI (`CI=true`) that is a failure.
    ///
    /// # Panics
    /// Under CI, when the tests would skip.
    pub fn binary_from_env() -> Option<PathBuf> {
        let skip = |reason: String| {
            assert!(!under_ci(), "CI must run the Kueue tests: {reason}");
            eprintln!("skipped: {reason}");
        };
        let Some(binary) = std::env::var_os("JOBTIDE_KUEUE").map(PathBuf::from) else {
            skip("JOBTIDE_KUEUE is not set (run `export JOBTIDE_KUEUE=\"$(scripts/install-kueue)\"`)".into());
            return None;
        };
        if !binary.is_file() || !crds(&binary).is_dir() {
            skip(format!(
                "JOBTIDE_KUEUE={} is not a Kueue manager with its CRDs in ../crds (run scripts/install-kueue)",
                binary.display()
            ));
            return None;
        }
        Some(binary)
    }

    /// The Kueue every test of this process shares, on `plane` (started on first use), or `None`
    /// when the tests skip ([`Self::binary_from_env`]).
    ///
    /// # Panics
    /// When it can't be started: every test using it fails with the reason.
    #[expect(
        clippy::panic,
        reason = "a test harness: the tests fail with the reason"
    )]
    pub fn shared(plane: &ControlPlane) -> Option<&'static Self> {
        let shared = SHARED.get_or_init(|| {
            let Some(binary) = Self::binary_from_env() else {
                return Ok(None);
            };
            let kueue = Self::start(plane, &binary).map_err(|e| e.to_string())?;
            crate::peers::record(&format!("kueue {}", kueue.version));
            eprintln!("kueue {} ready in {:?}", kueue.version, kueue.start_time);
            Ok(Some(kueue))
        });
        match shared {
            Ok(kueue) => kueue.as_ref(),
            Err(message) => panic!("starting Kueue failed: {message}"),
        }
    }

    /// Installs Kueue's CRDs on `plane` and starts `binary` against it; returns once its
    /// `/readyz` answers (certificates made and injected, controllers started).
    pub fn start(plane: &ControlPlane, binary: &Path) -> Result<Self, PeerError> {
        let started = Instant::now();
        let [webhook, probe] = free_ports()?;
        install_crds(plane, binary, webhook)?;
        plane.create_namespace(NAMESPACE)?;
        // The Secret the rotator fills in; it must exist (Kueue's kustomize install makes it
        // empty, as here).
        run(
            plane
                .kubectl()
                .args(["create", "secret", "generic", SECRET, "-n", NAMESPACE]),
            "creating Kueue's certificate Secret",
        )?;

        let dir = plane.dir.join("kueue");
        std::fs::create_dir_all(dir.join("certs")).map_err(io("making Kueue's directory"))?;
        let config = dir.join("config.yaml");
        std::fs::write(&config, configuration(&dir.join("certs"), webhook, probe))
            .map_err(io("writing Kueue's configuration"))?;
        let log = plane.dir.join("kueue.log");
        let process = Supervised::spawn(
            "kueue-manager",
            binary,
            [
                "--config".as_ref(),
                config.as_os_str(),
                "--kubeconfig".as_ref(),
                plane.admin_kubeconfig.as_os_str(),
            ],
            &log,
        )?;
        // A kubelet would project the Secret into `certDir`; the rotator waits for the files.
        let certs = dir.join("certs");
        wait_until(&process, || {
            mount_certificates(plane, &certs).unwrap_or(false)
        })?;
        wait_until(&process, || http_ok(probe, "/readyz"))?;
        if process.exited().is_some() {
            return Err(not_ready(&process, started.elapsed()));
        }
        Ok(Self {
            binary: binary.to_owned(),
            version: version(binary),
            log,
            start_time: started.elapsed(),
            process,
        })
    }

    /// The end of its log (for failure messages).
    pub fn log_tail(&self) -> String {
        crate::tail(&self.log, 30)
    }

    /// Whether it still runs.
    pub fn running(&self) -> bool {
        self.process.exited().is_none()
    }
}

/// The CRDs installed next to the manager.
fn crds(binary: &Path) -> PathBuf {
    binary
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/nonexistent"))
        .join("crds")
}

/// `v0.17.0` from `…/kueue-v0.17.0/bin/kueue-manager`.
fn version(binary: &Path) -> String {
    binary
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|name| name.to_str()?.strip_prefix("kueue-"))
        .unwrap_or("unknown")
        .to_owned()
}

/// Applies the CRDs (server-side: the Workload CRD is too large for the last-applied annotation),
/// points the converted ones at the webhook server, and waits until all are established.
fn install_crds(plane: &ControlPlane, binary: &Path, webhook: u16) -> Result<(), PeerError> {
    let dir = crds(binary);
    run(
        plane
            .kubectl()
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(&dir),
        "applying Kueue's CRDs",
    )?;
    let conversion = serde_json::json!({"spec": {"conversion": {
        "strategy": "Webhook",
        "webhook": {
            "clientConfig": {"url": format!("https://127.0.0.1:{webhook}/convert")},
            "conversionReviewVersions": ["v1"],
        },
    }}});
    for crd in CONVERTED {
        run(
            plane.kubectl().args([
                "patch",
                "crd",
                crd,
                "--type=merge",
                "-p",
                &conversion.to_string(),
            ]),
            &format!("pointing {crd}'s conversion at Kueue's webhook server"),
        )?;
    }
    // `kubectl wait` fails at once ("accessor error") on a CRD whose status has no conditions
    // yet, just after the apply: it is asked again until it waits.
    let started = Instant::now();
    loop {
        let waited = run(
            plane
                .kubectl()
                .args(["wait", "--for=condition=Established", "--timeout=60s", "-f"])
                .arg(&dir),
            "waiting for Kueue's CRDs to be Established",
        );
        match waited {
            Ok(_) => return Ok(()),
            Err(error) if started.elapsed() > Duration::from_mins(1) => return Err(error),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Kueue's `Configuration` (`config.kueue.x-k8s.io/v1beta2`), see the module docs.
fn configuration(cert_dir: &Path, webhook: u16, probe: u16) -> String {
    serde_json::json!({
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": format!("127.0.0.1:{probe}")},
        "metrics": {"bindAddress": "0"},
        "webhook": {"host": "127.0.0.1", "port": webhook, "certDir": cert_dir.display().to_string()},
        "leaderElection": {"leaderElect": false},
        "internalCertManagement": {"enable": true},
        "integrations": {"frameworks": ["batch/job"]},
        "featureGates": {"VisibilityOnDemand": false},
    })
    .to_string()
}

/// Writes the Secret's `tls.crt`, `tls.key` and `ca.crt` into `dir`, as a kubelet's Secret
/// volume would; `false` while the rotator hasn't filled the Secret in yet.
fn mount_certificates(plane: &ControlPlane, dir: &Path) -> Result<bool, PeerError> {
    let mut files = Vec::new();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        let template = format!("{{{{index .data \"{key}\" | base64decode}}}}");
        let value = run(
            plane.kubectl().args([
                "get",
                "secret",
                SECRET,
                "-n",
                NAMESPACE,
                "-o",
                &format!("go-template={template}"),
            ]),
            "reading Kueue's certificate Secret",
        )?;
        if !value.contains("-----BEGIN") {
            return Ok(false);
        }
        files.push((key, value));
    }
    for (key, value) in files {
        let path = dir.join(key);
        let partial = dir.join(format!(".{key}.partial"));
        std::fs::write(&partial, value).map_err(io(format!("writing {}", path.display())))?;
        std::fs::rename(&partial, &path).map_err(io(format!("writing {}", path.display())))?;
    }
    Ok(true)
}

/// Whether `GET http://127.0.0.1:port{path}` answers 200.
fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_install_directory() {
        assert_eq!(
            version(Path::new("/c/kueue-v0.17.0/bin/kueue-manager")),
            "v0.17.0"
        );
        assert_eq!(
            crds(Path::new("/c/kueue-v0.17.0/bin/kueue-manager")),
            Path::new("/c/kueue-v0.17.0/crds")
        );
    }
}
