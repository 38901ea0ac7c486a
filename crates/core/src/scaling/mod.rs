//! From trigger measurements to the number of Jobs to create (keda-compat §3.2–§3.4), with
//! jobtide's difference D9 (`eager` subtracts pending Jobs once, not twice).

use crate::replicas::ReplicaBounds;

/// One trigger's successful measurement in a poll. Triggers that errored are simply absent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TriggerMeasurement {
    /// The metric value (for Kafka: the capped total lag).
    pub queue_length: f64,
    /// The mean AverageValue target of the trigger's metrics (for Kafka: `lagThreshold`).
    pub target: f64,
    /// The scaler's activity flag.
    pub active: bool,
}

impl TriggerMeasurement {
    /// `min(queueLength / target, Max)`; 0 when the target is 0.
    pub fn max_value(&self, bounds: ReplicaBounds) -> f64 {
        if self.target == 0.0 {
            0.0
        } else {
            (self.queue_length / self.target).min(as_f64(bounds.max))
        }
    }
}

/// The mean of a trigger's metric targets; a missing AverageValue counts as 0, no metrics give 0.
pub fn mean_target(targets: &[Option<f64>]) -> f64 {
    if targets.is_empty() {
        return 0.0;
    }
    targets.iter().map(|t| t.unwrap_or(0.0)).sum::<f64>() / as_f64(targets.len())
}

/// `scalingStrategy.multipleScalersCalculation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    /// The largest active trigger (the default).
    #[default]
    Max,
    /// The smallest active trigger (a selected 0 is replaced by any later active trigger).
    Min,
    /// The mean over active triggers.
    Avg,
    /// The sum over active triggers.
    Sum,
}

/// All triggers of a ScaledJob combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Whether the ScaledJob is active (forced when `min > 0`).
    pub is_active: bool,
    /// The combined queue length.
    pub queue_length: f64,
    /// `ceil(queueLength)`: KEDA's `scaleTo` (messages, not Jobs).
    pub scale_to: i64,
    /// `ceil(min(maxValue, Max))`: the number of Jobs the metric calls for.
    pub max_scale: i64,
}

/// Combines the measurements of the triggers that did not error (§3.3).
pub fn aggregate(
    aggregation: Aggregation,
    triggers: &[TriggerMeasurement],
    bounds: ReplicaBounds,
) -> Aggregate {
    let mut queue_length = 0.0;
    let mut max_value = 0.0;
    let mut active = false;
    match aggregation {
        Aggregation::Max => {
            for t in triggers.iter().filter(|t| t.active) {
                if t.queue_length > queue_length {
                    (queue_length, max_value, active) = (t.queue_length, t.max_value(bounds), true);
                }
            }
        }
        Aggregation::Min => {
            for t in triggers.iter().filter(|t| t.active) {
                if queue_length == 0.0 || t.queue_length < queue_length {
                    (queue_length, max_value, active) = (t.queue_length, t.max_value(bounds), true);
                }
            }
        }
        Aggregation::Avg | Aggregation::Sum => {
            let active_triggers: Vec<&TriggerMeasurement> =
                triggers.iter().filter(|t| t.active).collect();
            if !active_triggers.is_empty() {
                active = true;
                queue_length = active_triggers.iter().map(|t| t.queue_length).sum();
                max_value = active_triggers.iter().map(|t| t.max_value(bounds)).sum();
                if aggregation == Aggregation::Avg {
                    let n = as_f64(active_triggers.len());
                    queue_length /= n;
                    max_value /= n;
                }
            }
        }
    }
    if bounds.min > 0 {
        active = true;
    }
    let max_value = max_value.min(as_f64(bounds.max));
    Aggregate {
        is_active: active,
        queue_length,
        scale_to: ceil_to_i64(queue_length),
        max_scale: ceil_to_i64(max_value),
    }
}

/// `scalingStrategy.strategy` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    /// `default` (or unset).
    Default,
    /// `custom`.
    Custom,
    /// `accurate`.
    Accurate,
    /// `eager`.
    Eager,
}

/// The strategy in effect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScalingStrategy {
    /// Create `maxScale − running`.
    Default,
    /// Create `min(maxScale − deduction − trunc(running × percentage), Max)`.
    Custom {
        /// `customScalingQueueLengthDeduction` (unset counts 0).
        queue_length_deduction: i64,
        /// `customScalingRunningJobPercentage`, parsed.
        running_job_percentage: f64,
    },
    /// Account for pending Jobs, fill up to Max.
    Accurate,
    /// Fill up to Max while there is lag.
    Eager,
}

impl ScalingStrategy {
    /// KEDA's selection: `custom` needs a percentage that parses as a float (Go's
    /// `strconv.ParseFloat`: no surrounding spaces), otherwise `default`.
    pub fn select(
        kind: Option<StrategyKind>,
        queue_length_deduction: Option<i32>,
        running_job_percentage: Option<&str>,
    ) -> Self {
        match kind {
            Some(StrategyKind::Custom) => match running_job_percentage
                .and_then(|p| p.parse::<f64>().ok())
                .filter(|p| !p.is_nan())
            {
                Some(running_job_percentage) => Self::Custom {
                    queue_length_deduction: queue_length_deduction.map_or(0, i64::from),
                    running_job_percentage,
                },
                None => Self::Default,
            },
            Some(StrategyKind::Accurate) => Self::Accurate,
            Some(StrategyKind::Eager) => Self::Eager,
            Some(StrategyKind::Default) | None => Self::Default,
        }
    }
}

/// What the poll knows when it decides how many Jobs to create.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobCountInput {
    /// The combined trigger result.
    pub aggregate: Aggregate,
    /// The ScaledJob's Jobs that have not finished (pending ones included).
    pub running: i64,
    /// Of those, the pending ones.
    pub pending: i64,
    /// Effective Min / Max.
    pub bounds: ReplicaBounds,
}

/// How many Jobs to create this poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCountDecision {
    /// The strategy's `effectiveMaxScale`, never negative.
    pub effective_max_scale: i64,
    /// The `scaleTo` in effect (`Max` under `eager`, `Min − running` below Min).
    pub scale_to: i64,
    /// Jobs to create: `min(scaleTo, effectiveMaxScale)` when active, else 0.
    pub create: i64,
    /// Whether the poll emits `KEDAJobsCreated` (KEDA emits it whenever it is active and the
    /// effective scale is positive, even for 0 Jobs).
    pub emit_jobs_created: bool,
    /// Which rule produced `effective_max_scale` (for explaining the decision).
    pub rule: Rule,
}

/// The rule `decide_job_count` applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Fewer Jobs running than `minReplicaCount`: fill up to Min.
    BelowMin,
    /// `default`: `maxScale − running`.
    Default,
    /// `custom`: `min(maxScale − deduction − trunc(running × percentage), Max)`, with the
    /// truncated product.
    Custom {
        /// `trunc(running × percentage)`.
        deducted: i64,
    },
    /// `accurate` when `maxScale + running − pending > Max`: `Max − running`.
    AccurateCapped,
    /// `accurate` otherwise: `maxScale − pending`.
    Accurate,
    /// `eager`: `min(Max − running, maxScale)`, `scaleTo` = Max.
    Eager,
}

/// §3.4: the number of Jobs to create.
pub fn decide_job_count(strategy: ScalingStrategy, input: JobCountInput) -> JobCountDecision {
    let JobCountInput {
        aggregate,
        running,
        pending,
        bounds,
    } = input;
    let max_scale = aggregate.max_scale;
    let (effective, scale_to, rule) = if running < bounds.min {
        (bounds.min - running, bounds.min - running, Rule::BelowMin)
    } else {
        let r = running - bounds.min;
        match strategy {
            ScalingStrategy::Default => (max_scale - r, aggregate.scale_to, Rule::Default),
            ScalingStrategy::Custom {
                queue_length_deduction,
                running_job_percentage,
            } => {
                let deducted = trunc_to_i64(as_f64(r) * running_job_percentage);
                (
                    (max_scale - queue_length_deduction - deducted).min(bounds.max),
                    aggregate.scale_to,
                    Rule::Custom { deducted },
                )
            }
            ScalingStrategy::Accurate => {
                if max_scale + r - pending > bounds.max {
                    (bounds.max - r, aggregate.scale_to, Rule::AccurateCapped)
                } else {
                    (max_scale - pending, aggregate.scale_to, Rule::Accurate)
                }
            }
            // D9: `r` already counts the pending Jobs; KEDA subtracts them a second time.
            ScalingStrategy::Eager => ((bounds.max - r).min(max_scale), bounds.max, Rule::Eager),
        }
    };
    let effective = effective.max(0);
    let emit = aggregate.is_active && effective > 0;
    JobCountDecision {
        effective_max_scale: effective,
        scale_to,
        create: if emit {
            scale_to.min(effective).max(0)
        } else {
            0
        },
        emit_jobs_created: emit,
        rule,
    }
}

#[allow(clippy::cast_precision_loss)] // Job counts are far below 2^52.
fn as_f64(n: impl TryInto<i64>) -> f64 {
    n.try_into().unwrap_or(i64::MAX) as f64
}

#[allow(clippy::cast_possible_truncation)] // Rust's float→int cast saturates; NaN gives 0.
fn ceil_to_i64(value: f64) -> i64 {
    value.ceil() as i64
}

#[allow(clippy::cast_possible_truncation)] // Go's int64(float64): toward zero, saturating here.
fn trunc_to_i64(value: f64) -> i64 {
    value.trunc() as i64
}

mod arithmetic;
pub use arithmetic::arithmetic;

#[cfg(test)]
mod tests;
