//! The ScaledJob's Jobs: classification (keda-compat §4.3), history cleanup (§4.5, with D8) and
//! rollout selection (§4.6, with D1). Facts come from the controller's caches as plain values.

use std::collections::BTreeSet;
use std::time::SystemTime;

use crate::capacity::{AutoscalerVerdict, KueueAdmission};

/// Job condition type `Complete`.
pub const COMPLETE: &str = "Complete";
/// Job condition type `Failed`.
pub const FAILED: &str = "Failed";
/// Job condition type `SuccessCriteriaMet` (Kubernetes ≥ 1.31): the Job is about to complete.
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
/// Job condition type `FailureTarget` (Kubernetes ≥ 1.31): the Job is about to fail.
pub const FAILURE_TARGET: &str = "FailureTarget";

/// What the poll knows about one Job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobFacts {
    /// The Job's name.
    pub name: String,
    /// The Job's conditions whose status is `True`, in the Job's order, with their
    /// `lastTransitionTime`.
    pub true_conditions: Vec<(String, Option<SystemTime>)>,
    /// `status.completionTime` (set by Kubernetes for successful Jobs only).
    pub completion_time: Option<SystemTime>,
    /// The `scaledjob.keda.sh/generation` annotation.
    pub generation: Option<String>,
    /// The Job's pods (label `job-name=<job>`).
    pub pods: Vec<PodFacts>,
    /// `metadata.creationTimestamp`.
    pub created: Option<SystemTime>,
    /// Kueue's admission, when the Job is suspended and carries `kueue.x-k8s.io/queue-name`
    /// ([`crate::capacity`]).
    pub kueue: Option<KueueAdmission>,
}

/// What the poll knows about one pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodFacts {
    /// `status.phase`.
    pub phase: PodPhase,
    /// The pod's condition types whose status is `True`.
    pub true_conditions: BTreeSet<String>,
    /// `metadata.name` (to find the autoscaler's events about it).
    pub name: String,
    /// The scheduler's message when `PodScheduled` is False with reason `Unschedulable`.
    pub unschedulable: Option<String>,
    /// What the cluster autoscaler or Karpenter last said about the pod.
    pub autoscaler: Option<AutoscalerVerdict>,
}

/// A pod's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodPhase {
    /// Not yet running (including unscheduled).
    #[default]
    Pending,
    /// Running.
    Running,
    /// Terminated successfully.
    Succeeded,
    /// Terminated with a failure.
    Failed,
    /// State unknown.
    Unknown,
}

/// How a Job counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// `Complete=True`.
    Succeeded,
    /// `Failed=True`.
    Failed,
    /// `SuccessCriteriaMet` or `FailureTarget` is True but the terminal condition is not set yet:
    /// the Job is done working. KEDA counts these as running; jobtide doesn't.
    Finishing,
    /// Unfinished and pending (§4.3).
    Pending,
    /// Unfinished and not pending.
    Running,
}

impl JobFacts {
    fn has_true(&self, condition: &str) -> bool {
        self.true_conditions.iter().any(|(c, _)| c == condition)
    }

    /// The first `Complete` or `Failed` condition with status True, as KEDA checks it, with
    /// its `lastTransitionTime`.
    pub fn finished(&self) -> Option<(JobState, Option<SystemTime>)> {
        self.true_conditions
            .iter()
            .find_map(|(condition, at)| match condition.as_str() {
                COMPLETE => Some((JobState::Succeeded, *at)),
                FAILED => Some((JobState::Failed, *at)),
                _ => None,
            })
    }
}

/// Classifies a Job. `pending_pod_conditions` is the ScaledJob's
/// `scalingStrategy.pendingPodConditions`; duplicates are ignored (D10).
pub fn classify(job: &JobFacts, pending_pod_conditions: &[String]) -> JobState {
    if let Some((state, _)) = job.finished() {
        return state;
    }
    if job.has_true(SUCCESS_CRITERIA_MET) || job.has_true(FAILURE_TARGET) {
        return JobState::Finishing;
    }
    let pending = if pending_pod_conditions.is_empty() {
        !job.pods
            .iter()
            .any(|p| matches!(p.phase, PodPhase::Running | PodPhase::Succeeded))
    } else {
        let wanted: BTreeSet<&str> = pending_pod_conditions.iter().map(String::as_str).collect();
        !job.pods
            .iter()
            .any(|pod| wanted.iter().all(|c| pod.true_conditions.contains(*c)))
    };
    if pending {
        JobState::Pending
    } else {
        JobState::Running
    }
}

/// The counts a poll decides with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobCounts {
    /// KEDA's `R`: unfinished Jobs, pending ones included (finishing ones excluded).
    pub running: i64,
    /// KEDA's `P`: the pending ones among `running`.
    pub pending: i64,
    /// Jobs whose success or failure criteria are met but that have no terminal condition yet.
    pub finishing: i64,
    /// `Complete=True`.
    pub succeeded: i64,
    /// `Failed=True`.
    pub failed: i64,
}

/// Counts a ScaledJob's Jobs.
pub fn count(jobs: &[JobFacts], pending_pod_conditions: &[String]) -> JobCounts {
    let mut counts = JobCounts::default();
    for job in jobs {
        match classify(job, pending_pod_conditions) {
            JobState::Succeeded => counts.succeeded += 1,
            JobState::Failed => counts.failed += 1,
            JobState::Finishing => counts.finishing += 1,
            JobState::Pending => {
                counts.running += 1;
                counts.pending += 1;
            }
            JobState::Running => counts.running += 1,
        }
    }
    counts
}

/// `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Finished successful Jobs to keep.
    pub successful: usize,
    /// Failed Jobs to keep.
    pub failed: usize,
}

impl HistoryLimits {
    /// KEDA's default for both limits.
    pub const DEFAULT: usize = 100;

    /// The limits with KEDA's defaults; negative values (refused by the CRD) count as 0.
    pub fn from_spec(successful: Option<i32>, failed: Option<i32>) -> Self {
        let limit = |v: Option<i32>| v.map_or(Self::DEFAULT, |v| usize::try_from(v).unwrap_or(0));
        Self {
            successful: limit(successful),
            failed: limit(failed),
        }
    }
}

/// The finished Jobs beyond the history limits, oldest first: successful Jobs by
/// `completionTime`, failed Jobs by their `Failed` condition's `lastTransitionTime` (D8; KEDA's
/// order is arbitrary because failed Jobs have no `completionTime`). Ties and missing times sort
/// by name, missing times first. Unfinished Jobs are never selected.
pub fn history_to_delete(jobs: &[JobFacts], limits: HistoryLimits) -> Vec<&str> {
    let mut succeeded: Vec<(Option<SystemTime>, &str)> = Vec::new();
    let mut failed: Vec<(Option<SystemTime>, &str)> = Vec::new();
    for job in jobs {
        match job.finished() {
            Some((JobState::Succeeded, _)) => succeeded.push((job.completion_time, &job.name)),
            Some((JobState::Failed, at)) => failed.push((at, &job.name)),
            _ => {}
        }
    }
    let mut delete = Vec::new();
    for (mut group, limit) in [(succeeded, limits.successful), (failed, limits.failed)] {
        group.sort();
        let excess = group.len().saturating_sub(limit);
        delete.extend(group.into_iter().take(excess).map(|(_, name)| name));
    }
    delete
}

/// `rollout.strategy` (or the deprecated `rolloutStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutStrategy {
    /// Running Jobs are never deleted by a spec change.
    Gradual,
    /// Jobs of other generations are deleted when the spec changes.
    Immediate,
}

/// Deletion propagation for rollout deletions (history cleanup always uses Background).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the Job, then its pods through the garbage collector.
    Background,
    /// Delete the pods first.
    Foreground,
}

/// The rollout in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// Gradual or immediate.
    pub strategy: RolloutStrategy,
    /// Propagation of rollout deletions.
    pub propagation: Propagation,
}

impl Rollout {
    /// The deprecated `rolloutStrategy` takes precedence when set; an empty strategy is
    /// **gradual** (D1; KEDA treats it as immediate and kills running Jobs on any spec edit).
    pub fn from_spec(
        deprecated_strategy: Option<RolloutStrategy>,
        strategy: Option<RolloutStrategy>,
        propagation: Option<Propagation>,
    ) -> Self {
        Self {
            strategy: deprecated_strategy
                .or(strategy)
                .unwrap_or(RolloutStrategy::Gradual),
            propagation: propagation.unwrap_or(Propagation::Background),
        }
    }
}

/// The Jobs a rollout deletes: under `immediate`, every Job (running or finished) whose
/// generation annotation is missing or differs from `generation`; under `gradual`, none.
pub fn rollout_deletions(jobs: &[JobFacts], generation: i64, rollout: Rollout) -> Vec<&str> {
    match rollout.strategy {
        RolloutStrategy::Gradual => Vec::new(),
        RolloutStrategy::Immediate => {
            let current = generation.to_string();
            jobs.iter()
                .filter(|job| job.generation.as_deref() != Some(current.as_str()))
                .map(|job| job.name.as_str())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests;
