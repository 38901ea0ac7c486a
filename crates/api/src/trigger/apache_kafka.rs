//! `type: apache-kafka` (KEDA's experimental kafka-go scaler): the differences from `kafka` listed
//! in keda-compat §6.3 — a topic list, the generic partition-range parser, no `fullMetadata` /
//! `version` / `unsafeSsl` / OAuth / GSSAPI parameters, `sasl`/`tls` set in both metadata and
//! auth params is an error, and its own validation messages.

use jobtide_core::kafka::LagPolicy;
use serde_json::{Value, json};

use super::connection::{ClientCert, Credentials, KafkaConnection, Sasl, Tls};
use super::lag_fields::{IsolationLevel, LagDraft};
use super::params::{AUTH, META, META_AUTH, META_ENV, Params, Source};
use super::topic::check_topic_name;
use super::{ParamError, Rejected, aws, redacted};
use crate::secret::Secret;

/// A parsed, valid `apache-kafka` trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApacheKafkaTrigger {
    /// How to reach the cluster.
    pub connection: KafkaConnection,
    /// `consumerGroup`.
    pub consumer_group: String,
    /// `topic` (a comma list); empty means every topic of the cluster (KEDA, §7.8).
    pub topics: Vec<String>,
    /// The lag rules.
    pub lag: LagPolicy,
    /// jobtide's `isolationLevel`: which end offset the lag is counted against.
    pub isolation_level: IsolationLevel,
}

#[derive(Debug, Default)]
struct Draft {
    bootstrap_servers: Option<Vec<String>>,
    consumer_group: Option<String>,
    topics: Option<Vec<String>>,
    partition_limitation: Option<Vec<i32>>,
    lag: LagDraft,
    tls: Option<&'static str>,
    tls_in_both: bool,
    ca: Option<Secret>,
    cert: Option<Secret>,
    key: Option<Secret>,
    key_password: Option<Secret>,
    sasl: Option<&'static str>,
    sasl_in_both: bool,
    username: Option<String>,
    password: Option<Secret>,
    aws_region: Option<String>,
}

pub(super) fn parse(params: &mut Params<'_>) -> Result<(ApacheKafkaTrigger, Value), Rejected> {
    let draft = read_fields(params);
    let mut errors = std::mem::take(&mut params.errors);
    if let Err(message) = validate(&draft) {
        errors.push(message);
    }
    let view = view(&draft);
    if !errors.is_empty() {
        return Err(Rejected::Invalid {
            errors,
            view: Some(view),
        });
    }
    let credentials = || Credentials {
        username: draft.username.clone().unwrap_or_default(),
        password: draft.password.clone().unwrap_or_else(|| Secret::new("")),
    };
    let sasl = match draft.sasl {
        Some("plaintext") => Sasl::Plain(credentials()),
        Some("scram_sha256") => Sasl::ScramSha256(credentials()),
        Some("scram_sha512") => Sasl::ScramSha512(credentials()),
        // KEDA's kafka-go client refuses GSSAPI when it is built: no KEDA user runs this.
        Some("gssapi") => {
            let shown = if params.is_from_secrets("sasl", META_AUTH) {
                crate::secret::REDACTED
            } else {
                "gssapi"
            };
            return Err(Rejected::Invalid {
                errors: vec![ParamError::new(
                    "sasl",
                    format!("err sasl type \"{shown}\" given"),
                )],
                view: Some(view),
            });
        }
        Some("aws_msk_iam") => {
            if let Err(message) = aws::authorization(params) {
                return Err(Rejected::Invalid {
                    errors: vec![ParamError::new("awsAccessKeyID", message)],
                    view: Some(view),
                });
            }
            return Err(Rejected::NotSupported {
                feature: "AWS MSK IAM authentication (sasl: aws_msk_iam)",
                view: Some(view),
            });
        }
        _ => Sasl::None,
    };
    let topics = draft.topics.clone().unwrap_or_default();
    let trigger = ApacheKafkaTrigger {
        connection: KafkaConnection {
            bootstrap_servers: draft.bootstrap_servers.clone().unwrap_or_default(),
            tls: (draft.tls == Some("enable")).then(|| Tls {
                ca: draft.ca.clone(),
                client_cert: match (&draft.cert, &draft.key) {
                    (Some(cert), Some(key)) => Some(ClientCert {
                        cert: cert.clone(),
                        key: key.clone(),
                        key_password: draft.key_password.clone(),
                    }),
                    _ => None,
                },
                unsafe_ssl: false,
            }),
            sasl,
        },
        consumer_group: draft.consumer_group.clone().unwrap_or_default(),
        isolation_level: draft.lag.isolation_level(),
        lag: draft.lag.policy(if topics.is_empty() {
            None
        } else {
            draft.partition_limitation.clone()
        }),
        topics,
    };
    Ok((trigger, view))
}

fn read_fields(p: &mut Params<'_>) -> Draft {
    let bootstrap_servers = p.list("bootstrapServers", META_ENV, true);
    let consumer_group = p.required("consumerGroup", META_ENV);
    let topics = p.list("topic", META_ENV, false);
    let partition_limitation = p.int32_ranges("partitionLimitation", META);
    let lag = LagDraft::read(p);
    let tls_in_both =
        p.is_set_in("tls", Source::TriggerMetadata) && p.is_set_in("tls", Source::AuthParams);
    let tls = p.one_of("tls", META_AUTH, "disable", &["enable", "disable"]);
    let sasl_in_both =
        p.is_set_in("sasl", Source::TriggerMetadata) && p.is_set_in("sasl", Source::AuthParams);
    let sasl = p.one_of(
        "sasl",
        META_AUTH,
        "none",
        &[
            "none",
            "plaintext",
            "scram_sha256",
            "scram_sha512",
            "gssapi",
            "aws_msk_iam",
        ],
    );
    Draft {
        bootstrap_servers,
        consumer_group,
        topics,
        partition_limitation,
        lag,
        tls,
        tls_in_both,
        ca: p.secret("ca", AUTH),
        cert: p.secret("cert", AUTH),
        key: p.secret("key", AUTH),
        key_password: p.secret("keyPassword", AUTH),
        sasl,
        sasl_in_both,
        username: p.optional("username", AUTH),
        password: p.secret("password", AUTH),
        aws_region: p.optional("awsRegion", META),
    }
}

/// The apache-kafka scaler's validation, in jobtide's documented order (first failure only), then
/// jobtide's topic name check.
fn validate(d: &Draft) -> Result<(), ParamError> {
    let zero = |v: Option<bool>| v.unwrap_or_default();
    let has_topic = d.topics.as_ref().is_some_and(|t| !t.is_empty());
    if d.lag.lag_threshold.unwrap_or_default() <= 0 {
        return Err(ParamError::new(
            "lagThreshold",
            "lagThreshold must be a positive number",
        ));
    }
    if d.lag.activation_lag_threshold.unwrap_or_default() < 0 {
        return Err(ParamError::new(
            "activationLagThreshold",
            "activationLagThreshold must be a positive number",
        ));
    }
    if zero(d.lag.allow_idle_consumers) && zero(d.lag.limit_to_partitions_with_lag) {
        return Err(ParamError::new(
            "limitToPartitionsWithLag",
            "allowIdleConsumers and limitToPartitionsWithLag cannot be set simultaneously",
        ));
    }
    if zero(d.lag.limit_to_partitions_with_lag) && !has_topic {
        return Err(ParamError::new(
            "topic",
            "topic must be specified when using limitToPartitionsWithLag",
        ));
    }
    if d.sasl_in_both {
        return Err(ParamError::new(
            "sasl",
            "unable to set `sasl` in both ScaledObject and TriggerAuthentication together",
        ));
    }
    if d.tls_in_both {
        return Err(ParamError::new(
            "tls",
            "unable to set `tls` in both ScaledObject and TriggerAuthentication together",
        ));
    }
    if d.tls == Some("enable") && d.cert.is_some() != d.key.is_some() {
        return Err(ParamError::new(
            "cert",
            "can't set only one of cert or key when using TLS",
        ));
    }
    match d.sasl {
        Some("plaintext") if d.username.is_none() || d.password.is_none() => Err(ParamError::new(
            "username",
            "username and password must be set when using SASL/PLAINTEXT",
        )),
        Some("aws_msk_iam") if d.aws_region.is_none() => Err(ParamError::new(
            "awsRegion",
            "awsRegion must be set when using AWS MSK IAM",
        )),
        Some("aws_msk_iam") if d.tls != Some("enable") => Err(ParamError::new(
            "tls",
            "TLS must be enabled when using AWS MSK IAM",
        )),
        // jobtide's own (KEDA accepts any text): a topic Kafka can't have.
        _ => d
            .topics
            .iter()
            .flatten()
            .try_for_each(|topic| check_topic_name("topic", topic)),
    }
}

fn view(d: &Draft) -> Value {
    let has_topic = d.topics.as_ref().is_some_and(|t| !t.is_empty());
    let mut view = json!({
        "bootstrapServers": d.bootstrap_servers,
        "consumerGroup": d.consumer_group,
        "topic": d.topics.clone().unwrap_or_default(),
        "partitionLimitation": if has_topic { d.partition_limitation.clone() } else { None },
        "tls": d.tls,
        "ca": redacted(d.ca.as_ref()),
        "cert": redacted(d.cert.as_ref()),
        "key": redacted(d.key.as_ref()),
        "keyPassword": redacted(d.key_password.as_ref()),
        "sasl": d.sasl,
        "username": d.username,
        "password": redacted(d.password.as_ref()),
        "awsRegion": d.aws_region,
    });
    d.lag.extend_view(&mut view);
    view
}
