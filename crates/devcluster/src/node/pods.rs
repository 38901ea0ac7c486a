//! The agent's pod loop: the pods bound to its node (a watch with `spec.nodeName`), each run
//! once as a local process ([`crate::process`]); a pod that goes (or gets a deletionTimestamp)
//! has its processes killed, its output and volume directory removed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::{Value, json};

use super::{Agent, PodKey, PodState};
use crate::process::{Container, condition, now, terminated};

/// How often the agent looks at its pods without a change (a pod may wait for a Secret).
const RESYNC: Duration = Duration::from_secs(1);

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Watches the node's pods and acts on every change (and every [`RESYNC`]).
pub(super) async fn run(agent: Arc<Agent>) {
    let pods: Api<Pod> = Api::all(agent.client.clone());
    let selector = format!("spec.nodeName={}", agent.config.name);
    let (reader, writer) = reflector::store();
    let mut changes = Box::pin(
        reflector(
            writer,
            watcher(pods, watcher::Config::default().fields(&selector)),
        )
        .default_backoff(),
    );
    let mut ticks = tokio::time::interval(RESYNC);
    // The store holds the whole list once the first listing is done.
    let mut listed = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if !listed {
                    continue;
                }
                // A full look: pods waiting for a Secret, deletions a restarted watch missed.
                let all: Vec<Value> = reader
                    .state()
                    .iter()
                    .filter_map(|pod| serde_json::to_value(pod.as_ref()).ok())
                    .collect();
                pass(&agent, &all).await;
            }
            next = changes.next() => match next {
                Some(Ok(watcher::Event::InitDone)) => listed = true,
                Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    if let Ok(pod) = serde_json::to_value(&pod) {
                        act(&agent, &pod).await;
                    }
                }
                Some(Ok(watcher::Event::Delete(pod))) => {
                    if let Ok(pod) = serde_json::to_value(&pod) {
                        forget(&agent, &pod);
                    }
                }
                Some(Ok(watcher::Event::Init)) => {}
                Some(Err(error)) => {
                    tracing::warn!(node = %agent.config.name, %error, "watching the node's pods failed; retrying");
                    continue;
                }
                None => return,
            },
        }
        agent.passes.fetch_add(1, Ordering::SeqCst);
    }
}

fn key_of(pod: &Value) -> PodKey {
    (
        str_at(pod, "/metadata/namespace").to_owned(),
        str_at(pod, "/metadata/name").to_owned(),
    )
}

/// A deleted pod's processes, output and directory go.
fn forget(agent: &Agent, pod: &Value) {
    let mut pods = agent.pods();
    let key = key_of(pod);
    if pods
        .get(&key)
        .is_some_and(|state| state.uid == str_at(pod, "/metadata/uid"))
        && let Some(mut state) = pods.remove(&key)
    {
        state.tear_down();
    }
}

/// Acts on one pod: a pod being deleted is killed and deleted for good, a new one started.
async fn act(agent: &Arc<Agent>, pod: &Value) {
    let key = key_of(pod);
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        forget(agent, pod);
        // A real server deletes gracefully: the kubelet kills, then deletes for good.
        let api: Api<Pod> = Api::namespaced(agent.client.clone(), &key.0);
        let _ = api
            .delete(&key.1, &DeleteParams::default().grace_period(0))
            .await;
        return;
    }
    if agent.pods().contains_key(&key)
        || matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed")
    {
        return;
    }
    start(agent, pod, key).await;
}

/// One look at every pod bound to the node.
async fn pass(agent: &Arc<Agent>, pods: &[Value]) {
    // Pods gone (or replaced by another of the same name) take their process and output along.
    let live: HashSet<(PodKey, &str)> = pods
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .map(|p| (key_of(p), str_at(p, "/metadata/uid")))
        .collect();
    agent.pods().retain(|key, state| {
        let keep = live.contains(&(key.clone(), state.uid.as_str()));
        if !keep {
            state.tear_down();
        }
        keep
    });
    for pod in pods {
        act(agent, pod).await;
    }
}

/// Fetches what the pod reads from Secrets and ConfigMaps.
async fn fetch_references(agent: &Agent, pod: &Value) -> BTreeMap<(String, String), Value> {
    let namespace = str_at(pod, "/metadata/namespace");
    let mut found = BTreeMap::new();
    for (plural, name) in crate::env::references(pod) {
        let object = if plural == "secrets" {
            let api: Api<Secret> = Api::namespaced(agent.client.clone(), namespace);
            api.get_opt(&name)
                .await
                .ok()
                .flatten()
                .and_then(|s| serde_json::to_value(s).ok())
        } else {
            let api: Api<ConfigMap> = Api::namespaced(agent.client.clone(), namespace);
            api.get_opt(&name)
                .await
                .ok()
                .flatten()
                .and_then(|c| serde_json::to_value(c).ok())
        };
        if let Some(object) = object {
            found.insert((plural.to_owned(), name), object);
        }
    }
    found
}

/// Starts a pod's process (or reports why it waits or can't run).
async fn start(agent: &Arc<Agent>, pod: &Value, key: PodKey) {
    let (namespace, name) = key.clone();
    let api: Api<Pod> = Api::namespaced(agent.client.clone(), &namespace);
    let container = pod
        .pointer("/spec/containers/0")
        .cloned()
        .unwrap_or(Value::Null);
    let container_name = container["name"].as_str().unwrap_or("main").to_owned();
    let image = container["image"].as_str().unwrap_or_default().to_owned();
    let references = fetch_references(agent, pod).await;
    let lookup = |plural: &str, object: &str| {
        references
            .get(&(plural.to_owned(), object.to_owned()))
            .cloned()
    };
    let write_status = async |status: Value| {
        let _ = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await;
    };
    let volumes = match crate::volumes::prepare(&lookup, pod) {
        Ok(volumes) => volumes,
        Err(crate::volumes::NotReady::Missing(message)) => {
            // As the kubelet: the pod waits for its Secret or ConfigMap.
            if str_at(pod, "/status/containerStatuses/0/state/waiting/message") != message {
                write_status(json!({"phase": "Pending", "conditions": [condition("PodScheduled", "True", "", "")],
                    "containerStatuses": [{"name": container_name, "image": image, "imageID": "", "ready": false,
                        "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating", "message": message}}}]}))
                .await;
            }
            return;
        }
        Err(crate::volumes::NotReady::Invalid(message)) => {
            write_status(terminated(
                &container_name,
                &image,
                &now(),
                128,
                "CreateContainerConfigError",
                0,
                &message,
            ))
            .await;
            return;
        }
    };
    let mut env = agent.config.default_env.clone();
    env.extend(crate::env::resolve(&lookup, pod, &container));
    let mut dir = None;
    if !volumes.is_empty() {
        let pod_dir = agent.config.volumes_dir.join(&namespace).join(&name);
        match crate::volumes::write(&pod_dir, &volumes) {
            Ok(mounts) => {
                for value in env.values_mut() {
                    if let Some(local) = crate::volumes::rewrite(value, &mounts) {
                        *value = local;
                    }
                }
                dir = Some(pod_dir);
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(&pod_dir);
                tracing::warn!(pod = %name, %error, "writing the pod's volumes failed");
                return;
            }
        }
    }
    let path = std::env::join_paths(agent.config.path_prepend.iter().cloned().chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap_or_default();
    let argv: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(container["args"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if agent
        .images_seen
        .lock()
        .is_ok_and(|mut seen| seen.insert(image.clone()))
    {
        tracing::info!(
            image,
            "the node agent ignores container images: commands run on this machine"
        );
    }
    let (kill, killed) = tokio::sync::oneshot::channel();
    let state = PodState {
        uid: str_at(pod, "/metadata/uid").to_owned(),
        log: Arc::default(),
        kill: Some(kill),
        group: Arc::new(AtomicI32::new(0)),
        dir,
    };
    let (log, group) = (Arc::clone(&state.log), Arc::clone(&state.group));
    agent.pods().insert(key, state);
    // Statuses are written in order by one task per pod, through `pods/status`.
    let (statuses, mut pending) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Some(status) = pending.recv().await {
            if let Err(error) = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await
            {
                tracing::warn!(pod = %name, %error, "reporting the pod's status failed");
            }
        }
    });
    let container = Container {
        name: container_name,
        image,
        argv,
        env,
        path,
        hostname: str_at(pod, "/metadata/name").to_owned(),
        restart_on_failure: str_at(pod, "/spec/restartPolicy") == "OnFailure",
    };
    tokio::spawn(crate::process::run(
        container,
        log,
        group,
        killed,
        move |status| {
            let _ = statuses.send(status);
        },
    ));
}
