//! `jobtide dev --otel`: the operator's spans with nothing to set up, to an OTLP JSON file or
//! through a real OpenTelemetry Collector (`JOBTIDE_OTELCOL`, `scripts/install-otelcol`; without
//! it that test skips with the reason, and fails under `CI=true`), and a clear error when the
//! collector is asked for but not installed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::path::Path;
use std::process::Command;

use common::dev::{eventually, start_dev};
use jobtide_api::ScaledJob;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

/// A lag-mode ScaledJob polling every second (each poll is a `poll` span).
async fn poll_something(dev: &common::dev::Dev) {
    let sj: ScaledJob = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "traced", "namespace": "default"},
        "spec": {
            "pollingInterval": 1,
            "jobTargetRef": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "worker", "image": "busybox", "command": ["true"]}]}}},
            "triggers": [{"type": "kafka", "metadata": {"bootstrapServers": "kafka.invalid:9092",
                "consumerGroup": "traced", "topic": "traced", "lagThreshold": "1"}}],
        },
    }))
    .unwrap();
    let api: Api<ScaledJob> = Api::namespaced(dev.client(), "default");
    api.create(&PostParams::default(), &sj).await.unwrap();
    // Polled at least twice: the ScaledJob's status was written by a poll.
    let client = reqwest_free_metrics(dev);
    eventually("two polls", 30, async || {
        let text = client();
        let polls: f64 = text
            .lines()
            .filter(|l| l.starts_with("jobtide_polls_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (polls >= 2.0).then_some(())
    })
    .await;
}

/// A function reading dev's `/metrics` (plain HTTP/1.0 over a socket).
fn reqwest_free_metrics(dev: &common::dev::Dev) -> impl Fn() -> String {
    use std::io::{Read as _, Write as _};
    let addr = dev
        .metrics
        .strip_prefix("http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .unwrap()
        .to_owned();
    move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }
}

/// The spans named `name` in an OTLP JSON lines file, with the resource's `service.name`.
fn spans_named(path: &Path, name: &str) -> Vec<(Value, Value)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut found = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let request: Value = serde_json::from_str(line).unwrap();
        for resource_spans in request["resourceSpans"].as_array().unwrap() {
            let service = resource_spans["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].clone())
                .unwrap_or_default();
            for scope in resource_spans["scopeSpans"].as_array().unwrap() {
                for span in scope["spans"].as_array().unwrap() {
                    if span["name"] == name {
                        found.push((service.clone(), span.clone()));
                    }
                }
            }
        }
    }
    found
}

fn assert_poll_spans(path: &Path) {
    let polls = spans_named(path, "poll");
    assert!(
        polls.len() >= 2,
        "{} poll spans in {}:\n{}",
        polls.len(),
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    let (service, span) = &polls[0];
    assert_eq!(service, "jobtide");
    assert_eq!(span["traceId"].as_str().unwrap().len(), 32, "{span}");
    let attributes = span["attributes"].to_string();
    assert!(
        attributes.contains("\"traced\""),
        "the poll names its ScaledJob: {span}"
    );
    assert!(
        !spans_named(path, "measure").is_empty(),
        "a poll's measure span is exported too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_file_writes_the_operators_spans_as_otlp_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spans.jsonl");
    let mut dev = start_dev(&[
        "--kafka-addr",
        "127.0.0.1:0",
        "--otel",
        &format!("file:{}", file.display()),
    ]);
    poll_something(&dev).await;
    assert!(dev.stop().success());
    assert_poll_spans(&file);
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_collector_runs_a_real_collector_that_writes_the_spans() {
    let Some(_) = std::env::var_os("JOBTIDE_OTELCOL") else {
        assert!(
            !jobtide_testpeers::under_ci(),
            "CI must set JOBTIDE_OTELCOL (scripts/install-otelcol)"
        );
        eprintln!("skipped: JOBTIDE_OTELCOL is not set (scripts/install-otelcol prints it)");
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let mut dev = start_dev(&[
        "--kafka-addr",
        "127.0.0.1:0",
        "--otel",
        "collector",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    poll_something(&dev).await;
    assert!(dev.stop().success());
    let spans = state.path().join("otel/spans.jsonl");
    assert_poll_spans(&spans);
    // The collector was stopped with dev.
    let log = std::fs::read_to_string(state.path().join("otel/otelcol.log")).unwrap();
    assert!(log.contains("Shutdown complete"), "{log}");
}

#[test]
fn otel_collector_without_a_collector_says_how_to_install_one() {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
        .args([
            "dev",
            "--api-addr",
            "127.0.0.1:0",
            "--kafka-addr",
            "127.0.0.1:0",
        ])
        .args(["--metrics-addr", "127.0.0.1:0", "--otel", "collector"])
        .env_remove("JOBTIDE_OTELCOL")
        .env_remove("XDG_STATE_HOME")
        .env("HOME", home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the OpenTelemetry Collector is not installed")
            && stderr.contains("scripts/install-otelcol")
            && stderr.contains("JOBTIDE_OTELCOL"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).is_empty(),
        "nothing started"
    );
}
