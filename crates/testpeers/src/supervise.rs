//! Child processes that never outlive the test process.
//!
//! Each runs under a small `sh` wrapper that holds a pipe from this process on its standard
//! input: when the pipe closes — the owner is dropped, or the test process exits or dies, even by
//! SIGKILL, since the kernel closes its descriptors — the wrapper SIGKILLs the program. The same
//! idea as the Apache Kafka peer's JVM wrapper (crates/kafka/tests/common).

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;

use crate::{PeerError, io};

/// Runs `"$@"` in the background with its output appended to `$1`, and kills it when standard
/// input (this process's pipe) closes. Arguments are never interpreted by the shell.
const WRAPPER: &str = r#"
log="$1"; shift
exec 3<&0
"$@" </dev/null >>"$log" 2>&1 &
program=$!
( read -r _ <&3; kill -9 "$program" ) 2>/dev/null &
watcher=$!
wait "$program"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// Removes `$1` once standard input closes (after the programs using it were killed).
const JANITOR: &str = r#"read -r _; sleep 1; rm -rf "$1""#;

/// A supervised program; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Supervised {
    /// What it is (for messages).
    pub name: String,
    /// Its standard output and error.
    pub log: PathBuf,
    wrapper: Mutex<Child>,
    lifeline: Mutex<Option<ChildStdin>>,
}

impl Supervised {
    /// Starts `program` with `args`, its output appended to `log`.
    pub fn spawn<I, S>(name: &str, program: &Path, args: I, log: &Path) -> Result<Self, PeerError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut wrapper = Command::new("sh")
            .args(["-c", WRAPPER, "sh"])
            .arg(log)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(format!("starting {name} ({})", program.display())))?;
        let lifeline = wrapper.stdin.take();
        Ok(Self {
            name: name.to_owned(),
            log: log.to_owned(),
            wrapper: Mutex::new(wrapper),
            lifeline: Mutex::new(lifeline),
        })
    }

    /// Its exit status, if it has stopped.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.wrapper
            .lock()
            .ok()
            .and_then(|mut w| w.try_wait().ok().flatten())
    }

    /// Kills it and waits for it.
    pub fn stop(&self) {
        if let Ok(mut lifeline) = self.lifeline.lock() {
            lifeline.take();
        }
        if let Ok(mut wrapper) = self.wrapper.lock() {
            let _ = wrapper.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes a directory when dropped or when the test process ends, however it ends.
#[derive(Debug)]
pub struct Janitor {
    child: Mutex<Child>,
    lifeline: Mutex<Option<ChildStdin>>,
}

impl Janitor {
    /// Watches `dir`.
    pub fn watch(dir: &Path) -> Result<Self, PeerError> {
        let mut child = Command::new("sh")
            .args(["-c", JANITOR, "sh"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("starting the directory janitor"))?;
        let lifeline = child.stdin.take();
        Ok(Self {
            child: Mutex::new(child),
            lifeline: Mutex::new(lifeline),
        })
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        if let Ok(mut lifeline) = self.lifeline.lock() {
            lifeline.take();
        }
        if let Ok(mut child) = self.child.lock() {
            let _ = child.wait();
        }
    }
}
