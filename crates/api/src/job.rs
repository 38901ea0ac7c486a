//! The Job the operator creates for a ScaledJob (keda-compat §4.1, §4.2), with jobtide's
//! difference D7: the `last-applied-configuration` and paused annotations are not copied, and
//! neither a ScaledJob label nor an annotation can override the labels and the generation
//! annotation that counting and rollouts rely on. A pure function: no client, no clock.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use thiserror::Error;

use crate::ScaledJob;

/// The label that ties a Job (and its pods) to its ScaledJob.
pub const SCALED_JOB_NAME_LABEL: &str = "scaledjob.keda.sh/name";
/// The annotation holding the ScaledJob generation a Job was created from.
pub const GENERATION_ANNOTATION: &str = "scaledjob.keda.sh/generation";
/// Comma-separated ScaledJob label keys not copied to Jobs (split on `,` only, no trimming).
pub const EXCLUDED_LABELS_ANNOTATION: &str = "scaledjob.keda.sh/job-excluded-labels";
/// kubectl's copy of the applied manifest: not copied to Jobs (D7).
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `jobtide.io/safe-to-evict-annotations: "false"` on a ScaledJob: its pods don't get
/// [`DISRUPTION_ANNOTATIONS`].
pub const SAFE_TO_EVICT_OPT_OUT_ANNOTATION: &str = "jobtide.io/safe-to-evict-annotations";
/// Put on every Job's pod template unless the template sets the key itself or the ScaledJob opts
/// out: a Job's pod is work in progress, and neither the Cluster Autoscaler nor Karpenter should
/// take its node away to consolidate (a difference from KEDA, which sets neither).
pub const DISRUPTION_ANNOTATIONS: [(&str, &str); 2] = [
    ("cluster-autoscaler.kubernetes.io/safe-to-evict", "false"),
    ("karpenter.sh/do-not-disrupt", "true"),
];

/// Why no Job can be built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum JobBuildError {
    /// The ScaledJob has not been stored by an API server yet (no name or uid to own the Job).
    #[error("ScaledJob has no {0} (it must come from the API server)")]
    MissingMetadata(&'static str),
}

/// Builds the Job to create for `scaled_job`. `operator_version` goes into the
/// `app.kubernetes.io/version` label, as KEDA puts its own version there.
pub fn job_for(scaled_job: &ScaledJob, operator_version: &str) -> Result<Job, JobBuildError> {
    let meta = scaled_job.meta();
    let name = meta
        .name
        .clone()
        .ok_or(JobBuildError::MissingMetadata("name"))?;
    let uid = meta
        .uid
        .clone()
        .ok_or(JobBuildError::MissingMetadata("uid"))?;
    let sj_labels = meta.labels.clone().unwrap_or_default();
    let sj_annotations = meta.annotations.clone().unwrap_or_default();

    let excluded: Vec<&str> = sj_annotations
        .get(EXCLUDED_LABELS_ANNOTATION)
        .map(|v| v.split(',').collect())
        .unwrap_or_default();
    let mut labels: BTreeMap<String, String> = sj_labels
        .iter()
        .filter(|(key, _)| !excluded.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // KEDA inserts its labels first and lets ScaledJob labels override them; the
    // `scaledjob.keda.sh/name` label is what Jobs are counted by, so it always wins here (D7).
    for (key, value) in [
        ("app.kubernetes.io/name", name.as_str()),
        ("app.kubernetes.io/version", operator_version),
        ("app.kubernetes.io/part-of", name.as_str()),
        ("app.kubernetes.io/managed-by", "keda-operator"),
    ] {
        labels
            .entry(key.to_owned())
            .or_insert_with(|| value.to_owned());
    }
    labels.insert(SCALED_JOB_NAME_LABEL.to_owned(), name.clone());

    let mut annotations: BTreeMap<String, String> = sj_annotations
        .into_iter()
        .filter(|(key, _)| {
            key != LAST_APPLIED_ANNOTATION && key != jobtide_core::pause::PAUSED_ANNOTATION
        })
        .collect();
    annotations.insert(
        GENERATION_ANNOTATION.to_owned(),
        meta.generation.unwrap_or(0).to_string(),
    );

    let mut spec = scaled_job.spec.job_target_ref.clone();
    let template_meta = spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    template_meta.generate_name = Some(format!("{name}-"));
    let opted_out = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(SAFE_TO_EVICT_OPT_OUT_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
    if !opted_out {
        let pod_annotations = template_meta.annotations.get_or_insert_with(BTreeMap::new);
        for (key, value) in DISRUPTION_ANNOTATIONS {
            pod_annotations
                .entry(key.to_owned())
                .or_insert_with(|| value.to_owned());
        }
    }
    template_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(SCALED_JOB_NAME_LABEL.to_owned(), name.clone());
    if let Some(pod_spec) = spec.template.spec.as_mut()
        && pod_spec.restart_policy.as_deref().is_none_or(str::is_empty)
    {
        pod_spec.restart_policy = Some("OnFailure".to_owned());
    }

    Ok(Job {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: meta.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: ScaledJob::api_version(&()).into_owned(),
                kind: ScaledJob::kind(&()).into_owned(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scaled_job(metadata: serde_json::Value, restart_policy: Option<&str>) -> ScaledJob {
        let mut pod_spec = json!({"containers": [{"name": "c", "image": "i"}]});
        if let Some(policy) = restart_policy {
            pod_spec["restartPolicy"] = json!(policy);
        }
        serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledJob",
            "metadata": metadata,
            "spec": {
                "jobTargetRef": {"backoffLimit": 4, "template": {"spec": pod_spec}},
                "triggers": [{"type": "kafka", "metadata": {}}],
            },
        }))
        .expect("test ScaledJob")
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn kedas_upstream_vector() {
        let sj = scaled_job(
            json!({"name": "test", "namespace": "test", "uid": "u-1", "generation": 0,
                   "labels": {"test": "test"}, "annotations": {"test": "test"}}),
            None,
        );
        let job = job_for(&sj, "main").expect("job");
        assert_eq!(
            job.metadata.annotations,
            Some(map(&[
                ("test", "test"),
                ("scaledjob.keda.sh/generation", "0")
            ]))
        );
        assert_eq!(
            job.metadata.labels,
            Some(map(&[
                ("app.kubernetes.io/managed-by", "keda-operator"),
                ("app.kubernetes.io/name", "test"),
                ("app.kubernetes.io/part-of", "test"),
                ("app.kubernetes.io/version", "main"),
                ("scaledjob.keda.sh/name", "test"),
                ("test", "test"),
            ]))
        );
        assert_eq!(job.metadata.generate_name.as_deref(), Some("test-"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("test"));
        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(4));
        let template = spec.template;
        assert_eq!(
            template.spec.and_then(|s| s.restart_policy).as_deref(),
            Some("OnFailure")
        );
        let template_meta = template.metadata.unwrap_or_default();
        assert_eq!(template_meta.generate_name.as_deref(), Some("test-"));
        assert_eq!(
            template_meta.labels,
            Some(map(&[("scaledjob.keda.sh/name", "test")]))
        );
        assert_eq!(
            template_meta.annotations,
            Some(map(&DISRUPTION_ANNOTATIONS)),
            "jobtide's difference: pods are not evicted for consolidation"
        );
        let owner = &job.metadata.owner_references.unwrap_or_default()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str()
            ),
            ("keda.sh/v1alpha1", "ScaledJob", "test", "u-1")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
    }

    fn pod_annotations(job: &Job) -> BTreeMap<String, String> {
        job.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
    }

    #[test]
    fn pods_are_safe_from_consolidation_unless_the_template_or_the_scaled_job_says_otherwise() {
        let sj = scaled_job(json!({"name": "sj", "uid": "u"}), None);
        assert_eq!(
            pod_annotations(&job_for(&sj, "v").expect("job")),
            map(&DISRUPTION_ANNOTATIONS)
        );
        let mut sj = sj;
        sj.spec.job_target_ref.template.metadata = Some(ObjectMeta {
            annotations: Some(map(&[(
                "cluster-autoscaler.kubernetes.io/safe-to-evict",
                "true",
            )])),
            ..ObjectMeta::default()
        });
        assert_eq!(
            pod_annotations(&job_for(&sj, "v").expect("job")),
            map(&[
                ("cluster-autoscaler.kubernetes.io/safe-to-evict", "true"),
                ("karpenter.sh/do-not-disrupt", "true"),
            ]),
            "the template's own value wins"
        );
        sj.metadata.annotations = Some(map(&[(SAFE_TO_EVICT_OPT_OUT_ANNOTATION, "false")]));
        assert_eq!(
            pod_annotations(&job_for(&sj, "v").expect("job")),
            map(&[("cluster-autoscaler.kubernetes.io/safe-to-evict", "true")]),
            "opted out: only the template's"
        );
    }

    #[test]
    fn kueues_queue_and_priority_reach_the_job_and_its_pods() {
        let mut sj = scaled_job(
            json!({"name": "sj", "uid": "u", "labels": {
                "kueue.x-k8s.io/queue-name": "team-a", "kueue.x-k8s.io/priority-class": "high"}}),
            None,
        );
        if let Some(pod) = sj.spec.job_target_ref.template.spec.as_mut() {
            pod.priority_class_name = Some("batch-high".into());
        }
        let job = job_for(&sj, "v").expect("job");
        let labels = job.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["kueue.x-k8s.io/queue-name"], "team-a");
        assert_eq!(labels["kueue.x-k8s.io/priority-class"], "high");
        let pod = job.spec.and_then(|s| s.template.spec).expect("pod spec");
        assert_eq!(pod.priority_class_name.as_deref(), Some("batch-high"));
    }

    #[test]
    fn an_explicit_restart_policy_is_kept() {
        let sj = scaled_job(json!({"name": "sj", "uid": "u"}), Some("Never"));
        let job = job_for(&sj, "v").expect("job");
        let policy = job
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.restart_policy);
        assert_eq!(policy.as_deref(), Some("Never"));
    }

    #[test]
    fn protected_labels_and_annotations_d7() {
        let sj = scaled_job(
            json!({"name": "sj", "uid": "u", "generation": 3,
                "labels": {"scaledjob.keda.sh/name": "other", "app.kubernetes.io/name": "custom", "team": "a", "drop": "x", " b": "y"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                    "autoscaling.keda.sh/paused": "false",
                    "scaledjob.keda.sh/generation": "99",
                    "scaledjob.keda.sh/job-excluded-labels": "drop, b",
                    "note": "kept"}}),
            None,
        );
        let job = job_for(&sj, "v").expect("job");
        let labels = job.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("scaledjob.keda.sh/name").map(String::as_str),
            Some("sj"),
            "cannot be overridden"
        );
        assert_eq!(
            labels.get("app.kubernetes.io/name").map(String::as_str),
            Some("custom"),
            "other KEDA labels can, as in KEDA"
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        assert!(!labels.contains_key("drop"));
        assert!(
            !labels.contains_key(" b"),
            "the excluded list is not trimmed, as in KEDA: ' b' is excluded"
        );
        let annotations = job.metadata.annotations.unwrap_or_default();
        assert!(!annotations.contains_key(LAST_APPLIED_ANNOTATION));
        assert!(!annotations.contains_key("autoscaling.keda.sh/paused"));
        assert_eq!(
            annotations.get(GENERATION_ANNOTATION).map(String::as_str),
            Some("3")
        );
        assert_eq!(annotations.get("note").map(String::as_str), Some("kept"));
    }

    #[test]
    fn a_scaled_job_without_uid_cannot_own_jobs() {
        let sj = scaled_job(json!({"name": "sj"}), None);
        assert_eq!(
            job_for(&sj, "v").err(),
            Some(JobBuildError::MissingMetadata("uid"))
        );
    }
}
