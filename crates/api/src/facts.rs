//! Kubernetes Jobs and Pods as the plain facts `jobtide-core` decides on.

use std::collections::BTreeSet;
use std::time::SystemTime;

use jobtide_core::jobs::{JobFacts, PodFacts, PodPhase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use crate::job::GENERATION_ANNOTATION;

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
    fn a_new_job_without_pods_is_pending() {
        let job: Job = serde_json::from_value(json!({"metadata": {"name": "j"}})).expect("job");
        assert_eq!(classify(&job_facts(&job, &[]), &[]), JobState::Pending);
    }
}
