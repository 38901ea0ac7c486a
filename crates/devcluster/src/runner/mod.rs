//! The local job runner: the Job controller and kubelet of one machine. It creates a Job's pod
//! (`<job>-<5 chars>`, with the labels and ownerReference the real Job controller sets), runs the
//! pod's first container's `command` + `args` as a local process (the image is ignored), keeps
//! pod and Job status as Kubernetes does, and serves the output as `pods/log`.
//!
//! # Scope
//! completions / parallelism 1 (more is refused on the Job's status with a clear condition),
//! backoffLimit (a failed pod → a new pod), restartPolicy Never / OnFailure, activeDeadlineSeconds,
//! suspend, ttlSecondsAfterFinished, env (`value`, `secretKeyRef`, `configMapKeyRef`, `fieldRef`
//! `metadata.name` / `metadata.namespace`) and `envFrom`, Secret and ConfigMap volumes
//! ([`crate::volumes`]: local directories, waited for), and a capacity (`max_parallel_pods`)
//! beyond which pods stay Pending with `PodScheduled=False` reason `Unschedulable`.
//! Processes die with their pod, their Job and the runner: no orphans.
//!
//! # Layout
//! - this file: the runner's state and its loop (a pass over every Job and pod on each change);
//! - [`job_controller`]: the Job controller part (pods for Jobs, Job status, TTL);
//! - [`kubelet`]: the kubelet part (a pod as a local process, its status and output);

mod job_controller;
mod kubelet;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::process::{condition, kill_group, now};
use crate::store::{Part, Store};
use kubelet::Running;

/// Runner settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Pods running at once; more stay Pending (Unschedulable).
    pub max_parallel_pods: usize,
    /// Directories put in front of the runner's own `PATH` for pod processes (e.g. where the
    /// `jobtide` binary is).
    pub path_prepend: Vec<std::path::PathBuf>,
    /// Environment every pod process gets unless its container sets the variable.
    pub default_env: BTreeMap<String, String>,
    /// Where pods' Secret and ConfigMap volumes are written (`<dir>/<namespace>/<pod>/…`);
    /// `None`: a private directory under the system's temporary directory, removed at stop.
    pub volumes_dir: Option<std::path::PathBuf>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            max_parallel_pods: 8,
            path_prepend: Vec::new(),
            default_env: BTreeMap::new(),
            volumes_dir: None,
        }
    }
}

/// (namespace, name) of a pod.
type PodKey = (String, String);
/// A pod's output so far.
type LogBuffer = crate::process::LogBuffer;

/// The runner's state, shared with the API server for `pods/log`.
#[derive(Default)]
pub struct Runner {
    logs: Mutex<HashMap<PodKey, LogBuffer>>,
    running: Mutex<HashMap<(String, String), Running>>,
    images_seen: Mutex<HashSet<String>>,
    /// Where pod volumes go, and whether the runner made (and so removes) that directory.
    volumes_root: std::sync::OnceLock<(std::path::PathBuf, bool)>,
    /// Pods whose volumes were written.
    pod_dirs: Mutex<HashSet<PodKey>>,
    /// Pods whose process was started, as long as the pod exists: a pod runs once. A sync
    /// works from a listing that may be older than a pod's process, which may have started,
    /// finished and left `running` since; that listing still shows the pod Pending.
    started: Mutex<HashSet<PodKey>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl Runner {
    /// The output of a pod's process so far.
    pub fn logs(&self, namespace: &str, pod: &str) -> Option<Vec<u8>> {
        let logs = self.logs.lock().ok()?;
        let buffer = logs.get(&(namespace.to_owned(), pod.to_owned()))?;
        buffer.lock().ok().map(|b| b.clone())
    }

    /// Stops every process (also done on drop of the processes' handles) and removes the pods'
    /// volumes.
    pub fn stop_all(&self) {
        if let Ok(mut running) = self.running.lock() {
            for (_, process) in running.drain() {
                kill_group(&process.group);
                let _ = process.kill.send(());
            }
        }
        if let Some((root, owned)) = self.volumes_root.get() {
            if *owned {
                let _ = std::fs::remove_dir_all(root);
            } else if let Ok(mut dirs) = self.pod_dirs.lock() {
                for (namespace, pod) in dirs.drain() {
                    let _ = std::fs::remove_dir_all(root.join(namespace).join(pod));
                }
            }
        }
    }

    fn volumes_root(&self, config: &RunnerConfig) -> &std::path::Path {
        let (root, _) = self.volumes_root.get_or_init(|| match &config.volumes_dir {
            Some(dir) => (dir.clone(), false),
            None => {
                let unique = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let dir = std::env::temp_dir()
                    .join(format!("jobtide-runner-{}-{unique}", std::process::id()));
                (dir, true)
            }
        });
        root
    }

    /// Runs the controller loop until the store's change channel closes.
    pub async fn run(self: Arc<Self>, store: Arc<Store>, config: RunnerConfig) {
        let Ok((_, mut changes)) = store.watch_from(store.resource_version(), |_| false) else {
            return;
        };
        let mut ticks = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                next = changes.recv() => match next {
                    // Secrets and ConfigMaps: a pod may be waiting for its volume.
                    Ok(change) if matches!(change.resource.1.as_str(), "jobs" | "pods" | "secrets" | "configmaps") => {}
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
            }
            self.sync(&store, &config);
        }
    }

    /// One pass over every Job and pod.
    fn sync(self: &Arc<Self>, store: &Arc<Store>, config: &RunnerConfig) {
        let (Some(job_type), Some(pod_type)) = (
            store.resource("batch", "v1", "jobs"),
            store.resource("", "v1", "pods"),
        ) else {
            return;
        };
        let (jobs, _) = store.list(&job_type, None, |_| true);
        let (pods, _) = store.list(&pod_type, None, |_| true);
        // Processes whose pod is gone are killed.
        let live: HashSet<(String, String)> = pods
            .iter()
            .map(|p| {
                (
                    str_at(p, "/metadata/namespace").to_owned(),
                    str_at(p, "/metadata/name").to_owned(),
                )
            })
            .collect();
        if let (Some((root, _)), Ok(mut dirs)) = (self.volumes_root.get(), self.pod_dirs.lock()) {
            dirs.retain(|key| {
                let keep = live.contains(key);
                if !keep {
                    let _ = std::fs::remove_dir_all(root.join(&key.0).join(&key.1));
                }
                keep
            });
        }
        if let Ok(mut started) = self.started.lock() {
            started.retain(|key| live.contains(key));
        }
        if let Ok(mut running) = self.running.lock() {
            running.retain(|key, process| {
                let keep = live.contains(key);
                if !keep {
                    let (tx, _) = tokio::sync::oneshot::channel();
                    let _ = std::mem::replace(&mut process.kill, tx).send(());
                }
                keep
            });
        }
        let mut by_job: HashMap<String, Vec<&Value>> = HashMap::new();
        for pod in &pods {
            for owner in pod
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if owner["kind"] == "Job" {
                    by_job
                        .entry(owner["uid"].as_str().unwrap_or_default().to_owned())
                        .or_default()
                        .push(pod);
                }
            }
        }
        let started = self.started.lock().map(|s| s.clone()).unwrap_or_default();
        let pod_key = |p: &Value| {
            (
                str_at(p, "/metadata/namespace").to_owned(),
                str_at(p, "/metadata/name").to_owned(),
            )
        };
        // Running, or started and about to say so.
        let mut running_pods = pods
            .iter()
            .filter(|p| str_at(p, "/status/phase") == "Running" || started.contains(&pod_key(p)))
            .filter(|p| !matches!(str_at(p, "/status/phase"), "Succeeded" | "Failed"))
            .count();
        for job in &jobs {
            let job_pods = by_job
                .get(str_at(job, "/metadata/uid"))
                .cloned()
                .unwrap_or_default();
            Self::sync_job(store, job, &job_pods);
        }
        // Schedule pending pods within capacity, oldest first.
        let (pods, _) = store.list(&pod_type, None, |p| {
            str_at(p, "/status/phase") == "Pending" || p.pointer("/status/phase").is_none()
        });
        for pod in pods {
            let namespace = str_at(&pod, "/metadata/namespace").to_owned();
            let name = str_at(&pod, "/metadata/name").to_owned();
            if pod.pointer("/metadata/deletionTimestamp").is_some()
                || started.contains(&(namespace.clone(), name.clone()))
            {
                continue;
            }
            if running_pods >= config.max_parallel_pods {
                let unschedulable = pod
                    .pointer("/status/conditions/0/reason")
                    .and_then(Value::as_str)
                    == Some("Unschedulable");
                if !unschedulable {
                    let _ = store.modify(&pod_type, &namespace, &name, Part::Status, |old| {
                        let mut new = old.clone();
                        new["status"] = json!({"phase": "Pending", "conditions": [condition("PodScheduled", "False", "Unschedulable",
                            &format!("0/1 nodes are available: the local runner runs at most {} pods at once.", config.max_parallel_pods))]});
                        Ok(new)
                    });
                }
                continue;
            }
            running_pods += 1;
            self.start_pod(store, &pod, config);
        }
    }
}
