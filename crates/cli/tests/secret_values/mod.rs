//! The cases of `secret_values_cli`: ScaledJobs whose trigger parameters come from a Secret, a
//! ConfigMap, a TriggerAuthentication's `env` or `…FromEnv` variables, each value holding
//! [`MARKER`], written as one manifest.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// Every value routed through a Secret holds this (any case): no output may contain it.
pub const MARKER: &str = "jtmarker";

/// How a parameter reaches the trigger.
#[derive(Clone, Copy)]
pub enum Via {
    /// `secretTargetRef` of the trigger's TriggerAuthentication.
    SecretTargetRef,
    /// `configMapTargetRef` of the trigger's TriggerAuthentication.
    ConfigMapTargetRef,
    /// The TriggerAuthentication's `env`, from a container env var set from a Secret.
    AuthEnv,
    /// `<name>FromEnv` in the trigger metadata, the env var set from a Secret.
    FromEnv,
}

/// One ScaledJob with one trigger whose parameters come from a Secret.
pub struct Case {
    pub name: &'static str,
    pub trigger_type: &'static str,
    pub metadata: &'static [(&'static str, &'static str)],
    pub params: Vec<(&'static str, Via, String)>,
    /// Whether `validate` finds the trigger valid.
    pub valid: bool,
}

fn secret(parameter: &'static str, value: &str) -> (&'static str, Via, String) {
    (parameter, Via::SecretTargetRef, value.to_owned())
}

pub fn from_env(parameter: &'static str, value: &str) -> (&'static str, Via, String) {
    (parameter, Via::FromEnv, value.to_owned())
}

/// `bootstrapServers`, `consumerGroup` and `topic` from Secret-backed env vars.
fn connection_from_env() -> Vec<(&'static str, Via, String)> {
    vec![
        from_env("bootstrapServers", "jtmarker-broker:9092"),
        from_env("consumerGroup", "jtmarker-group"),
        from_env("topic", "jtmarker-topic"),
    ]
}

fn tls_material() -> Vec<(&'static str, Via, String)> {
    vec![
        secret("tls", "enable"),
        secret("ca", "jtmarker-ca"),
        secret("cert", "jtmarker-cert"),
        secret("key", "jtmarker-key"),
        secret("keyPassword", "jtmarker-key-password"),
    ]
}

pub fn cases() -> Vec<Case> {
    let every_kafka_auth_param_invalid = [
        ("sasl", "jtmarker-sasl"),
        ("tls", "jtmarker-tls"),
        ("saslTokenProvider", "jtmarker-provider"),
        ("kerberosDisableFAST", "jtmarker-fast"),
        ("username", "jtmarker-user"),
        ("password", "jtmarker-password"),
        ("ca", "jtmarker-ca"),
        ("cert", "jtmarker-cert"),
        ("key", "jtmarker-key"),
        ("keyPassword", "jtmarker-key-password"),
        ("oauthTokenEndpointUri", "jtmarker-endpoint"),
        ("oauthExtensions", "jtmarker-extensions"),
        ("scopes", "jtmarker-scope"),
        ("keytab", "jtmarker-keytab"),
        ("realm", "jtmarker realm"),
        ("kerberosConfig", "jtmarker-krb5"),
        ("kerberosServiceName", "jtmarker service"),
        ("awsRoleArn", "jtmarker-role"),
        ("awsAccessKeyID", "jtmarker-key-id"),
        ("awsSecretAccessKey", "jtmarker-secret-key"),
        // Metadata-only parameters: a TriggerAuthentication can't set them, but may try.
        ("lagThreshold", "jtmarker-lag"),
        ("partitionLimitation", "jtmarker-partitions"),
    ];
    let every_apache_auth_param_invalid = [
        ("sasl", "jtmarker-sasl"),
        ("tls", "jtmarker-tls"),
        ("username", "jtmarker-user"),
        ("password", "jtmarker-password"),
        ("ca", "jtmarker-ca"),
        ("cert", "jtmarker-cert"),
        ("key", "jtmarker-key"),
        ("keyPassword", "jtmarker-key-password"),
        ("awsRoleArn", "jtmarker-role"),
        ("awsAccessKeyID", "jtmarker-key-id"),
        ("awsSecretAccessKey", "jtmarker-secret-key"),
    ];
    let oauth = |endpoint: &str, extensions: &str| {
        vec![
            secret("sasl", "oauthbearer"),
            secret("saslTokenProvider", "bearer"),
            secret("username", "jtmarker-client-id"),
            secret("password", "jtmarker-client-secret"),
            secret("oauthTokenEndpointUri", endpoint),
            secret("scopes", "jtmarker-scope-a,jtmarker-scope-b"),
            secret("oauthExtensions", extensions),
        ]
    };
    let gssapi = |username: &str, realm: &str, service: &str| {
        vec![
            secret("sasl", "gssapi"),
            secret("username", username),
            secret("keytab", "jtmarker-keytab"),
            secret("realm", realm),
            secret(
                "kerberosConfig",
                "[libdefaults]\n default_realm = JTMARKER.REALM\n",
            ),
            secret("kerberosServiceName", service),
            secret("kerberosDisableFAST", "true"),
        ]
    };
    let msk = |via_env: bool| {
        let mut params = vec![
            secret("sasl", "oauthbearer"),
            secret("saslTokenProvider", "aws_msk_iam"),
            secret("tls", "enable"),
        ];
        if via_env {
            params.push(from_env("awsAccessKeyID", "jtmarker-key-id"));
            params.push(from_env("awsSecretAccessKey", "jtmarker-secret-key"));
        } else {
            params.push(secret("awsAccessKeyID", "jtmarker-key-id"));
            params.push(secret("awsSecretAccessKey", "jtmarker-secret-key"));
        }
        params
    };
    let plaintext = |sasl: &str| {
        let mut params = vec![
            secret("sasl", sasl),
            secret("username", "jtmarker-user"),
            secret("password", "jtmarker-password"),
        ];
        params.extend(tls_material());
        params.extend(connection_from_env());
        params
    };
    let with_env = |params: Vec<(&'static str, Via, String)>| {
        let mut all = connection_from_env();
        all.extend(params);
        all
    };
    let meta: &'static [(&'static str, &'static str)] = &[];
    let msk_meta: &'static [(&'static str, &'static str)] = &[
        ("bootstrapServers", "kafka:9092"),
        ("consumerGroup", "g"),
        ("topic", "t"),
        ("awsRegion", "eu-west-1"),
    ];
    vec![
        Case {
            name: "kafka-every-parameter-invalid",
            trigger_type: "kafka",
            metadata: meta,
            params: with_env(
                every_kafka_auth_param_invalid
                    .iter()
                    .map(|(p, v)| secret(p, v))
                    .collect(),
            ),
            valid: false,
        },
        Case {
            name: "kafka-plaintext",
            trigger_type: "kafka",
            metadata: meta,
            params: plaintext("plaintext"),
            valid: true,
        },
        Case {
            name: "kafka-comma-joined-sasl",
            trigger_type: "kafka",
            metadata: meta,
            params: with_env(vec![secret("sasl", "plaintext,jtmarker")]),
            valid: false,
        },
        Case {
            name: "kafka-oauth",
            trigger_type: "kafka",
            metadata: meta,
            params: with_env(oauth(
                "https://jtmarker.example/token",
                "jtmarkerk=jtmarkerv",
            )),
            valid: true,
        },
        Case {
            name: "kafka-oauth-endpoint-not-http",
            trigger_type: "kafka",
            metadata: meta,
            params: with_env(oauth("file:///jtmarker", "jtmarkerk=jtmarkerv")),
            valid: false,
        },
        Case {
            name: "kafka-oauth-extension-not-key-value",
            trigger_type: "kafka",
            metadata: meta,
            params: with_env(oauth(
                "https://jtmarker.example/token",
                "jtmarker-extension",
            )),
            valid: false,
        },
        Case {
            name: "kafka-gssapi",
            trigger_type: "kafka",
            metadata: meta,
            params: with_env(gssapi("jtmarker-user", "JTMARKER.REALM", "jtmarker-svc")),
            valid: true,
        },
        Case {
            name: "kafka-gssapi-hostile-username",
            trigger_type: "kafka",
            metadata: meta,
            params: with_env(gssapi("jtmarker;id", "JTMARKER.REALM", "jtmarker-svc")),
            valid: false,
        },
        Case {
            name: "kafka-gssapi-hostile-realm",
            trigger_type: "kafka",
            metadata: meta,
            params: with_env(gssapi("jtmarker-user", "$(jtmarker)", "jtmarker-svc")),
            valid: false,
        },
        Case {
            name: "kafka-gssapi-hostile-service",
            trigger_type: "kafka",
            metadata: meta,
            params: with_env(gssapi("jtmarker-user", "JTMARKER.REALM", "-jtmarker")),
            valid: false,
        },
        Case {
            name: "kafka-msk-iam",
            trigger_type: "kafka",
            metadata: msk_meta,
            params: msk(false),
            valid: false,
        },
        Case {
            name: "kafka-msk-iam-env",
            trigger_type: "kafka",
            metadata: msk_meta,
            params: msk(true),
            valid: false,
        },
        Case {
            name: "kafka-other-sources",
            trigger_type: "kafka",
            metadata: meta,
            params: with_env(vec![
                ("sasl", Via::ConfigMapTargetRef, "jtmarker-sasl".into()),
                ("tls", Via::AuthEnv, "jtmarker-tls".into()),
                ("username", Via::AuthEnv, "jtmarker-user".into()),
            ]),
            valid: false,
        },
        Case {
            name: "apache-every-parameter-invalid",
            trigger_type: "apache-kafka",
            metadata: meta,
            params: with_env(
                every_apache_auth_param_invalid
                    .iter()
                    .map(|(p, v)| secret(p, v))
                    .collect(),
            ),
            valid: false,
        },
        Case {
            name: "apache-plaintext",
            trigger_type: "apache-kafka",
            metadata: meta,
            params: plaintext("plaintext"),
            valid: true,
        },
        Case {
            name: "apache-scram",
            trigger_type: "apache-kafka",
            metadata: meta,
            params: plaintext("scram_sha512"),
            valid: true,
        },
        Case {
            name: "apache-gssapi",
            trigger_type: "apache-kafka",
            metadata: meta,
            params: with_env(vec![secret("sasl", "gssapi")]),
            valid: false,
        },
        Case {
            name: "apache-msk-iam",
            trigger_type: "apache-kafka",
            metadata: msk_meta,
            params: vec![
                secret("sasl", "aws_msk_iam"),
                secret("tls", "enable"),
                secret("awsAccessKeyID", "jtmarker-key-id"),
                secret("awsSecretAccessKey", "jtmarker-secret-key"),
            ],
            valid: false,
        },
    ]
}

/// The Secret, ConfigMap, TriggerAuthentication and ScaledJob of one case, as JSON documents.
fn documents(case: &Case) -> Vec<Value> {
    let name = case.name;
    let mut secret_data = Map::new();
    let mut config_map_data = Map::new();
    let (mut secret_refs, mut config_map_refs, mut auth_env) = (vec![], vec![], vec![]);
    let mut container_env = vec![];
    let mut metadata: Map<String, Value> = case
        .metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    for (parameter, via, value) in &case.params {
        let variable = format!("P_{}", parameter.to_uppercase());
        let from_secret = json!({"secretKeyRef": {"name": name, "key": parameter}});
        match via {
            Via::SecretTargetRef => {
                secret_data.insert((*parameter).into(), json!(value));
                secret_refs.push(json!({"parameter": parameter, "name": name, "key": parameter}));
            }
            Via::ConfigMapTargetRef => {
                config_map_data.insert((*parameter).into(), json!(value));
                config_map_refs
                    .push(json!({"parameter": parameter, "name": name, "key": parameter}));
            }
            Via::AuthEnv => {
                secret_data.insert((*parameter).into(), json!(value));
                container_env.push(json!({"name": variable, "valueFrom": from_secret}));
                auth_env.push(json!({"parameter": parameter, "name": variable}));
            }
            Via::FromEnv => {
                secret_data.insert((*parameter).into(), json!(value));
                container_env.push(json!({"name": variable, "valueFrom": from_secret}));
                metadata.insert(format!("{parameter}FromEnv"), json!(variable));
            }
        }
    }
    vec![
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "team-a"}, "stringData": secret_data}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "team-a"}, "data": config_map_data}),
        json!({"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"secretTargetRef": secret_refs, "configMapTargetRef": config_map_refs,
                "env": auth_env}}),
        json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {
                "jobTargetRef": {"template": {"spec": {"containers": [
                    {"name": "worker", "image": "busybox", "env": container_env}]}}},
                "triggers": [{"type": case.trigger_type, "metadata": metadata,
                    "authenticationRef": {"name": name}}]}}),
    ]
}

/// Writes every case into one manifest file.
pub fn manifest(dir: &Path, cases: &[Case]) -> PathBuf {
    let mut text = String::new();
    for document in cases.iter().flat_map(documents) {
        let _ = writeln!(text, "---\n{document}");
    }
    let path = dir.join("secret-values.yaml");
    std::fs::write(&path, text).expect("write the manifest");
    path
}
