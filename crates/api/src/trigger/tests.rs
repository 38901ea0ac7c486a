//! Table tests for every rule and vector of keda-compat §6, as named-field cases.

use std::collections::BTreeMap;

use jobtide_core::kafka::OffsetResetPolicy;
use proptest::prelude::*;
use serde_json::json;

use super::connection::{GssapiCredential, Sasl};
use super::*;

/// One trigger's inputs.
#[derive(Default, Clone)]
struct Input {
    type_: &'static str,
    name: Option<&'static str>,
    metadata: &'static [(&'static str, &'static str)],
    auth: &'static [(&'static str, &'static str)],
    env: &'static [(&'static str, &'static str)],
}

impl Input {
    fn kafka(metadata: &'static [(&'static str, &'static str)]) -> Self {
        Self {
            type_: "kafka",
            metadata,
            ..Self::default()
        }
    }
    fn apache(metadata: &'static [(&'static str, &'static str)]) -> Self {
        Self {
            type_: "apache-kafka",
            metadata,
            ..Self::default()
        }
    }
    fn auth(self, auth: &'static [(&'static str, &'static str)]) -> Self {
        Self { auth, ..self }
    }
    fn env(self, env: &'static [(&'static str, &'static str)]) -> Self {
        Self { env, ..self }
    }
    fn parse_at(&self, index: usize) -> ParsedTrigger {
        let trigger = ScaleTrigger {
            type_: self.type_.into(),
            name: self.name.map(Into::into),
            metadata: self
                .metadata
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            authentication_ref: None,
            use_cached_metrics: None,
            metric_type: None,
        };
        let secrets = |pairs: &[(&str, &str)]| -> BTreeMap<String, Secret> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), Secret::new(*v)))
                .collect()
        };
        let inputs = TriggerInputs {
            auth_params: secrets(self.auth),
            resolved_env: secrets(self.env),
            warnings: Vec::new(),
        };
        parse_trigger(index, &trigger, &inputs)
    }
    fn parse(&self) -> ParsedTrigger {
        self.parse_at(0)
    }
    fn kafka_ok(&self) -> KafkaTrigger {
        match self.parse().config {
            Ok(TriggerConfig::Kafka(config)) => config,
            other => panic!("expected a valid kafka trigger, got {other:?}"),
        }
    }
    fn apache_ok(&self) -> ApacheKafkaTrigger {
        match self.parse().config {
            Ok(TriggerConfig::ApacheKafka(config)) => config,
            other => panic!("expected a valid apache-kafka trigger, got {other:?}"),
        }
    }
    fn errors(&self) -> Vec<String> {
        match self.parse().config {
            Err(error) => error.messages(),
            Ok(config) => panic!("expected errors, got {config:?}"),
        }
    }
}

const BASE: &[(&str, &str)] = &[
    ("bootstrapServers", "b1:9092"),
    ("consumerGroup", "g"),
    ("topic", "t"),
];

#[test]
fn the_seed_trigger_parses_with_kedas_defaults() {
    let config = Input::kafka(&[
        ("bootstrapServers", "kafka.confluent.svc.cluster.local:9092"),
        ("consumerGroup", "my-group"),
        ("topic", "test-topic"),
        ("lagThreshold", "50"),
        ("offsetResetPolicy", "latest"),
    ])
    .kafka_ok();
    assert_eq!(
        config.connection.bootstrap_servers,
        vec!["kafka.confluent.svc.cluster.local:9092"]
    );
    assert_eq!(config.consumer_group, "my-group");
    assert_eq!(config.topic.as_deref(), Some("test-topic"));
    assert_eq!(config.lag.lag_threshold, 50);
    assert_eq!(config.lag.activation_lag_threshold, 0);
    assert_eq!(config.lag.offset_reset_policy, OffsetResetPolicy::Latest);
    assert!(!config.lag.allow_idle_consumers);
    assert!(config.full_metadata);
    assert_eq!(config.version, "1.0.0");
    assert_eq!(config.connection.tls, None);
    assert_eq!(config.connection.sasl, Sasl::None);
    assert_eq!(config.lag.partition_limitation, None);
}

#[test]
fn required_parameters_name_their_sources() {
    assert_eq!(
        Input::kafka(&[]).errors(),
        vec![
            "missing required parameter \"bootstrapServers\" in [triggerMetadata resolvedEnv]",
            "missing required parameter \"consumerGroup\" in [triggerMetadata resolvedEnv]",
        ]
    );
}

#[test]
fn lists_are_split_and_trimmed() {
    let config = Input::kafka(&[
        ("bootstrapServers", " b1:9092 , b2:9092 "),
        ("consumerGroup", "g"),
    ])
    .kafka_ok();
    assert_eq!(
        config.connection.bootstrap_servers,
        vec!["b1:9092", "b2:9092"]
    );
    assert_eq!(config.topic, None);
}

#[test]
fn values_are_trimmed_and_blank_counts_as_absent() {
    let config = Input::kafka(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", " g\n"),
        ("topic", "   "),
        ("lagThreshold", " 7 "),
        ("offsetResetPolicy", "earliest\n"),
    ])
    .kafka_ok();
    assert_eq!(config.consumer_group, "g");
    assert_eq!(config.topic, None);
    assert_eq!(config.lag.lag_threshold, 7);
    assert_eq!(config.lag.offset_reset_policy, OffsetResetPolicy::Earliest);
}

#[test]
fn from_env_parameters_read_the_named_variable_and_plain_keys_win() {
    let input = Input::kafka(&[
        ("bootstrapServersFromEnv", "SERVERS"),
        ("consumerGroupFromEnv", "GROUP"),
        ("topic", "plain-topic"),
        ("topicFromEnv", "TOPIC"),
    ])
    .env(&[
        ("SERVERS", "e1:9092,e2:9092"),
        ("GROUP", "env-group"),
        ("TOPIC", "env-topic"),
    ]);
    let config = input.kafka_ok();
    assert_eq!(
        config.connection.bootstrap_servers,
        vec!["e1:9092", "e2:9092"]
    );
    assert_eq!(config.consumer_group, "env-group");
    assert_eq!(config.topic.as_deref(), Some("plain-topic"));
}

struct PartitionCase {
    limitation: &'static str,
    expected: Result<Vec<i32>, &'static str>,
}

#[test]
fn partition_limitation_vectors() {
    let cases = [
        PartitionCase {
            limitation: "1",
            expected: Ok(vec![1]),
        },
        PartitionCase {
            limitation: "1,2,3,4",
            expected: Ok(vec![1, 2, 3, 4]),
        },
        PartitionCase {
            limitation: " 1 , 2 , 3 ",
            expected: Ok(vec![1, 2, 3]),
        },
        PartitionCase {
            limitation: "1-4",
            expected: Ok(vec![1, 2, 3, 4]),
        },
        PartitionCase {
            limitation: " 1 - 4 ",
            expected: Ok(vec![1, 2, 3, 4]),
        },
        PartitionCase {
            limitation: "3-3",
            expected: Ok(vec![3]),
        },
        PartitionCase {
            limitation: "1-4,8,10-12",
            expected: Ok(vec![1, 2, 3, 4, 8, 10, 11, 12]),
        },
        PartitionCase {
            limitation: "a,b,c",
            expected: Err("invalid partition limitation: a"),
        },
        PartitionCase {
            limitation: "1-2-3",
            expected: Err("invalid partition limitation range: 1-2-3"),
        },
        PartitionCase {
            limitation: "a-3",
            expected: Err("invalid partition limitation range: a-3"),
        },
        PartitionCase {
            limitation: "1-b",
            expected: Err("invalid partition limitation range: 1-b"),
        },
    ];
    for case in cases {
        assert_eq!(
            parse_partition_limitation(case.limitation),
            case.expected.clone().map_err(str::to_owned),
            "limitation {:?}",
            case.limitation
        );
        let metadata: &'static [(&str, &str)] = Box::leak(Box::new([
            ("bootstrapServers", "b:1"),
            ("consumerGroup", "g"),
            ("topic", "t"),
            ("partitionLimitation", case.limitation),
        ]));
        let parsed = Input::kafka(metadata).parse();
        match case.expected {
            Ok(ids) => assert_eq!(
                parsed.config.ok().and_then(|c| match c {
                    TriggerConfig::Kafka(k) => k.lag.partition_limitation,
                    TriggerConfig::ApacheKafka(_) | TriggerConfig::KafkaDispatch(_) => None,
                }),
                Some(ids)
            ),
            Err(message) => assert_eq!(
                parsed.config.err().map(|e| e.to_string()),
                Some(format!("error parsing kafka metadata: {message}"))
            ),
        }
    }
}

#[test]
fn partition_limitation_is_dropped_without_a_topic() {
    let config = Input::kafka(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("partitionLimitation", "1,2"),
    ])
    .kafka_ok();
    assert_eq!(config.lag.partition_limitation, None);
}

#[test]
fn absurd_partition_ranges_are_refused_not_allocated() {
    let errors = Input::kafka(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("topic", "t"),
        ("partitionLimitation", "0-2147483647"),
    ])
    .errors();
    assert!(
        errors[0].starts_with("invalid partition limitation range: 0-2147483647"),
        "{errors:?}"
    );
}

struct RuleCase {
    name: &'static str,
    metadata: &'static [(&'static str, &'static str)],
    auth: &'static [(&'static str, &'static str)],
    error: &'static str,
}

#[test]
fn kafka_validation_rules_in_kedas_order() {
    let cases = [
        RuleCase {
            name: "zero lag threshold",
            metadata: &[("lagThreshold", "0")],
            auth: &[],
            error: "\"lagThreshold\" must be positive number",
        },
        RuleCase {
            name: "negative lag threshold",
            metadata: &[("lagThreshold", "-1")],
            auth: &[],
            error: "\"lagThreshold\" must be positive number",
        },
        RuleCase {
            name: "negative activation",
            metadata: &[("activationLagThreshold", "-1")],
            auth: &[],
            error: "\"activationLagThreshold\" must be a non-negative number",
        },
        RuleCase {
            name: "idle and limit",
            metadata: &[
                ("allowIdleConsumers", "true"),
                ("limitToPartitionsWithLag", "true"),
            ],
            auth: &[],
            error: "allowIdleConsumers and limitToPartitionsWithLag cannot be set simultaneously",
        },
        RuleCase {
            name: "limit and even",
            metadata: &[
                ("limitToPartitionsWithLag", "true"),
                ("ensureEvenDistributionOfPartitions", "true"),
            ],
            auth: &[],
            error: "limitToPartitionsWithLag and ensureEvenDistributionOfPartitions cannot be set simultaneously",
        },
        RuleCase {
            name: "first failure only",
            metadata: &[("lagThreshold", "0"), ("activationLagThreshold", "-1")],
            auth: &[],
            error: "\"lagThreshold\" must be positive number",
        },
        RuleCase {
            name: "cert without key",
            metadata: &[("tls", "enable")],
            auth: &[("cert", "C")],
            error: "key must be provided with cert",
        },
        RuleCase {
            name: "key without cert",
            metadata: &[("tls", "enable")],
            auth: &[("key", "K")],
            error: "cert must be provided with key",
        },
        RuleCase {
            name: "plaintext without username",
            metadata: &[("sasl", "plaintext")],
            auth: &[("password", "p")],
            error: "no username given",
        },
        RuleCase {
            name: "scram without password",
            metadata: &[("sasl", "scram_sha512")],
            auth: &[("username", "u")],
            error: "no password given",
        },
        RuleCase {
            name: "bearer without endpoint",
            metadata: &[("sasl", "oauthbearer")],
            auth: &[("username", "u"), ("password", "p")],
            error: "error parsing OAuth token provider configuration: no oauth token endpoint uri given",
        },
        RuleCase {
            name: "bad extension",
            metadata: &[("sasl", "oauthbearer")],
            auth: &[
                ("username", "u"),
                ("password", "p"),
                ("oauthTokenEndpointUri", "https://idp/token"),
                ("oauthExtensions", "a=b,c"),
            ],
            error: "error parsing OAuth token provider configuration: invalid OAuthBearer extension, must be of format key=value",
        },
        RuleCase {
            name: "msk without tls",
            metadata: &[
                ("sasl", "oauthbearer"),
                ("saslTokenProvider", "aws_msk_iam"),
                ("awsRegion", "eu-west-1"),
            ],
            auth: &[],
            error: "error parsing OAuth token provider configuration: TLS is required for AWS MSK authentication",
        },
        RuleCase {
            name: "msk without region",
            metadata: &[
                ("sasl", "oauthbearer"),
                ("saslTokenProvider", "aws_msk_iam"),
                ("tls", "enable"),
            ],
            auth: &[],
            error: "error parsing OAuth token provider configuration: no awsRegion given",
        },
        RuleCase {
            name: "gssapi without username",
            metadata: &[("sasl", "gssapi")],
            auth: &[("password", "p")],
            error: "no username given",
        },
        RuleCase {
            name: "gssapi with password and keytab",
            metadata: &[("sasl", "gssapi")],
            auth: &[("username", "u"), ("password", "p"), ("keytab", "k")],
            error: "exactly one of 'password' or 'keytab' must be provided for GSSAPI authentication",
        },
        RuleCase {
            name: "gssapi without realm",
            metadata: &[("sasl", "gssapi")],
            auth: &[("username", "u"), ("keytab", "k")],
            error: "no realm given",
        },
        RuleCase {
            name: "gssapi without krb5.conf",
            metadata: &[("sasl", "gssapi")],
            auth: &[("username", "u"), ("keytab", "k"), ("realm", "R")],
            error: "no Kerberos configuration file (kerberosConfig) given",
        },
        RuleCase {
            name: "bad version",
            metadata: &[("version", "1.0")],
            auth: &[],
            error: "error parsing kafka version: invalid version `1.0`",
        },
        RuleCase {
            name: "bad version text",
            metadata: &[("version", "latest")],
            auth: &[],
            error: "error parsing kafka version: invalid version `latest`",
        },
    ];
    for case in cases {
        let metadata: Vec<(&'static str, &'static str)> = BASE
            .iter()
            .copied()
            .chain(case.metadata.iter().copied())
            .collect();
        let input = Input::kafka(Box::leak(metadata.into_boxed_slice())).auth(case.auth);
        assert_eq!(input.errors(), vec![case.error], "case {}", case.name);
    }
}

#[test]
fn rules_that_need_a_topic() {
    for (metadata, error) in [
        (
            &[("limitToPartitionsWithLag", "true")][..],
            "topic must be specified when using limitToPartitionsWithLag",
        ),
        (
            &[("ensureEvenDistributionOfPartitions", "true")][..],
            "topic must be specified when using ensureEvenDistributionOfPartitions",
        ),
        (
            &[("fullMetadata", "false")][..],
            "topic must be specified when fullMetadata is false",
        ),
    ] {
        let all: Vec<(&'static str, &'static str)> =
            [("bootstrapServers", "b:1"), ("consumerGroup", "g")]
                .into_iter()
                .chain(metadata.iter().copied())
                .collect();
        assert_eq!(
            Input::kafka(Box::leak(all.into_boxed_slice())).errors(),
            vec![error]
        );
    }
}

#[test]
fn field_errors_and_the_validation_error_are_collected_together() {
    // Go leaves a field that failed to parse at its zero value, which validation then sees.
    let metadata: Vec<(&'static str, &'static str)> = BASE
        .iter()
        .copied()
        .chain([("lagThreshold", "ten"), ("allowIdleConsumers", "yes")])
        .collect();
    let errors = Input::kafka(Box::leak(metadata.into_boxed_slice())).errors();
    assert_eq!(
        errors,
        vec![
            "unable to set param \"lagThreshold\" value \"ten\": unable to unmarshal to field type \
             int64: invalid character 'e' in literal true (expecting 'r')",
            "unable to set param \"allowIdleConsumers\" value \"yes\": unable to parse boolean value \"yes\"",
            "\"lagThreshold\" must be positive number",
        ]
    );
}

#[test]
fn errors_are_prefixed_once_d6() {
    let metadata: Vec<(&'static str, &'static str)> = BASE
        .iter()
        .copied()
        .chain([("lagThreshold", "0")])
        .collect();
    let parsed = Input::kafka(Box::leak(metadata.into_boxed_slice())).parse();
    assert_eq!(
        parsed.config.err().map(|e| e.to_string()),
        Some("error parsing kafka metadata: \"lagThreshold\" must be positive number".into())
    );
}

#[test]
fn comma_joined_enum_values_are_rejected_d5() {
    for (key, value) in [
        ("offsetResetPolicy", "latest,earliest"),
        ("tls", "enable,disable"),
        ("sasl", "plaintext,none"),
    ] {
        let metadata: Vec<(&'static str, &'static str)> =
            BASE.iter().copied().chain([(key, value)]).collect();
        let errors = Input::kafka(Box::leak(metadata.into_boxed_slice())).errors();
        assert!(
            errors[0].starts_with(&format!(
                "parameter \"{key}\" value \"{value}\" must be exactly one of"
            )),
            "{errors:?}"
        );
    }
}

#[test]
fn metadata_wins_over_auth_params_for_sasl_and_tls() {
    let input = Input::kafka(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("sasl", "scram_sha256"),
        ("tls", "disable"),
    ])
    .auth(&[
        ("sasl", "plaintext"),
        ("tls", "enable"),
        ("username", "u"),
        ("password", "p"),
    ]);
    let config = input.kafka_ok();
    assert!(matches!(config.connection.sasl, Sasl::ScramSha256(_)));
    assert_eq!(config.connection.tls, None);
}

#[test]
fn sasl_and_tls_from_auth_params() {
    let config = Input::kafka(BASE)
        .auth(&[
            ("sasl", "plaintext\n"),
            ("username", " admin "),
            ("password", "s3cr3t"),
            ("tls", "enable"),
            ("ca", "CA-PEM"),
            ("cert", "CERT"),
            ("key", "KEY"),
            ("keyPassword", "kp"),
        ])
        .kafka_ok();
    let Sasl::Plain(credentials) = &config.connection.sasl else {
        panic!("expected plain")
    };
    assert_eq!(credentials.username, "admin");
    assert_eq!(credentials.password.expose(), "s3cr3t");
    let tls = config
        .connection
        .tls
        .as_ref()
        .map(|t| (t.ca.is_some(), t.client_cert.is_some()));
    assert_eq!(tls, Some((true, true)));
}

#[test]
fn oauthbearer_scopes_and_extensions() {
    let config = Input::kafka(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("sasl", "oauthbearer"),
    ])
    .auth(&[
        ("username", "client"),
        ("password", "secret"),
        ("oauthTokenEndpointUri", "https://idp/token"),
        ("scopes", "a, b"),
        (
            "oauthExtensions",
            "logicalCluster=lkc-1,identityPoolId=pool-2",
        ),
    ])
    .kafka_ok();
    let Sasl::OAuthBearer(oauth) = &config.connection.sasl else {
        panic!("expected oauthbearer")
    };
    assert_eq!(
        oauth.scopes,
        vec!["a", " b"],
        "scopes are not trimmed, as in KEDA"
    );
    assert_eq!(
        oauth.extensions.get("identityPoolId").map(String::as_str),
        Some("pool-2")
    );
    let no_scopes = Input::kafka(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("sasl", "oauthbearer"),
    ])
    .auth(&[
        ("username", "c"),
        ("password", "s"),
        ("oauthTokenEndpointUri", "https://idp/token"),
    ])
    .kafka_ok();
    let Sasl::OAuthBearer(oauth) = &no_scopes.connection.sasl else {
        panic!("expected oauthbearer")
    };
    assert_eq!(
        oauth.scopes,
        vec![""],
        "an empty value gives exactly one empty scope"
    );
}

#[test]
fn gssapi_with_keytab_and_default_service_name() {
    let config = Input::kafka(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("sasl", "gssapi"),
    ])
    .auth(&[
        ("username", "u"),
        ("keytab", "KT"),
        ("realm", "EXAMPLE.COM"),
        ("kerberosConfig", "[libdefaults]"),
    ])
    .kafka_ok();
    let Sasl::Gssapi(gssapi) = &config.connection.sasl else {
        panic!("expected gssapi")
    };
    assert_eq!(gssapi.service_name, "kafka");
    assert!(matches!(gssapi.credential, GssapiCredential::Keytab(_)));
}

#[test]
fn well_formed_versions_are_accepted() {
    for version in ["1.0.0", "2.8.1", "3.7.0", "0.10.2.1", "99.1.1"] {
        let metadata: Vec<(&'static str, &'static str)> =
            BASE.iter().copied().chain([("version", version)]).collect();
        assert_eq!(
            Input::kafka(Box::leak(metadata.into_boxed_slice()))
                .kafka_ok()
                .version,
            version
        );
    }
    for version in ["1.0", "1.0.0.0", "v1.0.0", "1..0"] {
        let metadata: Vec<(&'static str, &'static str)> =
            BASE.iter().copied().chain([("version", version)]).collect();
        assert_eq!(
            Input::kafka(Box::leak(metadata.into_boxed_slice()))
                .errors()
                .len(),
            1,
            "version {version}"
        );
    }
}

#[test]
fn msk_iam_is_checked_as_keda_does_then_reported_unsupported() {
    let base: &'static [(&str, &str)] = &[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("sasl", "oauthbearer"),
        ("saslTokenProvider", "aws_msk_iam"),
        ("tls", "enable"),
        ("awsRegion", "eu-west-1"),
    ];
    assert_eq!(
        Input::kafka(base).errors(),
        vec!["error parsing OAuth token provider configuration: awsAccessKeyID not found"]
    );
    let parsed = Input::kafka(base)
        .auth(&[("awsRoleArn", "arn:aws:iam::1:role/r")])
        .parse();
    assert_eq!(
        parsed.config.err().map(|e| e.to_string()),
        Some("AWS MSK IAM authentication (sasl: oauthbearer with saslTokenProvider: aws_msk_iam) is not supported by jobtide yet".into())
    );
    let parsed = Input::kafka(base)
        .auth(&[("awsAccessKeyID", "AK"), ("awsSecretAccessKey", "SK")])
        .parse();
    assert!(matches!(
        parsed.config,
        Err(TriggerError::NotSupported { .. })
    ));
}

#[test]
fn metric_names() {
    struct Case {
        index: usize,
        metadata: &'static [(&'static str, &'static str)],
        apache: bool,
        expected: Option<&'static str>,
    }
    for case in [
        Case {
            index: 0,
            metadata: &[("consumerGroup", "g"), ("topic", "my-topic")],
            apache: false,
            expected: Some("s0-kafka-my-topic"),
        },
        Case {
            index: 1,
            metadata: &[("consumerGroup", "g"), ("topic", "my-topic")],
            apache: false,
            expected: Some("s1-kafka-my-topic"),
        },
        Case {
            index: 1,
            metadata: &[("consumerGroup", "my-group")],
            apache: false,
            expected: Some("s1-kafka-my-group-topics"),
        },
        Case {
            index: 0,
            metadata: &[("consumerGroup", "g"), ("topic", "a.b/c:d%e(f)")],
            apache: false,
            expected: Some("s0-kafka-a-b-c-d-e-f-"),
        },
        Case {
            index: 2,
            metadata: &[("consumerGroup", "g"), ("topic", "t1, t2")],
            apache: true,
            expected: Some("s2-kafka-t1,t2"),
        },
        Case {
            index: 0,
            metadata: &[],
            apache: false,
            expected: None,
        },
    ] {
        let input = if case.apache {
            Input::apache(case.metadata)
        } else {
            Input::kafka(case.metadata)
        };
        assert_eq!(
            input.parse_at(case.index).metric_name.as_deref(),
            case.expected
        );
    }
}

#[test]
fn unknown_trigger_types_list_the_supported_ones() {
    let parsed = Input {
        type_: "rabbitmq",
        ..Input::default()
    }
    .parse();
    assert_eq!(
        parsed.config.err().map(|e| e.to_string()),
        Some(
            "unknown trigger type \"rabbitmq\": jobtide supports \"kafka\", \"apache-kafka\", \"kafka-dispatch\""
                .into()
        )
    );
    assert_eq!(parsed.view, None);
}

#[test]
fn unknown_metadata_keys_warn_in_kedas_words() {
    let metadata: Vec<(&'static str, &'static str)> =
        BASE.iter().copied().chain([("lagTreshold", "5")]).collect();
    let input = Input {
        name: Some("orders"),
        ..Input::kafka(Box::leak(metadata.into_boxed_slice()))
    };
    let parsed = input.parse();
    assert!(parsed.config.is_ok());
    assert_eq!(
        parsed.warnings,
        vec!["Unmatched input property lagTreshold in scaler kafka (orders)"]
    );
}

#[test]
fn parameters_that_change_nothing_in_jobtide_say_so() {
    let parsed = Input::kafka(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("topic", "t"),
        ("fullMetadata", "false"),
        ("version", "2.8.1"),
        ("sasl", "gssapi"),
    ])
    .auth(&[
        ("username", "u"),
        ("keytab", "KT"),
        ("realm", "EXAMPLE.COM"),
        ("kerberosConfig", "[libdefaults]"),
        ("kerberosDisableFAST", "true"),
    ])
    .parse();
    assert!(parsed.config.is_ok(), "{:?}", parsed.config);
    let keys: Vec<&str> = parsed
        .warnings
        .iter()
        .map(|w| {
            w.strip_prefix("parameter ")
                .and_then(|w| w.split_once(" has no effect in jobtide: "))
                .map_or(w.as_str(), |(key, _)| key)
        })
        .collect();
    assert_eq!(keys, ["fullMetadata", "version", "kerberosDisableFAST"]);
    // Unset, they say nothing; apache-kafka doesn't read them at all.
    assert!(Input::kafka(BASE).parse().warnings.is_empty());
}

#[test]
fn secrets_never_appear_in_views_or_debug_output() {
    let input = Input::kafka(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("sasl", "plaintext"),
        ("tls", "enable"),
    ])
    .auth(&[
        ("username", "u"),
        ("password", "TOPSECRET-1"),
        ("ca", "TOPSECRET-2"),
        ("cert", "TOPSECRET-3"),
        ("key", "TOPSECRET-4"),
        ("keyPassword", "TOPSECRET-5"),
    ]);
    let parsed = input.parse();
    let rendered = format!("{parsed:?} {}", parsed.view.clone().unwrap_or_default());
    assert!(!rendered.contains("TOPSECRET"), "{rendered}");
    let view = parsed.view.unwrap_or_default();
    assert_eq!(view["password"], json!("<redacted>"));
    assert_eq!(view["keyPassword"], json!("<redacted>"));
    assert_eq!(view["username"], json!("<redacted>"), "a Secret's value");
    assert_eq!(view["sasl"], json!("plaintext"), "the manifest's own text");
    assert_eq!(
        parsed.shown_metric_name.as_deref(),
        Some("s0-kafka-g-topics")
    );
}

#[test]
fn every_parameter_from_authentication_or_env_is_redacted_in_the_view_and_metric_name() {
    let parsed = Input::kafka(&[
        ("topicFromEnv", "T"),
        ("consumerGroupFromEnv", "G"),
        ("bootstrapServers", "b:1"),
    ])
    .auth(&[
        ("bootstrapServers", "ignored:1"),
        ("sasl", "oauthbearer"),
        ("tls", "enable"),
        ("username", "TOPSECRET-id"),
        ("password", "TOPSECRET-secret"),
        ("oauthTokenEndpointUri", "https://TOPSECRET.example"),
        ("scopes", "TOPSECRET-a,TOPSECRET-b"),
        ("oauthExtensions", "TOPSECRET=x"),
    ])
    .env(&[("T", "TOPSECRET-topic"), ("G", "TOPSECRET-group")])
    .parse();
    assert!(parsed.config.is_ok(), "{:?}", parsed.config);
    let view = parsed.view.clone().unwrap_or_default();
    assert!(!view.to_string().contains("TOPSECRET"), "{view}");
    for parameter in [
        "topic",
        "consumerGroup",
        "sasl",
        "tls",
        "username",
        "oauthTokenEndpointUri",
        "scopes",
        "oauthExtensions",
    ] {
        assert_eq!(view[parameter], json!("<redacted>"), "{parameter}");
        assert!(parsed.from_secrets.contains(parameter), "{parameter}");
    }
    assert_eq!(view["bootstrapServers"], json!(["b:1"]), "metadata wins");
    assert_eq!(view["keytab"], json!(null), "unset stays null");
    assert_eq!(
        parsed.metric_name.as_deref(),
        Some("s0-kafka-TOPSECRET-topic")
    );
    assert_eq!(
        parsed.shown_metric_name.as_deref(),
        Some("s0-kafka-<redacted>")
    );

    let gssapi = Input::apache(BASE).auth(&[("sasl", "gssapi")]).parse();
    assert_eq!(
        gssapi.config.map_err(|e| e.messages()),
        Err(vec!["err sasl type \"<redacted>\" given".to_owned()])
    );
}

#[test]
fn invalid_triggers_keep_the_view_of_what_parsed() {
    let metadata: Vec<(&'static str, &'static str)> = BASE
        .iter()
        .copied()
        .chain([("lagThreshold", "abc")])
        .collect();
    let view = Input::kafka(Box::leak(metadata.into_boxed_slice()))
        .parse()
        .view
        .unwrap_or_default();
    assert_eq!(view["lagThreshold"], json!(null));
    assert_eq!(view["consumerGroup"], json!("g"));
    assert_eq!(view["sasl"], json!("none"));
}

// --- apache-kafka (§6.3) ---

#[test]
fn apache_kafka_takes_a_topic_list_and_generic_ranges() {
    let config = Input::apache(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("topic", "a, b"),
        ("partitionLimitation", "1-3,7"),
    ])
    .apache_ok();
    assert_eq!(config.topics, vec!["a", "b"]);
    assert_eq!(config.lag.partition_limitation, Some(vec![1, 2, 3, 7]));
    let no_topic = Input::apache(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("partitionLimitation", "1"),
    ])
    .apache_ok();
    assert_eq!(no_topic.lag.partition_limitation, None);
}

#[test]
fn apache_kafka_validation_messages() {
    let cases = [
        RuleCase {
            name: "zero lag",
            metadata: &[("lagThreshold", "0")],
            auth: &[],
            error: "lagThreshold must be a positive number",
        },
        RuleCase {
            name: "negative activation",
            metadata: &[("activationLagThreshold", "-2")],
            auth: &[],
            error: "activationLagThreshold must be a positive number",
        },
        RuleCase {
            name: "sasl in both",
            metadata: &[("sasl", "plaintext")],
            auth: &[("sasl", "plaintext"), ("username", "u"), ("password", "p")],
            error: "unable to set `sasl` in both ScaledObject and TriggerAuthentication together",
        },
        RuleCase {
            name: "tls in both",
            metadata: &[("tls", "enable")],
            auth: &[("tls", "enable")],
            error: "unable to set `tls` in both ScaledObject and TriggerAuthentication together",
        },
        RuleCase {
            name: "cert only",
            metadata: &[("tls", "enable")],
            auth: &[("cert", "C")],
            error: "can't set only one of cert or key when using TLS",
        },
        RuleCase {
            name: "plaintext without password",
            metadata: &[("sasl", "plaintext")],
            auth: &[("username", "u")],
            error: "username and password must be set when using SASL/PLAINTEXT",
        },
        RuleCase {
            name: "msk without region",
            metadata: &[("sasl", "aws_msk_iam"), ("tls", "enable")],
            auth: &[],
            error: "awsRegion must be set when using AWS MSK IAM",
        },
        RuleCase {
            name: "msk without tls",
            metadata: &[("sasl", "aws_msk_iam"), ("awsRegion", "r")],
            auth: &[],
            error: "TLS must be enabled when using AWS MSK IAM",
        },
        RuleCase {
            name: "oauthbearer is not in the enum",
            metadata: &[("sasl", "oauthbearer")],
            auth: &[],
            error: "parameter \"sasl\" value \"oauthbearer\" must be one of [none plaintext scram_sha256 scram_sha512 gssapi aws_msk_iam]",
        },
        RuleCase {
            name: "gssapi fails at client build",
            metadata: &[("sasl", "gssapi")],
            auth: &[],
            error: "err sasl type \"gssapi\" given",
        },
    ];
    for case in cases {
        let metadata: Vec<(&'static str, &'static str)> = BASE
            .iter()
            .copied()
            .chain(case.metadata.iter().copied())
            .collect();
        let input = Input::apache(Box::leak(metadata.into_boxed_slice())).auth(case.auth);
        assert_eq!(input.errors(), vec![case.error], "case {}", case.name);
    }
}

#[test]
fn apache_kafka_scram_has_no_credential_check() {
    let metadata: Vec<(&'static str, &'static str)> = BASE
        .iter()
        .copied()
        .chain([("sasl", "scram_sha256")])
        .collect();
    let config = Input::apache(Box::leak(metadata.into_boxed_slice())).apache_ok();
    assert!(matches!(config.connection.sasl, Sasl::ScramSha256(_)));
}

proptest! {
    #[test]
    fn the_parser_never_panics_on_arbitrary_metadata(
        entries in prop::collection::btree_map(
            prop_oneof![
                prop::sample::select([SHARED_METADATA_KEYS, kafka::METADATA_KEYS].concat()).prop_map(str::to_owned),
                "[a-zA-Z]{1,12}",
            ],
            prop_oneof![
                "\\PC{0,20}",
                "[0-9, -]{0,12}",
                prop::sample::select(vec!["true", "false", "enable", "plaintext", "gssapi", "oauthbearer", "earliest", "aws_msk_iam", "-1", "0"]).prop_map(str::to_owned),
            ],
            0..12,
        ),
        auth in prop::collection::btree_map(
            prop::sample::select(vec!["sasl", "tls", "username", "password", "cert", "key", "ca", "keytab", "realm", "kerberosConfig", "oauthTokenEndpointUri", "scopes", "oauthExtensions", "awsRoleArn"]).prop_map(str::to_owned),
            "\\PC{0,12}",
            0..6,
        ),
        type_ in prop::sample::select(vec!["kafka", "apache-kafka", "other"]),
        index in 0usize..4,
    ) {
        let trigger = ScaleTrigger {
            type_: type_.into(),
            name: None,
            metadata: entries,
            authentication_ref: None,
            use_cached_metrics: None,
            metric_type: None,
        };
        let inputs = TriggerInputs {
            auth_params: auth.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
            ..TriggerInputs::default()
        };
        let first = parse_trigger(index, &trigger, &inputs);
        let second = parse_trigger(index, &trigger, &inputs);
        prop_assert_eq!(format!("{first:?}"), format!("{second:?}"));
    }
}

#[test]
fn isolation_level_is_jobtides_extension_for_transactional_topics() {
    assert_eq!(
        Input::kafka(BASE).kafka_ok().isolation_level,
        IsolationLevel::ReadUncommitted
    );
    let metadata: Vec<(&'static str, &'static str)> = BASE
        .iter()
        .copied()
        .chain([("isolationLevel", "read_committed")])
        .collect();
    let parsed = Input::kafka(Box::leak(metadata.into_boxed_slice())).parse();
    assert!(
        parsed.warnings.is_empty(),
        "a known key: {:?}",
        parsed.warnings
    );
    let Ok(TriggerConfig::Kafka(config)) = parsed.config else {
        panic!("valid")
    };
    assert_eq!(config.isolation_level, IsolationLevel::ReadCommitted);
    let metadata: Vec<(&'static str, &'static str)> = BASE
        .iter()
        .copied()
        .chain([("isolationLevel", "serializable")])
        .collect();
    assert_eq!(
        Input::apache(Box::leak(metadata.into_boxed_slice())).errors(),
        vec![
            "parameter \"isolationLevel\" value \"serializable\" must be one of [read_uncommitted read_committed]"
        ]
    );
}

#[test]
fn each_scaler_knows_its_own_keys() {
    assert!(TriggerType::Kafka.reads_metadata_key("fullMetadata"));
    assert!(!TriggerType::ApacheKafka.reads_metadata_key("fullMetadata"));
    for trigger_type in TriggerType::ALL {
        assert!(trigger_type.reads_metadata_key("bootstrapServersFromEnv"));
        assert!(!trigger_type.reads_metadata_key("lagTreshold"));
    }
}

#[test]
fn hostile_kerberos_names_are_refused_naming_the_parameter_not_the_value() {
    let ok = [
        ("username", "svc"),
        ("keytab", "KT"),
        ("realm", "EXAMPLE.COM"),
        ("kerberosConfig", "[libdefaults]"),
    ];
    for (param, hostile) in [
        ("username", "x;touch /tmp/pwned;"),
        ("username", "$(touch /tmp/pwned)"),
        ("username", "-Vsvc"),
        ("username", "svc@OTHER"),
        ("realm", "R`touch /tmp/pwned`"),
        ("realm", "R || touch /tmp/pwned"),
        ("kerberosServiceName", "kafka;touch /tmp/pwned"),
    ] {
        let auth: Vec<(&'static str, &'static str)> = ok
            .iter()
            .copied()
            .filter(|(k, _)| *k != param)
            .chain([(param, hostile)])
            .collect();
        let errors = Input::kafka(&[
            ("bootstrapServers", "b:1"),
            ("consumerGroup", "g"),
            ("sasl", "gssapi"),
        ])
        .auth(Box::leak(auth.into_boxed_slice()))
        .errors();
        assert_eq!(errors.len(), 1, "{param}={hostile:?}: {errors:?}");
        assert!(
            errors[0].starts_with(&format!("{param} must be")),
            "{errors:?}"
        );
        assert!(!errors[0].contains("pwned"), "value echoed: {errors:?}");
    }
}

#[test]
fn oauth_token_endpoint_must_be_http_or_https() {
    for (uri, ok) in [
        ("https://idp/token", true),
        ("HTTP://idp:8080/token", true),
        (
            "file:///var/run/secrets/kubernetes.io/serviceaccount/token",
            false,
        ),
        ("gopher://internal:70/", false),
        ("https://", false),
        ("idp/token", false),
    ] {
        let auth: Vec<(&'static str, &'static str)> = vec![
            ("username", "c"),
            ("password", "s"),
            ("oauthTokenEndpointUri", uri),
        ];
        let input = Input::kafka(&[
            ("bootstrapServers", "b:1"),
            ("consumerGroup", "g"),
            ("sasl", "oauthbearer"),
        ])
        .auth(Box::leak(auth.into_boxed_slice()));
        if ok {
            input.kafka_ok();
        } else {
            let errors = input.errors();
            assert_eq!(
                errors,
                vec![
                    "error parsing OAuth token provider configuration: oauthTokenEndpointUri \
                     must be an http:// or https:// URL"
                ],
                "{uri}"
            );
        }
    }
}

// --- hostile input (issue 18) ---

/// The parameters and messages of a trigger that must not parse.
fn param_errors(input: &Input) -> Vec<(String, String)> {
    match input.parse().config {
        Err(error) => error
            .param_errors()
            .into_iter()
            .map(|e| (e.parameter, e.message))
            .collect(),
        Ok(config) => panic!("expected errors, got {config:?}"),
    }
}

#[test]
fn topics_kafka_cannot_have_are_errors_naming_the_parameter() {
    let long = "t".repeat(250);
    let long: &'static str = Box::leak(long.into_boxed_str());
    let message = "topic must be a Kafka topic name: at most 249 of the characters a-z, A-Z, \
                   0-9, '.', '_' and '-', and not '.' or '..'";
    for topic in ["orders/eu", "ord ers", "..", long, "tópico"] {
        let metadata: &'static [(&str, &str)] = Box::leak(Box::new([
            ("bootstrapServers", "b:1"),
            ("consumerGroup", "g"),
            ("topic", topic),
        ]));
        assert_eq!(
            param_errors(&Input::kafka(metadata)),
            vec![("topic".to_owned(), message.to_owned())],
            "kafka topic {topic:?}"
        );
        let list: &'static str = Box::leak(format!("fine,{topic}").into_boxed_str());
        let metadata: &'static [(&str, &str)] = Box::leak(Box::new([
            ("bootstrapServers", "b:1"),
            ("consumerGroup", "g"),
            ("topic", list),
        ]));
        assert_eq!(
            param_errors(&Input::apache(metadata)),
            vec![("topic".to_owned(), message.to_owned())],
            "apache-kafka topic {list:?}"
        );
    }
    let longest: &'static str = Box::leak("t".repeat(249).into_boxed_str());
    let metadata: &'static [(&str, &str)] = Box::leak(Box::new([
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("topic", longest),
    ]));
    assert_eq!(
        Input::kafka(metadata).kafka_ok().topic.as_deref(),
        Some(longest)
    );
}

#[test]
fn an_illegal_topic_from_a_secret_is_refused_without_repeating_it() {
    let errors = param_errors(
        &Input::kafka(&[
            ("bootstrapServers", "b:1"),
            ("consumerGroup", "g"),
            ("topicFromEnv", "TOPIC"),
        ])
        .env(&[("TOPIC", "jtmarker/secret")]),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "topic");
    assert!(!errors[0].1.contains("jtmarker"), "{errors:?}");
}

#[test]
fn a_reversed_partition_range_is_an_error_naming_the_parameter() {
    let errors = param_errors(&Input::kafka(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("topic", "t"),
        ("partitionLimitation", "0,5-1"),
    ]));
    assert_eq!(
        errors,
        vec![(
            "partitionLimitation".to_owned(),
            "invalid partition limitation range: 5-1 (its start is after its end)".to_owned()
        )]
    );
    let errors = param_errors(&Input::apache(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("topic", "t"),
        ("partitionLimitation", "0,5-1"),
    ]));
    assert_eq!(
        errors,
        vec![(
            "partitionLimitation".to_owned(),
            "unable to set param \"partitionLimitation\" value \"0,5-1\": slice element 1: range \
             \"5-1\" starts after it ends"
                .to_owned()
        )]
    );
}

#[test]
fn overlapping_partition_ranges_count_each_partition_once() {
    let config = Input::kafka(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("topic", "t"),
        ("partitionLimitation", "1-3,2-4,3"),
    ])
    .kafka_ok();
    assert_eq!(config.lag.partition_limitation, Some(vec![1, 2, 3, 4]));
    let config = Input::apache(&[
        ("bootstrapServers", "b:1"),
        ("consumerGroup", "g"),
        ("topic", "t"),
        ("partitionLimitation", "4,1-3,2-4"),
    ])
    .apache_ok();
    assert_eq!(config.lag.partition_limitation, Some(vec![4, 1, 2, 3]));
}
