//! Kafka consumer lag as KEDA computes it (keda-compat §7.4–§7.6), over plain offsets, with
//! jobtide's differences D2 (per-partition lag clamped at 0), D3 (`earliest` with no commit
//! counts end − log start), D4 (the partition cap uses the ceiling) and D12 (the
//! `excludePersistentLag` memory is the caller's, kept across client rebuilds).
//!
//! The Kafka client only fetches numbers; every rule lives here.

use std::collections::BTreeMap;

use crate::kafka::{LagPolicy, OffsetResetPolicy};

/// The offsets of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The topic.
    pub topic: String,
    /// The partition id.
    pub partition: i32,
    /// The group's committed offset; `None` when the group has none (Kafka's −1).
    pub committed: Option<i64>,
    /// The log start offset, when it was fetched: for `earliest` with no commit (D3), and for a
    /// committed offset below it (records deleted by retention are no lag, D3).
    pub log_start: Option<i64>,
    /// The log end offset (high watermark, or the last stable offset for `read_committed`).
    pub end: i64,
}

/// A (topic, partition) key.
pub type PartitionKey = (String, i32);

/// The `excludePersistentLag` memory: the committed offset seen at the previous poll, per
/// partition. It belongs to the trigger, not to a Kafka client (D12).
pub type PersistentLagMemory = BTreeMap<PartitionKey, i64>;

/// One partition's lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    /// Counted toward the metric (0 for persistent lag under `excludePersistentLag`).
    pub lag: i64,
    /// Counted toward activation (persistent lag included).
    pub lag_with_persistent: i64,
}

/// One partition's lag and how it was derived.
pub fn partition_lag(
    offsets: &PartitionOffsets,
    policy: &LagPolicy,
    previous_committed: Option<i64>,
) -> PartitionLag {
    let both = |lag: i64| PartitionLag {
        lag,
        lag_with_persistent: lag,
    };
    let Some(committed) = offsets.committed.filter(|c| *c >= 0) else {
        // No committed offset.
        if policy.scale_to_zero_on_invalid_offset {
            return both(0);
        }
        return match policy.offset_reset_policy {
            OffsetResetPolicy::Latest => both(1),
            // D3: what a new consumer would read is what is still retained.
            OffsetResetPolicy::Earliest => {
                both((offsets.end - offsets.log_start.unwrap_or(0)).max(0))
            }
        };
    };
    // D2: a committed offset past the end (topic recreated, truncation) is no lag, not
    // negative lag that cancels other partitions' lag. D3: records below the log start were
    // deleted by retention; a consumer resumes at the log start, so they are no lag either
    // (keda#7936, redpanda#30624).
    let from = offsets
        .log_start
        .map_or(committed, |start| committed.max(start));
    let lag = (offsets.end - from).max(0);
    if policy.exclude_persistent_lag && previous_committed == Some(committed) {
        return PartitionLag {
            lag: 0,
            lag_with_persistent: lag,
        };
    }
    both(lag)
}

/// The lag of a trigger over all its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerLag {
    /// Per partition, in input order.
    pub partitions: Vec<PartitionLag>,
    /// Σ counted lag, before caps.
    pub total_lag: i64,
    /// Σ lag including persistent lag (activation uses this, uncapped).
    pub total_lag_with_persistent: i64,
    /// The metric value: the total after the partition caps, never negative.
    pub metric_value: i64,
    /// `totalLagWithPersistent > activationLagThreshold`.
    pub active: bool,
    /// The committed offsets to remember for the next poll (`excludePersistentLag`).
    pub memory: PersistentLagMemory,
}

/// Computes a trigger's lag from its partitions' offsets and the memory of the previous poll.
pub fn trigger_lag(
    partitions: &[PartitionOffsets],
    policy: &LagPolicy,
    previous: &PersistentLagMemory,
) -> TriggerLag {
    let mut memory = PersistentLagMemory::new();
    let mut per_partition = Vec::with_capacity(partitions.len());
    for offsets in partitions {
        let key = (offsets.topic.clone(), offsets.partition);
        let lag = partition_lag(offsets, policy, previous.get(&key).copied());
        if let Some(committed) = offsets.committed.filter(|c| *c >= 0) {
            memory.insert(key, committed);
        }
        per_partition.push(lag);
    }
    let total_lag: i64 = per_partition.iter().map(|p| p.lag).sum();
    let total_lag_with_persistent: i64 = per_partition.iter().map(|p| p.lag_with_persistent).sum();
    let partitions_total = i64::try_from(partitions.len()).unwrap_or(i64::MAX);
    let partitions_with_lag =
        i64::try_from(per_partition.iter().filter(|p| p.lag > 0).count()).unwrap_or(i64::MAX);
    let metric_value = capped_lag(total_lag, partitions_total, partitions_with_lag, policy).max(0);
    TriggerLag {
        partitions: per_partition,
        total_lag,
        total_lag_with_persistent,
        metric_value,
        active: total_lag_with_persistent > policy.activation_lag_threshold,
        memory,
    }
}

/// §7.5's caps, with D4: the Job count the capped lag implies, `ceil(lag / lagThreshold)`,
/// never exceeds the partition bound (KEDA compares the integer quotient, so one more Job than
/// partitions is possible there).
pub fn capped_lag(
    total_lag: i64,
    partitions_total: i64,
    partitions_with_lag: i64,
    policy: &LagPolicy,
) -> i64 {
    let threshold = policy.lag_threshold.max(1);
    if policy.allow_idle_consumers
        && !policy.limit_to_partitions_with_lag
        && !policy.ensure_even_distribution_of_partitions
    {
        return total_lag;
    }
    let mut lag = total_lag;
    let mut upper = partitions_total;
    if policy.ensure_even_distribution_of_partitions {
        let factor = next_factor(lag, partitions_total, threshold);
        lag = factor.saturating_mul(threshold);
    }
    if policy.limit_to_partitions_with_lag {
        upper = partitions_with_lag;
    }
    let jobs = jobs_for(lag, threshold);
    if jobs > upper {
        lag = upper.saturating_mul(threshold);
    }
    lag
}

/// `ceil(lag / threshold)` for a non-negative lag and a positive threshold: the Jobs a lag calls for.
pub fn jobs_for(lag: i64, threshold: i64) -> i64 {
    let (lag, threshold) = (lag.max(0), threshold.max(1));
    lag / threshold + i64::from(lag % threshold != 0)
}

/// The factors of `n` in ascending order (`factors(10) = [1, 2, 5, 10]`).
pub fn factors(n: i64) -> Vec<i64> {
    if n <= 0 {
        return Vec::new();
    }
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut i = 1;
    while i * i <= n {
        if n % i == 0 {
            small.push(i);
            if i != n / i {
                large.push(n / i);
            }
        }
        i += 1;
    }
    small.extend(large.into_iter().rev());
    small
}

/// The smallest factor `F` of the partition count with `F × lagThreshold ≥ lag`, else the
/// partition count (`ensureEvenDistributionOfPartitions`).
pub fn next_factor(lag: i64, partitions: i64, lag_threshold: i64) -> i64 {
    factors(partitions)
        .into_iter()
        .find(|f| f.saturating_mul(lag_threshold) >= lag)
        .unwrap_or(partitions)
}

#[cfg(test)]
mod tests;
