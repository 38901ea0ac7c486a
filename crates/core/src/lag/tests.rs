//! Every lag vector of keda-compat §7 as named-field cases, with D2, D3, D4 and D12.

use proptest::prelude::*;

use super::*;

fn offsets(
    partition: i32,
    committed: Option<i64>,
    log_start: Option<i64>,
    end: i64,
) -> PartitionOffsets {
    PartitionOffsets {
        topic: "t".into(),
        partition,
        committed,
        log_start,
        end,
    }
}

fn policy() -> LagPolicy {
    LagPolicy::default()
}

struct PartitionCase {
    name: &'static str,
    offsets: PartitionOffsets,
    policy: LagPolicy,
    previous: Option<i64>,
    expected: PartitionLag,
}

fn lag(lag: i64, lag_with_persistent: i64) -> PartitionLag {
    PartitionLag {
        lag,
        lag_with_persistent,
    }
}

#[test]
fn partition_lag_vectors() {
    let earliest = LagPolicy {
        offset_reset_policy: OffsetResetPolicy::Earliest,
        ..policy()
    };
    let to_zero = LagPolicy {
        scale_to_zero_on_invalid_offset: true,
        ..policy()
    };
    let exclude = LagPolicy {
        exclude_persistent_lag: true,
        ..policy()
    };
    let cases = [
        PartitionCase {
            name: "committed behind end",
            offsets: offsets(0, Some(5), None, 12),
            policy: policy(),
            previous: None,
            expected: lag(7, 7),
        },
        PartitionCase {
            name: "caught up",
            offsets: offsets(0, Some(12), None, 12),
            policy: policy(),
            previous: None,
            expected: lag(0, 0),
        },
        PartitionCase {
            name: "no commit, latest: 1",
            offsets: offsets(0, None, None, 100),
            policy: policy(),
            previous: None,
            expected: lag(1, 1),
        },
        PartitionCase {
            name: "no commit, latest, empty topic: still 1",
            offsets: offsets(0, None, None, 0),
            policy: policy(),
            previous: None,
            expected: lag(1, 1),
        },
        PartitionCase {
            name: "no commit, latest, scaleToZero",
            offsets: offsets(0, None, None, 100),
            policy: to_zero.clone(),
            previous: None,
            expected: lag(0, 0),
        },
        PartitionCase {
            name: "no commit, earliest, scaleToZero",
            offsets: offsets(0, None, Some(0), 100),
            policy: LagPolicy {
                scale_to_zero_on_invalid_offset: true,
                ..earliest.clone()
            },
            previous: None,
            expected: lag(0, 0),
        },
        PartitionCase {
            name: "no commit, earliest: end − log start (D3)",
            offsets: offsets(0, None, Some(40), 100),
            policy: earliest.clone(),
            previous: None,
            expected: lag(60, 60),
        },
        PartitionCase {
            name: "no commit, earliest, log start unknown: end",
            offsets: offsets(0, None, None, 100),
            policy: earliest,
            previous: None,
            expected: lag(100, 100),
        },
        PartitionCase {
            name: "committed below the log start: only what is retained (D3, keda#7936)",
            offsets: offsets(0, Some(10), Some(40), 100),
            policy: policy(),
            previous: None,
            expected: lag(60, 60),
        },
        PartitionCase {
            name: "committed above the log start: the log start doesn't matter",
            offsets: offsets(0, Some(70), Some(40), 100),
            policy: policy(),
            previous: None,
            expected: lag(30, 30),
        },
        PartitionCase {
            name: "committed −1 is no commit",
            offsets: offsets(0, Some(-1), None, 9),
            policy: policy(),
            previous: None,
            expected: lag(1, 1),
        },
        PartitionCase {
            name: "committed past end is 0, not negative (D2)",
            offsets: offsets(0, Some(50), None, 10),
            policy: policy(),
            previous: None,
            expected: lag(0, 0),
        },
        PartitionCase {
            name: "persistent: first sight counts",
            offsets: offsets(0, Some(5), None, 9),
            policy: exclude.clone(),
            previous: None,
            expected: lag(4, 4),
        },
        PartitionCase {
            name: "persistent: same commit as last poll is hidden",
            offsets: offsets(0, Some(5), None, 9),
            policy: exclude.clone(),
            previous: Some(5),
            expected: lag(0, 4),
        },
        PartitionCase {
            name: "persistent: moved commit counts",
            offsets: offsets(0, Some(6), None, 9),
            policy: exclude.clone(),
            previous: Some(5),
            expected: lag(3, 3),
        },
        PartitionCase {
            name: "persistent: no commit never persistent",
            offsets: offsets(0, None, None, 9),
            policy: exclude,
            previous: Some(5),
            expected: lag(1, 1),
        },
    ];
    for case in cases {
        assert_eq!(
            partition_lag(&case.offsets, &case.policy, case.previous),
            case.expected,
            "case {}",
            case.name
        );
    }
}

#[test]
fn factor_vectors() {
    assert_eq!(factors(10), vec![1, 2, 5, 10]);
    assert_eq!(factors(13), vec![1, 13]);
    assert_eq!(factors(17), vec![1, 17]);
    assert_eq!(factors(25), vec![1, 5, 25]);
    assert_eq!(factors(50), vec![1, 2, 5, 10, 25, 50]);
    assert_eq!(factors(100), vec![1, 2, 4, 5, 10, 20, 25, 50, 100]);
    for (lag, expected) in [
        (10, 1),
        (20, 2),
        (40, 4),
        (50, 5),
        (99, 10),
        (100, 10),
        (101, 20),
    ] {
        assert_eq!(next_factor(lag, 100, 10), expected, "lag {lag}");
    }
}

struct CapCase {
    name: &'static str,
    total_lag: i64,
    partitions: i64,
    partitions_with_lag: i64,
    policy: LagPolicy,
    expected: i64,
}

#[test]
fn cap_vectors() {
    let t5 = LagPolicy {
        lag_threshold: 5,
        ..policy()
    };
    let cases = [
        CapCase {
            name: "worked example: 13 over 6 partitions, T 5",
            total_lag: 13,
            partitions: 6,
            partitions_with_lag: 2,
            policy: t5.clone(),
            expected: 13,
        },
        CapCase {
            name: "capped at partitions × T",
            total_lag: 100,
            partitions: 3,
            partitions_with_lag: 3,
            policy: t5.clone(),
            expected: 15,
        },
        CapCase {
            name: "D4: 17 over 3 partitions would be 4 Jobs; capped to 15",
            total_lag: 17,
            partitions: 3,
            partitions_with_lag: 3,
            policy: t5.clone(),
            expected: 15,
        },
        CapCase {
            name: "exactly partitions × T stays",
            total_lag: 15,
            partitions: 3,
            partitions_with_lag: 3,
            policy: t5.clone(),
            expected: 15,
        },
        CapCase {
            name: "allowIdleConsumers lifts the cap",
            total_lag: 100,
            partitions: 3,
            partitions_with_lag: 3,
            policy: LagPolicy {
                allow_idle_consumers: true,
                ..t5.clone()
            },
            expected: 100,
        },
        CapCase {
            name: "limitToPartitionsWithLag caps at partitions with lag",
            total_lag: 100,
            partitions: 10,
            partitions_with_lag: 2,
            policy: LagPolicy {
                limit_to_partitions_with_lag: true,
                ..t5.clone()
            },
            expected: 10,
        },
        CapCase {
            name: "even distribution rounds to a factor",
            total_lag: 11,
            partitions: 6,
            partitions_with_lag: 3,
            policy: LagPolicy {
                ensure_even_distribution_of_partitions: true,
                ..t5.clone()
            },
            expected: 15,
        },
        CapCase {
            name: "even distribution with 0 lag reports T",
            total_lag: 0,
            partitions: 6,
            partitions_with_lag: 0,
            policy: LagPolicy {
                ensure_even_distribution_of_partitions: true,
                ..t5.clone()
            },
            expected: 5,
        },
        CapCase {
            name: "even distribution beyond every factor: all partitions",
            total_lag: 1000,
            partitions: 6,
            partitions_with_lag: 6,
            policy: LagPolicy {
                ensure_even_distribution_of_partitions: true,
                ..t5
            },
            expected: 30,
        },
    ];
    for case in cases {
        assert_eq!(
            capped_lag(
                case.total_lag,
                case.partitions,
                case.partitions_with_lag,
                &case.policy
            ),
            case.expected,
            "case {}",
            case.name
        );
    }
}

#[test]
fn worked_example_end_to_end() {
    // §3.5: lags [10,0,3,0,0,0], lagThreshold 5.
    let parts: Vec<PartitionOffsets> = [10, 0, 3, 0, 0, 0]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            offsets(
                i32::try_from(i).unwrap_or_default(),
                Some(100),
                None,
                100 + l,
            )
        })
        .collect();
    let result = trigger_lag(
        &parts,
        &LagPolicy {
            lag_threshold: 5,
            ..policy()
        },
        &PersistentLagMemory::new(),
    );
    assert_eq!(
        (result.total_lag, result.metric_value, result.active),
        (13, 13, true)
    );
}

#[test]
fn negative_lag_no_longer_cancels_other_partitions_d2() {
    let parts = [
        offsets(0, Some(50), None, 10),
        offsets(1, Some(0), None, 30),
    ];
    let result = trigger_lag(
        &parts,
        &LagPolicy {
            lag_threshold: 50,
            ..policy()
        },
        &PersistentLagMemory::new(),
    );
    assert_eq!(result.total_lag, 30, "KEDA would report 30 − 40 → 0");
    assert_eq!(result.metric_value, 30);
}

#[test]
fn activation_uses_persistent_lag_and_is_strict() {
    let exclude = LagPolicy {
        exclude_persistent_lag: true,
        activation_lag_threshold: 3,
        ..policy()
    };
    let parts = [offsets(0, Some(5), None, 9)];
    let first = trigger_lag(&parts, &exclude, &PersistentLagMemory::new());
    assert_eq!((first.metric_value, first.active), (4, true));
    let second = trigger_lag(&parts, &exclude, &first.memory);
    assert_eq!(
        (
            second.metric_value,
            second.total_lag_with_persistent,
            second.active
        ),
        (0, 4, true)
    );
    let at_threshold = trigger_lag(
        &[offsets(0, Some(6), None, 9)],
        &exclude,
        &PersistentLagMemory::new(),
    );
    assert!(
        !at_threshold.active,
        "3 is not greater than activationLagThreshold 3"
    );
}

#[test]
fn the_memory_is_the_callers_and_survives_client_rebuilds_d12() {
    // The memory returned by one poll is passed to the next whatever happened to the client in
    // between; only the committed offsets that exist are remembered.
    let exclude = LagPolicy {
        exclude_persistent_lag: true,
        ..policy()
    };
    let parts = [offsets(0, Some(5), None, 9), offsets(1, None, None, 3)];
    let first = trigger_lag(&parts, &exclude, &PersistentLagMemory::new());
    assert_eq!(
        first.memory,
        PersistentLagMemory::from([(("t".into(), 0), 5)])
    );
}

proptest! {
    #[test]
    fn lag_is_never_negative_and_the_cap_bounds_jobs(
        ends in prop::collection::vec((prop::option::of(-1i64..1000), 0i64..1000, prop::option::of(0i64..500)), 1..20),
        threshold in 1i64..50,
        allow_idle in any::<bool>(),
        limit in any::<bool>(),
        even in any::<bool>(),
        earliest in any::<bool>(),
    ) {
        let policy = LagPolicy {
            lag_threshold: threshold,
            allow_idle_consumers: allow_idle && !limit,
            limit_to_partitions_with_lag: limit && !even,
            ensure_even_distribution_of_partitions: even,
            offset_reset_policy: if earliest { OffsetResetPolicy::Earliest } else { OffsetResetPolicy::Latest },
            ..LagPolicy::default()
        };
        let parts: Vec<PartitionOffsets> = ends.iter().enumerate()
            .map(|(i, (c, e, s))| offsets(i32::try_from(i).unwrap_or_default(), *c, *s, *e))
            .collect();
        let result = trigger_lag(&parts, &policy, &PersistentLagMemory::new());
        prop_assert!(result.partitions.iter().all(|p| p.lag >= 0 && p.lag_with_persistent >= p.lag));
        prop_assert!(result.metric_value >= 0);
        if !policy.allow_idle_consumers {
            let jobs = jobs_for(result.metric_value, threshold);
            prop_assert!(jobs <= i64::try_from(parts.len()).unwrap_or(i64::MAX), "D4: {} Jobs for {} partitions", jobs, parts.len());
        }
    }
}
