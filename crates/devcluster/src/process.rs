//! A pod's first container as a local process, the same for the runner and the node agent:
//! `command` + `args` run in their own process group (the image is ignored) with the resolved
//! environment, stdout and stderr in order into the pod's log, restarts for `OnFailure`, and the
//! pod status a kubelet reports at each step (phase, conditions, containerStatuses with exit
//! codes) handed to the caller, which writes it (to the store, or through the API).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

pub use crate::node::PodOutput;

/// A pod's output so far (its newest 10 MiB: [`PodOutput`]).
pub type LogBuffer = Arc<Mutex<PodOutput>>;

/// What runs for a pod.
#[derive(Debug, Clone)]
pub struct Container {
    /// The container's name.
    pub name: String,
    /// The container's image (reported, not run).
    pub image: String,
    /// `command` + `args`.
    pub argv: Vec<String>,
    /// The resolved environment (volume mount paths already rewritten).
    pub env: BTreeMap<String, String>,
    /// `PATH` for the process.
    pub path: OsString,
    /// `HOSTNAME` (the pod's name).
    pub hostname: String,
    /// `restartPolicy: OnFailure`.
    pub restart_on_failure: bool,
}

/// Kills every process of a pod's process group (0: none started yet).
pub fn kill_group(group: &AtomicI32) {
    let id = group.swap(0, Ordering::SeqCst);
    if let Some(pid) = rustix::process::Pid::from_raw(id) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// The time as the API shows it (RFC 3339, seconds).
pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A pod or Job condition.
pub fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
        "lastProbeTime": now(), "lastTransitionTime": now()})
}

/// Runs `container` until it ends for good (or `killed` fires: then its process group is
/// killed and no further status is reported), appending its output to `log`, recording its
/// process group in `group`, and reporting each pod status through `set_status`. Returns
/// whether it was killed.
pub async fn run(
    container: Container,
    log: LogBuffer,
    group: Arc<AtomicI32>,
    killed: tokio::sync::oneshot::Receiver<()>,
    set_status: impl Fn(Value) + Send,
) -> bool {
    let Container {
        name: container_name,
        image,
        argv,
        env,
        path,
        hostname: name,
        restart_on_failure,
    } = container;
    let mut killed = killed;
    let mut restarts = 0;
    let start_time = now();
    loop {
        let running_status = |restarts: i64| {
            json!({
                "phase": "Running", "startTime": start_time, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
                "conditions": [condition("PodScheduled", "True", "", ""), condition("Initialized", "True", "", ""),
                    condition("ContainersReady", "True", "", ""), condition("Ready", "True", "", "")],
                "containerStatuses": [{"name": container_name, "image": image, "imageID": "", "ready": true, "started": true,
                    "restartCount": restarts, "state": {"running": {"startedAt": now()}}}],
            })
        };
        let Some(program) = argv.first() else {
            set_status(terminated(
                &container_name,
                &image,
                &start_time,
                128,
                "ContainerCannotRun",
                restarts,
                "the local runner needs a command: images are not run",
            ));
            break;
        };
        // One pipe for stdout and stderr: the log keeps the order the process wrote in.
        let spawned = std::io::pipe().and_then(|(reader, writer)| {
            let mut command = tokio::process::Command::new(program);
            command
                .args(&argv[1..])
                .env_clear()
                .envs(&env)
                .env("PATH", &path)
                .process_group(0)
                .env("HOSTNAME", &name)
                .stdin(Stdio::null())
                .stdout(writer.try_clone()?)
                .stderr(writer)
                .kill_on_drop(true);
            // `command` (and with it the parent's copies of the writer) is dropped here,
            // so the reader sees end-of-file when the process exits.
            Ok((command.spawn()?, reader))
        });
        let (mut child, reader) = match spawned {
            Ok(spawned) => spawned,
            Err(error) => {
                if let Ok(mut log) = log.lock() {
                    log.append(format!("{error}\n").as_bytes());
                }
                set_status(terminated(
                    &container_name,
                    &image,
                    &start_time,
                    127,
                    "StartError",
                    restarts,
                    &error.to_string(),
                ));
                break;
            }
        };
        if let Some(id) = child.id().and_then(|id| i32::try_from(id).ok()) {
            group.store(id, Ordering::SeqCst);
        }
        set_status(running_status(restarts));
        let pump = {
            let log = Arc::clone(&log);
            tokio::task::spawn_blocking(move || {
                let mut reader = reader;
                let mut buffer = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut reader, &mut buffer) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut log) = log.lock() {
                        log.append(&buffer[..n]);
                    }
                }
            })
        };
        let exit = tokio::select! {
            status = child.wait() => status.ok().and_then(|s| s.code()).unwrap_or(137),
            _ = &mut killed => {
                kill_group(&group);
                let _ = child.kill().await;
                return true;
            }
        };
        // The container ends with its main process: what it left in the background
        // goes too (the kubelet tears down the container's cgroup).
        kill_group(&group);
        let _ = tokio::time::timeout(Duration::from_secs(1), pump).await;
        if exit != 0 && restart_on_failure {
            restarts += 1;
            // The Job controller counts restarts toward backoffLimit.
            set_status(running_status(restarts));
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let reason = if exit == 0 { "Completed" } else { "Error" };
        set_status(terminated(
            &container_name,
            &image,
            &start_time,
            exit,
            reason,
            restarts,
            "",
        ));
        break;
    }
    false
}

/// The status of a pod whose container ended with `exit`.
pub fn terminated(
    container: &str,
    image: &str,
    start_time: &str,
    exit: i32,
    reason: &str,
    restarts: i64,
    message: &str,
) -> Value {
    let phase = if exit == 0 { "Succeeded" } else { "Failed" };
    json!({
        "phase": phase, "startTime": start_time, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
        "conditions": [condition("PodScheduled", "True", "", ""), condition("Initialized", "True", "", ""),
            condition("ContainersReady", "False", "PodCompleted", ""), condition("Ready", "False", "PodCompleted", "")],
        "containerStatuses": [{"name": container, "image": image, "imageID": "", "ready": false, "started": false,
            "restartCount": restarts, "state": {"terminated": {"exitCode": exit, "reason": reason, "message": message,
                "startedAt": start_time, "finishedAt": now()}}}],
    })
}
