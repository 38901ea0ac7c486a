//! The local job runner of the embedded server: the Job controller and scheduler of one
//! machine, with a [`NodeAgent`] as its kubelet. It creates a Job's pod
//! (`<job>-<5 chars>`, with the labels and ownerReference the real Job controller sets), binds
//! pods to the agent's node within its resources, and keeps Job status as Kubernetes does; the
//! agent — the same code that serves a real apiserver, speaking to this one over HTTP — runs the
//! pod's first container's `command` + `args` as a local process (the image is ignored) and
//! reports pod status; the server serves the agent's record of the output as `pods/log`.
//!
//! # Scope
//! completions / parallelism 1 (more is refused on the Job's status with a clear condition),
//! backoffLimit (a failed pod → a new pod), restartPolicy Never / OnFailure, activeDeadlineSeconds,
//! suspend, ttlSecondsAfterFinished; the agent's env, Secret and ConfigMap volumes; and a node
//! of `max_parallel_pods` pods (and [`Resources::default`]'s cpu and memory) beyond which pods stay
//! Pending with `PodScheduled=False` reason `Unschedulable`.
//! Processes die with their pod, their Job and the runner: no orphans.
//!
//! # Layout
//! - this file: the runner's loop (a pass over every Job and pod on each change);
//! - `job_controller`: the Job controller part (pods for Jobs, Job status, TTL);
//! - `scheduler`: binding pods to nodes, first fit by requests against allocatable.

mod job_controller;
mod scheduler;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::node::{NodeAgent, NodeConfig, Resources};
use crate::process::{condition, now};
use crate::store::Store;

/// The name of the runner's node.
pub const NODE_NAME: &str = "jobtide-dev";

/// Runner settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Pods running at once (the node's `pods`); more stay Pending (Unschedulable).
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

/// The runner's state, shared with the API server for `pods/log`.
#[derive(Default)]
pub struct Runner {
    /// The kubelets: the runner's own node's, set once the server listens, then those of nodes
    /// added later ([`Runner::start_node`], the simulated node pool's).
    agents: Mutex<Vec<NodeAgent>>,
    /// What a node added later is started with: the API client and the runner's node settings.
    node_template: Mutex<Option<(kube::Client, NodeConfig)>>,
    /// A volume directory the runner made (and so removes).
    owned_volumes: Mutex<Option<std::path::PathBuf>>,
}

/// Why [`Runner::start_node`] started no node.
#[derive(Debug, thiserror::Error)]
pub enum StartNodeError {
    /// The runner's own node agent has not started (no API server to speak to yet).
    #[error("the runner's own node has not started")]
    NotStarted,
    /// The node agent failed to register.
    #[error(transparent)]
    Agent(#[from] crate::node::StartError),
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
    /// Starts the runner's node agent against the server at `client`.
    pub async fn start_agent(
        &self,
        client: kube::Client,
        config: &RunnerConfig,
    ) -> Result<(), crate::node::StartError> {
        let volumes_dir = match &config.volumes_dir {
            Some(dir) => dir.clone(),
            None => {
                let unique = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let dir = std::env::temp_dir()
                    .join(format!("jobtide-runner-{}-{unique}", std::process::id()));
                if let Ok(mut owned) = self.owned_volumes.lock() {
                    *owned = Some(dir.clone());
                }
                dir
            }
        };
        let mut node = NodeConfig::new(NODE_NAME, volumes_dir);
        node.resources = Resources {
            pods: u64::try_from(config.max_parallel_pods).unwrap_or(u64::MAX),
            ..Resources::default()
        };
        node.path_prepend.clone_from(&config.path_prepend);
        node.default_env.clone_from(&config.default_env);
        if let Ok(mut template) = self.node_template.lock() {
            *template = Some((client.clone(), node.clone()));
        }
        let agent = NodeAgent::start(client, node).await?;
        if let Ok(mut agents) = self.agents.lock() {
            agents.push(agent);
        }
        Ok(())
    }

    /// Starts another node, `name` offering `resources`, its pods run like the runner's own
    /// (same `PATH`, environment and volume directory): how the simulated node pool grows.
    pub async fn start_node(&self, name: &str, resources: Resources) -> Result<(), StartNodeError> {
        let (client, mut node) = self
            .node_template
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .ok_or(StartNodeError::NotStarted)?;
        name.clone_into(&mut node.name);
        node.resources = resources;
        let agent = NodeAgent::start(client, node).await?;
        if let Ok(mut agents) = self.agents.lock() {
            agents.push(agent);
        }
        Ok(())
    }

    /// Stops the agent of node `name` (its pods' processes are killed); the Node object stays
    /// for the caller to delete. Whether such a node ran.
    pub fn stop_node(&self, name: &str) -> bool {
        let Ok(mut agents) = self.agents.lock() else {
            return false;
        };
        let before = agents.len();
        agents.retain(|agent| agent.node_name() != name);
        agents.len() < before
    }

    /// The output of a pod's process so far (the newest part the agent keeps).
    pub fn logs(&self, namespace: &str, pod: &str) -> Option<Vec<u8>> {
        self.agents
            .lock()
            .ok()?
            .iter()
            .find_map(|agent| agent.logs(namespace, pod))
    }

    /// What the node agent running `pod` keeps of its output, with the bytes dropped before it.
    pub fn output(&self, namespace: &str, pod: &str) -> Option<crate::node::PodOutput> {
        self.agents
            .lock()
            .ok()?
            .iter()
            .find_map(|agent| agent.output(namespace, pod))
    }

    /// Stops every node agent (killing every process, removing the pods' volumes) and removes the
    /// volume directory the runner made.
    pub fn stop_all(&self) {
        if let Ok(mut agents) = self.agents.lock() {
            agents.clear();
        }
        if let Some(dir) = self.owned_volumes.lock().ok().and_then(|mut d| d.take()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Runs the Job controller and scheduler until the store's change channel closes.
    pub async fn run(self: Arc<Self>, store: Arc<Store>) {
        let Ok((_, mut changes)) = store.watch_from(store.resource_version(), |_| false) else {
            return;
        };
        let mut ticks = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                next = changes.recv() => match next {
                    Ok(change) if matches!(change.resource.1.as_str(), "jobs" | "pods" | "nodes") => {}
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
            }
            sync(&store);
        }
    }
}

/// One pass over every Job and pod: Jobs get pods and status, pending pods get a node.
fn sync(store: &Store) {
    let (Some(job_type), Some(pod_type)) = (
        store.resource("batch", "v1", "jobs"),
        store.resource("", "v1", "pods"),
    ) else {
        return;
    };
    let (jobs, _) = store.list(&job_type, None, |_| true);
    let (pods, _) = store.list(&pod_type, None, |_| true);
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
    for job in &jobs {
        let job_pods = by_job
            .get(str_at(job, "/metadata/uid"))
            .cloned()
            .unwrap_or_default();
        job_controller::sync_job(store, job, &job_pods);
    }
    scheduler::schedule(store);
}
