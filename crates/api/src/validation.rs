//! ScaledJob-level rules: what KEDA's CRD schema, admission webhook (§1.5) and reconciler (§2.2)
//! reject, plus warnings for settings that are accepted but do not do what they seem to; and in
//! [`check_object_meta`] / [`check_job_spec`], what the Kubernetes API server refuses of the
//! ScaledJob's metadata and of the Job it describes.

use std::collections::BTreeSet;

use crate::scaledjob::{ScaledJobSpec, ScalingStrategyKind};

mod kubernetes;

pub use kubernetes::{JobFindings, MAX_ANNOTATIONS_BYTES, check_job_spec, check_object_meta};

/// The longest ScaledJob name that works: it becomes the value of the
/// `scaledjob.keda.sh/name` label on every Job, and label values are at most 63 characters.
pub const MAX_NAME_LEN: usize = 63;

/// The most triggers one ScaledJob may have: each is resolved and measured every poll, and a
/// ScaledJob with 10,000 triggers kept the operator busy for minutes per poll and its deletion
/// waiting (issue 18). KEDA sets no limit; real ScaledJobs have a handful.
pub const MAX_TRIGGERS: usize = 100;

/// Findings for one ScaledJob.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecFindings {
    /// Errors about the ScaledJob as a whole.
    pub errors: Vec<String>,
    /// Warnings about the ScaledJob as a whole.
    pub warnings: Vec<String>,
    /// Per trigger (same order as `spec.triggers`): errors and warnings.
    pub triggers: Vec<TriggerFindings>,
}

/// Findings for one trigger that don't come from its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerFindings {
    /// Errors.
    pub errors: Vec<String>,
    /// Warnings.
    pub warnings: Vec<String>,
}

impl SpecFindings {
    /// Whether nothing stops this ScaledJob from working.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty() && self.triggers.iter().all(|t| t.errors.is_empty())
    }
}

fn minimum(out: &mut Vec<String>, field: &str, value: Option<i32>, min: i32) {
    if let Some(value) = value.filter(|v| *v < min) {
        out.push(format!(
            "{field}: Invalid value: {value}: {field} in body should be greater than or equal to {min}"
        ));
    }
}

/// Checks a ScaledJob named `name`.
pub fn check_scaled_job(name: &str, spec: &ScaledJobSpec) -> SpecFindings {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if name.len() > MAX_NAME_LEN {
        errors.push(format!(
            "metadata.name: \"{name}\" is {} characters long; it becomes the value of the \
             scaledjob.keda.sh/name label on every Job, and label values are at most {MAX_NAME_LEN} \
             characters, so no Job could be created",
            name.len()
        ));
    }
    // The CRD schema's minimums (KEDA 2.20 markers).
    minimum(
        &mut errors,
        "spec.pollingInterval",
        spec.polling_interval,
        1,
    );
    minimum(
        &mut errors,
        "spec.successfulJobsHistoryLimit",
        spec.successful_jobs_history_limit,
        0,
    );
    minimum(
        &mut errors,
        "spec.failedJobsHistoryLimit",
        spec.failed_jobs_history_limit,
        0,
    );
    minimum(
        &mut errors,
        "spec.minReplicaCount",
        spec.min_replica_count,
        0,
    );
    minimum(
        &mut errors,
        "spec.maxReplicaCount",
        spec.max_replica_count,
        1,
    );

    // The admission webhook.
    if spec.triggers.is_empty() {
        errors.push("no triggers defined in the ScaledObject/ScaledJob".into());
    }
    if spec.triggers.len() > MAX_TRIGGERS {
        errors.push(format!(
            "spec.triggers: Too many: {}: a ScaledJob has at most {MAX_TRIGGERS} triggers in \
             jobtide (each is measured every poll; KEDA sets no limit)",
            spec.triggers.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for trigger in &spec.triggers {
        if let Some(trigger_name) = trigger.name.as_deref().filter(|n| !n.is_empty())
            && !seen.insert(trigger_name)
        {
            errors.push(format!(
                "triggerName \"{trigger_name}\" is defined multiple times in the \
                 ScaledObject/ScaledJob, but it must be unique"
            ));
        }
    }

    // Dispatch mode (jobtide's own): one Job per message, so nothing else may create Jobs and
    // the lag-mode knobs mean nothing.
    if spec.triggers.iter().any(|t| t.type_ == "kafka-dispatch") {
        if spec.triggers.len() > 1 {
            errors.push(
                "spec.triggers: a kafka-dispatch trigger must be the ScaledJob's only trigger \
                 (it makes one Job per message; another trigger would make Jobs too)"
                    .into(),
            );
        }
        if spec.min_replica_count.is_some_and(|n| n > 0) {
            warnings.push(
                "spec.minReplicaCount has no effect with a kafka-dispatch trigger: Jobs are made \
                 one per message"
                    .into(),
            );
        }
        if spec.scaling_strategy.is_some() {
            warnings.push(
                "spec.scalingStrategy has no effect with a kafka-dispatch trigger: Jobs are made \
                 one per message, at most maxReplicaCount at once"
                    .into(),
            );
        }
    }
    if spec.rollout_strategy.is_some() {
        warnings.push(
            "spec.rolloutStrategy is deprecated, use spec.rollout.strategy (it still takes \
             precedence when set)"
                .into(),
        );
    }
    if let Some(strategy) = &spec.scaling_strategy {
        if strategy.strategy == Some(ScalingStrategyKind::Custom) {
            let percentage = strategy.custom_scaling_running_job_percentage.as_deref();
            if percentage.is_none_or(|p| p.trim().parse::<f64>().is_err()) {
                warnings.push(format!(
                    "spec.scalingStrategy.customScalingRunningJobPercentage {percentage:?} is not a \
                     number: the custom strategy falls back to default, as in KEDA"
                ));
            }
        }
        if let Some(conditions) = &strategy.pending_pod_conditions {
            let unique: BTreeSet<&String> = conditions.iter().collect();
            if unique.len() != conditions.len() {
                warnings.push(
                    "spec.scalingStrategy.pendingPodConditions has duplicates; jobtide ignores \
                     them (in KEDA such a list can never be satisfied, difference D10)"
                        .into(),
                );
            }
        }
    }

    let triggers = spec
        .triggers
        .iter()
        .map(|trigger| {
            let mut findings = TriggerFindings::default();
            if trigger
                .metric_type
                .as_deref()
                .is_some_and(|m| !m.is_empty())
            {
                findings
                    .errors
                    .push("Cannot set metricType in ScaledJob triggers".into());
            }
            if trigger.use_cached_metrics == Some(true) {
                findings
                    .warnings
                    .push("useCachedMetrics is not supported for ScaledJobs and is ignored".into());
            }
            findings
        })
        .collect();
    SpecFindings {
        errors,
        warnings,
        triggers,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(value: serde_json::Value) -> ScaledJobSpec {
        let mut base = json!({
            "jobTargetRef": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "triggers": [{"type": "kafka", "metadata": {}}],
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), value.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).expect("test spec")
    }

    #[test]
    fn a_plain_spec_has_no_findings() {
        let findings = check_scaled_job("sj", &spec(json!({})));
        assert!(findings.is_valid());
        assert!(findings.warnings.is_empty());
    }

    #[test]
    fn empty_triggers_and_duplicate_names_are_webhook_errors() {
        assert_eq!(
            check_scaled_job("sj", &spec(json!({"triggers": []}))).errors,
            vec!["no triggers defined in the ScaledObject/ScaledJob"]
        );
        let findings = check_scaled_job(
            "sj",
            &spec(json!({"triggers": [
                {"type": "kafka", "name": "a", "metadata": {}},
                {"type": "kafka", "name": "a", "metadata": {}},
                {"type": "kafka", "name": "", "metadata": {}},
                {"type": "kafka", "name": "", "metadata": {}},
            ]})),
        );
        assert_eq!(
            findings.errors,
            vec![
                "triggerName \"a\" is defined multiple times in the ScaledObject/ScaledJob, but it must be unique"
            ]
        );
    }

    #[test]
    fn schema_minimums_are_enforced() {
        let findings = check_scaled_job(
            "sj",
            &spec(json!({"pollingInterval": 0, "maxReplicaCount": 0, "minReplicaCount": -1})),
        );
        assert_eq!(
            findings.errors,
            vec![
                "spec.pollingInterval: Invalid value: 0: spec.pollingInterval in body should be greater than or equal to 1",
                "spec.minReplicaCount: Invalid value: -1: spec.minReplicaCount in body should be greater than or equal to 0",
                "spec.maxReplicaCount: Invalid value: 0: spec.maxReplicaCount in body should be greater than or equal to 1",
            ]
        );
    }

    #[test]
    fn metric_type_is_a_trigger_error_and_cached_metrics_a_warning() {
        let findings = check_scaled_job(
            "sj",
            &spec(json!({"triggers": [
            {"type": "kafka", "metadata": {}, "metricType": "AverageValue", "useCachedMetrics": true}]})),
        );
        assert!(!findings.is_valid());
        assert_eq!(
            findings.triggers[0].errors,
            vec!["Cannot set metricType in ScaledJob triggers"]
        );
        assert_eq!(findings.triggers[0].warnings.len(), 1);
    }

    #[test]
    fn more_than_a_hundred_triggers_are_an_error() {
        let trigger = json!({"type": "kafka", "metadata": {}});
        let at_limit = spec(json!({"triggers": vec![trigger.clone(); MAX_TRIGGERS]}));
        assert!(
            check_scaled_job("sj", &at_limit)
                .errors
                .iter()
                .all(|e| !e.starts_with("spec.triggers: Too many"))
        );
        let over = spec(json!({"triggers": vec![trigger; MAX_TRIGGERS + 1]}));
        let findings = check_scaled_job("sj", &over);
        assert!(!findings.is_valid());
        assert!(
            findings
                .errors
                .iter()
                .any(|e| e.starts_with("spec.triggers: Too many: 101: a ScaledJob has at most 100")),
            "{:?}",
            findings.errors
        );
    }

    #[test]
    fn a_dispatch_trigger_stands_alone_and_lag_knobs_warn() {
        let dispatch = json!({"type": "kafka-dispatch", "metadata": {}});
        let lag = json!({"type": "kafka", "metadata": {}});
        let mut alone = spec(json!({"triggers": [dispatch.clone()]}));
        assert_eq!(
            check_scaled_job("sj", &alone),
            SpecFindings {
                triggers: vec![TriggerFindings::default()],
                ..SpecFindings::default()
            }
        );
        alone.min_replica_count = Some(2);
        alone.scaling_strategy = serde_json::from_value(json!({"strategy": "accurate"})).unwrap();
        let findings = check_scaled_job("sj", &alone);
        assert!(findings.is_valid());
        assert_eq!(findings.warnings.len(), 2, "{:?}", findings.warnings);
        assert!(findings.warnings[0].starts_with("spec.minReplicaCount has no effect"));
        assert!(findings.warnings[1].starts_with("spec.scalingStrategy has no effect"));

        let mixed = check_scaled_job("sj", &spec(json!({"triggers": [dispatch, lag]})));
        assert!(!mixed.is_valid());
        assert!(
            mixed.errors[0].starts_with("spec.triggers: a kafka-dispatch trigger must be"),
            "{:?}",
            mixed.errors
        );
    }

    #[test]
    fn names_longer_than_a_label_value_are_errors() {
        let name = "x".repeat(64);
        assert_eq!(check_scaled_job(&name, &spec(json!({}))).errors.len(), 1);
        assert!(check_scaled_job(&"x".repeat(63), &spec(json!({}))).is_valid());
    }

    #[test]
    fn custom_strategy_fallback_and_duplicate_conditions_warn() {
        let findings = check_scaled_job(
            "sj",
            &spec(json!({"scalingStrategy": {
            "strategy": "custom", "customScalingRunningJobPercentage": "half",
            "pendingPodConditions": ["Ready", "Ready"]}})),
        );
        assert!(findings.is_valid());
        assert_eq!(findings.warnings.len(), 2);
    }
}
