//! `jobtide validate` and `jobtide crd` run as a user runs them: the built binary, its exit code,
//! its output.

#![allow(clippy::expect_used)] // test helpers outside #[test] fns: a failure is the test failing

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn jobtide() -> Command {
    let mut command = Command::cargo_bin("jobtide").expect("the jobtide binary");
    command.current_dir(repo());
    command
}

fn json_of(output: &[u8]) -> Value {
    serde_json::from_slice(output).expect("stdout is JSON")
}

#[test]
fn the_seed_manifest_validates_clean() {
    let output = jobtide()
        .args([
            "validate",
            "-f",
            "examples/seed-scaledjob.yaml",
            "-o",
            "json",
        ])
        .output()
        .expect("run");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let report = json_of(&output.stdout);
    let sj = &report["scaledJobs"][0];
    assert_eq!(sj["namespace"], "default");
    assert_eq!(sj["name"], "kafka-scaledjob");
    assert_eq!(sj["valid"], true);
    assert_eq!(sj["errors"], Value::Array(vec![]));
    assert_eq!(
        (
            sj["file"].as_str(),
            sj["document"].as_u64(),
            sj["line"].as_u64()
        ),
        (Some("examples/seed-scaledjob.yaml"), Some(1), Some(1))
    );
    let trigger = &sj["triggers"][0];
    assert_eq!(trigger["index"], 0);
    assert_eq!(trigger["type"], "kafka");
    assert_eq!(trigger["name"], Value::Null);
    assert_eq!(trigger["metricName"], "s0-kafka-test-topic");
    assert_eq!(trigger["config"]["lagThreshold"], 50);
    assert_eq!(
        trigger["config"]["bootstrapServers"][0],
        "kafka.confluent.svc.cluster.local:9092"
    );
    assert_eq!(trigger["config"]["sasl"], "none");
    assert_eq!(trigger["config"]["partitionLimitation"], Value::Null);
}

#[test]
fn an_invalid_trigger_exits_1_and_reports_every_problem() {
    let output = jobtide()
        .args([
            "validate",
            "-f",
            &fixture("invalid-trigger.yaml"),
            "-o",
            "json",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output.stdout);
    let sj = &report["scaledJobs"][0];
    assert_eq!(sj["valid"], false);
    assert_eq!(sj["namespace"], "team-a");
    let kafka = &sj["triggers"][0];
    assert_eq!(kafka["valid"], false);
    assert_eq!(kafka["name"], "orders");
    let errors: Vec<&str> = kafka["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with(
        "parameter \"offsetResetPolicy\" value \"latest,earliest\" must be exactly one of"
    ));
    assert_eq!(errors[1], "\"lagThreshold\" must be positive number");
    assert_eq!(
        kafka["warnings"][0],
        "Unmatched input property lagTreshold in scaler kafka (orders)"
    );
    assert_eq!(
        kafka["config"]["consumerGroup"], "orders",
        "what parsed is kept"
    );
    let unknown = &sj["triggers"][1];
    assert_eq!(unknown["config"], Value::Null);
    assert_eq!(
        unknown["errors"][0],
        "unknown trigger type \"rabbitmq\": jobtide supports \"kafka\", \"apache-kafka\", \"kafka-dispatch\""
    );
}

#[test]
fn text_output_names_file_document_object_trigger_and_parameter() {
    let output = jobtide()
        .args(["validate", "-f", &fixture("invalid-trigger.yaml")])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("lagThreshold\" must be positive"))
        .unwrap_or_default();
    assert!(line.contains("invalid-trigger.yaml: document 1 (line 1): ScaledJob team-a/orders: trigger 0 (kafka) \"orders\": parameter lagThreshold: error:"), "{text}");
    assert!(
        text.contains("trigger 1 (rabbitmq): parameter type: error: unknown trigger type"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("1 ScaledJob(s) checked: 0 valid, 1 invalid; 0 unusable document(s)")
    );
}

#[test]
fn auth_from_documents_resolves_and_secrets_stay_hidden() {
    let output = jobtide()
        .args([
            "validate",
            "-f",
            &fixture("sasl-with-auth.yaml"),
            "-o",
            "json",
        ])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("very-secret-password"));
    let report = json_of(&output.stdout);
    assert!(!stdout.contains("orders-consumer"), "{stdout}");
    let config = &report["scaledJobs"][0]["triggers"][0]["config"];
    // Every value from the TriggerAuthentication or the env is redacted, not only passwords.
    assert_eq!(config["sasl"], "<redacted>");
    assert_eq!(config["username"], "<redacted>");
    assert_eq!(config["password"], "<redacted>");
    assert_eq!(
        config["consumerGroup"], "<redacted>",
        "consumerGroupFromEnv resolved from the container env"
    );
    assert_eq!(config["tls"], "enable", "the manifest's own text is shown");
}

#[test]
fn stdin_and_directories_are_inputs() {
    let seed = std::fs::read_to_string(repo().join("examples/seed-scaledjob.yaml")).expect("seed");
    jobtide()
        .args(["validate", "-f", "-"])
        .write_stdin(seed)
        .assert()
        .code(0);
    let output = jobtide()
        .args(["validate", "-f", "examples", "-o", "json"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0));
    assert!(
        !json_of(&output.stdout)["scaledJobs"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
}

#[test]
fn unreadable_or_malformed_input_exits_2() {
    let output = jobtide()
        .args(["validate", "-f", &fixture("malformed.yaml")])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("malformed.yaml: document 1 (line 1): not valid YAML"),
        "{stderr}"
    );

    let output = jobtide()
        .args(["validate", "-f", "does/not/exist.yaml"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("reading does/not/exist.yaml"));
}

#[test]
fn crd_prints_three_structural_crds_and_check_passes_on_the_committed_files() {
    let output = jobtide().arg("crd").output().expect("run");
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.matches("kind: CustomResourceDefinition").count(), 3);
    assert!(text.contains("name: scaledjobs.keda.sh"));
    jobtide()
        .args(["crd", "--check", "deploy/crds"])
        .assert()
        .code(0);
}

#[test]
fn crd_check_fails_on_drift() {
    let dir = std::env::temp_dir().join(format!("jobtide-crd-drift-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    jobtide()
        .args(["crd", "--output-dir"])
        .arg(&dir)
        .assert()
        .code(0);
    let file = dir.join("keda.sh_scaledjobs.yaml");
    let content = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, content.replace("minimum: 1.0", "minimum: 2.0")).expect("write");
    jobtide()
        .args(["crd", "--check"])
        .arg(&dir)
        .assert()
        .code(1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_in_secret_documents_never_echo_their_data() {
    let broken_yaml = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  password: \"hunter2-unclosed\n";
    let output = jobtide()
        .args(["validate", "-f", "-"])
        .write_stdin(broken_yaml)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        all.contains("-: document 1 (line 1): not valid YAML: line 6"),
        "{all}"
    );
    assert!(!all.contains("hunter2"), "{all}");

    let bad_base64 =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  password: hunter2!!\n";
    let output = jobtide()
        .args(["validate", "-f", "-"])
        .write_stdin(bad_base64)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        all.contains("Secret default/s: data.password: invalid value (not shown"),
        "{all}"
    );
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn a_pending_budget_that_is_not_a_count_is_an_error_naming_the_annotation() {
    let seed = std::fs::read_to_string(repo().join("examples/seed-scaledjob.yaml")).expect("seed");
    let dir = tempfile::tempdir().expect("tempdir");
    for (value, invalid) in [("\"many\"", true), ("\"-1\"", true), ("\"3\"", false)] {
        let manifest = seed.replacen(
            "metadata:\n",
            &format!("metadata:\n  annotations:\n    jobtide.io/pending-budget: {value}\n"),
            1,
        );
        let path = dir.path().join("budget.yaml");
        std::fs::write(&path, manifest).expect("write");
        let output = jobtide()
            .args(["validate", "-f"])
            .arg(&path)
            .args(["-o", "json"])
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            text.contains("jobtide.io/pending-budget"),
            invalid,
            "{value}: {text}"
        );
        // An error: validate fails (exit 1), as the operator stops such a ScaledJob.
        assert_eq!(
            output.status.code(),
            Some(i32::from(invalid)),
            "{value}: {text}"
        );
        if invalid {
            let report: Value = serde_json::from_str(&text).expect("json");
            assert!(
                report.to_string().contains("is not a non-negative integer"),
                "{value}: {text}"
            );
        }
    }
}
