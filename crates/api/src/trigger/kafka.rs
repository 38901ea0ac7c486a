//! `type: kafka` (KEDA's sarama-based scaler): parameters, defaults and validation exactly as
//! keda-compat §6.1–§6.2 and §8 describe, with jobtide's differences D5 (no comma-joined enum
//! values) and D6 (errors prefixed once).

use std::collections::BTreeMap;

use jobtide_core::kafka::LagPolicy;
use serde_json::{Value, json};

use super::connection::{
    ClientCert, Credentials, Gssapi, GssapiCredential, KafkaConnection, OAuthBearer, Sasl, Tls,
};
use super::kerberos;
use super::lag_fields::{IsolationLevel, LagDraft};
use super::params::{AUTH, META, META_AUTH, META_ENV, Params};
use super::topic::check_topic_name;
use super::{ParamError, Rejected, aws, redacted};
use crate::secret::Secret;

/// A parsed, valid `kafka` trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTrigger {
    /// How to reach the cluster.
    pub connection: KafkaConnection,
    /// `consumerGroup`.
    pub consumer_group: String,
    /// `topic`; `None` means every topic the group has committed offsets for.
    pub topic: Option<String>,
    /// The lag rules.
    pub lag: LagPolicy,
    /// jobtide's `isolationLevel`: which end offset the lag is counted against.
    pub isolation_level: IsolationLevel,
    /// `fullMetadata` (default true): false restricts client metadata to the topic.
    pub full_metadata: bool,
    /// `version`: the Kafka protocol version KEDA's client would announce (default `1.0.0`).
    pub version: String,
}

/// The metadata keys only the `kafka` scaler reads (beyond [`super::SHARED_METADATA_KEYS`]).
pub const METADATA_KEYS: &[&str] = &["fullMetadata", "version", "unsafeSsl", "saslTokenProvider"];

/// Parameters KEDA's `kafka` scaler reads that change nothing in jobtide, with why: each is
/// parsed with KEDA's rules (a bad value is still KEDA's error), and a trigger that sets one gets
/// a warning saying so. `kerberosDisableFAST` comes from the authentication, the others from
/// the metadata.
pub const NO_EFFECT: &[(&str, &str)] = &[
    (
        "fullMetadata",
        "jobtide asks the brokers for the metadata of the topics in use only, which is what \
         fullMetadata: \"false\" asks of KEDA",
    ),
    (
        "version",
        "librdkafka negotiates the protocol version with each broker",
    ),
    (
        "kerberosDisableFAST",
        "jobtide's kinit never uses Kerberos FAST, as if kerberosDisableFAST were \"true\"",
    ),
];

/// The fields as KEDA's typed parser leaves them: `None` where the value did not parse (Go
/// would hold the zero value, which is what validation sees).
#[derive(Debug, Default)]
struct Draft {
    bootstrap_servers: Option<Vec<String>>,
    consumer_group: Option<String>,
    topic: Option<String>,
    partition_limitation_raw: Option<String>,
    lag: LagDraft,
    full_metadata: Option<bool>,
    version: Option<String>,
    tls: Option<&'static str>,
    unsafe_ssl: Option<bool>,
    ca: Option<Secret>,
    cert: Option<Secret>,
    key: Option<Secret>,
    key_password: Option<Secret>,
    sasl: Option<&'static str>,
    username: Option<String>,
    password: Option<Secret>,
    sasl_token_provider: Option<&'static str>,
    oauth_token_endpoint_uri: Option<String>,
    scopes: Vec<String>,
    oauth_extensions_raw: Option<String>,
    aws_region: Option<String>,
    keytab: Option<Secret>,
    realm: Option<String>,
    kerberos_config: Option<String>,
    kerberos_service_name: Option<String>,
    kerberos_disable_fast: Option<bool>,
}

/// Parses a `kafka` trigger. On failure the error carries every message and the view of what
/// did parse.
pub(super) fn parse(params: &mut Params<'_>) -> Result<(KafkaTrigger, Value), Rejected> {
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
    // After the typed parse, as KEDA: the version, then AWS authorization.
    let version = draft.version.clone().unwrap_or_default();
    if !is_sarama_version(&version) {
        return Err(Rejected::Invalid {
            errors: vec![ParamError::new(
                "version",
                format!("error parsing kafka version: invalid version `{version}`"),
            )],
            view: Some(view),
        });
    }
    let sasl = match (draft.sasl, draft.sasl_token_provider) {
        (Some("oauthbearer"), Some("aws_msk_iam")) => {
            if let Err(message) = aws::authorization(params) {
                return Err(Rejected::Invalid {
                    errors: vec![ParamError::new(
                        "awsAccessKeyID",
                        format!("error parsing OAuth token provider configuration: {message}"),
                    )],
                    view: Some(view),
                });
            }
            return Err(Rejected::NotSupported {
                feature: "AWS MSK IAM authentication (sasl: oauthbearer with saslTokenProvider: \
                          aws_msk_iam)",
                view: Some(view),
            });
        }
        _ => build_sasl(&draft),
    };
    let trigger = KafkaTrigger {
        connection: KafkaConnection {
            bootstrap_servers: draft.bootstrap_servers.clone().unwrap_or_default(),
            tls: build_tls(&draft),
            sasl,
        },
        consumer_group: draft.consumer_group.clone().unwrap_or_default(),
        topic: draft.topic.clone(),
        isolation_level: draft.lag.isolation_level(),
        lag: draft.lag.policy(effective_partition_limitation(&draft)),
        full_metadata: draft.full_metadata.unwrap_or(true),
        version,
    };
    Ok((trigger, view))
}

fn read_fields(p: &mut Params<'_>) -> Draft {
    let bootstrap_servers = p.list("bootstrapServers", META_ENV, true);
    let consumer_group = p.required("consumerGroup", META_ENV);
    let topic = p.optional("topic", META_ENV);
    let partition_limitation_raw = p.optional("partitionLimitation", META);
    let lag = LagDraft::read(p);
    let full_metadata = p.bool("fullMetadata", META, true);
    let version = Some(
        p.optional("version", META)
            .unwrap_or_else(|| "1.0.0".to_owned()),
    );
    let tls = p.one_of("tls", META_AUTH, "disable", &["enable", "disable"]);
    let unsafe_ssl = p.bool("unsafeSsl", META, false);
    let ca = p.secret("ca", AUTH);
    let cert = p.secret("cert", AUTH);
    let key = p.secret("key", AUTH);
    let key_password = p.secret("keyPassword", AUTH);
    let sasl = p.one_of(
        "sasl",
        META_AUTH,
        "none",
        &[
            "none",
            "plaintext",
            "scram_sha256",
            "scram_sha512",
            "oauthbearer",
            "gssapi",
        ],
    );
    let username = p.optional("username", AUTH);
    let password = p.secret("password", AUTH);
    let sasl_token_provider = p.one_of(
        "saslTokenProvider",
        META_AUTH,
        "bearer",
        &["bearer", "aws_msk_iam"],
    );
    let oauth_token_endpoint_uri = p.optional("oauthTokenEndpointUri", AUTH);
    let oauth_extensions_raw = p.optional("oauthExtensions", AUTH);
    let aws_region = p.optional("awsRegion", META);
    let keytab = p.secret("keytab", AUTH);
    let realm = p.optional("realm", AUTH);
    let kerberos_config = p.optional("kerberosConfig", AUTH);
    let kerberos_service_name = Some(
        p.optional("kerberosServiceName", AUTH)
            .unwrap_or_else(|| "kafka".to_owned()),
    );
    let kerberos_disable_fast = p.bool("kerberosDisableFAST", AUTH, false);
    // `scopes` is read raw (no trimming; "" gives one empty scope), as KEDA does.
    let scopes = if sasl == Some("oauthbearer") {
        p.auth("scopes")
            .map_or("", Secret::expose)
            .split(',')
            .map(str::to_owned)
            .collect()
    } else {
        Vec::new()
    };
    Draft {
        bootstrap_servers,
        consumer_group,
        topic,
        partition_limitation_raw,
        lag,
        full_metadata,
        version,
        tls,
        unsafe_ssl,
        ca,
        cert,
        key,
        key_password,
        sasl,
        username,
        password,
        sasl_token_provider,
        oauth_token_endpoint_uri,
        scopes,
        oauth_extensions_raw,
        aws_region,
        keytab,
        realm,
        kerberos_config,
        kerberos_service_name,
        kerberos_disable_fast,
    }
}

/// KEDA's custom validation, in its order, then jobtide's topic name check; only the first
/// failure is reported. It sees the zero value of any field that failed to parse, as Go does.
fn validate(d: &Draft) -> Result<(), ParamError> {
    let zero = |v: Option<bool>| v.unwrap_or_default();
    let has_topic = d.topic.is_some();
    if d.lag.lag_threshold.unwrap_or_default() <= 0 {
        return Err(ParamError::new(
            "lagThreshold",
            "\"lagThreshold\" must be positive number",
        ));
    }
    if d.lag.activation_lag_threshold.unwrap_or_default() < 0 {
        return Err(ParamError::new(
            "activationLagThreshold",
            "\"activationLagThreshold\" must be a non-negative number",
        ));
    }
    if let Some(raw) = &d.partition_limitation_raw {
        parse_partition_limitation(raw).map_err(|m| ParamError::new("partitionLimitation", m))?;
    }
    let allow_idle = zero(d.lag.allow_idle_consumers);
    let limit = zero(d.lag.limit_to_partitions_with_lag);
    let even = zero(d.lag.ensure_even_distribution_of_partitions);
    if allow_idle && limit {
        return Err(ParamError::new(
            "limitToPartitionsWithLag",
            "allowIdleConsumers and limitToPartitionsWithLag cannot be set simultaneously",
        ));
    }
    if limit && !has_topic {
        return Err(ParamError::new(
            "topic",
            "topic must be specified when using limitToPartitionsWithLag",
        ));
    }
    if limit && even {
        return Err(ParamError::new(
            "ensureEvenDistributionOfPartitions",
            "limitToPartitionsWithLag and ensureEvenDistributionOfPartitions cannot be set \
             simultaneously",
        ));
    }
    if even && !has_topic {
        return Err(ParamError::new(
            "topic",
            "topic must be specified when using ensureEvenDistributionOfPartitions",
        ));
    }
    if !zero(d.full_metadata) && !has_topic {
        return Err(ParamError::new(
            "topic",
            "topic must be specified when fullMetadata is false",
        ));
    }
    if d.tls == Some("enable") {
        match (&d.cert, &d.key) {
            (Some(_), None) => {
                return Err(ParamError::new("key", "key must be provided with cert"));
            }
            (None, Some(_)) => {
                return Err(ParamError::new("cert", "cert must be provided with key"));
            }
            _ => {}
        }
    }
    validate_sasl(d)?;
    // jobtide's own (KEDA accepts any text): a topic Kafka can't have.
    if let Some(topic) = &d.topic {
        check_topic_name("topic", topic)?;
    }
    Ok(())
}

fn validate_sasl(d: &Draft) -> Result<(), ParamError> {
    match d.sasl {
        Some("plaintext" | "scram_sha256" | "scram_sha512") => {
            if d.username.is_none() {
                return Err(ParamError::new("username", "no username given"));
            }
            if d.password.is_none() {
                return Err(ParamError::new("password", "no password given"));
            }
        }
        Some("oauthbearer") => {
            let oauth = |param: &str, m: &str| {
                ParamError::new(
                    param,
                    format!("error parsing OAuth token provider configuration: {m}"),
                )
            };
            match d.sasl_token_provider {
                Some("aws_msk_iam") => {
                    if d.tls != Some("enable") {
                        return Err(oauth("tls", "TLS is required for AWS MSK authentication"));
                    }
                    if d.aws_region.is_none() {
                        return Err(oauth("awsRegion", "no awsRegion given"));
                    }
                }
                _ => {
                    if d.username.is_none() {
                        return Err(oauth("username", "no username given"));
                    }
                    if d.password.is_none() {
                        return Err(oauth("password", "no password given"));
                    }
                    if d.oauth_token_endpoint_uri.is_none() {
                        return Err(oauth(
                            "oauthTokenEndpointUri",
                            "no oauth token endpoint uri given",
                        ));
                    }
                    if let Some(uri) = &d.oauth_token_endpoint_uri {
                        check_token_endpoint(uri)
                            .map_err(|m| oauth("oauthTokenEndpointUri", &m))?;
                    }
                    if let Some(raw) = &d.oauth_extensions_raw {
                        parse_extensions(raw).map_err(|m| oauth("oauthExtensions", &m))?;
                    }
                }
            }
        }
        Some("gssapi") => {
            if d.username.is_none() {
                return Err(ParamError::new("username", "no username given"));
            }
            if d.password.is_some() == d.keytab.is_some() {
                return Err(ParamError::new(
                    "keytab",
                    "exactly one of 'password' or 'keytab' must be provided for GSSAPI \
                     authentication",
                ));
            }
            if d.realm.is_none() {
                return Err(ParamError::new("realm", "no realm given"));
            }
            if d.kerberos_config.is_none() {
                return Err(ParamError::new(
                    "kerberosConfig",
                    "no Kerberos configuration file (kerberosConfig) given",
                ));
            }
            // jobtide's own checks (docs/security.md): these names reach librdkafka and kinit.
            let checks = [
                (
                    "username",
                    d.username.as_deref(),
                    kerberos::check_username as fn(&str) -> _,
                ),
                ("realm", d.realm.as_deref(), kerberos::check_realm),
                (
                    "kerberosServiceName",
                    d.kerberos_service_name.as_deref(),
                    kerberos::check_service_name,
                ),
            ];
            for (param, value, check) in checks {
                if let Some(value) = value {
                    check(value).map_err(|m| ParamError::new(param, format!("{param} {m}")))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// jobtide's own check (docs/security.md): the token endpoint is fetched by libcurl inside the
/// operator, which also speaks `file://`, `gopher://` and more; only `http(s)://` is accepted (as
/// KEDA's Go HTTP client does). The message never repeats the value.
fn check_token_endpoint(uri: &str) -> Result<(), String> {
    let lower = uri.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !uri.chars().any(char::is_control) => Ok(()),
        _ => Err("oauthTokenEndpointUri must be an http:// or https:// URL".into()),
    }
}

/// `partitionLimitation` for `kafka`: `"1,2,10-20,31"`, elements trimmed, inclusive ranges; a
/// range whose start is after its end is an error, and a partition named twice (overlapping
/// ranges) is kept once, where it first appears.
pub fn parse_partition_limitation(raw: &str) -> Result<Vec<i32>, String> {
    let mut out = Vec::new();
    for part in raw.split(',') {
        let part = part.trim();
        if part.contains('-') {
            let bounds: Vec<&str> = part.split('-').collect();
            let [start, end] = bounds.as_slice() else {
                return Err(format!("invalid partition limitation range: {part}"));
            };
            let (Ok(start), Ok(end)) = (start.trim().parse::<i32>(), end.trim().parse::<i32>())
            else {
                return Err(format!("invalid partition limitation range: {part}"));
            };
            if start > end {
                // KEDA expands it to nothing, an empty limitation: silently every partition.
                return Err(format!(
                    "invalid partition limitation range: {part} (its start is after its end)"
                ));
            }
            if i128::from(end) - i128::from(start) >= super::params::MAX_RANGE_LEN {
                return Err(format!(
                    "invalid partition limitation range: {part} (spans more \
                                    than {} partitions, jobtide's limit)",
                    super::params::MAX_RANGE_LEN
                ));
            }
            out.extend(start..=end);
        } else {
            let id = part
                .parse::<i32>()
                .map_err(|_| format!("invalid partition limitation: {part}"))?;
            out.push(id);
        }
    }
    // Overlapping ranges name a partition twice; it counts once.
    Ok(super::params::each_once(out))
}

fn parse_extensions(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for element in raw.split(',') {
        let kv: Vec<&str> = element.split('=').collect();
        let [k, v] = kv.as_slice() else {
            return Err("invalid OAuthBearer extension, must be of format key=value".into());
        };
        out.insert((*k).to_owned(), (*v).to_owned());
    }
    Ok(out)
}

fn build_tls(d: &Draft) -> Option<Tls> {
    (d.tls == Some("enable")).then(|| Tls {
        ca: d.ca.clone(),
        client_cert: match (&d.cert, &d.key) {
            (Some(cert), Some(key)) => Some(ClientCert {
                cert: cert.clone(),
                key: key.clone(),
                key_password: d.key_password.clone(),
            }),
            _ => None,
        },
        unsafe_ssl: d.unsafe_ssl.unwrap_or_default(),
    })
}

fn build_sasl(d: &Draft) -> Sasl {
    let credentials = || Credentials {
        username: d.username.clone().unwrap_or_default(),
        password: d.password.clone().unwrap_or_else(|| Secret::new("")),
    };
    match d.sasl {
        Some("plaintext") => Sasl::Plain(credentials()),
        Some("scram_sha256") => Sasl::ScramSha256(credentials()),
        Some("scram_sha512") => Sasl::ScramSha512(credentials()),
        Some("oauthbearer") => Sasl::OAuthBearer(OAuthBearer {
            client_id: d.username.clone().unwrap_or_default(),
            client_secret: d.password.clone().unwrap_or_else(|| Secret::new("")),
            token_endpoint_uri: d.oauth_token_endpoint_uri.clone().unwrap_or_default(),
            scopes: d.scopes.clone(),
            extensions: d
                .oauth_extensions_raw
                .as_deref()
                .and_then(|raw| parse_extensions(raw).ok())
                .unwrap_or_default(),
        }),
        Some("gssapi") => Sasl::Gssapi(Gssapi {
            username: d.username.clone().unwrap_or_default(),
            credential: match (&d.password, &d.keytab) {
                (_, Some(keytab)) => GssapiCredential::Keytab(keytab.clone()),
                (Some(password), None) => GssapiCredential::Password(password.clone()),
                (None, None) => GssapiCredential::Password(Secret::new("")),
            },
            realm: d.realm.clone().unwrap_or_default(),
            kerberos_config: d.kerberos_config.clone().unwrap_or_default(),
            service_name: d
                .kerberos_service_name
                .clone()
                .unwrap_or_else(|| "kafka".into()),
            disable_fast: d.kerberos_disable_fast.unwrap_or_default(),
        }),
        _ => Sasl::None,
    }
}

/// Sarama's `ParseKafkaVersion` shape: `^\d+\.\d+\.\d+$` or `^0\.\d+\.\d+\.\d+$`, length ≥ 5.
fn is_sarama_version(version: &str) -> bool {
    if version.len() < 5 {
        return false;
    }
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        [_, _, _] => parts.iter().all(numeric),
        [first, _, _, _] => *first == "0" && parts.iter().all(numeric),
        _ => false,
    }
}

/// `partitionLimitation` as it applies: dropped when there is no topic.
fn effective_partition_limitation(d: &Draft) -> Option<Vec<i32>> {
    let raw = d.partition_limitation_raw.as_deref()?;
    d.topic.as_ref()?;
    parse_partition_limitation(raw).ok()
}

/// The `config` object of `jobtide validate`'s JSON: KEDA's names, parsed types, secrets
/// redacted, `null` for what did not parse.
fn view(d: &Draft) -> Value {
    let partition_limitation = effective_partition_limitation(d);
    let oauth_extensions = d
        .oauth_extensions_raw
        .as_deref()
        .and_then(|raw| parse_extensions(raw).ok())
        .unwrap_or_default();
    let mut view = json!({
        "bootstrapServers": d.bootstrap_servers,
        "consumerGroup": d.consumer_group,
        "topic": d.topic,
        "partitionLimitation": partition_limitation,
        "fullMetadata": d.full_metadata,
        "version": d.version,
        "tls": d.tls,
        "unsafeSsl": d.unsafe_ssl,
        "ca": redacted(d.ca.as_ref()),
        "cert": redacted(d.cert.as_ref()),
        "key": redacted(d.key.as_ref()),
        "keyPassword": redacted(d.key_password.as_ref()),
        "sasl": d.sasl,
        "username": d.username,
        "password": redacted(d.password.as_ref()),
        "saslTokenProvider": d.sasl_token_provider,
        "oauthTokenEndpointUri": d.oauth_token_endpoint_uri,
        "scopes": d.scopes,
        "oauthExtensions": oauth_extensions,
        "awsRegion": d.aws_region,
        "keytab": redacted(d.keytab.as_ref()),
        "realm": d.realm,
        "kerberosConfig": d.kerberos_config,
        "kerberosServiceName": d.kerberos_service_name,
        "kerberosDisableFAST": d.kerberos_disable_fast,
    });
    d.lag.extend_view(&mut view);
    view
}
