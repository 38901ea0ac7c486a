//! Jobs' ends, in both modes: the times a finished Job's status and its pods record, and the
//! series made of them — Jobs finished by outcome, Job duration (created → finished) and queue
//! time (created → its first pod started) per ScaledJob. The series are counted when the Job
//! watch shows a Job finish, so they outlive the Jobs history cleanup deletes; they go with
//! their ScaledJob.
//!
//! # Caveats
//! - Kubernetes writes these times to the second: durations are whole seconds.
//! - A Job counts once, when this operator's watch sees it change to finished. One that
//!   finished while no operator watched (a restart, a re-list after a watch gap) is not counted;
//!   none counts twice.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::OwnerKey;

/// The label Kubernetes puts on a Job's pods (`job-name` before 1.27).
const JOB_NAME_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];

/// How a finished Job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobEnd {
    /// Condition `Complete`.
    Succeeded,
    /// Condition `Failed`.
    Failed,
}

impl JobEnd {
    /// The Job's end, when it is finished.
    pub fn of(job: &Job) -> Option<Self> {
        job.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .filter(|c| c.status == "True")
            .find_map(|c| match c.type_.as_str() {
                jobtide_core::jobs::COMPLETE => Some(Self::Succeeded),
                jobtide_core::jobs::FAILED => Some(Self::Failed),
                _ => None,
            })
    }

    const fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// The times of one finished Job: created, its first pod started, finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobTimes {
    pub created: SystemTime,
    /// When its first pod started (else the Job's `status.startTime`); `None` if neither is known.
    pub running: Option<SystemTime>,
    pub finished: SystemTime,
}

impl JobTimes {
    /// From the Job's status and its pods (`pods`: its ScaledJob's, from the cache); `now` for
    /// an end the status doesn't record. Kept in order (whole seconds may tie).
    pub fn of(job: &Job, pods: &[Arc<Pod>], now: SystemTime) -> Self {
        let name = job.metadata.name.as_deref();
        let status = job.status.as_ref();
        let finished = status
            .and_then(|s| s.completion_time.as_ref())
            .or_else(|| {
                status?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| {
                        c.status == "True"
                            && (c.type_ == jobtide_core::jobs::COMPLETE
                                || c.type_ == jobtide_core::jobs::FAILED)
                    })?
                    .last_transition_time
                    .as_ref()
            })
            .map_or(now, system_time);
        let created = job
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(finished, system_time)
            .min(finished);
        let pod_started = pods
            .iter()
            .filter(|pod| {
                let labels = pod.metadata.labels.as_ref();
                name.is_some()
                    && JOB_NAME_LABELS
                        .iter()
                        .any(|key| labels.and_then(|l| l.get(*key)).map(String::as_str) == name)
            })
            .filter_map(|pod| pod.status.as_ref()?.start_time.as_ref())
            .map(system_time)
            .min();
        let running = pod_started
            .or_else(|| status?.start_time.as_ref().map(system_time))
            .map(|t| t.clamp(created, finished));
        Self {
            created,
            running,
            finished,
        }
    }
}

fn system_time(time: &Time) -> SystemTime {
    SystemTime::from(time.0)
}

fn seconds(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[allow(non_snake_case)] // KEDA's label name
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScaledJobLabels {
    namespace: String,
    scaledJob: String,
}

#[allow(non_snake_case)] // KEDA's label name
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    namespace: String,
    scaledJob: String,
    outcome: &'static str,
}

type Histograms = Family<ScaledJobLabels, Histogram, fn() -> Histogram>;

/// The Job series.
#[derive(Debug, Clone)]
pub struct JobMetrics {
    finished: Family<FinishedLabels, Counter>,
    duration: Histograms,
    queued: Histograms,
}

impl JobMetrics {
    /// The series, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            finished: Family::default(),
            // 1 s to about 9 hours.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 16))
            }),
            // 1 s to about 2 hours (a pod waiting for a node, a quota, an image).
            queued: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 14))
            }),
        };
        registry.register(
            "jobtide_jobs_finished",
            "Jobs of a ScaledJob seen finishing, by outcome (succeeded, failed)",
            metrics.finished.clone(),
        );
        registry.register(
            "jobtide_job_duration_seconds",
            "From a Job's creation to its end (whole seconds, as Kubernetes records them)",
            metrics.duration.clone(),
        );
        registry.register(
            "jobtide_job_queue_seconds",
            "From a Job's creation to its first pod's start (whole seconds)",
            metrics.queued.clone(),
        );
        metrics
    }

    /// A Job of `owner` finished.
    pub(crate) fn finished(&self, owner: &OwnerKey, end: JobEnd, times: &JobTimes) {
        self.finished
            .get_or_create(&FinishedLabels {
                namespace: owner.0.clone(),
                scaledJob: owner.1.clone(),
                outcome: end.label(),
            })
            .inc();
        let labels = labels(owner);
        self.duration
            .get_or_create(&labels)
            .observe(seconds(times.created, times.finished));
        if let Some(running) = times.running {
            self.queued
                .get_or_create(&labels)
                .observe(seconds(times.created, running));
        }
    }

    /// The ScaledJob went: its series go.
    pub(crate) fn forget(&self, owner: &OwnerKey) {
        let labels = labels(owner);
        self.duration.remove(&labels);
        self.queued.remove(&labels);
        for outcome in [JobEnd::Succeeded, JobEnd::Failed] {
            self.finished.remove(&FinishedLabels {
                namespace: owner.0.clone(),
                scaledJob: owner.1.clone(),
                outcome: outcome.label(),
            });
        }
    }
}

fn labels(owner: &OwnerKey) -> ScaledJobLabels {
    ScaledJobLabels {
        namespace: owner.0.clone(),
        scaledJob: owner.1.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_jobs_times_come_from_its_status_and_its_first_pod() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "orders-1", "creationTimestamp": "1970-01-01T00:00:10Z"},
            "status": {"startTime": "1970-01-01T00:00:10Z", "completionTime": "1970-01-01T00:00:40Z",
                "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "1970-01-01T00:00:41Z"}]},
        }))
        .unwrap();
        let pod = |name: &str, start: &str| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": "p", "labels": {"batch.kubernetes.io/job-name": name}},
                    "status": {"startTime": start},
                }))
                .unwrap(),
            )
        };
        let pods = [
            pod("orders-1", "1970-01-01T00:00:25Z"),
            pod("orders-1", "1970-01-01T00:00:30Z"),
            pod("orders-2", "1970-01-01T00:00:12Z"),
        ];
        assert_eq!(JobEnd::of(&job), Some(JobEnd::Succeeded));
        assert_eq!(
            JobTimes::of(&job, &pods, at(99)),
            JobTimes {
                created: at(10),
                running: Some(at(25)),
                finished: at(40),
            }
        );
        assert_eq!(
            JobTimes::of(&job, &[], at(99)).running,
            Some(at(10)),
            "without pods: the Job's startTime"
        );
    }

    #[test]
    fn a_failed_job_ends_at_its_failed_condition_and_a_running_one_has_no_end() {
        let failed: Job = serde_json::from_value(json!({
            "metadata": {"name": "orders-1", "creationTimestamp": "1970-01-01T00:00:10Z"},
            "status": {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "1970-01-01T00:00:15Z"}]},
        }))
        .unwrap();
        assert_eq!(JobEnd::of(&failed), Some(JobEnd::Failed));
        assert_eq!(JobTimes::of(&failed, &[], at(99)).finished, at(15));
        assert_eq!(JobTimes::of(&failed, &[], at(99)).running, None);
        let running: Job =
            serde_json::from_value(json!({"metadata": {"name": "x"}, "status": {}})).unwrap();
        assert_eq!(JobEnd::of(&running), None);
    }
}
