//! The runner's kubelet part: a pod's first container's `command` + `args` run as a local
//! process in its own process group (the image is ignored), its output kept for `pods/log`,
//! its status (phase, conditions, containerStatuses with exit codes) written as the kubelet does.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Runner, RunnerConfig, condition, now, str_at};
use crate::store::{Part, Store};

/// A running pod's process.
pub(super) struct Running {
    pub(super) kill: tokio::sync::oneshot::Sender<()>,
    /// The process group of the pod's process (0 until it started): the whole group goes when
    /// the pod does, as a container's processes go with it.
    pub(super) group: Arc<std::sync::atomic::AtomicI32>,
}

/// Kills every process of a pod's process group.
pub(super) fn kill_group(group: &std::sync::atomic::AtomicI32) {
    let id = group.swap(0, std::sync::atomic::Ordering::SeqCst);
    if let Some(pid) = rustix::process::Pid::from_raw(id) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

impl Runner {
    pub(super) fn start_pod(
        self: &Arc<Self>,
        store: &Arc<Store>,
        pod: &Value,
        config: &RunnerConfig,
    ) {
        let Some(pod_type) = store.resource("", "v1", "pods") else {
            return;
        };
        let namespace = str_at(pod, "/metadata/namespace").to_owned();
        let name = str_at(pod, "/metadata/name").to_owned();
        let key = (namespace.clone(), name.clone());
        if self.started.lock().map_or(true, |s| s.contains(&key)) {
            return;
        }
        let container = pod
            .pointer("/spec/containers/0")
            .cloned()
            .unwrap_or(Value::Null);
        let image = container["image"].as_str().unwrap_or_default().to_owned();
        if self
            .images_seen
            .lock()
            .is_ok_and(|mut seen| seen.insert(image.clone()))
        {
            tracing::info!(
                image,
                "the local job runner ignores container images: commands run on this machine"
            );
        }
        let argv: Vec<String> = container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(container["args"].as_array().into_iter().flatten())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let mut env = config.default_env.clone();
        env.extend(super::env::resolve(store, pod, &container));
        let volumes = match crate::volumes::prepare(store, pod) {
            Ok(volumes) => volumes,
            Err(crate::volumes::NotReady::Missing(message)) => {
                // As the kubelet: the pod waits for its Secret or ConfigMap.
                if str_at(pod, "/status/containerStatuses/0/state/waiting/message") == message {
                    return;
                }
                let _ = store.modify(&pod_type, &namespace, &name, Part::Status, |old| {
                    let mut new = old.clone();
                    new["status"] = json!({"phase": "Pending", "conditions": [condition("PodScheduled", "True", "", "")],
                        "containerStatuses": [{"name": container["name"], "image": image, "imageID": "", "ready": false,
                            "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating", "message": message}}}]});
                    Ok(new)
                });
                return;
            }
            Err(crate::volumes::NotReady::Invalid(message)) => {
                let _ = store.modify(&pod_type, &namespace, &name, Part::Status, |old| {
                    let mut new = old.clone();
                    new["status"] = terminated(
                        container["name"].as_str().unwrap_or("main"),
                        &image,
                        &now(),
                        128,
                        "CreateContainerConfigError",
                        0,
                        &message,
                    );
                    Ok(new)
                });
                return;
            }
        };
        if !volumes.is_empty() {
            let pod_dir = self.volumes_root(config).join(&namespace).join(&name);
            if let Ok(mut dirs) = self.pod_dirs.lock() {
                dirs.insert(key.clone());
            }
            match crate::volumes::write(&pod_dir, &volumes) {
                Ok(mounts) => {
                    for value in env.values_mut() {
                        if let Some(local) = crate::volumes::rewrite(value, &mounts) {
                            *value = local;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(pod = %name, %error, "writing the pod's volumes failed");
                    return;
                }
            }
        }
        let path = std::env::join_paths(config.path_prepend.iter().cloned().chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap_or_default();
        let restart_on_failure = str_at(pod, "/spec/restartPolicy") == "OnFailure";
        if !self
            .started
            .lock()
            .is_ok_and(|mut started| started.insert(key.clone()))
        {
            return;
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Ok(mut logs) = self.logs.lock() {
            logs.insert(key.clone(), Arc::clone(&log));
        }
        let (kill, killed) = tokio::sync::oneshot::channel();
        let group = Arc::new(std::sync::atomic::AtomicI32::new(0));
        if let Ok(mut running) = self.running.lock() {
            running.insert(
                key.clone(),
                Running {
                    kill,
                    group: Arc::clone(&group),
                },
            );
        }
        let container_name = container["name"].as_str().unwrap_or("main").to_owned();
        let set_status = {
            let store = Arc::clone(store);
            let pod_type = pod_type.clone();
            let namespace = namespace.clone();
            let name = name.clone();
            move |status: Value| {
                let _ = store.modify(&pod_type, &namespace, &name, Part::Status, |old| {
                    let mut new = old.clone();
                    new["status"] = status;
                    Ok(new)
                });
            }
        };
        let runner = Arc::clone(self);
        tokio::spawn(async move {
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
                            log.extend_from_slice(format!("{error}\n").as_bytes());
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
                    group.store(id, std::sync::atomic::Ordering::SeqCst);
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
                                log.extend_from_slice(&buffer[..n]);
                            }
                        }
                    })
                };
                let exit = tokio::select! {
                    status = child.wait() => status.ok().and_then(|s| s.code()).unwrap_or(137),
                    _ = &mut killed => {
                        kill_group(&group);
                        let _ = child.kill().await;
                        return;
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
            if let Ok(mut running) = runner.running.lock() {
                running.remove(&key);
            }
        });
    }
}

fn terminated(
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

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)] // test code: a failure is the test failing

    use super::*;

    /// A sync schedules from a listing of pending pods, and a short process can start, finish
    /// and leave `running` before the sync reaches it in that listing: the pod must not run
    /// again (`jobtide dev` ran a dispatch Job's pod twice this way, one in 200).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pod_runs_once_even_when_a_stale_listing_shows_it_pending_after_it_finished() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let runs = dir.path().join("runs");
        let store = Arc::new(Store::new());
        let pod_type = store.resource("", "v1", "pods").expect("pods");
        let listed = store
            .create(
                &pod_type,
                "default",
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "once", "namespace": "default"},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox",
                        "command": ["/bin/sh", "-c", format!("echo ran >> '{}'", runs.display())]}]},
                    "status": {"phase": "Pending"}}),
            )
            .expect("pod");
        let runner = Arc::new(Runner::default());
        let config = RunnerConfig::default();
        runner.start_pod(&store, &listed, &config);
        let key = ("default".to_owned(), "once".to_owned());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let pod = store.get(&pod_type, "default", "once").expect("pod");
            let gone = !runner.running.lock().expect("running").contains_key(&key);
            if str_at(&pod, "/status/phase") == "Succeeded" && gone {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the pod did not finish: {pod}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // The stale listing still says Pending.
        runner.start_pod(&store, &listed, &config);
        runner.sync(&store, &config);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(std::fs::read_to_string(&runs).expect("runs"), "ran\n");
        let pod = store.get(&pod_type, "default", "once").expect("pod");
        assert_eq!(str_at(&pod, "/status/phase"), "Succeeded");
    }
}
