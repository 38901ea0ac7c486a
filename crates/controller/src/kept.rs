//! What the Job and Pod caches keep of an object: the fields a poll reads, as compact JSON.
//!
//! Why not the object with the rest set to `None`: k8s-openapi's structs hold every optional
//! field inline, so an empty `Job` is 2,592 bytes (its `JobSpec` holds a whole `PodSpec`) and an
//! empty `Pod` 2,176 (k8s-openapi 0.29, x86_64) before any of their strings, and each label is
//! two `String`s in a B-tree node. A kept Job is its metadata, `spec.suspend` and status, a kept
//! Pod its metadata and status without the container statuses, written as the JSON the API
//! server would send for them: a few hundred bytes each (a pod only the fields the polls read). A poll gets the object back
//! ([`Kept::restore`]): a `Job` or `Pod` with exactly these fields, the rest `None`, as the
//! cache served before. The JSON is compressed against a typical object of its kind
//! ([`crate::packing`]).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use jobtide_api::facts::KUEUE_QUEUE_NAME_LABEL;
use jobtide_api::job::SCALED_JOB_NAME_LABEL;
use jobtide_core::dispatch::{ATTEMPT_LABEL, DISPATCH_LABEL, OFFSET_LABEL, PARTITION_LABEL};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::packing::Packer;

/// An object kept as JSON of what the polls read.
pub type Packed = Box<[u8]>;

/// An object kind a cache keeps in a smaller form.
pub trait Kept:
    Resource<DynamicType = ()> + Serialize + DeserializeOwned + Default + Sized
{
    /// The object with what the polls read only, the rest `None`.
    fn slim(object: &Self) -> Self;

    /// The kind's packer (its dictionary: a typical kept object).
    fn packer() -> &'static Packer;

    /// What the polls read of `object`, packed.
    fn keep(object: &Self) -> Result<Packed, serde_json::Error> {
        Ok(Self::packer().pack(&serde_json::to_vec(&Self::slim(object))?))
    }

    /// The object as the polls see it: the kept fields, the rest `None`.
    fn restore(packed: &[u8]) -> Result<Self, String> {
        let json = Self::packer().unpack(packed)?;
        serde_json::from_slice(&json).map_err(|error| error.to_string())
    }
}

/// The metadata without what nothing here reads: `managedFields` (real API servers send them
/// with every object, often the biggest part of it) and the owner references (the operator finds
/// its objects by their `scaledjob.keda.sh/name` label).
fn kept_metadata(meta: &ObjectMeta) -> ObjectMeta {
    let ObjectMeta {
        annotations,
        creation_timestamp,
        deletion_grace_period_seconds,
        deletion_timestamp,
        finalizers,
        generate_name,
        generation,
        labels,
        managed_fields: _,
        name,
        namespace,
        owner_references: _,
        resource_version,
        self_link: _,
        uid,
    } = meta;
    ObjectMeta {
        annotations: annotations.clone(),
        creation_timestamp: creation_timestamp.clone(),
        deletion_grace_period_seconds: *deletion_grace_period_seconds,
        deletion_timestamp: deletion_timestamp.clone(),
        finalizers: finalizers.clone(),
        generate_name: generate_name.clone(),
        generation: *generation,
        labels: labels.clone(),
        managed_fields: None,
        name: name.clone(),
        namespace: namespace.clone(),
        owner_references: None,
        resource_version: resource_version.clone(),
        self_link: None,
        uid: uid.clone(),
    }
}

/// The Job labels a poll reads: its ScaledJob's, Kueue's queue name
/// (`jobtide_api::facts::kueue_suspended`) and a dispatched Job's coordinates
/// (`JobCoordinates::from_labels`). The rest (the template's own labels, often several
/// `app.kubernetes.io/*`) are not read of a cached Job.
const JOB_LABELS_READ: [&str; 6] = [
    SCALED_JOB_NAME_LABEL,
    KUEUE_QUEUE_NAME_LABEL,
    PARTITION_LABEL,
    OFFSET_LABEL,
    ATTEMPT_LABEL,
    DISPATCH_LABEL,
];

/// Only the `labels` a poll reads.
fn labels_read(
    labels: Option<&BTreeMap<String, String>>,
    read: &[&str],
) -> Option<BTreeMap<String, String>> {
    labels.map(|labels| {
        labels
            .iter()
            .filter(|(key, _)| read.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    })
}

/// A Job as kept: metadata (with [`JOB_LABELS_READ`] only), status, and of the spec `suspend`
/// only (Kueue holds suspended Jobs).
/// A typical object of a kind, kept: the dictionary its kept objects are packed against.
fn dictionary<K: Kept>(typical: serde_json::Value) -> Vec<u8> {
    serde_json::from_value::<K>(typical)
        .and_then(|object| serde_json::to_vec(&K::slim(&object)))
        .unwrap_or_default()
}

static JOBS: LazyLock<Packer> = LazyLock::new(|| {
    let time = "2026-01-01T00:00:00Z";
    let reached = "Reached expected number of succeeded pods";
    let limit = "Job has reached the specified backoff limit";
    let labels =
        serde_json::json!({SCALED_JOB_NAME_LABEL: "orders", KUEUE_QUEUE_NAME_LABEL: "user-queue"});
    Packer::new(
        "Job",
        &dictionary::<Job>(serde_json::json!({
            "metadata": {"name": "orders-abcde", "namespace": "default", "generateName": "orders-",
                "uid": "6f2c1a7e-3b4d-4c5e-8f9a-0b1c2d3e4f50", "resourceVersion": "123456",
                "creationTimestamp": time, "labels": labels,
                "annotations": {"scaledjob.keda.sh/generation": "1"}},
            "spec": {"suspend": false},
            "status": {"startTime": time, "completionTime": time, "active": 1, "ready": 1,
                "succeeded": 1, "failed": 1, "terminating": 0, "uncountedTerminatedPods": {},
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                        "message": reached, "lastProbeTime": time, "lastTransitionTime": time},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                        "message": reached, "lastProbeTime": time, "lastTransitionTime": time},
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                        "message": limit, "lastProbeTime": time, "lastTransitionTime": time},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                        "message": limit, "lastProbeTime": time, "lastTransitionTime": time},
                    {"type": "Suspended", "status": "True", "reason": "JobSuspended",
                        "message": "Job suspended", "lastProbeTime": time, "lastTransitionTime": time}]}
        })),
    )
});

static PODS: LazyLock<Packer> = LazyLock::new(|| {
    let time = "2026-01-01T00:00:00Z";
    let conditions: Vec<serde_json::Value> = [
        ("PodReadyToStartContainers", "False", ""),
        ("Initialized", "True", "PodCompleted"),
        ("Ready", "False", "PodCompleted"),
        ("ContainersReady", "False", "PodCompleted"),
        ("PodScheduled", "True", ""),
        ("PodScheduled", "False", "Unschedulable"),
    ]
    .into_iter()
    .map(|(type_, status, reason)| {
        serde_json::json!({"type": type_, "status": status, "reason": reason,
            "lastTransitionTime": time})
    })
    .collect();
    Packer::new(
        "Pod",
        &dictionary::<Pod>(serde_json::json!({
            "metadata": {"name": "orders-abcde-fgh12", "namespace": "default",
                "labels": {SCALED_JOB_NAME_LABEL: "orders", "job-name": "orders-abcde",
                    "batch.kubernetes.io/job-name": "orders-abcde"}},
            "status": {"phase": "Succeeded", "startTime": time, "conditions": conditions,
                "reason": "Evicted", "message": "0/3 nodes are available: 3 Insufficient cpu."}
        })),
    )
});

impl Kept for Job {
    fn packer() -> &'static Packer {
        &JOBS
    }

    fn slim(job: &Self) -> Self {
        Self {
            metadata: ObjectMeta {
                labels: labels_read(job.metadata.labels.as_ref(), &JOB_LABELS_READ),
                ..kept_metadata(&job.metadata)
            },
            spec: job
                .spec
                .as_ref()
                .and_then(|spec| spec.suspend)
                .map(|suspend| JobSpec {
                    suspend: Some(suspend),
                    ..JobSpec::default()
                }),
            status: job.status.clone(),
        }
    }
}

/// The pod labels a poll reads: its ScaledJob's, and its Job's under either name (the Job
/// controller sets both; `jobtide_api::facts` and `job_metrics` read them).
const POD_LABELS_READ: [&str; 3] = [
    SCALED_JOB_NAME_LABEL,
    "job-name",
    "batch.kubernetes.io/job-name",
];

/// A pod as kept: exactly what the polls read (`jobtide_api::facts::pod_facts`,
/// `job_metrics::JobTimes`): its name, namespace and [`POD_LABELS_READ`]; its
/// phase, start time, reason and message; its conditions' type, status, reason and message.
/// Not its spec, container statuses, IPs, QoS class, uid, resource version, creation time,
/// annotations, finalizers or condition times: none is read, and on a real cluster they are most of a pod
/// (a Job controller's pod carries five conditions with their times, the owner's template labels
/// and a tracking finalizer). A poll that reads another field adds it here (the test below
/// shows what the polls read survives).
impl Kept for Pod {
    fn packer() -> &'static Packer {
        &PODS
    }

    fn slim(pod: &Self) -> Self {
        let meta = &pod.metadata;
        let labels = labels_read(meta.labels.as_ref(), &POD_LABELS_READ);
        Self {
            metadata: ObjectMeta {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                labels,
                ..ObjectMeta::default()
            },
            spec: None,
            status: pod.status.as_ref().map(|status| PodStatus {
                phase: status.phase.clone(),
                start_time: status.start_time.clone(),
                reason: status.reason.clone(),
                message: status.message.clone(),
                conditions: status.conditions.as_ref().map(|conditions| {
                    conditions
                        .iter()
                        .map(|c| PodCondition {
                            type_: c.type_.clone(),
                            status: c.status.clone(),
                            reason: c.reason.clone(),
                            message: c.message.clone(),
                            ..PodCondition::default()
                        })
                        .collect()
                }),
                ..PodStatus::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished Job and its pod as a real API server (1.33) shows them, none of it the
    /// dictionaries' own names or times.
    #[test]
    fn kept_jobs_and_pods_pack_against_their_dictionaries() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "payments-x7k2p", "namespace": "billing", "generateName": "payments-",
                "uid": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "resourceVersion": "98765",
                "creationTimestamp": "2026-11-30T12:34:56Z",
                "labels": {"scaledjob.keda.sh/name": "payments", "app.kubernetes.io/managed-by": "keda-operator"},
                "annotations": {"scaledjob.keda.sh/generation": "4"}},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"startTime": "2026-11-30T12:34:56Z", "completionTime": "2026-11-30T12:35:40Z",
                "succeeded": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {},
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                        "message": "Reached expected number of succeeded pods",
                        "lastProbeTime": "2026-11-30T12:35:40Z", "lastTransitionTime": "2026-11-30T12:35:40Z"},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                        "message": "Reached expected number of succeeded pods",
                        "lastProbeTime": "2026-11-30T12:35:40Z", "lastTransitionTime": "2026-11-30T12:35:40Z"}]},
        }))
        .unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "payments-x7k2p-9qz4m", "namespace": "billing",
                "labels": {"scaledjob.keda.sh/name": "payments", "job-name": "payments-x7k2p",
                    "batch.kubernetes.io/job-name": "payments-x7k2p"}},
            "status": {"phase": "Succeeded", "startTime": "2026-11-30T12:34:57Z",
                "conditions": [
                    {"type": "PodReadyToStartContainers", "status": "False", "lastTransitionTime": "2026-11-30T12:35:41Z"},
                    {"type": "Initialized", "status": "True", "reason": "PodCompleted", "lastTransitionTime": "2026-11-30T12:34:57Z"},
                    {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": "2026-11-30T12:35:40Z"},
                    {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": "2026-11-30T12:35:40Z"},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-30T12:34:57Z"}]},
        }))
        .unwrap();
        let job_json = serde_json::to_vec(&Job::slim(&job)).unwrap();
        let kept_job = Job::keep(&job).unwrap();
        assert!(
            kept_job.len() * 5 < job_json.len() * 2,
            "{} of {}",
            kept_job.len(),
            job_json.len()
        );
        assert_eq!(Job::restore(&kept_job).unwrap(), Job::slim(&job));
        // The figures docs/operator.md quotes (`-- --nocapture`).
        eprintln!("Job: {} bytes kept of {}", kept_job.len(), job_json.len());
        let pod_json = serde_json::to_vec(&Pod::slim(&pod)).unwrap();
        let kept_pod = Pod::keep(&pod).unwrap();
        assert!(
            kept_pod.len() * 5 < pod_json.len() * 2,
            "{} of {}",
            kept_pod.len(),
            pod_json.len()
        );
        assert_eq!(Pod::restore(&kept_pod).unwrap(), Pod::slim(&pod));
        eprintln!("pod: {} bytes kept of {}", kept_pod.len(), pod_json.len());
    }

    #[test]
    fn a_kept_job_restores_its_metadata_with_the_labels_read_suspend_and_status_without_the_rest() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j", "namespace": "ns",
                "labels": {"a": "b", SCALED_JOB_NAME_LABEL: "sj", KUEUE_QUEUE_NAME_LABEL: "q",
                    PARTITION_LABEL: "1", OFFSET_LABEL: "2", ATTEMPT_LABEL: "3", DISPATCH_LABEL: "0000abcd"},
                "annotations": {"c": "d"}, "uid": "u", "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl"}],
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "y"}]},
            "spec": {"suspend": true, "parallelism": 3,
                "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"active": 1, "conditions": [{"type": "Suspended", "status": "True"}]},
        }))
        .unwrap();
        let restored = Job::restore(&Job::keep(&job).unwrap()).unwrap();
        let expected: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j", "namespace": "ns",
                "labels": {SCALED_JOB_NAME_LABEL: "sj", KUEUE_QUEUE_NAME_LABEL: "q",
                    PARTITION_LABEL: "1", OFFSET_LABEL: "2", ATTEMPT_LABEL: "3", DISPATCH_LABEL: "0000abcd"},
                "annotations": {"c": "d"}, "uid": "u", "resourceVersion": "7"},
            "spec": {"suspend": true, "template": {}},
            "status": {"active": 1, "conditions": [{"type": "Suspended", "status": "True"}]},
        }))
        .unwrap();
        assert_eq!(restored, expected);
        // What the polls read of a Job's labels survives.
        assert_eq!(
            jobtide_api::facts::kueue_suspended(&restored),
            jobtide_api::facts::kueue_suspended(&job)
        );
        let coordinates = |job: &Job| {
            jobtide_core::dispatch::JobCoordinates::from_labels(job.metadata.labels.as_ref()?)
        };
        assert!(coordinates(&job).is_some());
        assert_eq!(coordinates(&restored), coordinates(&job));
        let unsuspended = Job {
            spec: Some(JobSpec::default()),
            ..job
        };
        assert_eq!(
            Job::restore(&Job::keep(&unsuspended).unwrap())
                .unwrap()
                .spec,
            None
        );
    }

    /// A pod as the Job controller and kubelet leave it: every field the kept form drops set.
    fn full_pod(phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sj-abcde-x1", "namespace": "ns", "uid": "u", "resourceVersion": "9",
                "generateName": "sj-abcde-", "creationTimestamp": "2026-11-28T09:58:00Z",
                "labels": {SCALED_JOB_NAME_LABEL: "sj", "job-name": "sj-abcde",
                    "batch.kubernetes.io/job-name": "sj-abcde", "controller-uid": "c",
                    "batch.kubernetes.io/controller-uid": "c", "app": "worker"},
                "annotations": {"a": "b"}, "finalizers": ["batch.kubernetes.io/job-tracking"],
                "managedFields": [{"manager": "kubelet"}],
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "sj-abcde", "uid": "c"}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase, "startTime": "2026-11-28T09:59:00Z",
                "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}], "podIP": "10.1.0.7",
                "podIPs": [{"ip": "10.1.0.7"}], "qosClass": "BestEffort", "nominatedNodeName": "n",
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available", "lastProbeTime": null,
                        "lastTransitionTime": "2026-11-28T09:58:01Z"},
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-28T09:59:01Z"}],
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_kept_pod_restores_what_the_polls_read_and_nothing_else() {
        let restored = Pod::restore(&Pod::keep(&full_pod("Pending")).unwrap()).unwrap();
        let expected: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sj-abcde-x1", "namespace": "ns",
                "labels": {SCALED_JOB_NAME_LABEL: "sj", "job-name": "sj-abcde",
                    "batch.kubernetes.io/job-name": "sj-abcde"}},
            "status": {"phase": "Pending", "startTime": "2026-11-28T09:59:00Z",
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available"},
                    {"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        assert_eq!(restored, expected);
    }

    #[test]
    fn the_polls_read_the_same_of_a_kept_pod_as_of_the_full_one() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sj-abcde", "namespace": "ns",
                "creationTimestamp": "2026-11-28T09:57:00Z"},
            "status": {"completionTime": "2026-11-28T10:00:00Z"},
        }))
        .unwrap();
        for phase in ["Pending", "Running", "Succeeded", "Failed"] {
            let full = std::sync::Arc::new(full_pod(phase));
            let kept = std::sync::Arc::new(Pod::restore(&Pod::keep(&full).unwrap()).unwrap());
            assert_eq!(
                jobtide_api::facts::jobs_facts(&[&job], std::slice::from_ref(&kept)),
                jobtide_api::facts::jobs_facts(&[&job], std::slice::from_ref(&full)),
            );
            let now = std::time::SystemTime::now();
            assert_eq!(
                crate::job_metrics::JobTimes::of(&job, &[kept], now),
                crate::job_metrics::JobTimes::of(&job, &[full], now),
            );
        }
    }
}
