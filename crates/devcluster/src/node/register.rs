//! The Node and its heartbeats, as a kubelet keeps them: the Node registered with its
//! capacity, allocatable and a Ready condition; its Lease in `kube-node-lease` renewed every
//! heartbeat (what the node-lifecycle controller watches); the Ready condition's
//! `lastHeartbeatTime` refreshed every [`STATUS_EVERY`] heartbeats (a kubelet reports an
//! unchanged status at most every 5 minutes; the Lease is the liveness signal).

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::Agent;
use crate::process::now;

/// Heartbeats between two node status reports (with a 10 s heartbeat: a minute).
pub const STATUS_EVERY: u32 = 6;

/// How long the Lease says the node holds it: a kubelet's 40 s.
const LEASE_SECONDS: i32 = 40;

/// The namespace of node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

fn status(agent: &Agent) -> Value {
    let resources = agent.config.resources.quantities();
    let name = &agent.config.name;
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "jobtide node agent is posting ready status",
            "lastHeartbeatTime": now(), "lastTransitionTime": now(),
        }],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
            "osImage": "jobtide node agent (local processes)", "containerRuntimeVersion": "jobtide://local-process",
            "kubeletVersion": "v1.33.0-jobtide", "kubeProxyVersion": "",
            "operatingSystem": std::env::consts::OS,
            "architecture": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", other => other },
        },
    })
}

/// Registers the node (or takes over an existing Node of its name, as a restarted kubelet
/// does) and posts its status and Lease. Returns the Node's uid.
pub(super) async fn register(agent: &Agent) -> Result<String, kube::Error> {
    let nodes: Api<Node> = Api::all(agent.client.clone());
    let name = &agent.config.name;
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": std::env::consts::OS,
            "node.kubernetes.io/instance-type": "jobtide-node-agent"}},
        "spec": {},
    }))
    .map_err(kube::Error::SerdeError)?;
    let created = match nodes.create(&PostParams::default(), &node).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => nodes.get(name).await?,
        Err(error) => return Err(error),
    };
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status(agent)})),
        )
        .await?;
    let uid = created.metadata.uid.unwrap_or_default();
    renew_lease(agent, &uid).await?;
    Ok(uid)
}

/// Renews (or creates) the node's Lease.
async fn renew_lease(agent: &Agent, node_uid: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(agent.client.clone(), LEASE_NAMESPACE);
    let name = &agent.config.name;
    let renew = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now());
    let spec =
        json!({"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew});
    match leases
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}]},
                "spec": spec,
            }))
            .map_err(kube::Error::SerdeError)?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        Err(error) => Err(error),
    }
}

/// Renews the Lease every heartbeat and reports the node status every [`STATUS_EVERY`]; a
/// failed renewal is logged and retried at the next heartbeat, as a kubelet does.
pub(super) async fn heartbeats(agent: Arc<Agent>, node_uid: String) {
    let mut ticks = tokio::time::interval(agent.config.heartbeat);
    ticks.tick().await;
    let mut beats: u32 = 0;
    loop {
        ticks.tick().await;
        beats = beats.wrapping_add(1);
        if let Err(error) = renew_lease(&agent, &node_uid).await {
            tracing::warn!(node = %agent.config.name, %error, "renewing the node's Lease failed");
        }
        if beats.is_multiple_of(STATUS_EVERY) {
            let nodes: Api<Node> = Api::all(agent.client.clone());
            let heartbeat = json!({"status": {"conditions": status(&agent)["conditions"]}});
            if let Err(error) = nodes
                .patch_status(
                    &agent.config.name,
                    &PatchParams::default(),
                    &Patch::Merge(heartbeat),
                )
                .await
            {
                tracing::warn!(node = %agent.config.name, %error, "reporting the node's status failed");
            }
        }
    }
}
