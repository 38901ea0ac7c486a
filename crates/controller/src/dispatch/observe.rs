//! A dispatcher's Jobs as the ledger sees them: read from the operator's Job cache (the same
//! watch the lag polls count from), recognised by their coordinate labels and the dispatch hash
//! of (ScaledJob, topic), so Jobs of another topic or of lag mode are never mistaken for them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jobtide_core::dispatch::{
    DEAD_LETTERED_ANNOTATION, DispatchHash, JobCoordinates, ObservedJob, Outcome,
};
use jobtide_core::jobs::{COMPLETE, FAILED};
use k8s_openapi::api::batch::v1::Job;

/// One of the dispatcher's Jobs.
#[derive(Debug, Clone)]
pub(crate) struct DispatchedJob {
    /// The Job's name.
    pub name: String,
    /// What the ledger is told.
    pub observed: ObservedJob,
    /// The Job as the cache holds it (its times, for the spans and metrics of its end).
    pub job: Arc<Job>,
}

/// The Jobs among `jobs` that `hash` dispatched.
pub(crate) fn dispatched(jobs: &[Arc<Job>], hash: DispatchHash) -> Vec<DispatchedJob> {
    jobs.iter()
        .filter_map(|job| {
            let labels = job.metadata.labels.as_ref()?;
            let coordinates = JobCoordinates::from_labels(labels)?;
            if coordinates.hash != hash {
                return None;
            }
            let dead_lettered = job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEAD_LETTERED_ANNOTATION))
                .is_some_and(|v| v == "true");
            Some(DispatchedJob {
                name: job.metadata.name.clone()?,
                observed: ObservedJob {
                    partition: coordinates.partition,
                    offset: coordinates.offset,
                    attempt: coordinates.attempt,
                    outcome: outcome(job),
                    dead_lettered,
                },
                job: Arc::clone(job),
            })
        })
        .collect()
}

/// The resourceVersion of each Job as a dispatcher session last looked at it. A Job seen again
/// unchanged is not observed again — the ledger would ignore it (a repeated observation changes
/// nothing, `Ledger::observed`) — so that a wake-up costs the Jobs that changed, not a label
/// parse and a ledger lookup for every Job in flight (which made a burst of n messages cost n²).
#[derive(Debug, Default)]
pub(crate) struct Changes {
    versions: HashMap<String, String>,
}

impl Changes {
    /// The Jobs among `jobs` that `hash` dispatched and that changed since the last call (all of
    /// them the first time).
    pub fn dispatched(&mut self, jobs: &[Arc<Job>], hash: DispatchHash) -> Vec<DispatchedJob> {
        let changed: Vec<Arc<Job>> = jobs
            .iter()
            .filter(|job| {
                let (Some(name), Some(version)) =
                    (&job.metadata.name, &job.metadata.resource_version)
                else {
                    return true;
                };
                if self.versions.get(name) == Some(version) {
                    return false;
                }
                self.versions.insert(name.clone(), version.clone());
                true
            })
            .cloned()
            .collect();
        dispatched(&changed, hash)
    }

    /// Forgets the Jobs that are no longer among `jobs` (deleted).
    pub fn forget_deleted(&mut self, jobs: &[Arc<Job>]) {
        let present: HashSet<&str> = jobs
            .iter()
            .filter_map(|job| job.metadata.name.as_deref())
            .collect();
        self.versions
            .retain(|name, _| present.contains(name.as_str()));
    }
}

/// Succeeded on `Complete`, failed on `Failed` (after the Job's own `backoffLimit`), with the
/// condition's reason and message; running otherwise.
fn outcome(job: &Job) -> Outcome {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten();
    for condition in conditions {
        if condition.status != "True" {
            continue;
        }
        if condition.type_ == COMPLETE {
            return Outcome::Succeeded;
        }
        if condition.type_ == FAILED {
            let reason = match (&condition.reason, &condition.message) {
                (Some(reason), Some(message)) => format!("{reason}: {message}"),
                (Some(text), None) | (None, Some(text)) => text.clone(),
                (None, None) => "Failed".to_owned(),
            };
            return Outcome::Failed { reason };
        }
    }
    Outcome::Running
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(labels: serde_json::Value, conditions: serde_json::Value) -> Arc<Job> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "j", "labels": labels, "annotations": {DEAD_LETTERED_ANNOTATION: "true"}},
                "status": {"conditions": conditions},
            }))
            .expect("test Job"),
        )
    }

    fn versioned(name: &str, version: &str, labels: &serde_json::Value) -> Arc<Job> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "resourceVersion": version, "labels": labels},
            }))
            .expect("test Job"),
        )
    }

    #[test]
    fn a_job_seen_again_unchanged_is_not_observed_again_and_a_changed_or_recreated_one_is() {
        let hash = DispatchHash::of("orders", "orders");
        let labels = |offset| {
            json!(
                JobCoordinates {
                    partition: 0,
                    offset,
                    attempt: 1,
                    hash,
                }
                .labels()
            )
        };
        let names = |found: Vec<DispatchedJob>| -> Vec<String> {
            found.into_iter().map(|job| job.name).collect()
        };
        let mut changes = Changes::default();
        let (a, b) = (
            versioned("a", "1", &labels(0)),
            versioned("b", "2", &labels(1)),
        );
        assert_eq!(
            names(changes.dispatched(&[a.clone(), b.clone()], hash)),
            ["a", "b"],
            "everything, the first time"
        );
        assert!(changes.dispatched(&[a.clone(), b.clone()], hash).is_empty());
        let b_finished = versioned("b", "3", &labels(1));
        assert_eq!(
            names(changes.dispatched(&[a.clone(), b_finished.clone()], hash)),
            ["b"],
            "only the changed Job"
        );
        changes.forget_deleted(std::slice::from_ref(&b_finished));
        assert_eq!(
            names(changes.dispatched(&[a, b_finished], hash)),
            ["a"],
            "a forgotten Job is new again"
        );
    }

    #[test]
    fn only_this_dispatchers_jobs_count_with_their_outcomes() {
        let hash = DispatchHash::of("orders", "orders");
        let ours = JobCoordinates {
            partition: 1,
            offset: 7,
            attempt: 2,
            hash,
        }
        .labels();
        let other_topic = JobCoordinates {
            hash: DispatchHash::of("orders", "payments"),
            ..JobCoordinates::from_labels(&ours).expect("labels")
        }
        .labels();
        let jobs = [
            job(
                json!(ours),
                json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]),
            ),
            job(json!(other_topic), json!([])),
            job(json!({"scaledjob.keda.sh/name": "orders"}), json!([])),
        ];
        let found = dispatched(&jobs, hash);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].observed,
            ObservedJob {
                partition: 1,
                offset: 7,
                attempt: 2,
                outcome: Outcome::Failed {
                    reason: "BackoffLimitExceeded: Job has reached the specified backoff limit"
                        .into()
                },
                dead_lettered: true,
            }
        );
    }
}
