//! A dispatcher's Jobs as the ledger sees them: read from the operator's Job cache (the same
//! watch the lag polls count from), recognised by their coordinate labels and the dispatch hash
//! of (ScaledJob, topic), so Jobs of another topic or of lag mode are never mistaken for them.

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
            })
        })
        .collect()
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
