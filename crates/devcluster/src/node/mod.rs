//! The node agent: jobtide's kubelet, speaking only the Kubernetes API (a [`kube::Client`]), so
//! the same code serves the embedded server and a real kube-apiserver. It
//! - registers a Node (name configurable; capacity and allocatable cpu, memory, pods; a Ready
//!   condition) and keeps it Ready as a kubelet does (`register`): the node's Lease in
//!   `kube-node-lease` renewed every heartbeat, the node status' `lastHeartbeatTime` every
//!   minute — the real node-lifecycle controller marks a node whose Lease and status both go
//!   stale for its grace period (50 s) `Unknown` and taints it;
//! - watches the pods bound to it (`spec.nodeName`) and runs each pod's first container's
//!   `command` + `args` as a local process ([`crate::process`], the runner's code), with its env
//!   (`value`, `secretKeyRef`, `configMapKeyRef`, `fieldRef`, `envFrom`) and its Secret and
//!   ConfigMap volumes as local directories ([`crate::volumes`], the same path checks), and
//!   reports its status through `pods/status` (`pods`);
//! - kills a pod's processes when the pod is deleted (and, on a real server where deletion is
//!   graceful, then deletes it for good as a kubelet does), removing its output and volume
//!   directory with it.
//!
//! # Logs
//! A pod's output is kept by the agent ([`NodeAgent::logs`]) while the pod exists, its newest
//! 10 MiB ([`PodOutput`]: a kubelet rotates a container's log at 10 MiB). A real
//! apiserver fetches `pods/log` from the kubelet's own HTTPS endpoint (port 10250, with its
//! client certificates); the agent doesn't serve one, so `kubectl logs` against a real
//! apiserver fails for its pods — the agent's record is where tests read them.

mod output;
mod pods;
mod register;
mod resources;

pub use output::PodOutput;
pub use resources::{Resources, bytes, cpu_millis};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicI32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::process::{LogBuffer, kill_group};

/// Node agent settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Node's name.
    pub name: String,
    /// What it offers the scheduler.
    pub resources: Resources,
    /// Directories put in front of the agent's own `PATH` for pod processes.
    pub path_prepend: Vec<PathBuf>,
    /// Environment every pod process gets unless its container sets the variable.
    pub default_env: BTreeMap<String, String>,
    /// Where pods' volumes go (`<dir>/<namespace>/<pod>/<volume>/`); removed with each pod.
    pub volumes_dir: PathBuf,
    /// How often the Lease is renewed (a kubelet: 10 s).
    pub heartbeat: Duration,
}

impl NodeConfig {
    /// A node named `name` with default resources, volumes under `volumes_dir`.
    pub fn new(name: impl Into<String>, volumes_dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            resources: Resources::default(),
            path_prepend: Vec::new(),
            default_env: BTreeMap::new(),
            volumes_dir: volumes_dir.into(),
            heartbeat: Duration::from_secs(10),
        }
    }
}

/// (namespace, name) of a pod.
type PodKey = (String, String);

/// Everything the agent holds for one pod it was given, in one place: dropped with the pod.
struct PodState {
    /// The pod's uid (a pod deleted and recreated under its name is another pod).
    uid: String,
    /// Its output so far.
    log: LogBuffer,
    /// Ends its process (taken when sent).
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    /// Its process group (0 when none runs).
    group: Arc<AtomicI32>,
    /// Its volume directory, when it has volumes.
    dir: Option<PathBuf>,
}

impl PodState {
    /// Kills its processes and removes its directory.
    fn tear_down(&mut self) {
        kill_group(&self.group);
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The shared state of a running agent.
struct Agent {
    client: kube::Client,
    config: NodeConfig,
    pods: Mutex<HashMap<PodKey, PodState>>,
    /// Passes over the pod list (a test's proof that the agent looked).
    passes: std::sync::atomic::AtomicU64,
    /// Images already said to be ignored (once each).
    images_seen: Mutex<std::collections::HashSet<String>>,
}

impl Agent {
    fn pods(&self) -> std::sync::MutexGuard<'_, HashMap<PodKey, PodState>> {
        self.pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running node agent; dropping it stops it, killing its pods' processes.
pub struct NodeAgent {
    agent: Arc<Agent>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for NodeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgent")
            .field("node", &self.agent.config.name)
            .finish_non_exhaustive()
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Registering the Node (or its Lease) failed.
    #[error("registering node {node}: {source}")]
    Register {
        /// The node's name.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl NodeAgent {
    /// Registers the node and starts heartbeats and the pod loop.
    pub async fn start(client: kube::Client, config: NodeConfig) -> Result<Self, StartError> {
        let agent = Arc::new(Agent {
            client,
            config,
            pods: Mutex::new(HashMap::new()),
            passes: std::sync::atomic::AtomicU64::new(0),
            images_seen: Mutex::default(),
        });
        let node_uid = register::register(&agent)
            .await
            .map_err(|source| StartError::Register {
                node: agent.config.name.clone(),
                source,
            })?;
        let tasks = vec![
            tokio::spawn(register::heartbeats(Arc::clone(&agent), node_uid)),
            tokio::spawn(pods::run(Arc::clone(&agent))),
        ];
        Ok(Self { agent, tasks })
    }

    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.agent.config.name
    }

    /// The output of a pod's process so far (while the pod exists): its newest
    /// [`PodOutput::LIMIT`] bytes.
    pub fn logs(&self, namespace: &str, pod: &str) -> Option<Vec<u8>> {
        self.output(namespace, pod)
            .map(|output| output.bytes().to_vec())
    }

    /// A copy of what the agent keeps of a pod's output (while the pod exists), with the count
    /// of bytes dropped before it (for a follower that knows how much it has read).
    pub fn output(&self, namespace: &str, pod: &str) -> Option<PodOutput> {
        let pods = self.agent.pods();
        let state = pods.get(&(namespace.to_owned(), pod.to_owned()))?;
        state.log.lock().ok().map(|log| log.clone())
    }

    /// How many pods the agent holds state for (running, finished, waiting).
    pub fn pods_held(&self) -> usize {
        self.agent.pods().len()
    }

    /// Passes the agent made over its pods so far.
    pub fn passes(&self) -> u64 {
        self.agent.passes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for (_, mut state) in self.agent.pods().drain() {
            state.tear_down();
        }
    }
}
