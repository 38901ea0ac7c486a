//! Effective minimum and maximum Job counts (keda-compat §1.3).
//!
//! `max` is the number of Jobs allowed **beyond** the `min` baseline: the total can reach
//! `min + max` (up to `minReplicaCount + 100` when `maxReplicaCount` is unset, and up to
//! `2 × maxReplicaCount` when `minReplicaCount > maxReplicaCount`), exactly as KEDA computes it.

/// KEDA's `maxReplicaCount` when unset.
pub const DEFAULT_MAX_REPLICA_COUNT: i64 = 100;

/// The effective bounds every scaling decision uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaBounds {
    /// Jobs kept running regardless of the metric.
    pub min: i64,
    /// Jobs allowed beyond `min`.
    pub max: i64,
}

impl ReplicaBounds {
    /// The bounds for a ScaledJob's `minReplicaCount` / `maxReplicaCount`.
    pub fn from_spec(min_replica_count: Option<i32>, max_replica_count: Option<i32>) -> Self {
        let smin = min_replica_count.map(i64::from);
        let smax = max_replica_count.map(i64::from);
        let min = match (smin, smax) {
            (None, _) => 0,
            (Some(smin), Some(smax)) if smin > smax => smax,
            (Some(smin), _) => smin,
        };
        let max = match (smin, smax) {
            (_, None) => DEFAULT_MAX_REPLICA_COUNT,
            (Some(smin), Some(smax)) if smin > smax => smax,
            (_, Some(smax)) => smax - min,
        };
        Self { min, max }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Case {
        max_replica_count: Option<i32>,
        min_replica_count: Option<i32>,
        expected: ReplicaBounds,
    }

    #[test]
    fn kedas_vectors() {
        let cases = [
            Case {
                max_replica_count: Some(10),
                min_replica_count: Some(0),
                expected: ReplicaBounds { min: 0, max: 10 },
            },
            Case {
                max_replica_count: Some(10),
                min_replica_count: None,
                expected: ReplicaBounds { min: 0, max: 10 },
            },
            Case {
                max_replica_count: Some(10),
                min_replica_count: Some(1),
                expected: ReplicaBounds { min: 1, max: 9 },
            },
            Case {
                max_replica_count: None,
                min_replica_count: Some(1),
                expected: ReplicaBounds { min: 1, max: 100 },
            },
            Case {
                max_replica_count: None,
                min_replica_count: None,
                expected: ReplicaBounds { min: 0, max: 100 },
            },
            Case {
                max_replica_count: Some(1),
                min_replica_count: Some(10),
                expected: ReplicaBounds { min: 1, max: 1 },
            },
            Case {
                max_replica_count: Some(5),
                min_replica_count: Some(5),
                expected: ReplicaBounds { min: 5, max: 0 },
            },
        ];
        for case in cases {
            assert_eq!(
                ReplicaBounds::from_spec(case.min_replica_count, case.max_replica_count),
                case.expected,
                "min {:?} max {:?}",
                case.min_replica_count,
                case.max_replica_count
            );
        }
    }
}
