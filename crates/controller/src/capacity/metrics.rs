//! Capacity's series: Jobs waiting for capacity by reason (a gauge per ScaledJob, removed with
//! it), and Job creations a ResourceQuota refused. Labels are names and fixed reasons only.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cache::OwnerKey;

#[allow(non_snake_case)] // KEDA's label name
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaitingLabels {
    namespace: String,
    scaledJob: String,
    reason: &'static str,
}

#[allow(non_snake_case)]
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScaledJobLabels {
    namespace: String,
    scaledJob: String,
}

/// The capacity series.
#[derive(Debug, Clone)]
pub struct CapacityMetrics {
    waiting: Family<WaitingLabels, Gauge>,
    quota_refusals: Family<ScaledJobLabels, Counter>,
}

const REASONS: [&str; 5] = [
    "unschedulable",
    "scale_up",
    "no_scale_up",
    "kueue_queued",
    "kueue_inadmissible",
];

impl CapacityMetrics {
    /// Registers the series.
    pub fn register(registry: &mut Registry) -> Self {
        let waiting = Family::default();
        let quota_refusals = Family::default();
        registry.register(
            "jobtide_jobs_waiting_for_capacity",
            "Unfinished Jobs waiting for capacity, by reason (unschedulable, scale_up, no_scale_up, kueue_queued, kueue_inadmissible); see the CapacityAvailable condition",
            waiting.clone(),
        );
        registry.register(
            "jobtide_job_create_quota_refusals",
            "Job creations a ResourceQuota refused (403 exceeded quota)",
            quota_refusals.clone(),
        );
        Self {
            waiting,
            quota_refusals,
        }
    }

    /// Sets the waiting Jobs of `owner` by reason.
    pub(crate) fn set_waiting<'a>(
        &self,
        owner: &OwnerKey,
        waiting: impl IntoIterator<Item = (&'a &'static str, &'a i64)> + Clone,
    ) {
        // No series for a ScaledJob none of whose Jobs waits (memory at scale).
        if waiting.clone().into_iter().all(|(_, count)| *count == 0) {
            self.forget_waiting(owner);
            return;
        }
        for (reason, count) in waiting {
            self.waiting
                .get_or_create(&WaitingLabels {
                    namespace: owner.0.clone(),
                    scaledJob: owner.1.clone(),
                    reason,
                })
                .set(*count);
        }
    }

    /// Counts a quota refusal.
    pub(crate) fn quota_refused(&self, owner: &OwnerKey) {
        self.quota_refusals
            .get_or_create(&ScaledJobLabels {
                namespace: owner.0.clone(),
                scaledJob: owner.1.clone(),
            })
            .inc();
    }

    fn forget_waiting(&self, owner: &OwnerKey) {
        for reason in REASONS {
            self.waiting.remove(&WaitingLabels {
                namespace: owner.0.clone(),
                scaledJob: owner.1.clone(),
                reason,
            });
        }
    }

    /// Removes the series of a deleted ScaledJob.
    pub(crate) fn forget(&self, owner: &OwnerKey) {
        self.forget_waiting(owner);
        self.quota_refusals.remove(&ScaledJobLabels {
            namespace: owner.0.clone(),
            scaledJob: owner.1.clone(),
        });
    }
}
