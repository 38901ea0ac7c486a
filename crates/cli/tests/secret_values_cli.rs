//! No value from a Secret, a ConfigMap of a TriggerAuthentication or a container's env appears in
//! anything `jobtide validate` or `jobtide explain` prints (issue 18): a unique marker is routed
//! through every parameter of `kafka` and `apache-kafka` triggers that can come from there, with
//! valid and invalid values, and the built binary's every output is searched for it.

#![allow(clippy::expect_used)] // test helpers: a failure is the test failing

mod secret_values;

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::{Value, json};

use secret_values::{Case, MARKER, cases, from_env, manifest};

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
