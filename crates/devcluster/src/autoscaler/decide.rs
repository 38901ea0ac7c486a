//! The simulated autoscaler's decision, pure (no I/O, no clock: idle times are passed in): given
//! the pool, the nodes there are and the pods the scheduler could not place, which pods trigger a
//! scale-up (and to what size), which cannot (and the Cluster Autoscaler's words for why), and
//! which empty pool nodes go.
//!
//! It follows the real Cluster Autoscaler's rules, simplified to one node group and to cpu,
//! memory and pods: a pod that fits the free room of a Ready node will be scheduled there (no
//! verdict); a pod that fits a node already on its way waits for it (no new verdict, as the real
//! one says nothing for pods that "will be scheduled on upcoming nodes"); otherwise a new node is
//! added while the group is below `max` (`TriggeredScaleUp`, one message for the whole round:
//! `pod triggered scale-up: [{<group> 1->3 (max: 5)}]`), else `NotTriggerScaleUp` with the reasons
//! counted over node groups (`pod didn't trigger scale-up: 1 max node group size reached`, or
//! `… 1 Insufficient cpu` when the pod is larger than a node of the pool's shape).

use std::time::Duration;

use super::pool::NodePool;
use crate::node::Resources;

/// A pod the scheduler marked `Unschedulable`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPod<K> {
    /// The caller's handle for the pod.
    pub key: K,
    /// What it asks for.
    pub wants: Resources,
}

/// A Ready node (the pool's or any other).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyNode {
    /// Its name.
    pub name: String,
    /// Allocatable minus what bound, unfinished pods request.
    pub free: Resources,
    /// Whether it belongs to the pool (only those are scaled down).
    pub in_pool: bool,
    /// How long it has had no unfinished pod (`None`: it has one now).
    pub idle_for: Option<Duration>,
}

/// What the pool looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Every Ready node.
    pub ready: Vec<ReadyNode>,
    /// Pool nodes decided but not registered yet.
    pub provisioning: u32,
}

impl Cluster {
    /// The group's size as the autoscaler counts it: registered pool nodes and those on their way.
    pub fn pool_size(&self) -> u32 {
        let registered = self.ready.iter().filter(|n| n.in_pool).count();
        u32::try_from(registered)
            .unwrap_or(u32::MAX)
            .saturating_add(self.provisioning)
    }
}

/// What the autoscaler says about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `TriggeredScaleUp` with this message.
    TriggeredScaleUp(String),
    /// `NotTriggerScaleUp` with this message.
    NotTriggerScaleUp(String),
}

impl Verdict {
    /// The event reason.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::TriggeredScaleUp(_) => "TriggeredScaleUp",
            Self::NotTriggerScaleUp(_) => "NotTriggerScaleUp",
        }
    }

    /// The event message.
    pub fn message(&self) -> &str {
        match self {
            Self::TriggeredScaleUp(m) | Self::NotTriggerScaleUp(m) => m,
        }
    }
}

/// One round's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<K> {
    /// Verdicts on pods (pods that fit a Ready or upcoming node get none).
    pub verdicts: Vec<(K, Verdict)>,
    /// New nodes to add now (each Ready after the pool's delay).
    pub add: u32,
    /// Empty pool nodes to remove now.
    pub remove: Vec<String>,
}

/// First fit of `wants` into `room`; takes the room and says where when it fits.
fn place(room: &mut [Resources], wants: Resources) -> Option<usize> {
    let (at, free) = room
        .iter_mut()
        .enumerate()
        .find(|(_, free)| wants.fits_in(free))?;
    free.cpu_millis -= wants.cpu_millis;
    free.memory_bytes -= wants.memory_bytes;
    free.pods -= wants.pods;
    Some(at)
}

/// Why a pod larger than a node of the pool's shape fits none: the scheduler's predicate
/// reasons, counted over the one node group.
fn too_large(shape: &Resources, wants: &Resources) -> String {
    let mut reasons = Vec::new();
    if wants.cpu_millis > shape.cpu_millis {
        reasons.push("1 Insufficient cpu");
    }
    if wants.memory_bytes > shape.memory_bytes {
        reasons.push("1 Insufficient memory");
    }
    if wants.pods > shape.pods {
        reasons.push("1 Too many pods");
    }
    format!("pod didn't trigger scale-up: {}", reasons.join(", "))
}

/// Decides one round.
pub fn decide<K: Clone>(pool: &NodePool, cluster: &Cluster, pending: &[PendingPod<K>]) -> Plan<K> {
    let size = cluster.pool_size();
    let mut ready_room: Vec<Resources> = cluster.ready.iter().map(|n| n.free).collect();
    // Room on nodes on their way: first those decided earlier, then this round's.
    let mut coming: Vec<Resources> = (0..cluster.provisioning).map(|_| pool.shape).collect();
    let earlier = coming.len();
    let mut added: u32 = 0;
    let mut triggered = Vec::new();
    let mut verdicts = Vec::new();
    for pod in pending {
        if place(&mut ready_room, pod.wants).is_some() {
            continue;
        }
        if let Some(at) = place(&mut coming, pod.wants) {
            if at >= earlier {
                triggered.push(pod.key.clone());
            }
            continue;
        }
        if !pod.wants.fits_in(&pool.shape) {
            verdicts.push((
                pod.key.clone(),
                Verdict::NotTriggerScaleUp(too_large(&pool.shape, &pod.wants)),
            ));
        } else if size.saturating_add(added) < pool.max {
            added += 1;
            coming.push(pool.shape);
            place(&mut coming, pod.wants);
            triggered.push(pod.key.clone());
        } else {
            verdicts.push((
                pod.key.clone(),
                Verdict::NotTriggerScaleUp(
                    "pod didn't trigger scale-up: 1 max node group size reached".to_owned(),
                ),
            ));
        }
    }
    let message = format!(
        "pod triggered scale-up: [{{{} {}->{} (max: {})}}]",
        pool.name,
        size,
        size.saturating_add(added),
        pool.max
    );
    verdicts.extend(
        triggered
            .into_iter()
            .map(|key| (key, Verdict::TriggeredScaleUp(message.clone()))),
    );
    // Above min, with nothing waiting for room: empty pool nodes idle long enough go (the real
    // autoscaler never removes a node pending pods could use).
    let mut remove = Vec::new();
    if let Some(after) = pool.scale_down_after
        && pending.is_empty()
        && cluster.provisioning == 0
    {
        let mut left = size;
        for node in &cluster.ready {
            if left <= pool.min {
                break;
            }
            if node.in_pool && node.idle_for.is_some_and(|idle| idle >= after) {
                remove.push(node.name.clone());
                left -= 1;
            }
        }
    }
    Plan {
        verdicts,
        add: added,
        remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> NodePool {
        NodePool {
            min: 0,
            max: 3,
            shape: Resources {
                cpu_millis: 2_000,
                memory_bytes: 4 << 30,
                pods: 4,
            },
            scale_down_after: Some(Duration::from_mins(1)),
            ..NodePool::default()
        }
    }

    fn pod(key: u32, cpu_millis: u64) -> PendingPod<u32> {
        PendingPod {
            key,
            wants: Resources {
                cpu_millis,
                memory_bytes: 0,
                pods: 1,
            },
        }
    }

    fn node(name: &str, free_cpu: u64, in_pool: bool, idle_secs: Option<u64>) -> ReadyNode {
        ReadyNode {
            name: name.to_owned(),
            free: Resources {
                cpu_millis: free_cpu,
                memory_bytes: 4 << 30,
                pods: 4,
            },
            in_pool,
            idle_for: idle_secs.map(Duration::from_secs),
        }
    }

    #[test]
    fn pods_that_fit_no_node_trigger_one_scale_up_sized_for_all_of_them() {
        let cluster = Cluster {
            ready: vec![node("dev", 0, false, None)],
            provisioning: 0,
        };
        let pending: Vec<_> = (0..3).map(|k| pod(k, 1_000)).collect();
        let plan = decide(&pool(), &cluster, &pending);
        assert_eq!(plan.add, 2, "two 2-cpu nodes hold three 1-cpu pods");
        let message = "pod triggered scale-up: [{jobtide-pool 0->2 (max: 3)}]";
        assert_eq!(
            plan.verdicts,
            (0..3)
                .map(|k| (k, Verdict::TriggeredScaleUp(message.to_owned())))
                .collect::<Vec<_>>()
        );
        assert!(plan.remove.is_empty());
    }

    #[test]
    fn pods_that_fit_free_room_or_a_node_on_its_way_get_no_verdict_and_no_new_node() {
        let cluster = Cluster {
            ready: vec![node("dev", 1_000, false, None)],
            provisioning: 1,
        };
        let pending: Vec<_> = (0..3).map(|k| pod(k, 1_000)).collect();
        let plan = decide(&pool(), &cluster, &pending);
        assert_eq!(plan.add, 0);
        assert!(plan.verdicts.is_empty(), "{:?}", plan.verdicts);
    }

    #[test]
    fn a_pool_at_max_says_max_node_group_size_reached() {
        let cluster = Cluster {
            ready: vec![node("jobtide-pool-1", 0, true, None)],
            provisioning: 1,
        };
        let pending: Vec<_> = (0..4).map(|k| pod(k, 1_000)).collect();
        let plan = decide(&pool(), &cluster, &pending);
        assert_eq!(plan.add, 1, "one node left below max");
        let triggered = "pod triggered scale-up: [{jobtide-pool 2->3 (max: 3)}]";
        let refused = "pod didn't trigger scale-up: 1 max node group size reached";
        // Two pods go on the provisioning node, two on the new one; none is left.
        assert_eq!(
            plan.verdicts,
            vec![
                (2, Verdict::TriggeredScaleUp(triggered.to_owned())),
                (3, Verdict::TriggeredScaleUp(triggered.to_owned())),
            ]
        );
        let more: Vec<_> = (0..7).map(|k| pod(k, 1_000)).collect();
        let plan = decide(&pool(), &cluster, &more);
        assert_eq!(plan.add, 1);
        assert_eq!(
            plan.verdicts
                .iter()
                .filter(|(_, v)| v.message() == refused)
                .map(|(k, _)| *k)
                .collect::<Vec<_>>(),
            vec![4, 5, 6],
            "the two nodes on their way hold four 1-cpu pods; the pool is then at max"
        );
    }

    #[test]
    fn a_pod_larger_than_the_pools_shape_never_triggers_a_scale_up() {
        let cluster = Cluster {
            ready: vec![],
            provisioning: 0,
        };
        let mut big = pod(7, 3_000);
        big.wants.memory_bytes = 5 << 30;
        let plan = decide(&pool(), &cluster, &[big]);
        assert_eq!(plan.add, 0);
        assert_eq!(
            plan.verdicts,
            vec![(
                7,
                Verdict::NotTriggerScaleUp(
                    "pod didn't trigger scale-up: 1 Insufficient cpu, 1 Insufficient memory"
                        .to_owned()
                )
            )]
        );
    }

    #[test]
    fn empty_pool_nodes_go_after_the_idle_time_down_to_min_and_never_while_pods_wait() {
        let mut pool = pool();
        pool.min = 1;
        let cluster = Cluster {
            ready: vec![
                node("dev", 8_000, false, Some(600)),
                node("jobtide-pool-1", 2_000, true, Some(61)),
                node("jobtide-pool-2", 2_000, true, Some(59)),
                node("jobtide-pool-3", 2_000, true, Some(120)),
            ],
            provisioning: 0,
        };
        let plan = decide::<u32>(&pool, &cluster, &[]);
        assert_eq!(plan.remove, vec!["jobtide-pool-1", "jobtide-pool-3"]);
        pool.min = 2;
        assert_eq!(
            decide::<u32>(&pool, &cluster, &[]).remove,
            vec!["jobtide-pool-1"]
        );
        pool.scale_down_after = None;
        assert!(decide::<u32>(&pool, &cluster, &[]).remove.is_empty());
        pool.scale_down_after = Some(Duration::from_mins(1));
        let waiting = decide(&pool, &cluster, &[pod(1, 9_000)]);
        assert!(waiting.remove.is_empty(), "a pod waits");
    }
}
