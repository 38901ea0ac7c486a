//! Kubernetes Jobs and Pods as the plain facts `jobtide-core` decides on.

use std::collections::BTreeSet;
use std::time::SystemTime;

use jobtide_core::capacity::KueueAdmission;
use jobtide_core::jobs::{JobFacts, PodFacts, PodPhase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use crate::job::GENERATION_ANNOTATION;

/// Kueue's label naming the LocalQueue a Job is submitted to.
pub const KUEUE_QUEUE_NAME_LABEL: &str = "kueue.x-k8s.io/queue-name";

/// Whether Kueue holds `job`: it names a queue and is suspended (Kueue unsuspends it on
/// admission).
pub fn kueue_suspended(job: &Job) -> bool {
    job.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(KUEUE_QUEUE_NAME_LABEL))
        && job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
}

/// The facts of every Job in `jobs`, each with its pods among `pods` (label `job-name=<job>`).
pub fn jobs_facts<J, P>(jobs: &[J], pods: &[P]) -> Vec<JobFacts>
where
    J: std::ops::Deref<Target = Job>,
    P: std::ops::Deref<Target = Pod>,
{
    let mut by_job: std::collections::BTreeMap<&str, Vec<&Pod>> = std::collections::BTreeMap::new();
    for pod in pods {
        if let Some(job) = pod.metadata.labels.as_ref().and_then(|l| l.get("job-name")) {
            by_job.entry(job.as_str()).or_default().push(pod);
        }
    }
    jobs.iter()
        .map(|job| {
            let name = job.metadata.name.as_deref().unwrap_or_default();
            job_facts(job, by_job.get(name).map(Vec::as_slice).unwrap_or_default())
        })
        .collect()
}

/// The facts of `job`, given its pods (those labelled `job-name=<job>`).
pub fn job_facts(job: &Job, pods: &[&Pod]) -> JobFacts {
    let status = job.status.as_ref();
    JobFacts {
        name: job.metadata.name.clone().unwrap_or_default(),
        true_conditions: status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.status == "True")
            .map(|c| {
                (
                    c.type_.clone(),
                    c.last_transition_time
                        .as_ref()
                        .map(|t| SystemTime::from(t.0)),
                )
            })
            .collect(),
        completion_time: status
            .and_then(|s| s.completion_time.as_ref())
            .map(|t| SystemTime::from(t.0)),
        generation: job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(GENERATION_ANNOTATION))
            .cloned(),
        pods: pods.iter().map(|pod| pod_facts(pod)).collect(),
        created: job
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| SystemTime::from(t.0)),
        // Admission unknown until the controller reads the Workload.
        kueue: kueue_suspended(job).then_some(KueueAdmission::Pending(None)),
    }
}

/// The facts of one pod.
pub fn pod_facts(pod: &Pod) -> PodFacts {
    let status = pod.status.as_ref();
    PodFacts {
        phase: match status.and_then(|s| s.phase.as_deref()) {
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            Some("Unknown") => PodPhase::Unknown,
            _ => PodPhase::Pending,
        },
        true_conditions: status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.status == "True")
            .map(|c| c.type_.clone())
            .collect::<BTreeSet<_>>(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        unschedulable: status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
            .map(|c| c.message.clone().unwrap_or_default()),
        autoscaler: None,
    }
}

#[cfg(test)]
mod tests {
    use jobtide_core::jobs::{JobState, classify};
    use serde_json::json;

    use super::*;

    #[test]
    fn a_completed_job_with_a_succeeded_pod() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "sj-abcde", "annotations": {"scaledjob.keda.sh/generation": "2"}},
            "status": {"completionTime": "2026-11-28T10:00:00Z", "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2026-11-28T09:59:59Z"},
                {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-28T10:00:00Z"}]},
        }))
        .expect("job");
        let pod: Pod = serde_json::from_value(json!({
            "status": {"phase": "Succeeded", "conditions": [
                {"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]},
        }))
        .expect("pod");
        let facts = job_facts(&job, &[&pod]);
        assert_eq!(facts.name, "sj-abcde");
        assert_eq!(facts.generation.as_deref(), Some("2"));
        assert_eq!(facts.true_conditions.len(), 2);
        assert!(facts.completion_time.is_some());
        assert_eq!(facts.pods[0].phase, PodPhase::Succeeded);
        assert_eq!(
            facts.pods[0].true_conditions,
            BTreeSet::from(["PodScheduled".to_owned()])
        );
        assert_eq!(classify(&facts, &[]), JobState::Succeeded);
    }

    #[test]
    fn an_unschedulable_pod_keeps_the_schedulers_message_and_a_kueue_job_waits_for_admission() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "sj-abcde-x1"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient cpu."}]},
        }))
        .expect("pod");
        let facts = pod_facts(&pod);
        assert_eq!(facts.name, "sj-abcde-x1");
        assert_eq!(
            facts.unschedulable.as_deref(),
            Some("0/3 nodes are available: 3 Insufficient cpu.")
        );
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "j", "labels": {"kueue.x-k8s.io/queue-name": "q"}},
            "spec": {"suspend": true, "template": {}},
        }))
        .expect("job");
        assert_eq!(
            job_facts(&job, &[]).kueue,
            Some(KueueAdmission::Pending(None))
        );
        let unsuspended: Job = serde_json::from_value(json!({
            "metadata": {"name": "j", "labels": {"kueue.x-k8s.io/queue-name": "q"}},
            "spec": {"suspend": false, "template": {}},
        }))
        .expect("job");
        assert_eq!(job_facts(&unsuspended, &[]).kueue, None, "admitted");
    }

    #[test]
    fn a_new_job_without_pods_is_pending() {
        let job: Job = serde_json::from_value(json!({"metadata": {"name": "j"}})).expect("job");
        assert_eq!(classify(&job_facts(&job, &[]), &[]), JobState::Pending);
    }
}
