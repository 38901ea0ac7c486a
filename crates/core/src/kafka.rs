//! The lag policy of one Kafka trigger: every knob of KEDA's lag rules (keda-compat §6.2, §7) as a
//! typed value. Parsing from trigger metadata lives in `jobtide-api`; this module only names the
//! values so that the lag arithmetic can be written over plain numbers.

use std::fmt;

use serde::Serialize;

/// What to assume for a partition whose consumer group has no committed offset (KEDA's
/// `offsetResetPolicy`, mirroring the consumer's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetResetPolicy {
    /// A consumer would start at the log end: KEDA counts a lag of 1 per such partition so that a
    /// Job is started to establish a commit (or 0 with `scaleToZeroOnInvalidOffset`).
    #[default]
    Latest,
    /// A consumer would start at the log start: everything still retained counts as lag.
    Earliest,
}

impl OffsetResetPolicy {
    /// Every accepted spelling, in KEDA's order (used in error messages).
    pub const VALUES: [&'static str; 2] = ["latest", "earliest"];

    /// The spelling used in manifests.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::Earliest => "earliest",
        }
    }

    /// Parses an exact, already trimmed spelling.
    pub fn from_keda(value: &str) -> Option<Self> {
        match value {
            "latest" => Some(Self::Latest),
            "earliest" => Some(Self::Earliest),
            _ => None,
        }
    }
}

impl fmt::Display for OffsetResetPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lag rules of one Kafka trigger.
///
/// # Invariants
/// Values built by `jobtide-api`'s trigger parser hold KEDA's validation rules:
/// `lag_threshold > 0`, `activation_lag_threshold >= 0`, `allow_idle_consumers` and
/// `limit_to_partitions_with_lag` not both set, `limit_to_partitions_with_lag` and
/// `ensure_even_distribution_of_partitions` not both set, and `partition_limitation` is `None`
/// when the trigger has no topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagPolicy {
    /// `lagThreshold`: the target lag per Job (the metric's AverageValue target). Default 10.
    pub lag_threshold: i64,
    /// `activationLagThreshold`: the trigger is active when the uncapped lag (persistent lag
    /// included) is strictly greater than this. Default 0.
    pub activation_lag_threshold: i64,
    /// `offsetResetPolicy`. Default `latest`.
    pub offset_reset_policy: OffsetResetPolicy,
    /// `allowIdleConsumers`: lift the cap of one Job per partition.
    pub allow_idle_consumers: bool,
    /// `excludePersistentLag`: hide the lag of partitions whose committed offset did not move
    /// since the previous poll (still counted for activation).
    pub exclude_persistent_lag: bool,
    /// `scaleToZeroOnInvalidOffset`: a partition with no committed offset counts 0, not 1.
    pub scale_to_zero_on_invalid_offset: bool,
    /// `limitToPartitionsWithLag`: cap the Job count at the number of partitions with lag.
    pub limit_to_partitions_with_lag: bool,
    /// `ensureEvenDistributionOfPartitions`: round the lag up so that the Job count divides the
    /// partition count.
    pub ensure_even_distribution_of_partitions: bool,
    /// `partitionLimitation`: only these partition ids count; `None` means all partitions.
    pub partition_limitation: Option<Vec<i32>>,
}

impl Default for LagPolicy {
    /// KEDA's defaults (keda-compat §6.2).
    fn default() -> Self {
        Self {
            lag_threshold: 10,
            activation_lag_threshold: 0,
            offset_reset_policy: OffsetResetPolicy::Latest,
            allow_idle_consumers: false,
            exclude_persistent_lag: false,
            scale_to_zero_on_invalid_offset: false,
            limit_to_partitions_with_lag: false,
            ensure_even_distribution_of_partitions: false,
            partition_limitation: None,
        }
    }
}

impl LagPolicy {
    /// Whether partition `id` counts under `partitionLimitation`.
    pub fn counts_partition(&self, id: i32) -> bool {
        self.partition_limitation
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kedas() {
        let policy = LagPolicy::default();
        assert_eq!(policy.lag_threshold, 10);
        assert_eq!(policy.activation_lag_threshold, 0);
        assert_eq!(policy.offset_reset_policy, OffsetResetPolicy::Latest);
    }

    #[test]
    fn partition_limitation_filters_partitions() {
        let all = LagPolicy::default();
        assert!(all.counts_partition(7));
        let limited = LagPolicy {
            partition_limitation: Some(vec![1, 2]),
            ..LagPolicy::default()
        };
        assert!(limited.counts_partition(2));
        assert!(!limited.counts_partition(3));
    }

    #[test]
    fn offset_reset_policy_parses_only_exact_spellings() {
        assert_eq!(
            OffsetResetPolicy::from_keda("earliest"),
            Some(OffsetResetPolicy::Earliest)
        );
        assert_eq!(OffsetResetPolicy::from_keda("latest,earliest"), None);
        assert_eq!(OffsetResetPolicy::from_keda("Latest"), None);
    }
}
