//! The `ScaledJob` custom resource (`keda.sh/v1alpha1`), field for field as KEDA 2.20 defines it
//! (keda-compat §1). Defaults are applied in code, not by the CRD, exactly as KEDA does; the
//! `effective_*` helpers name them.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// KEDA's default `pollingInterval`, in seconds.
pub const DEFAULT_POLLING_INTERVAL_SECONDS: i32 = 30;
/// KEDA's default for both history limits.
pub const DEFAULT_HISTORY_LIMIT: i32 = 100;
/// KEDA's default `maxReplicaCount` (when unset; see keda-compat §1.3 for the effective value).
pub const DEFAULT_MAX_REPLICA_COUNT: i32 = 100;

/// The desired state of a ScaledJob: which Job to run, and which triggers decide how many.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledJob",
    plural = "scaledjobs",
    singular = "scaledjob",
    shortname = "sj",
    namespaced,
    status = "ScaledJobStatus",
    doc = "ScaledJob is the Schema for the scaledjobs API",
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.minReplicaCount"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxReplicaCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.conditions[?(@.type==\"Active\")].status"}"#,
    printcolumn = r#"{"name":"Paused","type":"string","jsonPath":".status.conditions[?(@.type==\"Paused\")].status"}"#,
    printcolumn = r#"{"name":"Triggers","type":"string","jsonPath":".status.triggersTypes"}"#,
    printcolumn = r#"{"name":"Authentications","type":"string","jsonPath":".status.authenticationsTypes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobSpec {
    /// The spec of every Job created. If `template.spec.restartPolicy` is empty, created Jobs get
    /// `OnFailure`.
    pub job_target_ref: JobSpec,

    /// Interval of the scale loop in seconds. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub polling_interval: Option<i32>,

    /// How many Jobs with `Complete=True` to keep. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub successful_jobs_history_limit: Option<i32>,

    /// How many Jobs with `Failed=True` to keep. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failed_jobs_history_limit: Option<i32>,

    /// Deprecated: use `rollout.strategy`. When set it takes precedence over `rollout.strategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<RolloutStrategy>,

    /// What happens to running Jobs when the ScaledJob's spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,

    /// The container of `jobTargetRef.template` whose env resolves `*FromEnv` trigger parameters
    /// and TriggerAuthentication `env` entries. Default: the first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,

    /// Jobs kept running even with no lag. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replica_count: Option<i32>,

    /// Upper bound on Jobs (see keda-compat §1.3 for how it combines with the minimum).
    /// Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replica_count: Option<i32>,

    /// How the number of Jobs to create is computed from the metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_strategy: Option<ScalingStrategy>,

    /// The triggers whose metrics decide the number of Jobs.
    #[schemars(length(min = 1))]
    pub triggers: Vec<ScaleTrigger>,
}

/// `rollout.strategy` / the deprecated `rolloutStrategy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RolloutStrategy {
    /// Running Jobs are never deleted by a spec change.
    Gradual,
    /// Jobs of older generations are deleted when the spec changes.
    Immediate,
}

/// `rollout.propagationPolicy`: the deletion propagation used for rollout deletions only.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PropagationPolicy {
    /// Delete the Job's Pods before the Job.
    Foreground,
    /// Delete the Job and let the garbage collector delete its Pods.
    Background,
}

/// Rollout defines the strategy for job rollouts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `gradual` or `immediate`. jobtide treats an empty value as `gradual` (difference D1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RolloutStrategy>,
    /// `foreground` or `background` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<PropagationPolicy>,
}

/// `scalingStrategy.strategy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScalingStrategyKind {
    /// Create `maxScale - running` Jobs.
    Default,
    /// Deduct a fixed count and a percentage of running Jobs.
    Custom,
    /// Account for pending Jobs and fill up to the maximum.
    Accurate,
    /// Fill up to the maximum as long as there is lag.
    Eager,
}

/// `scalingStrategy.multipleScalersCalculation`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MultipleScalersCalculation {
    /// The smallest active trigger wins.
    Min,
    /// The mean over active triggers.
    Avg,
    /// The sum over active triggers.
    Sum,
    /// The largest active trigger wins (the default).
    Max,
}

/// ScalingStrategy defines the strategy of Scaling.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStrategy {
    /// `default`, `custom`, `accurate` or `eager`. Empty means `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<ScalingStrategyKind>,
    /// `custom` only: a fixed number of Jobs deducted from the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_queue_length_deduction: Option<i32>,
    /// `custom` only: a float (as a string) multiplied with the running Jobs and deducted. When it
    /// does not parse, the strategy falls back to `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_running_job_percentage: Option<String>,
    /// Pod condition types that must all be True on one pod for its Job to count as not pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_pod_conditions: Option<Vec<String>>,
    /// How several triggers combine: `max` (default), `min`, `avg` or `sum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_scalers_calculation: Option<MultipleScalersCalculation>,
}

/// ScaleTriggers reference the scaler that will be used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTrigger {
    /// The scaler type, e.g. `kafka` or `apache-kafka`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1))]
    pub type_: String,
    /// An optional name, unique within the ScaledJob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The scaler's parameters.
    pub metadata: BTreeMap<String, String>,
    /// The TriggerAuthentication or ClusterTriggerAuthentication supplying `authParams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<AuthenticationRef>,
    /// Ignored for ScaledJobs (KEDA logs a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cached_metrics: Option<bool>,
    /// Must be empty for ScaledJobs: KEDA's reconcile fails otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<String>,
}

/// Points to the TriggerAuthentication or ClusterTriggerAuthentication object that is used to
/// authenticate the scaler with the environment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRef {
    /// The object's name (in the ScaledJob's namespace for a TriggerAuthentication).
    pub name: String,
    /// Kind of the resource being referred to. Defaults to TriggerAuthentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AuthenticationKind>,
}

/// The kinds an `authenticationRef` can name.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum AuthenticationKind {
    /// A namespaced `TriggerAuthentication`.
    TriggerAuthentication,
    /// A cluster-scoped `ClusterTriggerAuthentication`.
    ClusterTriggerAuthentication,
}

impl AuthenticationRef {
    /// The kind, with KEDA's default.
    pub fn kind_or_default(&self) -> AuthenticationKind {
        self.kind
            .unwrap_or(AuthenticationKind::TriggerAuthentication)
    }
}

/// The observed state of a ScaledJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobStatus {
    /// Set to the time of every poll in which the ScaledJob is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<Time>,
    /// `Ready`, `Active`, `Fallback` and `Paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Distinct trigger types in spec order, joined with `,`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// Distinct `authenticationRef` names, joined with `,`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
    /// Per external metric name (e.g. `s0-kafka-orders`), whether that trigger is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_activity: Option<BTreeMap<String, TriggerActivity>>,
    /// Present in KEDA's schema and never written.
    #[serde(rename = "Paused", default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// jobtide's dispatch mode (a `kafka-dispatch` trigger): where each partition's commit
    /// stands and the messages in flight. Absent in lag mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<DispatchStatus>,
}

/// `status.dispatch`: the dispatcher's ledger as of its last report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DispatchStatus {
    /// The consumer group's committed offset (the next message to dispatch) per partition.
    #[serde(default)]
    pub committed: BTreeMap<String, i64>,
    /// Messages whose Job is not finished (or whose retry or dead letter is under way).
    #[serde(default)]
    pub in_flight: i64,
    /// Messages read while `maxReplicaCount` Jobs were in flight, waiting for one to finish.
    #[serde(default)]
    pub queued: i64,
    /// Messages produced to the dead-letter topic since the dispatcher started.
    #[serde(default)]
    pub dead_lettered: i64,
    /// Messages whose Jobs failed `maxAttempts` times with no dead-letter topic, since the
    /// dispatcher started.
    #[serde(default)]
    pub failed: i64,
}

/// One entry of `status.triggersActivity`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerActivity {
    /// Whether the trigger was active at the last poll.
    pub is_active: bool,
}

/// Condition to store the condition state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Condition {
    /// Type of condition.
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of the condition, one of True, False, Unknown.
    pub status: String,
    /// The reason for the condition's last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human readable message indicating details about the transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ScaledJobSpec {
    /// `pollingInterval` with KEDA's default.
    pub fn polling_interval_seconds(&self) -> i32 {
        self.polling_interval
            .unwrap_or(DEFAULT_POLLING_INTERVAL_SECONDS)
    }

    /// The name of the container whose env resolves `*FromEnv` parameters, if set and non-empty.
    pub fn env_source_container(&self) -> Option<&str> {
        self.env_source_container_name
            .as_deref()
            .filter(|name| !name.is_empty())
    }
}
