//! The lag parameters both Kafka scalers share (keda-compat §6.2/§6.3): read the same way, built
//! into the same [`LagPolicy`], shown the same way. Their validation messages differ and stay
//! with each scaler.

use jobtide_core::kafka::{LagPolicy, OffsetResetPolicy};
use serde_json::{Map, Value, json};

use super::params::{META, Params};

/// Which end offset lag is counted against: jobtide's `isolationLevel` trigger parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IsolationLevel {
    /// The high watermark, as KEDA counts (the default).
    #[default]
    ReadUncommitted,
    /// The last stable offset: for consumers with `isolation.level=read_committed` that read
    /// transactional data, so commit markers and open transactions aren't phantom lag.
    ReadCommitted,
}

/// The lag parameters as parsed (`None` where the value did not parse).
#[derive(Debug, Default)]
pub(super) struct LagDraft {
    pub lag_threshold: Option<i64>,
    pub activation_lag_threshold: Option<i64>,
    pub offset_reset_policy: Option<&'static str>,
    pub allow_idle_consumers: Option<bool>,
    pub exclude_persistent_lag: Option<bool>,
    pub scale_to_zero_on_invalid_offset: Option<bool>,
    pub limit_to_partitions_with_lag: Option<bool>,
    pub ensure_even_distribution_of_partitions: Option<bool>,
    /// jobtide's `isolationLevel` (not a KEDA parameter; KEDA ignores unknown keys).
    pub isolation_level: Option<&'static str>,
}

impl LagDraft {
    /// Reads the parameters, in KEDA's field order, from the trigger metadata.
    pub fn read(p: &mut Params<'_>) -> Self {
        Self {
            lag_threshold: p.int64("lagThreshold", META, 10),
            activation_lag_threshold: p.int64("activationLagThreshold", META, 0),
            offset_reset_policy: p.one_of(
                "offsetResetPolicy",
                META,
                "latest",
                &OffsetResetPolicy::VALUES,
            ),
            allow_idle_consumers: p.bool("allowIdleConsumers", META, false),
            exclude_persistent_lag: p.bool("excludePersistentLag", META, false),
            scale_to_zero_on_invalid_offset: p.bool("scaleToZeroOnInvalidOffset", META, false),
            limit_to_partitions_with_lag: p.bool("limitToPartitionsWithLag", META, false),
            ensure_even_distribution_of_partitions: p.bool(
                "ensureEvenDistributionOfPartitions",
                META,
                false,
            ),
            isolation_level: p.one_of(
                "isolationLevel",
                META,
                "read_uncommitted",
                &["read_uncommitted", "read_committed"],
            ),
        }
    }

    /// The policy; a field that failed to parse has Go's zero value (only reached when the whole
    /// trigger parsed, so never in practice).
    pub fn policy(&self, partition_limitation: Option<Vec<i32>>) -> LagPolicy {
        LagPolicy {
            lag_threshold: self.lag_threshold.unwrap_or_default(),
            activation_lag_threshold: self.activation_lag_threshold.unwrap_or_default(),
            offset_reset_policy: self
                .offset_reset_policy
                .and_then(OffsetResetPolicy::from_keda)
                .unwrap_or_default(),
            allow_idle_consumers: self.allow_idle_consumers.unwrap_or_default(),
            exclude_persistent_lag: self.exclude_persistent_lag.unwrap_or_default(),
            scale_to_zero_on_invalid_offset: self
                .scale_to_zero_on_invalid_offset
                .unwrap_or_default(),
            limit_to_partitions_with_lag: self.limit_to_partitions_with_lag.unwrap_or_default(),
            ensure_even_distribution_of_partitions: self
                .ensure_even_distribution_of_partitions
                .unwrap_or_default(),
            partition_limitation,
        }
    }

    /// The end offset the lag is counted against.
    pub fn isolation_level(&self) -> IsolationLevel {
        match self.isolation_level {
            Some("read_committed") => IsolationLevel::ReadCommitted,
            _ => IsolationLevel::ReadUncommitted,
        }
    }

    /// Adds the parameters to a `validate` config view.
    pub fn extend_view(&self, view: &mut Value) {
        let fields = json!({
            "lagThreshold": self.lag_threshold,
            "activationLagThreshold": self.activation_lag_threshold,
            "offsetResetPolicy": self.offset_reset_policy,
            "allowIdleConsumers": self.allow_idle_consumers,
            "excludePersistentLag": self.exclude_persistent_lag,
            "scaleToZeroOnInvalidOffset": self.scale_to_zero_on_invalid_offset,
            "limitToPartitionsWithLag": self.limit_to_partitions_with_lag,
            "ensureEvenDistributionOfPartitions": self.ensure_even_distribution_of_partitions,
            "isolationLevel": self.isolation_level,
        });
        if let (Some(view), Value::Object(fields)) = (view.as_object_mut(), fields) {
            view.extend::<Map<String, Value>>(fields);
        }
    }
}
