//! Real peers for the tests: programs the project does not write, installed by the repo's scripts
//! and started by the tests on loopback. Never shipped: a dev-dependency of the crates whose tests
//! use them.
//!
//! - [`kafka`]: Apache Kafka (KRaft), from the jars `scripts/install-peers` installs
//!   (`JOBTIDE_KAFKA_HOME`).
//! - [`peers`]: which real peers a test run used (`scripts/test` prints them).
//! - A Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
//!   and the kubectl and helm built alongside, by `scripts/install-kube-peers`
//!   (`JOBTIDE_KUBE_BIN`), docs/peers.md:
//!   - [`install`]: finding the binaries, skipping or failing (under CI) without them, recording
//!     their versions;
//!   - [`pki`]: the certificates and the service-account key, made by the `openssl` CLI;
//!   - [`kubeconfig`]: the kubeconfig files (client certificate or bearer token);
//!   - [`supervise`]: child processes that die with the test process, even on SIGKILL;
//!   - [`control_plane`]: starting the control plane, waiting for it, clients for it.
//! - [`kueue`]: Kueue's manager on that control plane, built by `scripts/install-kueue`
//!   (`JOBTIDE_KUEUE`).
//!
//! - [`script`]: executable scripts a test writes and runs at once, without `ETXTBSY`.
//!
//! Without its install a peer's tests skip with a printed reason; under `CI=true` they fail.
//!
//! # Guarantees (the control plane)
//! - Every process started is killed when its owner is dropped or the test process exits or
//!   dies (SIGKILL included), and its temporary directory removed.
//! - Everything listens on 127.0.0.1 only, on free ports.

#![allow(clippy::expect_used, clippy::panic, clippy::missing_panics_doc)] // test harness: a failure is the test failing

pub mod control_plane;
pub mod install;
pub mod kafka;
pub mod kubeconfig;
pub mod kueue;
pub mod peers;
pub mod pki;
pub mod script;
pub mod supervise;

pub use control_plane::ControlPlane;
pub use install::KubeInstall;
pub use kueue::Kueue;

use std::path::PathBuf;
use std::time::Duration;

/// Why a peer couldn't be started or used.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// A file or directory operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{what} failed ({status}): {stderr}")]
    Command {
        /// What was being done.
        what: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// A process didn't become ready in time (or exited).
    #[error("{what} was not ready after {waited:?}; {log} ends:\n{tail}")]
    NotReady {
        /// Which process.
        what: String,
        /// How long it was given.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
}

/// Whether this run is CI's (`CI=true`), where a missing peer is a failure, not a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The last `lines` lines of a file (for error messages).
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `command`; its standard output, or [`PeerError::Command`] naming `what`.
pub(crate) fn run(command: &mut std::process::Command, what: &str) -> Result<String, PeerError> {
    let output = command.output().map_err(|source| PeerError::Io {
        what: format!("{what}: starting {}", command.get_program().display()),
        source,
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr_tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(PeerError::Command {
            what: what.to_owned(),
            status: output.status,
            stderr: stderr_tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PeerError {
    let what = what.into();
    move |source| PeerError::Io { what, source }
}
