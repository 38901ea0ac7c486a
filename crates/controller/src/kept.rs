//! What the Job and Pod caches keep of an object: the fields a poll reads, as compact JSON.
//!
//! Why not the object with the rest set to `None`: k8s-openapi's structs hold every optional
//! field inline, so an empty `Job` is 2,592 bytes (its `JobSpec` holds a whole `PodSpec`) and an
//! empty `Pod` 2,176 (k8s-openapi 0.29, x86_64) before any of their strings, and each label is
//! two `String`s in a B-tree node. A kept Job is its metadata, `spec.suspend` and status, a kept
//! Pod its metadata and status without the container statuses, written as the JSON the API
//! server would send for them: a few hundred bytes each. A poll gets the object back
//! ([`Kept::restore`]): a `Job` or `Pod` with exactly these fields, the rest `None`, as the
//! cache served before.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An object kept as JSON of what the polls read.
pub type Packed = Box<[u8]>;

/// An object kind a cache keeps in a smaller form.
pub trait Kept:
    Resource<DynamicType = ()> + Serialize + DeserializeOwned + Default + Sized
{
    /// The object with what the polls read only, the rest `None`.
    fn slim(object: &Self) -> Self;

    /// What the polls read of `object`, packed.
    fn keep(object: &Self) -> Result<Packed, serde_json::Error> {
        serde_json::to_vec(&Self::slim(object)).map(Vec::into_boxed_slice)
    }

    /// The object as the polls see it: the kept fields, the rest `None`.
    fn restore(packed: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(packed)
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

/// A Job as kept: metadata, status, and of the spec `suspend` only (Kueue holds suspended Jobs).
impl Kept for Job {
    fn slim(job: &Self) -> Self {
        Self {
            metadata: kept_metadata(&job.metadata),
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

/// A pod as kept: metadata, and its status without the container statuses (a poll reads the
/// phase, the conditions and the scheduling verdict).
impl Kept for Pod {
    fn slim(pod: &Self) -> Self {
        Self {
            metadata: kept_metadata(&pod.metadata),
            spec: None,
            status: pod.status.as_ref().map(|status| PodStatus {
                container_statuses: None,
                init_container_statuses: None,
                ephemeral_container_statuses: None,
                ..status.clone()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_job_restores_its_metadata_suspend_and_status_without_the_rest() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j", "namespace": "ns", "labels": {"a": "b"},
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
            "metadata": {"name": "j", "namespace": "ns", "labels": {"a": "b"},
                "annotations": {"c": "d"}, "uid": "u", "resourceVersion": "7"},
            "spec": {"suspend": true, "template": {}},
            "status": {"active": 1, "conditions": [{"type": "Suspended", "status": "True"}]},
        }))
        .unwrap();
        assert_eq!(restored, expected);
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

    #[test]
    fn a_kept_pod_restores_its_metadata_and_status_without_spec_or_container_statuses() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0}]},
        }))
        .unwrap();
        let restored = Pod::restore(&Pod::keep(&pod).unwrap()).unwrap();
        let expected: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
            "status": {"phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]},
        }))
        .unwrap();
        assert_eq!(restored, expected);
    }
}
