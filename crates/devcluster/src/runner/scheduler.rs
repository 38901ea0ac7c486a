//! The embedded server's scheduler: binds each unbound pod (oldest first) to the first Ready
//! node whose allocatable cpu, memory and pods still fit the pod's requests (the sum over its
//! containers; what bound, unfinished pods request is taken), by setting `spec.nodeName` and
//! `PodScheduled=True`. A pod that fits nowhere stays Pending with `PodScheduled=False` reason
//! `Unschedulable` and the real scheduler's message shape (`0/1 nodes are available: 1 Too
//! many pods.`). Resources per node are the Node objects' `status.allocatable`, so the runner's
//! `max_parallel_pods` is its node's `pods`.

use serde_json::{Value, json};

use super::{condition, str_at};
use crate::node::Resources;
use crate::store::{Part, Store};

/// One node's name, what it offers and what is taken.
struct Fit {
    name: String,
    allocatable: Resources,
    used: Resources,
}

fn finished(pod: &Value) -> bool {
    matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed")
}

fn ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Binds what fits; marks the rest Unschedulable.
pub(super) fn schedule(store: &Store) {
    let (Some(node_type), Some(pod_type)) = (
        store.resource("", "v1", "nodes"),
        store.resource("", "v1", "pods"),
    ) else {
        return;
    };
    let (nodes, _) = store.list(&node_type, None, |_| true);
    let (pods, _) = store.list(&pod_type, None, |_| true);
    let mut fits: Vec<Fit> = nodes
        .iter()
        .filter(|n| ready(n) && n.pointer("/metadata/deletionTimestamp").is_none())
        .map(|n| {
            let name = str_at(n, "/metadata/name").to_owned();
            let used = pods
                .iter()
                .filter(|p| str_at(p, "/spec/nodeName") == name && !finished(p))
                .map(Resources::requested_by)
                .fold(Resources::ZERO, Resources::plus);
            Fit {
                allocatable: Resources::allocatable_of(n),
                used,
                name,
            }
        })
        .collect();
    let mut unbound: Vec<&Value> = pods
        .iter()
        .filter(|p| {
            str_at(p, "/spec/nodeName").is_empty()
                && p.pointer("/metadata/deletionTimestamp").is_none()
                && !finished(p)
        })
        .collect();
    unbound.sort_by_key(|p| {
        (
            str_at(p, "/metadata/creationTimestamp").to_owned(),
            str_at(p, "/metadata/name").to_owned(),
        )
    });
    for pod in unbound {
        let (namespace, name) = (
            str_at(pod, "/metadata/namespace"),
            str_at(pod, "/metadata/name"),
        );
        let wants = Resources::requested_by(pod);
        match fits
            .iter_mut()
            .find(|f| f.used.plus(wants).fits_in(&f.allocatable))
        {
            Some(fit) => {
                fit.used = fit.used.plus(wants);
                let node = fit.name.clone();
                let _ = store.modify(&pod_type, namespace, name, Part::Main, |old| {
                    let mut new = old.clone();
                    new["spec"]["nodeName"] = json!(node);
                    Ok(new)
                });
                let _ = store.modify(&pod_type, namespace, name, Part::Status, |old| {
                    let mut new = old.clone();
                    new["status"] = json!({"phase": "Pending",
                        "conditions": [condition("PodScheduled", "True", "", "")]});
                    Ok(new)
                });
            }
            None => {
                let message = unschedulable(&fits, wants);
                if str_at(pod, "/status/conditions/0/message") == message {
                    continue;
                }
                let _ = store.modify(&pod_type, namespace, name, Part::Status, |old| {
                    let mut new = old.clone();
                    new["status"] = json!({"phase": "Pending", "conditions": [
                        condition("PodScheduled", "False", "Unschedulable", &message)]});
                    Ok(new)
                });
            }
        }
    }
}

/// The real scheduler's message: `0/N nodes are available: 1 Insufficient cpu, 1 Too many
/// pods.` (reasons counted over the nodes, sorted).
fn unschedulable(fits: &[Fit], wants: Resources) -> String {
    let mut reasons: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for fit in fits {
        let total = fit.used.plus(wants);
        if total.cpu_millis > fit.allocatable.cpu_millis {
            *reasons.entry("Insufficient cpu").or_default() += 1;
        }
        if total.memory_bytes > fit.allocatable.memory_bytes {
            *reasons.entry("Insufficient memory").or_default() += 1;
        }
        if total.pods > fit.allocatable.pods {
            *reasons.entry("Too many pods").or_default() += 1;
        }
    }
    if fits.is_empty() {
        return "no nodes available to schedule pods".to_owned();
    }
    let reasons: Vec<String> = reasons
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    format!(
        "0/{} nodes are available: {}.",
        fits.len(),
        reasons.join(", ")
    )
}
