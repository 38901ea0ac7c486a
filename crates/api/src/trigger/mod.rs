//! Trigger metadata → typed trigger configs, with KEDA's parsing rules (keda-compat §6).
//!
//! A trigger is parsed once, at the edge, into a [`TriggerConfig`]; nothing downstream sees a
//! string map. A forgotten trigger type is a compile error: [`TriggerType`] is matched
//! exhaustively.

mod apache_kafka;
mod aws;
pub mod connection;
mod dispatch;
mod kafka;
pub mod kerberos;
mod lag_fields;
pub mod params;
mod topic;

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;
use thiserror::Error;

pub use apache_kafka::ApacheKafkaTrigger;
pub use dispatch::{CommitOn, KafkaDispatchTrigger, MAX_ATTEMPTS, Payload};
pub use kafka::{KafkaTrigger, parse_partition_limitation};
pub use lag_fields::IsolationLevel;

use crate::resolve::TriggerInputs;
use crate::scaledjob::ScaleTrigger;
use crate::secret::{REDACTED, Secret};
use params::Params;

/// The trigger types jobtide understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerType {
    /// `kafka`: KEDA's main Kafka scaler.
    Kafka,
    /// `apache-kafka`: KEDA's experimental kafka-go scaler.
    ApacheKafka,
    /// `kafka-dispatch`: jobtide's own, one Job per message (beyond KEDA).
    KafkaDispatch,
}

impl TriggerType {
    /// Every supported type, in the order error messages list them.
    pub const ALL: [Self; 3] = [Self::Kafka, Self::ApacheKafka, Self::KafkaDispatch];

    /// The `type` value in manifests.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::ApacheKafka => "apache-kafka",
            Self::KafkaDispatch => "kafka-dispatch",
        }
    }

    /// Parses a manifest's `type`.
    pub fn from_manifest(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }

    /// Whether this trigger type reads the metadata key `key`.
    pub fn reads_metadata_key(self, key: &str) -> bool {
        let own: &[&str] = match self {
            Self::Kafka => kafka::METADATA_KEYS,
            Self::ApacheKafka => &[],
            Self::KafkaDispatch => return dispatch::METADATA_KEYS.contains(&key),
        };
        SHARED_METADATA_KEYS.contains(&key) || own.contains(&key)
    }
}

impl fmt::Display for TriggerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metadata keys both Kafka scalers read.
pub const SHARED_METADATA_KEYS: &[&str] = &[
    "bootstrapServers",
    "bootstrapServersFromEnv",
    "consumerGroup",
    "consumerGroupFromEnv",
    "topic",
    "topicFromEnv",
    "partitionLimitation",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "excludePersistentLag",
    "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions",
    "isolationLevel",
    "tls",
    "sasl",
    "awsRegion",
    "awsEndpoint",
    "awsAccessKeyID",
    "awsAccessKeyIDFromEnv",
    "awsSecretAccessKeyFromEnv",
];

/// A parsed, valid trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerConfig {
    /// `type: kafka`.
    Kafka(KafkaTrigger),
    /// `type: apache-kafka`.
    ApacheKafka(ApacheKafkaTrigger),
    /// `type: kafka-dispatch`.
    KafkaDispatch(KafkaDispatchTrigger),
}

impl TriggerConfig {
    /// The trigger's lag rules (for a dispatch trigger, its backlog: one message counts one).
    pub fn lag(&self) -> &jobtide_core::kafka::LagPolicy {
        match self {
            Self::Kafka(kafka) => &kafka.lag,
            Self::ApacheKafka(apache) => &apache.lag,
            Self::KafkaDispatch(dispatch) => &dispatch.backlog,
        }
    }

    /// The trigger's type.
    pub fn trigger_type(&self) -> TriggerType {
        match self {
            Self::Kafka(_) => TriggerType::Kafka,
            Self::ApacheKafka(_) => TriggerType::ApacheKafka,
            Self::KafkaDispatch(_) => TriggerType::KafkaDispatch,
        }
    }
}

/// Why a trigger did not parse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TriggerError {
    /// The `type` is not one jobtide supports.
    #[error(
        "unknown trigger type \"{type_}\": jobtide supports {}",
        supported_list()
    )]
    UnknownType {
        /// The type as written.
        type_: String,
    },
    /// KEDA would reject the metadata. Displayed as KEDA displays it, prefixed once (D6).
    #[error("error parsing kafka metadata: {}", join_messages(.errors))]
    InvalidMetadata {
        /// The trigger type.
        trigger_type: TriggerType,
        /// Every field error, then the first validation error, as KEDA collects them.
        errors: Vec<ParamError>,
    },
    /// KEDA accepts this, jobtide cannot run it yet.
    #[error("{feature} is not supported by jobtide yet")]
    NotSupported {
        /// What is not supported.
        feature: &'static str,
    },
}

impl TriggerError {
    /// The individual messages (for listing one per line).
    pub fn messages(&self) -> Vec<String> {
        self.param_errors().into_iter().map(|e| e.message).collect()
    }

    /// The individual problems, each with the parameter it is about when there is one.
    pub fn param_errors(&self) -> Vec<ParamError> {
        match self {
            Self::InvalidMetadata { errors, .. } => errors.clone(),
            Self::UnknownType { .. } => {
                vec![ParamError {
                    parameter: "type".into(),
                    message: self.to_string(),
                }]
            }
            Self::NotSupported { .. } => {
                vec![ParamError {
                    parameter: "sasl".into(),
                    message: self.to_string(),
                }]
            }
        }
    }
}

fn join_messages(errors: &[ParamError]) -> String {
    errors
        .iter()
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn supported_list() -> String {
    TriggerType::ALL
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The outcome of parsing one trigger.
#[derive(Debug, Clone)]
pub struct ParsedTrigger {
    /// The typed config, or why there is none.
    pub config: Result<TriggerConfig, TriggerError>,
    /// What parsed, under KEDA's parameter names; `None` when not even the type is known. Every
    /// parameter whose value came from the authentication or the env (see
    /// [`Self::from_secrets`]) is `"<redacted>"`, whatever its type.
    pub view: Option<Value>,
    /// The external metric name (`s<index>-kafka-<topic>`), when the fields it needs parsed.
    /// It may hold a value from a Secret: outputs show [`Self::shown_metric_name`].
    pub metric_name: Option<String>,
    /// The metric name as outputs may show it: `s<index>-kafka-<redacted>` when the topic or
    /// consumer group in it came from the authentication or the env.
    pub shown_metric_name: Option<String>,
    /// The parameters whose value came from the trigger's authentication or the container's env
    /// (Secrets, ConfigMaps): no output shows their values.
    pub from_secrets: BTreeSet<String>,
    /// Metadata keys the trigger type doesn't read (KEDA's `Unmatched input property`).
    pub warnings: Vec<String>,
}

/// One problem with one parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// The parameter (KEDA's name) the problem is about.
    pub parameter: String,
    /// KEDA's message.
    pub message: String,
}

impl ParamError {
    pub(crate) fn new(parameter: &str, message: impl Into<String>) -> Self {
        Self {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Internal failure shape of the per-type parsers.
pub(crate) enum Rejected {
    Invalid {
        errors: Vec<ParamError>,
        view: Option<Value>,
    },
    NotSupported {
        feature: &'static str,
        view: Option<Value>,
    },
}

pub(crate) fn redacted(secret: Option<&Secret>) -> Value {
    secret.map_or(Value::Null, |_| Value::String(REDACTED.to_owned()))
}

/// Parses trigger number `index` of a ScaledJob with its resolved inputs.
pub fn parse_trigger(
    index: usize,
    trigger: &ScaleTrigger,
    inputs: &TriggerInputs,
) -> ParsedTrigger {
    let Some(trigger_type) = TriggerType::from_manifest(&trigger.type_) else {
        return ParsedTrigger {
            config: Err(TriggerError::UnknownType {
                type_: trigger.type_.clone(),
            }),
            view: None,
            metric_name: None,
            shown_metric_name: None,
            from_secrets: BTreeSet::new(),
            warnings: Vec::new(),
        };
    };
    // A dispatch trigger's parser sees only the keys it reads: the lag keys `kafka`'s parser
    // would check are warnings there (`Unmatched input property`), not errors.
    let filtered;
    let metadata = match trigger_type {
        TriggerType::KafkaDispatch => {
            filtered = trigger
                .metadata
                .iter()
                .filter(|(key, _)| trigger_type.reads_metadata_key(key))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            &filtered
        }
        TriggerType::Kafka | TriggerType::ApacheKafka => &trigger.metadata,
    };
    let mut params = Params::new(metadata, &inputs.auth_params, &inputs.resolved_env);
    let (metric_name, shown_metric_name) = match metric_name(trigger_type, index, &mut params) {
        Some((name, from_secrets)) => {
            let shown = if from_secrets {
                format!("s{index}-kafka-{REDACTED}")
            } else {
                name.clone()
            };
            (Some(name), Some(shown))
        }
        None => (None, None),
    };
    let mut warnings: Vec<String> = trigger
        .metadata
        .keys()
        .filter(|key| !trigger_type.reads_metadata_key(key))
        .map(|key| match &trigger.name {
            Some(name) => {
                format!("Unmatched input property {key} in scaler {trigger_type} ({name})")
            }
            None => format!("Unmatched input property {key} in scaler {trigger_type}"),
        })
        .collect();
    if trigger_type == TriggerType::Kafka {
        warnings.extend(
            kafka::NO_EFFECT
                .iter()
                .filter(|(key, _)| {
                    trigger.metadata.contains_key(*key) || inputs.auth_params.contains_key(*key)
                })
                .map(|(key, why)| format!("parameter {key} has no effect in jobtide: {why}")),
        );
    }
    let result = match trigger_type {
        TriggerType::Kafka => {
            kafka::parse(&mut params).map(|(config, view)| (TriggerConfig::Kafka(config), view))
        }
        TriggerType::ApacheKafka => apache_kafka::parse(&mut params)
            .map(|(config, view)| (TriggerConfig::ApacheKafka(config), view)),
        TriggerType::KafkaDispatch => dispatch::parse(&mut params)
            .map(|(config, view)| (TriggerConfig::KafkaDispatch(config), view)),
    };
    let from_secrets = params.from_secrets().clone();
    let (config, view) = match result {
        Ok((config, view)) => (Ok(config), Some(view)),
        Err(Rejected::Invalid { errors, view }) => (
            Err(TriggerError::InvalidMetadata {
                trigger_type,
                errors,
            }),
            view,
        ),
        Err(Rejected::NotSupported { feature, view }) => {
            (Err(TriggerError::NotSupported { feature }), view)
        }
    };
    ParsedTrigger {
        config,
        view: view.map(|view| redact_view(view, &from_secrets)),
        metric_name,
        shown_metric_name,
        from_secrets,
        warnings,
    }
}

/// `view` with the value of every parameter in `from_secrets` that is set replaced by
/// `"<redacted>"` (a parameter that isn't set stays `null`).
fn redact_view(mut view: Value, from_secrets: &BTreeSet<String>) -> Value {
    if let Some(fields) = view.as_object_mut() {
        for (name, value) in fields.iter_mut() {
            if from_secrets.contains(name) && !value.is_null() {
                *value = Value::String(REDACTED.to_owned());
            }
        }
    }
    view
}

/// KEDA's external metric name: `s<index>-` + normalize(`kafka-<topic>`), or without a topic
/// normalize(`kafka-<consumerGroup>-topics`). `None` when neither topic nor group is known; with
/// the name, whether the value in it came from the authentication or the env.
fn metric_name(
    trigger_type: TriggerType,
    index: usize,
    params: &mut Params<'_>,
) -> Option<(String, bool)> {
    let topic_from_secrets = params.is_from_secrets("topic", params::META_ENV);
    let topic = params
        .lookup("topic", params::META_ENV)
        .map(|topic| match trigger_type {
            TriggerType::Kafka | TriggerType::KafkaDispatch => topic,
            TriggerType::ApacheKafka => topic
                .split(',')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(","),
        });
    let (base, from_secrets) = match topic {
        Some(topic) => (format!("kafka-{topic}"), topic_from_secrets),
        None => (
            format!(
                "kafka-{}-topics",
                params.lookup("consumerGroup", params::META_ENV)?
            ),
            params.is_from_secrets("consumerGroup", params::META_ENV),
        ),
    };
    Some((
        format!("s{index}-{}", normalize_metric_name(&base)),
        from_secrets,
    ))
}

/// KEDA's `NormalizeString` as used for metric names: each of `/ . : % ( )` becomes `-`.
pub fn normalize_metric_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if matches!(c, '/' | '.' | ':' | '%' | '(' | ')') {
                '-'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
