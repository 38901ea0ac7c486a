//! Every vector of keda-compat §3.2–§3.4, as named-field cases, plus properties.

#![allow(clippy::float_cmp)] // exact values: these are the results KEDA's arithmetic gives

use proptest::prelude::*;

use super::*;

fn bounds(min: i64, max: i64) -> ReplicaBounds {
    ReplicaBounds { min, max }
}

fn t(queue_length: f64, target: f64, active: bool) -> TriggerMeasurement {
    TriggerMeasurement {
        queue_length,
        target,
        active,
    }
}

#[test]
fn mean_target_vectors() {
    assert_eq!(mean_target(&[]), 0.0);
    assert_eq!(mean_target(&[Some(1.0), Some(1.0)]), 1.0);
    assert!(
        (mean_target(&[Some(5.0), Some(5.0), Some(3.0)]) - 4.333_333_333_333_333).abs() < 1e-12
    );
    assert!(
        (mean_target(&[Some(5.0), Some(5.0), Some(4.0)]) - 4.666_666_666_666_667).abs() < 1e-12
    );
    assert_eq!(
        mean_target(&[Some(4.0), None]),
        2.0,
        "a missing AverageValue counts as 0"
    );
}

struct AggregationCase {
    name: &'static str,
    aggregation: Aggregation,
    bounds: ReplicaBounds,
    triggers: Vec<TriggerMeasurement>,
    is_active: bool,
    scale_to: i64,
    max_scale: i64,
}

#[test]
fn aggregation_vectors() {
    let four = || {
        vec![
            t(20.0, 1.0, true),
            t(10.0, 2.0, true),
            t(5.0, 3.0, true),
            t(7.0, 4.0, false),
        ]
    };
    let cases = [
        AggregationCase {
            name: "max",
            aggregation: Aggregation::Max,
            bounds: bounds(0, 100),
            triggers: four(),
            is_active: true,
            scale_to: 20,
            max_scale: 20,
        },
        AggregationCase {
            name: "min",
            aggregation: Aggregation::Min,
            bounds: bounds(0, 100),
            triggers: four(),
            is_active: true,
            scale_to: 5,
            max_scale: 2,
        },
        AggregationCase {
            name: "avg",
            aggregation: Aggregation::Avg,
            bounds: bounds(0, 100),
            triggers: four(),
            is_active: true,
            scale_to: 12,
            max_scale: 9,
        },
        AggregationCase {
            name: "sum",
            aggregation: Aggregation::Sum,
            bounds: bounds(0, 100),
            triggers: four(),
            is_active: true,
            scale_to: 35,
            max_scale: 27,
        },
        AggregationCase {
            name: "sum capped by Max 25",
            aggregation: Aggregation::Sum,
            bounds: bounds(0, 25),
            triggers: four(),
            is_active: true,
            scale_to: 35,
            max_scale: 25,
        },
        AggregationCase {
            name: "single trigger with min 1 max 100",
            aggregation: Aggregation::Max,
            bounds: ReplicaBounds::from_spec(Some(1), Some(100)),
            triggers: vec![t(20.0, 2.0, true)],
            is_active: true,
            scale_to: 20,
            max_scale: 10,
        },
        AggregationCase {
            name: "min > 0 forces active",
            aggregation: Aggregation::Max,
            bounds: ReplicaBounds::from_spec(Some(1), None),
            triggers: vec![t(0.0, 1.0, false)],
            is_active: true,
            scale_to: 0,
            max_scale: 0,
        },
        AggregationCase {
            name: "min > 0 forces active with every trigger errored",
            aggregation: Aggregation::Max,
            bounds: bounds(2, 10),
            triggers: vec![],
            is_active: true,
            scale_to: 0,
            max_scale: 0,
        },
        AggregationCase {
            name: "an active trigger with queue 0 never activates under max",
            aggregation: Aggregation::Max,
            bounds: bounds(0, 100),
            triggers: vec![t(0.0, 1.0, true)],
            is_active: false,
            scale_to: 0,
            max_scale: 0,
        },
        AggregationCase {
            name: "max keeps the first of equal triggers",
            aggregation: Aggregation::Max,
            bounds: bounds(0, 100),
            triggers: vec![t(10.0, 5.0, true), t(10.0, 1.0, true)],
            is_active: true,
            scale_to: 10,
            max_scale: 2,
        },
        AggregationCase {
            name: "min replaces a selected 0 with a later active trigger",
            aggregation: Aggregation::Min,
            bounds: bounds(0, 100),
            triggers: vec![t(0.0, 1.0, true), t(6.0, 3.0, true)],
            is_active: true,
            scale_to: 6,
            max_scale: 2,
        },
        AggregationCase {
            name: "inactive triggers are ignored",
            aggregation: Aggregation::Sum,
            bounds: bounds(0, 100),
            triggers: vec![t(50.0, 1.0, false)],
            is_active: false,
            scale_to: 0,
            max_scale: 0,
        },
    ];
    for case in cases {
        let result = aggregate(case.aggregation, &case.triggers, case.bounds);
        assert_eq!(
            (result.is_active, result.scale_to, result.max_scale),
            (case.is_active, case.scale_to, case.max_scale),
            "case {}",
            case.name
        );
    }
}

#[test]
fn kafka_worked_example_creates_two_jobs() {
    // §3.5: lags [10,0,3,0,0,0], lagThreshold 5, no min/max, default strategy, 1 running Job.
    let bounds = ReplicaBounds::from_spec(None, None);
    let aggregate = aggregate(Aggregation::Max, &[t(13.0, 5.0, true)], bounds);
    assert_eq!((aggregate.scale_to, aggregate.max_scale), (13, 3));
    let decision = decide_job_count(
        ScalingStrategy::Default,
        JobCountInput {
            aggregate,
            running: 1,
            pending: 0,
            bounds,
        },
    );
    assert_eq!(decision.create, 2);
}

/// KEDA's strategy vectors `(maxScale, r, P, Max, scaleTo) → eff`, with Min 0 so `running = r`.
struct StrategyCase {
    name: &'static str,
    strategy: ScalingStrategy,
    max_scale: i64,
    running: i64,
    pending: i64,
    max: i64,
    scale_to: i64,
    effective: i64,
}

fn active(scale_to: i64, max_scale: i64) -> Aggregate {
    Aggregate {
        is_active: true,
        queue_length: as_f64(scale_to),
        scale_to,
        max_scale,
    }
}

#[test]
fn strategy_vectors() {
    let custom = |queue_length_deduction, running_job_percentage| ScalingStrategy::Custom {
        queue_length_deduction,
        running_job_percentage,
    };
    let cases = [
        StrategyCase {
            name: "default 1",
            strategy: ScalingStrategy::Default,
            max_scale: 3,
            running: 2,
            pending: 0,
            max: 5,
            scale_to: 1,
            effective: 1,
        },
        StrategyCase {
            name: "default 2",
            strategy: ScalingStrategy::Default,
            max_scale: 2,
            running: 0,
            pending: 0,
            max: 5,
            scale_to: 1,
            effective: 2,
        },
        StrategyCase {
            name: "custom 1/0.5 a",
            strategy: custom(1, 0.5),
            max_scale: 3,
            running: 2,
            pending: 0,
            max: 5,
            scale_to: 1,
            effective: 1,
        },
        StrategyCase {
            name: "custom 1/0.5 b",
            strategy: custom(1, 0.5),
            max_scale: 10,
            running: 0,
            pending: 0,
            max: 10,
            scale_to: 1,
            effective: 9,
        },
        StrategyCase {
            name: "custom 2/0",
            strategy: custom(2, 0.0),
            max_scale: 3,
            running: 2,
            pending: 0,
            max: 5,
            scale_to: 1,
            effective: 1,
        },
        StrategyCase {
            name: "custom -2/0 capped at Max",
            strategy: custom(-2, 0.0),
            max_scale: 3,
            running: 2,
            pending: 0,
            max: 4,
            scale_to: 1,
            effective: 4,
        },
        StrategyCase {
            name: "custom unset/0.5 a",
            strategy: custom(0, 0.5),
            max_scale: 10,
            running: 2,
            pending: 0,
            max: 100,
            scale_to: 1,
            effective: 9,
        },
        StrategyCase {
            name: "custom unset/0.5 b",
            strategy: custom(0, 0.5),
            max_scale: 10,
            running: 0,
            pending: 0,
            max: 100,
            scale_to: 1,
            effective: 10,
        },
        StrategyCase {
            name: "accurate 1",
            strategy: ScalingStrategy::Accurate,
            max_scale: 3,
            running: 2,
            pending: 0,
            max: 5,
            scale_to: 10,
            effective: 3,
        },
        StrategyCase {
            name: "accurate 2",
            strategy: ScalingStrategy::Accurate,
            max_scale: 5,
            running: 2,
            pending: 0,
            max: 5,
            scale_to: 10,
            effective: 3,
        },
        StrategyCase {
            name: "accurate 3",
            strategy: ScalingStrategy::Accurate,
            max_scale: 3,
            running: 4,
            pending: 2,
            max: 10,
            scale_to: 10,
            effective: 1,
        },
        StrategyCase {
            name: "accurate 4",
            strategy: ScalingStrategy::Accurate,
            max_scale: 5,
            running: 4,
            pending: 2,
            max: 5,
            scale_to: 10,
            effective: 1,
        },
        StrategyCase {
            name: "accurate 5",
            strategy: ScalingStrategy::Accurate,
            max_scale: 3,
            running: 3,
            pending: 3,
            max: 5,
            scale_to: 10,
            effective: 0,
        },
        StrategyCase {
            name: "accurate 6",
            strategy: ScalingStrategy::Accurate,
            max_scale: 15,
            running: 15,
            pending: 15,
            max: 20,
            scale_to: 20,
            effective: 0,
        },
        StrategyCase {
            name: "accurate 7",
            strategy: ScalingStrategy::Accurate,
            max_scale: 10,
            running: 10,
            pending: 10,
            max: 15,
            scale_to: 20,
            effective: 0,
        },
        StrategyCase {
            name: "accurate 8",
            strategy: ScalingStrategy::Accurate,
            max_scale: 20,
            running: 15,
            pending: 10,
            max: 20,
            scale_to: 20,
            effective: 5,
        },
        StrategyCase {
            name: "eager 1",
            strategy: ScalingStrategy::Eager,
            max_scale: 4,
            running: 3,
            pending: 0,
            max: 10,
            scale_to: 4,
            effective: 4,
        },
        StrategyCase {
            name: "eager 2",
            strategy: ScalingStrategy::Eager,
            max_scale: 4,
            running: 0,
            pending: 3,
            max: 10,
            scale_to: 4,
            effective: 4,
        },
        StrategyCase {
            name: "eager 3",
            strategy: ScalingStrategy::Eager,
            max_scale: 4,
            running: 7,
            pending: 0,
            max: 10,
            scale_to: 4,
            effective: 3,
        },
        StrategyCase {
            name: "eager 5",
            strategy: ScalingStrategy::Eager,
            max_scale: 15,
            running: 0,
            pending: 0,
            max: 10,
            scale_to: 15,
            effective: 10,
        },
    ];
    for case in cases {
        let decision = decide_job_count(
            case.strategy,
            JobCountInput {
                aggregate: active(case.scale_to, case.max_scale),
                running: case.running,
                pending: case.pending,
                bounds: bounds(0, case.max),
            },
        );
        assert_eq!(
            decision.effective_max_scale, case.effective,
            "case {}",
            case.name
        );
        if case.strategy == ScalingStrategy::Eager {
            assert_eq!(
                decision.scale_to, case.max,
                "eager replaces scaleTo with Max ({})",
                case.name
            );
        }
    }
}

#[test]
fn eager_subtracts_pending_jobs_once_d9() {
    // KEDA's vector (maxScale 4, r 1, P 6, Max 10) gives 3 because pending is subtracted on top
    // of r, which already counts it. A realistic case: 5 unfinished Jobs, all pending, Max 10,
    // lag for 8: KEDA creates min(10 − 5 − 5, 8) = 0; jobtide fills up to Max: 5.
    let decision = decide_job_count(
        ScalingStrategy::Eager,
        JobCountInput {
            aggregate: active(8, 8),
            running: 5,
            pending: 5,
            bounds: bounds(0, 10),
        },
    );
    assert_eq!(decision.effective_max_scale, 5);
    assert_eq!(decision.create, 5);
}

struct MinCase {
    name: &'static str,
    min: i64,
    running: i64,
    scale_to: i64,
    max_scale: i64,
    effective: i64,
    decided_scale_to: i64,
}

#[test]
fn below_min_the_strategy_is_not_consulted() {
    let cases = [
        MinCase {
            name: "min 2, none running",
            min: 2,
            running: 0,
            scale_to: 0,
            max_scale: 0,
            effective: 2,
            decided_scale_to: 2,
        },
        MinCase {
            name: "min 2, one running",
            min: 2,
            running: 1,
            scale_to: 0,
            max_scale: 0,
            effective: 1,
            decided_scale_to: 1,
        },
        MinCase {
            name: "min 1, one running, lag for 2",
            min: 1,
            running: 1,
            scale_to: 2,
            max_scale: 2,
            effective: 2,
            decided_scale_to: 2,
        },
    ];
    for case in cases {
        let decision = decide_job_count(
            ScalingStrategy::Default,
            JobCountInput {
                aggregate: active(case.scale_to, case.max_scale),
                running: case.running,
                pending: 0,
                bounds: bounds(case.min, 100),
            },
        );
        assert_eq!(
            (decision.effective_max_scale, decision.scale_to),
            (case.effective, case.decided_scale_to),
            "case {}",
            case.name
        );
    }
}

#[test]
fn strategy_selection() {
    assert_eq!(
        ScalingStrategy::select(None, None, None),
        ScalingStrategy::Default
    );
    assert_eq!(
        ScalingStrategy::select(Some(StrategyKind::Accurate), None, None),
        ScalingStrategy::Accurate
    );
    assert_eq!(
        ScalingStrategy::select(Some(StrategyKind::Eager), Some(3), Some("x")),
        ScalingStrategy::Eager
    );
    assert_eq!(
        ScalingStrategy::select(Some(StrategyKind::Custom), None, Some("0.5")),
        ScalingStrategy::Custom {
            queue_length_deduction: 0,
            running_job_percentage: 0.5
        }
    );
    for unparsable in [None, Some(""), Some("half"), Some(" 0.5")] {
        assert_eq!(
            ScalingStrategy::select(Some(StrategyKind::Custom), Some(1), unparsable),
            ScalingStrategy::Default,
            "custom falls back to default for {unparsable:?}"
        );
    }
}

#[test]
fn inactive_creates_nothing_and_emits_nothing() {
    let decision = decide_job_count(
        ScalingStrategy::Default,
        JobCountInput {
            aggregate: Aggregate {
                is_active: false,
                queue_length: 30.0,
                scale_to: 30,
                max_scale: 3,
            },
            running: 0,
            pending: 0,
            bounds: bounds(0, 100),
        },
    );
    assert_eq!((decision.create, decision.emit_jobs_created), (0, false));
}

fn strategy() -> impl Strategy<Value = ScalingStrategy> {
    prop_oneof![
        Just(ScalingStrategy::Default),
        Just(ScalingStrategy::Accurate),
        Just(ScalingStrategy::Eager),
        (-5i64..10, 0.0f64..2.0).prop_map(|(d, p)| ScalingStrategy::Custom {
            queue_length_deduction: d,
            running_job_percentage: p
        }),
    ]
}

proptest! {
    #[test]
    fn the_creation_count_is_bounded_and_deterministic(
        strategy in strategy(),
        min in prop::option::of(0i32..20),
        max in prop::option::of(1i32..50),
        queue_length in 0.0f64..10_000.0,
        target in 0.0f64..100.0,
        active_trigger in any::<bool>(),
        running in 0i64..120,
        pending_share in 0.0f64..=1.0,
    ) {
        let bounds = ReplicaBounds::from_spec(min, max);
        let aggregate = aggregate(Aggregation::Max, &[t(queue_length, target, active_trigger)], bounds);
        #[allow(clippy::cast_possible_truncation)]
        let pending = (as_f64(running) * pending_share) as i64;
        let input = JobCountInput { aggregate, running, pending, bounds };
        let decision = decide_job_count(strategy, input);
        prop_assert!(decision.create >= 0);
        prop_assert!(decision.create <= bounds.max.max(bounds.min), "{decision:?} {bounds:?}");
        if !matches!(strategy, ScalingStrategy::Custom { .. }) {
            // Only `custom` with a negative deduction may exceed Min + Max in total (KEDA's
            // vector "custom −2/0 capped at Max").
            prop_assert!(running + decision.create <= (bounds.min + bounds.max).max(running));
        }
        prop_assert_eq!(decide_job_count(strategy, input), decision);
    }
}
