//! No value from a Secret, a ConfigMap of a TriggerAuthentication or a container's env appears in
//! anything `jobtide validate` or `jobtide explain` prints (issue 18): a unique marker is routed
//! through every parameter of `kafka` and `apache-kafka` triggers that can come from there, with
//! valid and invalid values, and the built binary's every output is searched for it.

#![allow(clippy::expect_used)] // test helpers: a failure is the test failing

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use serde_json::{Map, Value, json};

/// Every value routed through a Secret holds this (any case): no output may contain it.
const MARKER: &str = "jtmarker";

/// How a parameter reaches the trigger.
#[derive(Clone, Copy)]
enum Via {
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
struct Case {
    name: &'static str,
    trigger_type: &'static str,
    metadata: &'static [(&'static str, &'static str)],
    params: Vec<(&'static str, Via, String)>,
    /// Whether `validate` finds the trigger valid.
    valid: bool,
}

fn secret(parameter: &'static str, value: &str) -> (&'static str, Via, String) {
    (parameter, Via::SecretTargetRef, value.to_owned())
}

fn from_env(parameter: &'static str, value: &str) -> (&'static str, Via, String) {
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

fn cases() -> Vec<Case> {
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
fn manifest(dir: &Path, cases: &[Case]) -> PathBuf {
    let mut text = String::new();
    for document in cases.iter().flat_map(documents) {
        let _ = writeln!(text, "---\n{document}");
    }
    let path = dir.join("secret-values.yaml");
    std::fs::write(&path, text).expect("write the manifest");
    path
}

/// Runs the binary; returns stdout and everything it printed (stdout and stderr).
fn run(args: &[&str], manifest: &Path) -> (String, String) {
    let output = Command::cargo_bin("jobtide")
        .expect("the jobtide binary")
        .args(args)
        .arg("-f")
        .arg(manifest)
        .timeout(Duration::from_mins(2))
        .output()
        .expect("run jobtide");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    (stdout, all)
}

fn assert_no_marker(command: &str, printed: &str) {
    let leaks: Vec<&str> = printed
        .lines()
        .filter(|line| line.to_lowercase().contains(MARKER))
        .collect();
    assert!(
        leaks.is_empty(),
        "`jobtide {command}` printed values from Secrets:\n{}",
        leaks.join("\n")
    );
}

#[test]
fn validate_prints_no_value_from_a_secret_in_text_or_json() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases = cases();
    let manifest = manifest(dir.path(), &cases);
    let (_, text) = run(&["validate"], &manifest);
    assert_no_marker("validate", &text);
    let (json_out, all) = run(&["validate", "-o", "json"], &manifest);
    assert_no_marker("validate -o json", &all);

    let report: Value = serde_json::from_str(&json_out).expect("JSON report");
    let reports = report["scaledJobs"].as_array().expect("scaledJobs");
    assert_eq!(reports.len(), cases.len());
    for (case, report) in cases.iter().zip(reports) {
        let trigger = &report["triggers"][0];
        assert_eq!(
            trigger["valid"],
            json!(case.valid),
            "{}: {trigger}",
            case.name
        );
        let config = &trigger["config"];
        for (parameter, _, _) in &case.params {
            if METADATA_ONLY.contains(parameter) {
                continue;
            }
            // A value that did not parse (or was not read: `scopes` without OAuth) is empty, as
            // every such value; one that did is `<redacted>`, never the value.
            if let Some(shown) = config.get(*parameter) {
                let allowed = if case.valid {
                    vec![json!("<redacted>")]
                } else {
                    vec![json!("<redacted>"), Value::Null, json!([]), json!({})]
                };
                assert!(
                    allowed.contains(shown),
                    "{}: config.{parameter} came from a Secret: {shown}",
                    case.name
                );
            }
        }
    }
}

/// Parameters a trigger reads from its metadata only: a TriggerAuthentication's value for them
/// is ignored (the config shows the default).
const METADATA_ONLY: &[&str] = &["lagThreshold", "partitionLimitation"];

#[test]
fn the_json_config_marks_parameters_from_secrets_as_redacted_not_null() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.name == "kafka-plaintext" || c.name == "kafka-oauth")
        .collect();
    let manifest = manifest(dir.path(), &cases);
    let (json_out, _) = run(&["validate", "-o", "json"], &manifest);
    let report: Value = serde_json::from_str(&json_out).expect("JSON report");
    let plaintext = &report["scaledJobs"][0]["triggers"][0];
    for parameter in [
        "bootstrapServers",
        "consumerGroup",
        "topic",
        "sasl",
        "tls",
        "username",
        "password",
        "ca",
        "cert",
        "key",
        "keyPassword",
    ] {
        assert_eq!(
            plaintext["config"][parameter],
            json!("<redacted>"),
            "{parameter}: {plaintext}"
        );
    }
    // The metric name holds the topic, which came from a Secret.
    assert_eq!(plaintext["metricName"], json!("s0-kafka-<redacted>"));
    assert_eq!(
        plaintext["config"]["lagThreshold"],
        json!(10),
        "defaults still shown"
    );
    let oauth = &report["scaledJobs"][1]["triggers"][0]["config"];
    for parameter in [
        "saslTokenProvider",
        "oauthTokenEndpointUri",
        "scopes",
        "oauthExtensions",
    ] {
        assert_eq!(
            oauth[parameter],
            json!("<redacted>"),
            "{parameter}: {oauth}"
        );
    }
}

#[test]
fn explain_prints_no_value_from_a_secret() {
    let dir = tempfile::tempdir().expect("tmp");
    let manifest = manifest(dir.path(), &cases());
    for output in ["text", "json"] {
        let (_, all) = run(&["explain", "--timeout", "2", "-o", output], &manifest);
        assert_no_marker(&format!("explain -o {output}"), &all);
    }
}

#[test]
fn explain_against_a_cluster_shows_no_topic_or_group_from_a_secret() {
    let kafka = jobtide_kafka::ffi::MockKafka::start(1).expect("mock cluster");
    kafka.create_topic("jtmarker-topic", 2).expect("topic");
    let case = |name, topic: &str| Case {
        name,
        trigger_type: "kafka",
        metadata: &[("bootstrapServers", "overridden:9092")],
        params: vec![
            from_env("topic", topic),
            from_env("consumerGroup", "jtmarker-group"),
        ],
        valid: true,
    };
    let cases = [
        case("existing-topic", "jtmarker-topic"),
        case("missing-topic", "jtmarker-missing"),
    ];
    let dir = tempfile::tempdir().expect("tmp");
    let manifest = manifest(dir.path(), &cases);
    let servers = kafka.bootstrap_servers();
    for output in ["text", "json"] {
        let args = [
            "explain",
            "--timeout",
            "5",
            "--bootstrap-servers",
            &servers,
            "-o",
            output,
        ];
        let (stdout, all) = run(&args, &manifest);
        assert_no_marker(&format!("explain -o {output}"), &all);
        if output == "text" {
            assert!(stdout.contains("<redacted>"), "{stdout}");
        } else {
            let report: Value = serde_json::from_str(&stdout).expect("JSON");
            let existing = &report["scaledJobs"][0]["triggers"][0];
            assert_eq!(
                existing["partitions"][0]["topic"], "<redacted>",
                "{existing}"
            );
            let missing = &report["scaledJobs"][1]["triggers"][0];
            assert!(
                missing["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("<redacted>")),
                "the error names the topic, redacted: {missing}"
            );
        }
    }
}
