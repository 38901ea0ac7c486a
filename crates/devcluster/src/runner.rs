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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::store::{Part, Store};

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
type LogBuffer = Arc<Mutex<Vec<u8>>>;

/// A running pod's process.
struct Running {
    kill: tokio::sync::oneshot::Sender<()>,
    /// The process group of the pod's process (0 until it started): the whole group goes when
    /// the pod does, as a container's processes go with it.
    group: Arc<std::sync::atomic::AtomicI32>,
}

/// Kills every process of a pod's process group.
fn kill_group(group: &std::sync::atomic::AtomicI32) {
    let id = group.swap(0, std::sync::atomic::Ordering::SeqCst);
    if let Some(pid) = rustix::process::Pid::from_raw(id) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

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

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
        "lastProbeTime": now(), "lastTransitionTime": now()})
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

    fn sync_job(store: &Arc<Store>, job: &Value, pods: &[&Value]) {
        let Some(job_type) = store.resource("batch", "v1", "jobs") else {
            return;
        };
        let namespace = str_at(job, "/metadata/namespace").to_owned();
        let name = str_at(job, "/metadata/name").to_owned();
        let finished = job
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True");
        if finished {
            Self::expire(store, job);
            return;
        }
        if job.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let spec = &job["spec"];
        let more_than_one = spec["completions"].as_i64().unwrap_or(1) > 1
            || spec["parallelism"].as_i64().unwrap_or(1) > 1;
        let succeeded = pods
            .iter()
            .filter(|p| str_at(p, "/status/phase") == "Succeeded")
            .count();
        let failed_pods = pods
            .iter()
            .filter(|p| str_at(p, "/status/phase") == "Failed")
            .count();
        let restarts: i64 = pods
            .iter()
            .flat_map(|p| {
                p.pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|s| s["restartCount"].as_i64())
            .fold(0, i64::saturating_add);
        let failures = i64::try_from(failed_pods)
            .unwrap_or(i64::MAX)
            .saturating_add(restarts);
        let active: Vec<&&Value> = pods
            .iter()
            .filter(|p| matches!(str_at(p, "/status/phase"), "" | "Pending" | "Running"))
            .collect();
        let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
        let suspended = spec["suspend"].as_bool() == Some(true);
        let started = job.pointer("/status/startTime").cloned();
        let deadline_exceeded = spec["activeDeadlineSeconds"]
            .as_i64()
            .zip(started.as_ref().and_then(Value::as_str))
            .is_some_and(|(limit, start)| {
                start
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|s| jiff::Timestamp::now().as_second() - s.as_second() >= limit)
            });
        let mut status = job
            .get("status")
            .filter(|s| s.is_object())
            .cloned()
            .unwrap_or_else(|| json!({}));
        let verdict: Option<(&str, &str, String)> = if more_than_one {
            Some((
                "Failed",
                "NotSupported",
                "the local runner runs Jobs with completions and parallelism 1 only".into(),
            ))
        } else if succeeded > 0 {
            Some(("Complete", "", String::new()))
        } else if failures > backoff_limit {
            Some((
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            ))
        } else if deadline_exceeded {
            Some((
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            ))
        } else {
            None
        };
        if let Some((outcome, reason, message)) = verdict {
            for pod in &active {
                let _ = store.delete(
                    &store
                        .resource("", "v1", "pods")
                        .unwrap_or_else(|| job_type.clone()),
                    &namespace,
                    str_at(pod, "/metadata/name"),
                    &crate::store::DeleteOptions::default(),
                );
            }
            let mut conditions = Vec::new();
            if outcome == "Complete" {
                conditions.push(condition(
                    "SuccessCriteriaMet",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ));
                conditions.push(condition(
                    "Complete",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ));
                status["completionTime"] = json!(now());
            } else {
                conditions.push(condition("FailureTarget", "True", reason, &message));
                conditions.push(condition("Failed", "True", reason, &message));
            }
            status["conditions"] = json!(conditions);
            status["active"] = json!(0);
            status["ready"] = json!(0);
            status["succeeded"] = json!(succeeded);
            status["failed"] = json!(failed_pods);
            let _ = store.modify(&job_type, &namespace, &name, Part::Status, |old| {
                let mut new = old.clone();
                new["status"] = status.clone();
                Ok(new)
            });
            return;
        }
        if suspended {
            return;
        }
        if active.is_empty() {
            Self::create_pod(store, job);
        }
        let ready = pods
            .iter()
            .filter(|p| str_at(p, "/status/phase") == "Running")
            .count();
        let mut next = status.clone();
        if next.get("startTime").is_none() {
            next["startTime"] = json!(now());
        }
        next["active"] = json!(active.len().max(1));
        next["ready"] = json!(ready);
        next["failed"] = json!(failed_pods);
        next["succeeded"] = json!(succeeded);
        next["terminating"] = json!(0);
        if next != status {
            let _ = store.modify(&job_type, &namespace, &name, Part::Status, |old| {
                let mut new = old.clone();
                new["status"] = next.clone();
                Ok(new)
            });
        }
    }

    /// ttlSecondsAfterFinished: deletes a finished Job (and, by garbage collection, its pods).
    fn expire(store: &Store, job: &Value) {
        let Some(ttl) = job
            .pointer("/spec/ttlSecondsAfterFinished")
            .and_then(Value::as_i64)
        else {
            return;
        };
        let finished_at = job
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c["type"] == "Complete" || c["type"] == "Failed")
            .find_map(|c| c["lastTransitionTime"].as_str())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if finished_at.is_some_and(|t| jiff::Timestamp::now().as_second() - t.as_second() >= ttl)
            && let Some(job_type) = store.resource("batch", "v1", "jobs")
        {
            let _ = store.delete(
                &job_type,
                str_at(job, "/metadata/namespace"),
                str_at(job, "/metadata/name"),
                &crate::store::DeleteOptions::default(),
            );
        }
    }

    fn create_pod(store: &Store, job: &Value) {
        let Some(pod_type) = store.resource("", "v1", "pods") else {
            return;
        };
        let template = &job["spec"]["template"];
        let job_name = str_at(job, "/metadata/name");
        // The server refuses labels that aren't a map (`decode`); an object written straight
        // to the store still gets a pod, not a panic.
        let mut labels = template
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        labels.insert("batch.kubernetes.io/job-name".into(), json!(job_name));
        labels.insert("job-name".into(), json!(job_name));
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": format!("{job_name}-"),
                "labels": labels,
                "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                    "uid": str_at(job, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": template["spec"].clone(),
            "status": {"phase": "Pending"},
        });
        let _ = store.create(&pod_type, str_at(job, "/metadata/namespace"), pod);
    }

    /// Resolves the container's env as the kubelet does (for what jobtide's Jobs use).
    fn env(store: &Store, pod: &Value, container: &Value) -> BTreeMap<String, String> {
        let namespace = str_at(pod, "/metadata/namespace");
        let data = |plural: &str, name: &str| -> BTreeMap<String, String> {
            let Some(resource) = store.resource("", "v1", plural) else {
                return BTreeMap::new();
            };
            let Ok(object) = store.get(&resource, namespace, name) else {
                return BTreeMap::new();
            };
            let mut out = BTreeMap::new();
            for (key, value) in object["data"].as_object().into_iter().flatten() {
                let text = value.as_str().unwrap_or_default();
                let decoded = if plural == "secrets" {
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
                        .ok()
                        .map_or_else(String::new, |b| String::from_utf8_lossy(&b).into_owned())
                } else {
                    text.to_owned()
                };
                out.insert(key.clone(), decoded);
            }
            for (key, value) in object["stringData"].as_object().into_iter().flatten() {
                out.insert(key.clone(), value.as_str().unwrap_or_default().to_owned());
            }
            out
        };
        let mut env = BTreeMap::new();
        for source in container["envFrom"].as_array().into_iter().flatten() {
            let prefix = source["prefix"].as_str().unwrap_or_default();
            let values = if let Some(name) =
                source.pointer("/configMapRef/name").and_then(Value::as_str)
            {
                data("configmaps", name)
            } else if let Some(name) = source.pointer("/secretRef/name").and_then(Value::as_str) {
                data("secrets", name)
            } else {
                BTreeMap::new()
            };
            for (key, value) in values {
                env.insert(format!("{prefix}{key}"), value);
            }
        }
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap_or_default().to_owned();
            let value = if let Some(value) = var["value"].as_str() {
                Some(value.to_owned())
            } else if let Some(selector) = var.pointer("/valueFrom/secretKeyRef") {
                data("secrets", selector["name"].as_str().unwrap_or_default())
                    .remove(selector["key"].as_str().unwrap_or_default())
            } else if let Some(selector) = var.pointer("/valueFrom/configMapKeyRef") {
                data("configmaps", selector["name"].as_str().unwrap_or_default())
                    .remove(selector["key"].as_str().unwrap_or_default())
            } else {
                match var
                    .pointer("/valueFrom/fieldRef/fieldPath")
                    .and_then(Value::as_str)
                {
                    Some("metadata.name") => Some(str_at(pod, "/metadata/name").to_owned()),
                    Some("metadata.namespace") => Some(namespace.to_owned()),
                    _ => None,
                }
            };
            if let Some(value) = value {
                env.insert(name, value);
            }
        }
        env
    }

    fn start_pod(self: &Arc<Self>, store: &Arc<Store>, pod: &Value, config: &RunnerConfig) {
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
        env.extend(Self::env(store, pod, &container));
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
