//! Helpers shared by the CLI's integration tests.

pub mod dev;

use std::path::{Path, PathBuf};
use std::process::Command;

/// kubectl: `$JOBTIDE_KUBECTL`, the machine image's pinned 1.33, or `kubectl` on PATH.
pub fn kubectl() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("JOBTIDE_KUBECTL") {
        return Some(path.into());
    }
    let pinned = Path::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.33");
    if pinned.exists() {
        return Some(pinned.to_path_buf());
    }
    let found = Command::new("kubectl")
        .args(["version", "--client"])
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
