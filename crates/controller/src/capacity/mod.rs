//! Capacity, the controller's part: the facts `jobtide_core::capacity` decides on, gathered from
//! the caches and watches ([`watch`]) and, for Jobs Kueue holds, their Workloads ([`kueue`]);
//! the memory of a quota refusal; and the waiting-Jobs metric.
//!
//! What an idle poll costs: nothing more (no Job waits, so nothing is read). A poll with
//! Unschedulable pods reads the autoscaler events from the watch cache. Only a creating poll with
//! Jobs suspended by Kueue lists the namespace's Workloads (one call).

mod kueue;
mod metrics;
pub mod watch;

use std::collections::HashMap;
use std::time::Instant;

use jobtide_api::ScaledJob;
use jobtide_core::capacity::{
    CapacityPolicy, KueueAdmission, PENDING_BUDGET_ANNOTATION, QUOTA_RETRY, QuotaRefusal,
};
use jobtide_core::jobs::JobFacts;
use kube::ResourceExt;

pub use metrics::CapacityMetrics;

use crate::context::Context;

/// The quota refusal a ScaledJob remembers (in its state).
#[derive(Debug, Clone)]
pub(crate) struct QuotaBlock {
    /// The API server's words, from `exceeded quota` on.
    pub message: String,
    /// When the refusal came.
    pub at: Instant,
    /// The namespace's ResourceQuota change counter then.
    pub changes: u64,
}

impl QuotaBlock {
    /// The refusal as `core` reads it: may one Job be tried again?
    pub fn refusal(&self, changes_now: u64, now: Instant) -> QuotaRefusal {
        QuotaRefusal {
            message: self.message.clone(),
            may_retry: changes_now != self.changes
                || now.saturating_duration_since(self.at) >= QUOTA_RETRY,
        }
    }
}

/// The `exceeded quota` part of a create refused by a ResourceQuota (403 Forbidden).
pub(crate) fn quota_refusal(error: &kube::Error) -> Option<String> {
    match error {
        kube::Error::Api(status) if status.code == 403 => status
            .message
            .find("exceeded quota")
            .map(|at| status.message[at..].to_owned()),
        _ => None,
    }
}

/// The pending budget of `scaled_job`, or why its annotation is invalid (naming the ScaledJob
/// and the field).
pub(crate) fn checked_policy(scaled_job: &ScaledJob) -> Result<CapacityPolicy, String> {
    CapacityPolicy::from_annotation(
        scaled_job
            .annotations()
            .get(PENDING_BUDGET_ANNOTATION)
            .map(String::as_str),
    )
    .map_err(|error| {
        format!(
            "ScaledJob {}/{}: {error}",
            scaled_job.namespace().unwrap_or_default(),
            scaled_job.name_any()
        )
    })
}

/// The pending budget of a ScaledJob that reached a poll: the reconcile stops one whose
/// annotation is invalid before it polls ([`checked_policy`]), so the default here is never
/// what such a ScaledJob runs with.
pub(crate) fn policy(scaled_job: &ScaledJob) -> CapacityPolicy {
    checked_policy(scaled_job).unwrap_or(CapacityPolicy::DEFAULT)
}

/// The Job template's requests as `cpu=2, memory=4Gi` (per container when there are several),
/// cut at 200 characters: they go into conditions and events.
pub(crate) fn requests(scaled_job: &ScaledJob) -> String {
    let containers = scaled_job
        .spec
        .job_target_ref
        .template
        .spec
        .as_ref()
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    let one = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .map(|r| {
                r.iter()
                    .map(|(k, v)| format!("{k}={}", v.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let text = match containers {
        [only] => one(only),
        many => many
            .iter()
            .map(|c| (c, one(c)))
            .filter(|(_, r)| !r.is_empty())
            .map(|(c, r)| format!("{}: {r}", c.name))
            .collect::<Vec<_>>()
            .join("; "),
    };
    if text.chars().count() > 200 {
        let cut: String = text.chars().take(200).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Adds what the autoscaler said about each Unschedulable pod and, on a `creating` poll, what
/// Kueue says about each suspended Job (its Workload's `QuotaReserved` condition).
pub(crate) async fn annotate(
    context: &Context,
    scaled_job: &ScaledJob,
    facts: &mut [JobFacts],
    creating: bool,
) {
    let namespace = scaled_job.namespace().unwrap_or_default();
    for pod in facts.iter_mut().flat_map(|job| job.pods.iter_mut()) {
        if pod.unschedulable.is_some() {
            pod.autoscaler = context.autoscaler_events.verdict(&namespace, &pod.name);
        }
    }
    if !facts.iter().any(|job| job.kueue.is_some()) {
        return;
    }
    let uid = scaled_job.uid().unwrap_or_default();
    if creating {
        let jobs = context.jobs.of(&Context::owner(scaled_job));
        let read = kueue::admissions(context, &namespace, &jobs, facts).await;
        context.with_state(&uid, |state| state.set_kueue_admissions(read));
    }
    context.with_state(&uid, |state| {
        if let Some(admissions) = state.kueue_admissions() {
            apply_admissions(facts, admissions);
        }
    });
}

/// Gives each Kueue-held Job in `facts` its admission as last read (a Job not read yet keeps
/// "pending, no Workload condition yet").
fn apply_admissions(facts: &mut [JobFacts], admissions: &HashMap<String, KueueAdmission>) {
    for job in facts.iter_mut().filter(|job| job.kueue.is_some()) {
        if let Some(admission) = admissions.get(&job.name) {
            job.kueue = Some(admission.clone());
        }
    }
}

/// The capacity of a dispatch ScaledJob now (its Jobs as the caches show them).
pub(crate) async fn assess_dispatch(
    context: &Context,
    scaled_job: &ScaledJob,
    creating: bool,
    previous: Option<&jobtide_core::status::Condition>,
) -> jobtide_core::capacity::Assessment {
    let owner = Context::owner(scaled_job);
    let mut facts =
        jobtide_api::facts::jobs_facts(&context.jobs.of(&owner), &context.pods.of(&owner));
    annotate(context, scaled_job, &mut facts, creating).await;
    let namespace = scaled_job.namespace().unwrap_or_default();
    let quota = refusal(context, &scaled_job.uid().unwrap_or_default(), &namespace);
    let generation = scaled_job.metadata.generation.unwrap_or(0).to_string();
    let assessment = jobtide_core::capacity::assess(&jobtide_core::capacity::CapacityInput {
        jobs: &facts,
        generation: &generation,
        requests: &requests(scaled_job),
        quota: quota.as_ref(),
        policy: policy(scaled_job),
        previous,
    });
    context
        .metrics
        .capacity
        .set_waiting(&owner, assessment.waiting.iter());
    assessment
}

/// The quota refusal in force for `uid`, as `core` reads it.
pub(crate) fn refusal(context: &Context, uid: &str, namespace: &str) -> Option<QuotaRefusal> {
    let block = context.with_state(uid, |state| state.quota_block().cloned())?;
    Some(block.refusal(context.quota_changes.of(namespace), Instant::now()))
}

/// Records a quota refusal for `uid`.
pub(crate) fn refused(context: &Context, uid: &str, namespace: &str, message: String) {
    let changes = context.quota_changes.of(namespace);
    context.with_state(uid, |state| {
        state.set_quota_block(Some(QuotaBlock {
            message,
            at: Instant::now(),
            changes,
        }));
    });
}

/// A Job was created: no quota refusal is in force any more.
pub(crate) fn created(context: &Context, uid: &str) {
    context.with_existing_state(uid, |state| state.set_quota_block(None));
}

/// Kueue's admission for a Job whose Workload shows `conditions` (`None`: no Workload found).
pub(crate) fn admission(conditions: Option<&[serde_json::Value]>) -> KueueAdmission {
    let reserved = conditions
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "QuotaReserved");
    let Some(reserved) = reserved else {
        return KueueAdmission::Pending(None);
    };
    let message = reserved["message"].as_str().unwrap_or_default().to_owned();
    if reserved["status"] == "False" && reserved["reason"] == "Inadmissible" {
        KueueAdmission::Inadmissible(message)
    } else {
        KueueAdmission::Pending(Some(message).filter(|m| !m.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_403_naming_a_quota_is_a_quota_refusal() {
        let status = |code: u16, message: &str| {
            kube::Error::Api(
                kube::core::Status::failure(message, "Forbidden")
                    .with_code(code)
                    .boxed(),
            )
        };
        let refused = status(
            403,
            "jobs.batch \"sj-x\" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1, used: count/jobs.batch=2, limited: count/jobs.batch=2",
        );
        assert_eq!(
            quota_refusal(&refused).as_deref(),
            Some(
                "exceeded quota: jobs, requested: count/jobs.batch=1, used: count/jobs.batch=2, limited: count/jobs.batch=2"
            )
        );
        assert_eq!(quota_refusal(&status(403, "RBAC: access denied")), None);
        assert_eq!(quota_refusal(&status(500, "exceeded quota")), None);
    }

    #[test]
    fn a_block_may_retry_after_a_quota_change_or_the_retry_interval() {
        let at = Instant::now();
        let block = QuotaBlock {
            message: "m".into(),
            at,
            changes: 3,
        };
        assert!(!block.refusal(3, at).may_retry);
        assert!(block.refusal(4, at).may_retry);
        assert!(block.refusal(3, at + QUOTA_RETRY).may_retry);
    }

    #[test]
    fn kueue_admission_reads_quota_reserved() {
        assert_eq!(admission(None), KueueAdmission::Pending(None));
        let pending = [
            json!({"type": "QuotaReserved", "status": "False", "reason": "Pending",
            "message": "couldn't assign flavors to pod set main: insufficient unused quota for cpu"}),
        ];
        assert!(matches!(
            admission(Some(&pending)),
            KueueAdmission::Pending(Some(m)) if m.contains("insufficient unused quota")
        ));
        let inadmissible = [json!({"type": "QuotaReserved", "status": "False",
            "reason": "Inadmissible", "message": "LocalQueue team-a doesn't exist"})];
        assert_eq!(
            admission(Some(&inadmissible)),
            KueueAdmission::Inadmissible("LocalQueue team-a doesn't exist".into())
        );
    }

    #[test]
    fn polls_between_workload_reads_keep_what_kueue_last_said() {
        let held = |name: &str| JobFacts {
            name: name.into(),
            kueue: Some(KueueAdmission::Pending(None)),
            ..JobFacts::default()
        };
        let mut facts = vec![
            held("read"),
            held("created-since"),
            JobFacts {
                name: "admitted".into(),
                ..JobFacts::default()
            },
        ];
        let read = HashMap::from([
            (
                "read".to_owned(),
                KueueAdmission::Inadmissible("LocalQueue team-a doesn't exist".into()),
            ),
            (
                "admitted".to_owned(),
                KueueAdmission::Pending(Some("stale".into())),
            ),
        ]);
        apply_admissions(&mut facts, &read);
        assert_eq!(
            facts[0].kueue,
            Some(KueueAdmission::Inadmissible(
                "LocalQueue team-a doesn't exist".into()
            ))
        );
        assert_eq!(facts[1].kueue, Some(KueueAdmission::Pending(None)));
        assert_eq!(facts[2].kueue, None, "a Job Kueue no longer holds stays so");
    }

    #[test]
    fn requests_name_each_resource_and_are_cut() {
        let sj: ScaledJob = serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "s"},
            "spec": {"jobTargetRef": {"template": {"spec": {"containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]}}},
                "triggers": [{"type": "kafka", "metadata": {}}]},
        }))
        .expect("sj");
        assert_eq!(requests(&sj), "cpu=2, memory=4Gi");
    }
}
