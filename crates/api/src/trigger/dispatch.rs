//! `type: kafka-dispatch` (jobtide's own trigger, beyond KEDA): the operator consumes the topic
//! itself, in its own consumer group, and creates exactly one Job per message.
//!
//! The connection, credentials and TriggerAuthentication are those of `type: kafka` — the same
//! parser reads them, so a `kafka` trigger becomes a dispatch trigger by changing its type and
//! adding the dispatch parameters. The lag parameters (`lagThreshold`, …) don't apply: a dispatch
//! trigger that sets one gets KEDA's `Unmatched input property` warning.

use jobtide_core::kafka::LagPolicy;
use serde_json::Value;

use super::connection::KafkaConnection;
use super::kafka;
use super::lag_fields::IsolationLevel;
use super::params::{META, Params};
use super::topic::check_topic_name;
use super::{ParamError, Rejected};

/// The most Jobs one message may get (`maxAttempts`): a retry budget, not a loop.
pub const MAX_ATTEMPTS: u32 = 100;

/// A parsed, valid `kafka-dispatch` trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaDispatchTrigger {
    /// How to reach the cluster (as `kafka`).
    pub connection: KafkaConnection,
    /// `consumerGroup`: the operator's own group, whose committed offsets are the dispatch
    /// watermark. Jobs never join it.
    pub consumer_group: String,
    /// `topic` (required).
    pub topic: String,
    /// `offsetResetPolicy`: where a group without a commit starts (`latest` by default), and
    /// the backlog rules `jobtide explain` uses (one message counts one).
    pub backlog: LagPolicy,
    /// `isolationLevel`: which messages are dispatched; `read_committed` by default (aborted
    /// transactional messages never become Jobs).
    pub isolation_level: IsolationLevel,
    /// `commitOn`.
    pub commit_on: CommitOn,
    /// `maxAttempts`: Jobs per message before it counts as failed (1 to [`MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// `deadLetterTopic`: where a failed message goes; `None` records the failure and moves on.
    pub dead_letter_topic: Option<String>,
    /// `resultsTopic`: where one record per finished message goes (its coordinates, Job,
    /// outcome, attempts, times and trace id; docs/observability.md); `None`: no records.
    pub results_topic: Option<String>,
    /// `payload`: how the message reaches the Job.
    pub payload: Payload,
}

/// When a message's offset may be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOn {
    /// Once its Job is done (succeeded, or failed for good and dead-lettered or recorded).
    Complete,
    /// Once its Job exists.
    Create,
}

/// How the message reaches the Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Key, value and headers as files in `$JOBTIDE_MESSAGE_DIR`, from a Secret owned by the Job.
    File,
    /// `JOBTIDE_MESSAGE_KEY` / `JOBTIDE_MESSAGE_VALUE` (UTF-8 only).
    Env,
    /// Only the coordinates (`JOBTIDE_TOPIC`, `JOBTIDE_PARTITION`, `JOBTIDE_OFFSET`, …).
    None,
}

/// The metadata keys a dispatch trigger reads.
pub const METADATA_KEYS: &[&str] = &[
    "bootstrapServers",
    "bootstrapServersFromEnv",
    "consumerGroup",
    "consumerGroupFromEnv",
    "topic",
    "topicFromEnv",
    "offsetResetPolicy",
    "isolationLevel",
    "tls",
    "sasl",
    "unsafeSsl",
    "saslTokenProvider",
    "awsRegion",
    "awsEndpoint",
    "awsAccessKeyID",
    "awsAccessKeyIDFromEnv",
    "awsSecretAccessKeyFromEnv",
    "commitOn",
    "maxAttempts",
    "deadLetterTopic",
    "resultsTopic",
    "payload",
];

/// The `kafka` view's keys that mean nothing for a dispatch trigger.
const LAG_ONLY_VIEW_KEYS: &[&str] = &[
    "lagThreshold",
    "activationLagThreshold",
    "allowIdleConsumers",
    "excludePersistentLag",
    "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions",
    "partitionLimitation",
    "fullMetadata",
    "version",
];

struct Draft {
    commit_on: Option<&'static str>,
    max_attempts: Option<i64>,
    dead_letter_topic: Option<String>,
    results_topic: Option<String>,
    payload: Option<&'static str>,
    /// Whether `isolationLevel` is set (`kafka`'s parser reads it; only the default differs).
    isolation_level_set: bool,
}

/// Parses a dispatch trigger from parameters whose metadata holds only [`METADATA_KEYS`].
pub(super) fn parse(params: &mut Params<'_>) -> Result<(KafkaDispatchTrigger, Value), Rejected> {
    // Read first: `kafka::parse` collects every field error so far together with its own.
    let draft = Draft {
        commit_on: params.one_of("commitOn", META, "complete", &["complete", "create"]),
        max_attempts: params.int64("maxAttempts", META, 1),
        dead_letter_topic: params.optional("deadLetterTopic", META),
        results_topic: params.optional("resultsTopic", META),
        payload: params.one_of("payload", META, "file", &["file", "env", "none"]),
        isolation_level_set: params.optional("isolationLevel", META).is_some(),
    };
    let (kafka, view) = match kafka::parse(params) {
        Ok(parsed) => parsed,
        Err(Rejected::Invalid { errors, view }) => {
            return Err(Rejected::Invalid {
                errors,
                view: view.map(|v| dispatch_view(v, &draft)),
            });
        }
        Err(Rejected::NotSupported { feature, view }) => {
            return Err(Rejected::NotSupported {
                feature,
                view: view.map(|v| dispatch_view(v, &draft)),
            });
        }
    };
    let view = dispatch_view(view, &draft);
    let invalid = |error: ParamError| Rejected::Invalid {
        errors: vec![error],
        view: Some(view.clone()),
    };
    let Some(topic) = kafka.topic.clone() else {
        return Err(invalid(ParamError::new(
            "topic",
            "topic must be specified for a kafka-dispatch trigger",
        )));
    };
    check_topic_name("topic", &topic).map_err(invalid)?;
    if let Some(dead_letter) = &draft.dead_letter_topic {
        check_topic_name("deadLetterTopic", dead_letter).map_err(invalid)?;
        if *dead_letter == topic {
            return Err(invalid(ParamError::new(
                "deadLetterTopic",
                "deadLetterTopic must differ from topic (a failed message would come back)",
            )));
        }
    }
    if let Some(results) = &draft.results_topic {
        check_topic_name("resultsTopic", results).map_err(invalid)?;
        if *results == topic {
            return Err(invalid(ParamError::new(
                "resultsTopic",
                "resultsTopic must differ from topic (each record would be dispatched as a message)",
            )));
        }
    }
    let max_attempts = draft
        .max_attempts
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (1..=MAX_ATTEMPTS).contains(n))
        .ok_or_else(|| {
            invalid(ParamError::new(
                "maxAttempts",
                format!("maxAttempts must be a whole number from 1 to {MAX_ATTEMPTS}"),
            ))
        })?;
    let trigger = KafkaDispatchTrigger {
        connection: kafka.connection,
        consumer_group: kafka.consumer_group,
        topic,
        backlog: LagPolicy {
            lag_threshold: 1,
            allow_idle_consumers: true,
            ..kafka.lag
        },
        isolation_level: if draft.isolation_level_set {
            kafka.isolation_level
        } else {
            IsolationLevel::ReadCommitted
        },
        commit_on: match draft.commit_on {
            Some("create") => CommitOn::Create,
            _ => CommitOn::Complete,
        },
        max_attempts,
        dead_letter_topic: draft.dead_letter_topic,
        results_topic: draft.results_topic,
        payload: match draft.payload {
            Some("env") => Payload::Env,
            Some("none") => Payload::None,
            _ => Payload::File,
        },
    };
    Ok((trigger, view))
}

fn dispatch_view(mut view: Value, draft: &Draft) -> Value {
    if let Value::Object(fields) = &mut view {
        for key in LAG_ONLY_VIEW_KEYS {
            fields.remove(*key);
        }
        fields.insert("commitOn".into(), draft.commit_on.into());
        fields.insert("maxAttempts".into(), draft.max_attempts.into());
        fields.insert(
            "deadLetterTopic".into(),
            draft.dead_letter_topic.clone().into(),
        );
        fields.insert("resultsTopic".into(), draft.results_topic.clone().into());
        fields.insert("payload".into(), draft.payload.into());
        if !draft.isolation_level_set {
            fields.insert("isolationLevel".into(), "read_committed".into());
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jobtide_core::kafka::OffsetResetPolicy;

    use super::*;
    use crate::resolve::TriggerInputs;
    use crate::scaledjob::ScaleTrigger;
    use crate::secret::Secret;
    use crate::trigger::{ParsedTrigger, TriggerConfig, parse_trigger};

    fn parse(metadata: &[(&str, &str)], auth: &[(&str, &str)]) -> ParsedTrigger {
        let trigger = ScaleTrigger {
            type_: "kafka-dispatch".into(),
            name: None,
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            authentication_ref: None,
            use_cached_metrics: None,
            metric_type: None,
        };
        let inputs = TriggerInputs {
            auth_params: auth
                .iter()
                .map(|(k, v)| ((*k).into(), Secret::new(*v)))
                .collect::<BTreeMap<_, _>>(),
            resolved_env: BTreeMap::new(),
            warnings: Vec::new(),
        };
        parse_trigger(0, &trigger, &inputs)
    }

    const BASE: &[(&str, &str)] = &[
        ("bootstrapServers", "kafka:9092"),
        ("consumerGroup", "orders-dispatch"),
        ("topic", "orders"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        BASE.iter().chain(extra).copied().collect()
    }

    fn ok(metadata: &[(&str, &str)]) -> KafkaDispatchTrigger {
        match parse(metadata, &[]).config {
            Ok(TriggerConfig::KafkaDispatch(config)) => config,
            other => panic!("expected a valid kafka-dispatch trigger, got {other:?}"),
        }
    }

    fn errors(metadata: &[(&str, &str)]) -> Vec<(String, String)> {
        match parse(metadata, &[]).config {
            Err(error) => error
                .param_errors()
                .into_iter()
                .map(|e| (e.parameter, e.message))
                .collect(),
            Ok(config) => panic!("expected errors, got {config:?}"),
        }
    }

    #[test]
    fn the_issue_example_parses_with_every_parameter() {
        let config = ok(&with(&[
            ("offsetResetPolicy", "earliest"),
            ("commitOn", "complete"),
            ("maxAttempts", "3"),
            ("deadLetterTopic", "orders-dlq"),
            ("resultsTopic", "orders-results"),
            ("payload", "file"),
        ]));
        assert_eq!(config.connection.bootstrap_servers, ["kafka:9092"]);
        assert_eq!(config.consumer_group, "orders-dispatch");
        assert_eq!(config.topic, "orders");
        assert_eq!(
            config.backlog.offset_reset_policy,
            OffsetResetPolicy::Earliest
        );
        assert_eq!(config.backlog.lag_threshold, 1, "one message counts one");
        assert_eq!(config.commit_on, CommitOn::Complete);
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.dead_letter_topic.as_deref(), Some("orders-dlq"));
        assert_eq!(config.results_topic.as_deref(), Some("orders-results"));
        assert_eq!(config.payload, Payload::File);
    }

    #[test]
    fn defaults_are_latest_complete_one_attempt_file_and_read_committed() {
        let config = ok(BASE);
        assert_eq!(
            config.backlog.offset_reset_policy,
            OffsetResetPolicy::Latest
        );
        assert_eq!(config.commit_on, CommitOn::Complete);
        assert_eq!(config.max_attempts, 1);
        assert_eq!(config.dead_letter_topic, None);
        assert_eq!(config.results_topic, None);
        assert_eq!(config.payload, Payload::File);
        assert_eq!(config.isolation_level, IsolationLevel::ReadCommitted);
        let view = parse(BASE, &[]).view.unwrap();
        assert_eq!(view["isolationLevel"], "read_committed");
        assert_eq!(view["payload"], "file");
        assert!(view.get("lagThreshold").is_none(), "{view}");
        let uncommitted = ok(&with(&[("isolationLevel", "read_uncommitted")]));
        assert_eq!(uncommitted.isolation_level, IsolationLevel::ReadUncommitted);
    }

    #[test]
    fn bad_dispatch_parameters_are_errors_naming_the_parameter() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("commitOn", "finish")], "commitOn"),
            (&[("payload", "stdin")], "payload"),
            (&[("maxAttempts", "0")], "maxAttempts"),
            (&[("maxAttempts", "101")], "maxAttempts"),
            (&[("maxAttempts", "-1")], "maxAttempts"),
            (&[("maxAttempts", "three")], "maxAttempts"),
            (&[("deadLetterTopic", "orders")], "deadLetterTopic"),
            (&[("deadLetterTopic", "a b")], "deadLetterTopic"),
            (&[("deadLetterTopic", "..")], "deadLetterTopic"),
            (&[("resultsTopic", "orders")], "resultsTopic"),
            (&[("resultsTopic", "a/b")], "resultsTopic"),
        ];
        for (extra, parameter) in cases {
            let found = errors(&with(extra));
            assert_eq!(found.len(), 1, "{extra:?}: {found:?}");
            assert_eq!(found[0].0, *parameter, "{extra:?}: {found:?}");
        }
        let long = "t".repeat(250);
        let found = errors(&[
            ("bootstrapServers", "b:1"),
            ("consumerGroup", "g"),
            ("topic", long.as_str()),
        ]);
        assert_eq!(found[0].0, "topic");
    }

    #[test]
    fn a_topic_is_required() {
        let found = errors(&[("bootstrapServers", "b:1"), ("consumerGroup", "g")]);
        assert_eq!(
            found,
            [(
                "topic".to_owned(),
                "topic must be specified for a kafka-dispatch trigger".to_owned()
            )]
        );
    }

    #[test]
    fn lag_parameters_are_unmatched_warnings_not_errors() {
        let parsed = parse(&with(&[("lagThreshold", "not-a-number")]), &[]);
        assert!(parsed.config.is_ok(), "{:?}", parsed.config);
        assert_eq!(
            parsed.warnings,
            ["Unmatched input property lagThreshold in scaler kafka-dispatch"]
        );
    }

    #[test]
    fn the_connection_is_kafkas_with_its_authentication() {
        let parsed = parse(
            &with(&[("sasl", "scram_sha512"), ("tls", "enable")]),
            &[("username", "u"), ("password", "secret-marker")],
        );
        let Ok(TriggerConfig::KafkaDispatch(config)) = &parsed.config else {
            panic!("{:?}", parsed.config)
        };
        assert!(config.connection.tls.is_some());
        let view = parsed.view.unwrap().to_string();
        assert!(!view.contains("secret-marker"), "{view}");
    }
}
