//! The runner's kubelet part: a pod's first container's `command` + `args` run as a local
//! process in its own process group (the image is ignored), its output kept for `pods/log`,
//! its status (phase, conditions, containerStatuses with exit codes) written as the kubelet does.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::{Runner, RunnerConfig, str_at};
use crate::process::{condition, now, terminated};
use crate::store::{Part, Store};

/// A running pod's process.
pub(super) struct Running {
    pub(super) kill: tokio::sync::oneshot::Sender<()>,
    /// The process group of the pod's process (0 until it started): the whole group goes when
    /// the pod does, as a container's processes go with it.
    pub(super) group: Arc<std::sync::atomic::AtomicI32>,
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
        let lookup = |plural: &str, object: &str| {
            let resource = store.resource("", "v1", plural)?;
            store.get(&resource, &namespace, object).ok()
        };
        env.extend(crate::env::resolve(&lookup, pod, &container));
        let volumes = match crate::volumes::prepare(&lookup, pod) {
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
        let container = crate::process::Container {
            name: container_name,
            image,
            argv,
            env,
            path,
            hostname: name,
            restart_on_failure,
        };
        tokio::spawn(async move {
            let killed = crate::process::run(container, log, group, killed, set_status).await;
            if !killed && let Ok(mut running) = runner.running.lock() {
                running.remove(&key);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)] // test code: a failure is the test failing

    use std::time::Duration;

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
