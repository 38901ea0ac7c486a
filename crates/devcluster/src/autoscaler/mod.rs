//! A **simulated** node pool for `jobtide dev`: a stand-in for the Cluster Autoscaler with one
//! node group, so that "the cluster grows when resources run out" can be watched with kubectl
//! on one machine (`kubectl get nodes -w`, `kubectl get events`). No cloud, no real autoscaler:
//! nodes are more node agents of the local runner, their pods local processes like the runner's
//! own.
//!
//! Every round (`interval`) it reads, as a client of the API server like the real one, the pods
//! the scheduler marked `Unschedulable` and the Ready nodes, and lets the pure [`decide`] say
//! what to do. It then writes the Cluster Autoscaler's own events on the pods (`TriggeredScaleUp`,
//! `NotTriggerScaleUp`, with its message formats; each said once per pod until the verdict
//! changes, as the real one rate-limits them), adds nodes — each registered and Ready after the
//! pool's `delay`, named `<pool>-<n>` — and, when asked to, removes pool nodes left empty for
//! `scale-down-after` (event `ScaleDownEmpty`, which the real one writes on its status ConfigMap,
//! here on the Node).
//!
//! # Layout
//! - `pool`: the pool's shape, parsed from `--node-pool`;
//! - `decide`: the decision, pure;
//! - this file: the loop (reads, events, nodes).

mod decide;
mod pool;

pub use decide::{Cluster, PendingPod, Plan, ReadyNode, Verdict, decide};
pub use pool::{DEFAULT_NAME, MAX_NODES, NodePool, PoolSpecError};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::node::Resources;
use crate::runner::Runner;

/// How often the autoscaler looks (the real one: `--scan-interval`, 10 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// The component its events are from, as the real one's.
const COMPONENT: &str = "cluster-autoscaler";

/// What the loop shares with its handle and its node-adding tasks.
#[derive(Debug, Default)]
struct Shared {
    /// Rounds done (a test's proof that it looked).
    rounds: AtomicU64,
    /// Nodes decided and not registered yet.
    provisioning: AtomicU32,
    /// Nodes added (registered) so far.
    added: AtomicU64,
    /// Nodes removed so far.
    removed: AtomicU64,
}

/// A running simulated autoscaler; dropping it stops it (nodes it added keep running).
#[derive(Debug)]
pub struct Autoscaler {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Autoscaler {
    /// Starts the pool: `min` nodes at once, then a round every `interval`.
    pub fn start(
        client: kube::Client,
        runner: Arc<Runner>,
        pool: NodePool,
        interval: Duration,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(run(client, runner, pool, interval, Arc::clone(&shared)));
        Self { shared, task }
    }

    /// Rounds done so far.
    pub fn rounds(&self) -> u64 {
        self.shared.rounds.load(Ordering::SeqCst)
    }

    /// Nodes added (registered) so far.
    pub fn nodes_added(&self) -> u64 {
        self.shared.added.load(Ordering::SeqCst)
    }

    /// Nodes removed so far.
    pub fn nodes_removed(&self) -> u64 {
        self.shared.removed.load(Ordering::SeqCst)
    }
}

impl Drop for Autoscaler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ready(node: &Node) -> bool {
    node.metadata.deletion_timestamp.is_none()
        && node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn unschedulable(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_none()
        && pod.metadata.deletion_timestamp.is_none()
        && !finished(pod)
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
}

fn as_value<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// (namespace, name, uid) of a pending pod.
type PodKey = (String, String, String);

/// The loop's memory between rounds.
#[derive(Default)]
struct Memory {
    /// Since when each node has had no unfinished pod.
    idle_since: HashMap<String, Instant>,
    /// What was last said about each pending pod (by uid): reason and message.
    said: HashMap<String, (String, String)>,
    /// The next pool node's number.
    next: u32,
}

async fn run(
    client: kube::Client,
    runner: Arc<Runner>,
    pool: NodePool,
    interval: Duration,
    shared: Arc<Shared>,
) {
    let mut memory = Memory {
        next: 1,
        ..Memory::default()
    };
    for _ in 0..pool.min {
        add_node(&runner, &pool, &shared, &mut memory, Duration::ZERO);
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = round(&client, &runner, &pool, &shared, &mut memory).await {
            tracing::warn!(%error, "the simulated autoscaler's round failed; trying again");
        }
        shared.rounds.fetch_add(1, Ordering::SeqCst);
    }
}

/// Decides a node and starts it after the pool's delay.
fn add_node(
    runner: &Arc<Runner>,
    pool: &NodePool,
    shared: &Arc<Shared>,
    memory: &mut Memory,
    delay: Duration,
) {
    let name = format!("{}-{}", pool.name, memory.next);
    memory.next += 1;
    shared.provisioning.fetch_add(1, Ordering::SeqCst);
    let (runner, shared, shape) = (Arc::clone(runner), Arc::clone(shared), pool.shape);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        match runner.start_node(&name, shape).await {
            Ok(()) => {
                tracing::info!(node = %name, "the simulated node pool added a node");
                shared.added.fetch_add(1, Ordering::SeqCst);
            }
            Err(error) => {
                tracing::warn!(node = %name, %error, "the simulated node pool could not add a node");
            }
        }
        shared.provisioning.fetch_sub(1, Ordering::SeqCst);
    });
}

async fn round(
    client: &kube::Client,
    runner: &Arc<Runner>,
    pool: &NodePool,
    shared: &Arc<Shared>,
    memory: &mut Memory,
) -> Result<(), kube::Error> {
    // Read before listing: a node registering in between is counted twice (one round adds too
    // few, the next makes up), never missed (too many).
    let provisioning = shared.provisioning.load(Ordering::SeqCst);
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let now = Instant::now();
    let prefix = format!("{}-", pool.name);
    let mut cluster = Cluster {
        ready: Vec::new(),
        provisioning,
    };
    for node in nodes.iter().filter(|n| ready(n)) {
        let name = node.name_any();
        let bound: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                !finished(p) && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&name)
            })
            .collect();
        let used = bound
            .iter()
            .map(|p| Resources::requested_by(&as_value(*p)))
            .fold(Resources::ZERO, Resources::plus);
        let allocatable = Resources::allocatable_of(&as_value(node));
        let idle_for = if bound.is_empty() {
            Some(now - *memory.idle_since.entry(name.clone()).or_insert(now))
        } else {
            memory.idle_since.remove(&name);
            None
        };
        cluster.ready.push(ReadyNode {
            in_pool: name.starts_with(&prefix),
            free: Resources {
                cpu_millis: allocatable.cpu_millis.saturating_sub(used.cpu_millis),
                memory_bytes: allocatable.memory_bytes.saturating_sub(used.memory_bytes),
                pods: allocatable.pods.saturating_sub(used.pods),
            },
            name,
            idle_for,
        });
    }
    memory
        .idle_since
        .retain(|name, _| cluster.ready.iter().any(|n| &n.name == name));
    let mut pending: Vec<(&Pod, PendingPod<PodKey>)> = pods
        .iter()
        .filter(|p| unschedulable(p))
        .map(|p| {
            let key = (
                p.namespace().unwrap_or_default(),
                p.name_any(),
                p.uid().unwrap_or_default(),
            );
            let wants = Resources::requested_by(&as_value(p));
            (p, PendingPod { key, wants })
        })
        .collect();
    pending.sort_by(|(a, _), (b, _)| {
        (a.creation_timestamp().map(|t| t.0), a.name_any())
            .cmp(&(b.creation_timestamp().map(|t| t.0), b.name_any()))
    });
    let pending: Vec<PendingPod<PodKey>> = pending.into_iter().map(|(_, p)| p).collect();
    let plan = decide(pool, &cluster, &pending);

    memory
        .said
        .retain(|uid, _| pending.iter().any(|p| &p.key.2 == uid));
    for ((namespace, name, uid), verdict) in &plan.verdicts {
        let said = (verdict.reason().to_owned(), verdict.message().to_owned());
        if memory.said.get(uid) == Some(&said) {
            continue;
        }
        let involved = json!({"kind": "Pod", "apiVersion": "v1", "namespace": namespace,
            "name": name, "uid": uid});
        event(
            client, namespace, name, involved, "Normal", &said.0, &said.1,
        )
        .await?;
        memory.said.insert(uid.clone(), said);
    }
    for _ in 0..plan.add {
        add_node(runner, pool, shared, memory, pool.delay);
    }
    for name in &plan.remove {
        let message = format!("Scale-down: removing empty node {name:?}");
        let involved = json!({"kind": "Node", "apiVersion": "v1", "name": name, "uid": name});
        event(
            client,
            "default",
            name,
            involved,
            "Normal",
            "ScaleDownEmpty",
            &message,
        )
        .await?;
        runner.stop_node(name);
        match Api::<Node>::all(client.clone())
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
        memory.idle_since.remove(name);
        shared.removed.fetch_add(1, Ordering::SeqCst);
        tracing::info!(node = %name, "the simulated node pool removed an empty node");
    }
    Ok(())
}

/// Writes one event as the real autoscaler's recorder does (core/v1, source
/// `cluster-autoscaler`).
async fn event(
    client: &kube::Client,
    namespace: &str,
    about: &str,
    involved: Value,
    type_: &str,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let now = jiff::Timestamp::now().to_string();
    let event: Event = serde_json::from_value(json!({
        "metadata": {"generateName": format!("{about}."), "namespace": namespace},
        "involvedObject": involved,
        "reason": reason, "message": message, "type": type_,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<Event>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
}
