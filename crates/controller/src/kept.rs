//! What the Job and Pod caches keep of an object: the fields a poll reads, in a struct of their
//! own.
//!
//! Why not the object with the rest set to `None`: k8s-openapi's structs hold every optional
//! field inline, so an empty `Job` is 2,592 bytes (its `JobSpec` holds a whole `PodSpec`) and an
//! empty `Pod` 2,176 (k8s-openapi 0.29, x86_64) before any of their strings. A kept Job is its
//! metadata, `spec.suspend` and status (about 570 bytes inline), a kept Pod its metadata and
//! status without the container statuses (about 760). At 10,000 ScaledJobs with a Job and a pod
//! each that is about 30 MiB less. A poll gets the object back ([`Kept::restore`]): a `Job` or
//! `Pod` with exactly these fields, the rest `None`, as the cache served before.

use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

/// An object kind a cache keeps in a smaller form.
pub trait Kept: Resource + Sized {
    /// The kept form.
    type Slim: Send + Sync + 'static;
    /// What the polls read of `object`.
    fn keep(object: &Self) -> Self::Slim;
    /// The object as the polls see it: the kept fields, the rest `None`.
    fn restore(slim: &Self::Slim) -> Self;
    /// The kept metadata.
    fn metadata(slim: &Self::Slim) -> &ObjectMeta;
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
#[derive(Debug)]
pub struct SlimJob {
    metadata: ObjectMeta,
    suspend: Option<bool>,
    status: Option<JobStatus>,
}

impl Kept for Job {
    type Slim = SlimJob;

    fn keep(job: &Self) -> SlimJob {
        SlimJob {
            metadata: kept_metadata(&job.metadata),
            suspend: job.spec.as_ref().and_then(|spec| spec.suspend),
            status: job.status.clone(),
        }
    }

    fn restore(slim: &SlimJob) -> Self {
        Self {
            metadata: slim.metadata.clone(),
            spec: slim.suspend.map(|suspend| JobSpec {
                suspend: Some(suspend),
                ..JobSpec::default()
            }),
            status: slim.status.clone(),
        }
    }

    fn metadata(slim: &SlimJob) -> &ObjectMeta {
        &slim.metadata
    }
}

/// A pod as kept: metadata, and its status without the container statuses (a poll reads the
/// phase, the conditions and the scheduling verdict).
#[derive(Debug)]
pub struct SlimPod {
    metadata: ObjectMeta,
    status: Option<PodStatus>,
}

impl Kept for Pod {
    type Slim = SlimPod;

    fn keep(pod: &Self) -> SlimPod {
        SlimPod {
            metadata: kept_metadata(&pod.metadata),
            status: pod.status.as_ref().map(|status| PodStatus {
                container_statuses: None,
                init_container_statuses: None,
                ephemeral_container_statuses: None,
                ..status.clone()
            }),
        }
    }

    fn restore(slim: &SlimPod) -> Self {
        Self {
            metadata: slim.metadata.clone(),
            spec: None,
            status: slim.status.clone(),
        }
    }

    fn metadata(slim: &SlimPod) -> &ObjectMeta {
        &slim.metadata
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
        let restored = Job::restore(&Job::keep(&job));
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
        assert_eq!(Job::restore(&Job::keep(&unsuspended)).spec, None);
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
        let restored = Pod::restore(&Pod::keep(&pod));
        let expected: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
            "status": {"phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]},
        }))
        .unwrap();
        assert_eq!(restored, expected);
    }
}
