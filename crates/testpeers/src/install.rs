//! The binaries `scripts/install-kube-peers` builds, found through `JOBTIDE_KUBE_BIN`.

use std::path::PathBuf;
use std::process::Command;

use crate::{PeerError, run, under_ci};

/// The programs an install holds.
pub const PROGRAMS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "helm",
];

/// An installed control plane (`JOBTIDE_KUBE_BIN`, a directory holding [`PROGRAMS`]).
#[derive(Debug, Clone)]
pub struct KubeInstall {
    /// The directory of the binaries.
    pub bin: PathBuf,
}

impl KubeInstall {
    /// The install `JOBTIDE_KUBE_BIN` names, or `None` after printing why the caller's test is
    /// skipped: the variable is unset, a program is missing, or the `openssl` CLI (which makes
    /// the certificates) is. Under CI (`CI=true`), where `.ci/run` installs everything, each of
    /// these is a failure instead.
    ///
    /// # Panics
    /// Under CI, when the tests would skip.
    pub fn from_env() -> Option<Self> {
        let skip = |reason: String| {
            assert!(
                !under_ci(),
                "CI must run the Kubernetes control-plane tests: {reason}"
            );
            eprintln!("skipped: {reason}");
        };
        let Some(bin) = std::env::var_os("JOBTIDE_KUBE_BIN").map(PathBuf::from) else {
            skip(
                "JOBTIDE_KUBE_BIN is not set (run `export JOBTIDE_KUBE_BIN=\"$(scripts/install-kube-peers)\"`)"
                    .into(),
            );
            return None;
        };
        if let Some(missing) = PROGRAMS.iter().find(|p| !bin.join(p).is_file()) {
            skip(format!(
                "JOBTIDE_KUBE_BIN={} has no {missing} (run scripts/install-kube-peers)",
                bin.display()
            ));
            return None;
        }
        let openssl = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !openssl {
            skip(
                "the openssl CLI is not on PATH (it makes the control plane's certificates)".into(),
            );
            return None;
        }
        Some(Self { bin })
    }

    /// The path of one of [`PROGRAMS`].
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// etcd's version as it reports it (`3.7.3`).
    pub fn etcd_version(&self) -> Result<String, PeerError> {
        let out = run(
            Command::new(self.program("etcd")).arg("--version"),
            "etcd --version",
        )?;
        Ok(out
            .lines()
            .find_map(|l| l.strip_prefix("etcd Version: "))
            .unwrap_or("unknown")
            .trim()
            .to_owned())
    }

    /// helm's version as it reports it (`v3.22.0`).
    pub fn helm_version(&self) -> Result<String, PeerError> {
        let out = run(
            Command::new(self.program("helm")).args(["version", "--template", "{{.Version}}"]),
            "helm version",
        )?;
        Ok(out.trim().to_owned())
    }

    /// Records `kube-apiserver <apiserver_version>`, `etcd <v>` and `helm <v>` as peers of this
    /// run ([`crate::peers::record`]: scripts/test prints them as `real peers: …`).
    pub fn record_versions(&self, apiserver_version: &str) -> Result<(), PeerError> {
        crate::peers::record(&format!("kube-apiserver {apiserver_version}"));
        crate::peers::record(&format!("etcd {}", self.etcd_version()?));
        crate::peers::record(&format!("helm {}", self.helm_version()?));
        Ok(())
    }
}
