//! The Job-count decision written out with its numbers, for `jobtide explain`: the rule
//! [`super::decide_job_count`] applied (its `rule`), with the numbers it used; the tests check
//! that the written result is the decision's.

use super::{JobCountDecision, JobCountInput, Rule, ScalingStrategy};

/// One line per step, ending with the number of Jobs to create.
pub fn arithmetic(
    strategy: ScalingStrategy,
    input: JobCountInput,
    decision: JobCountDecision,
) -> Vec<String> {
    let JobCountInput {
        aggregate,
        running,
        pending,
        bounds,
    } = input;
    let mut lines = vec![format!(
        "maxScale = ceil(min(queueLength / target, Max)) = {} (queueLength {}, Max {}); scaleTo = ceil(queueLength) = {}",
        aggregate.max_scale, aggregate.queue_length, bounds.max, aggregate.scale_to
    )];
    let r = running - bounds.min;
    let min_note = if bounds.min > 0 {
        format!(" (running {running} − Min {})", bounds.min)
    } else {
        String::new()
    };
    let effective = decision.effective_max_scale;
    lines.push(match decision.rule {
        Rule::BelowMin => format!(
            "running {running} < minReplicaCount {}: effectiveMaxScale = scaleTo = Min − running = {effective}",
            bounds.min
        ),
        Rule::Default => format!(
            "default: effectiveMaxScale = maxScale − running = {} − {r}{min_note} = {}",
            aggregate.max_scale,
            aggregate.max_scale - r
        ),
        Rule::Custom { deducted } => {
            let (deduction, percentage) = match strategy {
                ScalingStrategy::Custom {
                    queue_length_deduction,
                    running_job_percentage,
                } => (queue_length_deduction, running_job_percentage),
                _ => (0, 0.0),
            };
            format!(
                "custom: effectiveMaxScale = min(maxScale − deduction − trunc(running × percentage), Max) = min({} − {deduction} − trunc({r}{min_note} × {percentage}), {}) = min({} − {deduction} − {deducted}, {}) = {}",
                aggregate.max_scale,
                bounds.max,
                aggregate.max_scale,
                bounds.max,
                (aggregate.max_scale - deduction - deducted).min(bounds.max)
            )
        }
        Rule::AccurateCapped => format!(
            "accurate: maxScale + running − pending = {} + {r}{min_note} − {pending} > Max {}, so effectiveMaxScale = Max − running = {}",
            aggregate.max_scale,
            bounds.max,
            bounds.max - r
        ),
        Rule::Accurate => format!(
            "accurate: maxScale + running − pending = {} + {r}{min_note} − {pending} <= Max {}, so effectiveMaxScale = maxScale − pending = {}",
            aggregate.max_scale,
            bounds.max,
            aggregate.max_scale - pending
        ),
        Rule::Eager => format!(
            "eager: effectiveMaxScale = min(Max − running, maxScale) = min({} − {r}{min_note}, {}) = {}; scaleTo = Max = {}",
            bounds.max,
            aggregate.max_scale,
            (bounds.max - r).min(aggregate.max_scale),
            bounds.max
        ),
    });
    lines.push(if aggregate.is_active {
        format!(
            "create = min(scaleTo, max(effectiveMaxScale, 0)) = min({}, {}) = {}",
            decision.scale_to, decision.effective_max_scale, decision.create
        )
    } else {
        "not active: create = 0".to_owned()
    });
    lines
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{Aggregate, decide_job_count};
    use super::*;
    use crate::replicas::ReplicaBounds;

    fn strategy() -> impl Strategy<Value = ScalingStrategy> {
        prop_oneof![
            Just(ScalingStrategy::Default),
            Just(ScalingStrategy::Accurate),
            Just(ScalingStrategy::Eager),
            (0i64..5, 0.0f64..2.0).prop_map(|(d, p)| ScalingStrategy::Custom {
                queue_length_deduction: d,
                running_job_percentage: p
            }),
        ]
    }

    proptest! {
        #[test]
        fn the_written_arithmetic_ends_with_the_decision(
            strategy in strategy(),
            queue in 0u32..200,
            max_scale in 0i64..50,
            running in 0i64..40,
            pending_share in 0i64..=100,
            min in 0i64..5,
            max in 0i64..60,
            active: bool,
        ) {
            let input = JobCountInput {
                aggregate: Aggregate {
                    is_active: active,
                    queue_length: f64::from(queue),
                    scale_to: i64::from(queue),
                    max_scale,
                },
                running,
                pending: running * pending_share / 100,
                bounds: ReplicaBounds { min, max },
            };
            let decision = decide_job_count(strategy, input);
            let lines = arithmetic(strategy, input, decision);
            // The oracle: keda-compat §3.4's pseudo-code written out again here (with D9),
            // independent of `decide_job_count` and of the text.
            let expected = oracle(strategy, &input);
            prop_assert_eq!(decision.create, expected, "decide_job_count vs §3.4");
            // The written result is the oracle's number, and the written `min(a, b) = c` holds.
            let last = lines.last().unwrap();
            let written: i64 = last.rsplit("= ").next().unwrap().parse().unwrap();
            prop_assert_eq!(written, expected, "{:?}", lines);
            if let Some(args) = last.split("min(").nth(2) {
                let (a, b) = args.split_once(") = ").unwrap().0.split_once(", ").unwrap();
                let (a, b): (i64, i64) = (a.parse().unwrap(), b.parse().unwrap());
                prop_assert_eq!(a.min(b.max(0)), written, "{:?}", lines);
            }
        }
    }

    /// keda-compat §3.4, transcribed: `eff` from the strategy (or Min − R below Min), clamped
    /// at 0; `min(scaleTo, eff)` Jobs when active.
    fn oracle(strategy: ScalingStrategy, input: &JobCountInput) -> i64 {
        let a = input.aggregate;
        let (min, max) = (input.bounds.min, input.bounds.max);
        let (big_r, p) = (input.running, input.pending);
        let (eff, scale_to) = if big_r < min {
            (min - big_r, min - big_r)
        } else {
            let r = big_r - min;
            match strategy {
                ScalingStrategy::Default => (a.max_scale - r, a.scale_to),
                ScalingStrategy::Custom {
                    queue_length_deduction,
                    running_job_percentage,
                } => {
                    // Go's int64(float64): toward zero.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
                    let deducted = (r as f64 * running_job_percentage).trunc() as i64;
                    (
                        (a.max_scale - queue_length_deduction - deducted).min(max),
                        a.scale_to,
                    )
                }
                ScalingStrategy::Accurate => {
                    if a.max_scale + r - p > max {
                        (max - r, a.scale_to)
                    } else {
                        (a.max_scale - p, a.scale_to)
                    }
                }
                // D9: pending Jobs are part of r; subtracted once.
                ScalingStrategy::Eager => ((max - r).min(a.max_scale), max),
            }
        };
        let eff = eff.max(0);
        if a.is_active && eff > 0 {
            scale_to.min(eff)
        } else {
            0
        }
    }

    #[test]
    fn a_worked_example() {
        let input = JobCountInput {
            aggregate: Aggregate {
                is_active: true,
                queue_length: 7.0,
                scale_to: 7,
                max_scale: 7,
            },
            running: 2,
            pending: 1,
            bounds: ReplicaBounds { min: 0, max: 30 },
        };
        let decision = decide_job_count(ScalingStrategy::Default, input);
        assert_eq!(
            arithmetic(ScalingStrategy::Default, input, decision),
            [
                "maxScale = ceil(min(queueLength / target, Max)) = 7 (queueLength 7, Max 30); scaleTo = ceil(queueLength) = 7",
                "default: effectiveMaxScale = maxScale − running = 7 − 2 = 5",
                "create = min(scaleTo, max(effectiveMaxScale, 0)) = min(7, 5) = 5",
            ]
        );
    }
}
