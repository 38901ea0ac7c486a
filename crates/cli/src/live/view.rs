//! What the live page shows, built from what the dev cluster and the operator know: the
//! ScaledJobs, Jobs and Pods in the embedded API server, and the operator's lag history
//! (`jobtide_controller::lag_history`). Nothing is estimated: a Job is running when one of its
//! pods is, finished when it has a `Complete` or `Failed` condition; its times are the ones
//! Kubernetes records (creation, the first pod's `startTime`, `completionTime` or the `Failed`
//! condition's transition), as the Job spans use (docs/observability.md).

use std::collections::BTreeMap;
use std::time::SystemTime;

use jobtide_api::ScaledJob;
use jobtide_controller::lag_history::{PartitionSeries, ScaledJobLag, WINDOW};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::ResourceExt as _;
use serde::Serialize;

/// Jobs listed on the timeline at most (the most recently created).
pub const MAX_JOBS: usize = 200;

/// The page's whole state (`GET /live/state.json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveState {
    /// Milliseconds since the Unix epoch.
    pub now: i64,
    /// How far back lag and Jobs go.
    pub window_seconds: u64,
    pub scaled_jobs: Vec<ScaledJobView>,
    /// Jobs created within the window or not finished, newest first, at most [`MAX_JOBS`].
    pub jobs: Vec<JobView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobView {
    pub namespace: String,
    pub name: String,
    /// `lag` or `dispatch` (a `kafka-dispatch` trigger).
    pub mode: &'static str,
    /// The triggers' `topic` metadata, as written.
    pub topics: Vec<String>,
    /// The latest measured lag, summed over partitions (`None`: not measured yet).
    pub lag: Option<i64>,
    pub jobs: JobCounts,
    /// The status conditions (Ready, Active, CapacityAvailable, …).
    pub conditions: Vec<ConditionView>,
    /// Lag per partition over the last minutes.
    pub partitions: Vec<PartitionSeries>,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct JobCounts {
    pub pending: usize,
    pub running: usize,
    pub succeeded: usize,
    pub failed: usize,
}

#[derive(Debug, Serialize)]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub namespace: String,
    pub scaled_job: String,
    pub name: String,
    /// Milliseconds since the Unix epoch, each.
    pub created: Option<i64>,
    pub running: Option<i64>,
    pub finished: Option<i64>,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub state: &'static str,
}

fn millis(time: &Time) -> i64 {
    time.0.as_millisecond()
}

fn owner<'a>(refs: Option<&'a Vec<OwnerReference>>, kind: &str) -> Option<&'a str> {
    refs.into_iter()
        .flatten()
        .find(|r| r.kind == kind)
        .map(|r| r.name.as_str())
}

/// A Job's line on the timeline, from the Job and its pods.
fn job_view(job: &Job, pods: &[&Pod]) -> Option<JobView> {
    let scaled_job = owner(job.metadata.owner_references.as_ref(), "ScaledJob")?;
    let status = job.status.as_ref();
    let ended = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"));
    let running = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.start_time.as_ref())
        .map(millis)
        .min();
    let pod_running = pods
        .iter()
        .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
    let (state, finished) = match ended {
        Some(c) if c.type_ == "Complete" => (
            "succeeded",
            status
                .and_then(|s| s.completion_time.as_ref())
                .or(c.last_transition_time.as_ref())
                .map(millis),
        ),
        Some(c) => ("failed", c.last_transition_time.as_ref().map(millis)),
        None if pod_running => ("running", None),
        None => ("pending", None),
    };
    Some(JobView {
        namespace: job.namespace().unwrap_or_default(),
        scaled_job: scaled_job.to_owned(),
        name: job.name_any(),
        created: job.metadata.creation_timestamp.as_ref().map(millis),
        running,
        finished,
        state,
    })
}

/// The page's state at `now` from the listed objects and the operator's lag history.
pub fn build(
    now: SystemTime,
    scaled_jobs: &[ScaledJob],
    jobs: &[Job],
    pods: &[Pod],
    lag: Vec<ScaledJobLag>,
) -> LiveState {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut pods_of: BTreeMap<(String, &str), Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        if let Some(job) = owner(pod.metadata.owner_references.as_ref(), "Job") {
            pods_of
                .entry((pod.namespace().unwrap_or_default(), job))
                .or_default()
                .push(pod);
        }
    }
    let mut all_jobs: Vec<JobView> = jobs
        .iter()
        .filter_map(|job| {
            let name = job.name_any();
            let pods = pods_of
                .get(&(job.namespace().unwrap_or_default(), name.as_str()))
                .map_or(&[][..], Vec::as_slice);
            job_view(job, pods)
        })
        .collect();
    let mut counts: BTreeMap<(String, String), JobCounts> = BTreeMap::new();
    for job in &all_jobs {
        let count = counts
            .entry((job.namespace.clone(), job.scaled_job.clone()))
            .or_default();
        match job.state {
            "running" => count.running += 1,
            "succeeded" => count.succeeded += 1,
            "failed" => count.failed += 1,
            _ => count.pending += 1,
        }
    }
    let mut lag: BTreeMap<(String, String), Vec<PartitionSeries>> = lag
        .into_iter()
        .map(|l| ((l.namespace, l.name), l.partitions))
        .collect();
    let scaled_jobs = scaled_jobs
        .iter()
        .map(|sj| {
            let key = (sj.namespace().unwrap_or_default(), sj.name_any());
            let partitions = lag.remove(&key).unwrap_or_default();
            let latest: Vec<i64> = partitions
                .iter()
                .filter_map(|p| p.samples.last().map(|s| s.lag))
                .collect();
            ScaledJobView {
                mode: if sj.spec.triggers.iter().any(|t| t.type_ == "kafka-dispatch") {
                    "dispatch"
                } else {
                    "lag"
                },
                topics: sj
                    .spec
                    .triggers
                    .iter()
                    .filter_map(|t| t.metadata.get("topic").cloned())
                    .collect(),
                lag: (!latest.is_empty()).then(|| latest.iter().sum()),
                jobs: counts.remove(&key).unwrap_or_default(),
                conditions: sj
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|c| ConditionView {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                    })
                    .collect(),
                partitions,
                namespace: key.0,
                name: key.1,
            }
        })
        .collect();
    let oldest = now - i64::try_from(WINDOW.as_millis()).unwrap_or(i64::MAX);
    all_jobs.retain(|j| j.finished.is_none() || j.created.is_some_and(|c| c >= oldest));
    all_jobs.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.name.cmp(&b.name)));
    all_jobs.truncate(MAX_JOBS);
    LiveState {
        now,
        window_seconds: WINDOW.as_secs(),
        scaled_jobs,
        jobs: all_jobs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(name: &str, status: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                "creationTimestamp": "2025-12-02T10:00:00Z",
                "ownerReferences": [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
                    "name": "orders", "uid": "u1", "controller": true}]},
            "status": status,
        }))
        .unwrap()
    }

    fn pod(job: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{job}-x"), "namespace": "default",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                    "uid": "j"}]},
            "status": {"phase": phase, "startTime": "2025-12-02T10:00:02Z"},
        }))
        .unwrap()
    }

    fn scaled_job(trigger: &str) -> ScaledJob {
        serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "orders", "namespace": "default"},
            "spec": {"jobTargetRef": {"template": {"spec": {"containers": []}}},
                "triggers": [{"type": trigger, "metadata": {"topic": "<b>t</b>"}}]},
        }))
        .unwrap()
    }

    #[test]
    fn jobs_are_counted_and_timed_from_their_conditions_and_pods() {
        let jobs = [
            job("a", json!({})),
            job("b", json!({})),
            job(
                "c",
                json!({"completionTime": "2025-12-02T10:00:09Z", "conditions": [
                {"type": "Complete", "status": "True"}]}),
            ),
            job(
                "d",
                json!({"conditions": [{"type": "Failed", "status": "True",
                "lastTransitionTime": "2025-12-02T10:00:05Z"}]}),
            ),
        ];
        let pods = [pod("b", "Running"), pod("c", "Succeeded")];
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_669_700);
        let state = build(now, &[scaled_job("kafka")], &jobs, &pods, Vec::new());
        assert_eq!(
            state.scaled_jobs[0].jobs,
            JobCounts {
                pending: 1,
                running: 1,
                succeeded: 1,
                failed: 1
            }
        );
        let c = state.jobs.iter().find(|j| j.name == "c").unwrap();
        let created = 1_764_669_600_000;
        assert_eq!(
            (c.created, c.running, c.finished, c.state),
            (
                Some(created),
                Some(created + 2_000),
                Some(created + 9_000),
                "succeeded"
            )
        );
        let d = state.jobs.iter().find(|j| j.name == "d").unwrap();
        assert_eq!((d.running, d.finished), (None, Some(created + 5_000)));
    }

    #[test]
    fn the_mode_and_topics_come_from_the_triggers_as_written() {
        let now = SystemTime::now();
        let state = build(now, &[scaled_job("kafka-dispatch")], &[], &[], Vec::new());
        let view = &state.scaled_jobs[0];
        assert_eq!(
            (view.mode, view.topics.as_slice()),
            ("dispatch", &["<b>t</b>".to_owned()][..])
        );
        assert_eq!(view.lag, None, "not measured yet");
        let state = build(now, &[scaled_job("kafka")], &[], &[], Vec::new());
        assert_eq!(state.scaled_jobs[0].mode, "lag");
    }
}
