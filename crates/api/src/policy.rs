//! A ScaledJob's spec as the pure decision inputs of `jobtide-core`: bounds, strategy,
//! aggregation, history limits, rollout, pending-pod conditions. The controller calls these and
//! hands the results to `core`; it holds no decision logic of its own.

use jobtide_core::jobs::{self, HistoryLimits, Rollout};
use jobtide_core::replicas::ReplicaBounds;
use jobtide_core::scaling::{Aggregation, ScalingStrategy, StrategyKind};

use crate::scaledjob::{
    MultipleScalersCalculation, PropagationPolicy, RolloutStrategy, ScaledJobSpec,
    ScalingStrategyKind,
};

impl ScaledJobSpec {
    /// Whether the ScaledJob runs in dispatch mode: its trigger is `kafka-dispatch` (which
    /// validation requires to be the only one). Such a ScaledJob is never polled for lag.
    pub fn dispatch_mode(&self) -> bool {
        self.triggers
            .iter()
            .any(|t| t.type_ == crate::trigger::TriggerType::KafkaDispatch.as_str())
    }

    /// Effective Min / Max (§1.3).
    pub fn bounds(&self) -> ReplicaBounds {
        ReplicaBounds::from_spec(self.min_replica_count, self.max_replica_count)
    }

    /// The scaling strategy in effect (`custom` falls back to `default` when its percentage
    /// doesn't parse).
    pub fn scaling_strategy(&self) -> ScalingStrategy {
        let strategy = self.scaling_strategy.as_ref();
        let kind = strategy.and_then(|s| s.strategy).map(|kind| match kind {
            ScalingStrategyKind::Default => StrategyKind::Default,
            ScalingStrategyKind::Custom => StrategyKind::Custom,
            ScalingStrategyKind::Accurate => StrategyKind::Accurate,
            ScalingStrategyKind::Eager => StrategyKind::Eager,
        });
        ScalingStrategy::select(
            kind,
            strategy.and_then(|s| s.custom_scaling_queue_length_deduction),
            strategy.and_then(|s| s.custom_scaling_running_job_percentage.as_deref()),
        )
    }

    /// `multipleScalersCalculation` (default `max`).
    pub fn aggregation(&self) -> Aggregation {
        match self
            .scaling_strategy
            .as_ref()
            .and_then(|s| s.multiple_scalers_calculation)
        {
            Some(MultipleScalersCalculation::Min) => Aggregation::Min,
            Some(MultipleScalersCalculation::Avg) => Aggregation::Avg,
            Some(MultipleScalersCalculation::Sum) => Aggregation::Sum,
            Some(MultipleScalersCalculation::Max) | None => Aggregation::Max,
        }
    }

    /// `scalingStrategy.pendingPodConditions` (empty when unset).
    pub fn pending_pod_conditions(&self) -> &[String] {
        self.scaling_strategy
            .as_ref()
            .and_then(|s| s.pending_pod_conditions.as_deref())
            .unwrap_or_default()
    }

    /// The history limits with KEDA's defaults.
    pub fn history_limits(&self) -> HistoryLimits {
        HistoryLimits::from_spec(
            self.successful_jobs_history_limit,
            self.failed_jobs_history_limit,
        )
    }

    /// The rollout in effect (D1: unset means gradual).
    pub fn rollout(&self) -> Rollout {
        let strategy = |s: RolloutStrategy| match s {
            RolloutStrategy::Gradual => jobs::RolloutStrategy::Gradual,
            RolloutStrategy::Immediate => jobs::RolloutStrategy::Immediate,
        };
        let rollout = self.rollout.as_ref();
        Rollout::from_spec(
            self.rollout_strategy.map(strategy),
            rollout.and_then(|r| r.strategy).map(strategy),
            rollout.and_then(|r| r.propagation_policy).map(|p| match p {
                PropagationPolicy::Foreground => jobs::Propagation::Foreground,
                PropagationPolicy::Background => jobs::Propagation::Background,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(extra: serde_json::Value) -> ScaledJobSpec {
        let mut value = json!({
            "jobTargetRef": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "triggers": [{"type": "kafka", "metadata": {}}],
        });
        if let (Some(v), Some(e)) = (value.as_object_mut(), extra.as_object()) {
            v.extend(e.clone());
        }
        serde_json::from_value(value).expect("spec")
    }

    #[test]
    fn defaults() {
        let spec = spec(json!({}));
        assert_eq!(spec.bounds(), ReplicaBounds { min: 0, max: 100 });
        assert_eq!(spec.scaling_strategy(), ScalingStrategy::Default);
        assert_eq!(spec.aggregation(), Aggregation::Max);
        assert!(spec.pending_pod_conditions().is_empty());
        assert_eq!(
            spec.history_limits(),
            HistoryLimits {
                successful: 100,
                failed: 100
            }
        );
        assert_eq!(spec.rollout().strategy, jobs::RolloutStrategy::Gradual);
    }

    #[test]
    fn the_seed_manifest_maps_to_kedas_values() {
        let spec = spec(
            json!({"maxReplicaCount": 30, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 2}),
        );
        assert_eq!(spec.bounds(), ReplicaBounds { min: 0, max: 30 });
        assert_eq!(
            spec.history_limits(),
            HistoryLimits {
                successful: 3,
                failed: 2
            }
        );
    }

    #[test]
    fn explicit_settings() {
        let spec = spec(json!({
            "minReplicaCount": 2,
            "rollout": {"strategy": "immediate", "propagationPolicy": "foreground"},
            "scalingStrategy": {"strategy": "custom", "customScalingQueueLengthDeduction": 1,
                "customScalingRunningJobPercentage": "0.5", "multipleScalersCalculation": "sum",
                "pendingPodConditions": ["Ready"]},
        }));
        assert_eq!(spec.bounds(), ReplicaBounds { min: 2, max: 100 });
        assert_eq!(
            spec.scaling_strategy(),
            ScalingStrategy::Custom {
                queue_length_deduction: 1,
                running_job_percentage: 0.5
            }
        );
        assert_eq!(spec.aggregation(), Aggregation::Sum);
        assert_eq!(spec.pending_pod_conditions(), ["Ready".to_owned()]);
        assert_eq!(
            spec.rollout(),
            Rollout {
                strategy: jobs::RolloutStrategy::Immediate,
                propagation: jobs::Propagation::Foreground
            }
        );
    }
}
