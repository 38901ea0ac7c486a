//! Hostile and bad input to `jobtide validate`, `jobtide explain` and `jobtide kafka …`, run as a
//! user runs them: the built binary, its exit code, its output (issue 18).

#![allow(clippy::expect_used)] // test helpers outside #[test] fns: a failure is the test failing

use std::fmt::Write as _;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

fn jobtide() -> Command {
    let mut command = Command::cargo_bin("jobtide").expect("the jobtide binary");
    command.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    // A hang fails the test instead of hanging it.
    command.timeout(Duration::from_mins(1));
    command
}

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
}

#[test]
fn a_fifo_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let fifo = dir.path().join("manifest.yaml");
    mkfifo(&fifo);
    for command in ["validate", "explain"] {
        // Given directly, and found in a directory.
        for input in [fifo.as_path(), dir.path()] {
            let output = jobtide()
                .args([command, "-f"])
                .arg(input)
                .output()
                .expect("run");
            let printed = printed(&output);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{command} {input:?}: {printed}"
            );
            assert!(
                printed.contains(&format!(
                    "reading {}: not a regular file (a FIFO); give - to read stdin",
                    fifo.display()
                )),
                "{command} {input:?}: {printed}"
            );
        }
    }
}

/// A ScaledJob whose names hold control characters and whose trigger can't be measured (no
/// bootstrapServers): `explain` prints it without touching the network.
const HOSTILE: &str = "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata:\n  name: \"sj\\e[2K\\rforged\"\n  namespace: \"ns\\nx\"\nspec:\n  jobTargetRef:\n    template:\n      spec:\n        containers:\n          - name: main\n            image: busybox\n  triggers:\n    - type: \"kafka\\r\"\n      metadata:\n        topic: \"t\\u001b\"\n        consumerGroup: g\n";

#[test]
fn names_with_control_characters_are_escaped_in_text_output() {
    for command in ["validate", "explain"] {
        let output = jobtide()
            .args([command, "-f", "-"])
            .write_stdin(HOSTILE)
            .output()
            .expect("run");
        let printed = printed(&output);
        assert_eq!(output.status.code(), Some(1), "{command}: {printed}");
        for line in printed.lines() {
            assert!(
                !line.chars().any(char::is_control),
                "{command}: a raw control character in {line:?}"
            );
        }
        assert!(
            printed.contains("ScaledJob ns\\nx/sj\\u{1b}[2K\\rforged"),
            "{command}: {printed}"
        );
        assert!(
            printed.contains("trigger 0 (kafka\\r)"),
            "{command}: {printed}"
        );
    }
}

#[test]
fn explain_json_shows_null_for_measurements_that_did_not_happen() {
    let output = jobtide()
        .args(["explain", "-o", "json", "-f", "-"])
        .write_stdin(HOSTILE)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let trigger = &report["scaledJobs"][0]["triggers"][0];
    assert!(trigger["error"].is_string(), "{trigger}");
    for field in ["totalLag", "metricValue", "active", "jobsWanted"] {
        assert_eq!(trigger[field], Value::Null, "{field}: {trigger}");
    }
    assert_eq!(trigger["partitions"], Value::Array(Vec::new()));
}

/// A port nothing listens on: bound, then closed.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A ScaledJob with `count` triggers on `servers`, each on its own topic.
fn triggers_on(servers: &str, count: usize) -> String {
    let mut text = String::from(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata:\n  name: many\nspec:\n  jobTargetRef:\n    template:\n      spec:\n        containers:\n          - name: main\n            image: busybox\n  triggers:\n",
    );
    for i in 0..count {
        let _ = write!(
            text,
            "    - type: kafka\n      metadata:\n        bootstrapServers: {servers}\n        consumerGroup: g\n        topic: topic-{i}\n"
        );
    }
    text
}

fn explain_json(manifest: &str, timeout: &str) -> (Value, Duration, String) {
    let started = Instant::now();
    let output = jobtide()
        .args(["explain", "-o", "json", "--timeout", timeout, "-f", "-"])
        .write_stdin(manifest.to_owned())
        .output()
        .expect("run");
    let elapsed = started.elapsed();
    let printed = printed(&output);
    assert_eq!(output.status.code(), Some(1), "{printed}");
    (
        serde_json::from_slice(&output.stdout).expect("JSON"),
        elapsed,
        printed,
    )
}

fn trigger_errors(report: &Value) -> Vec<(u64, String)> {
    report["scaledJobs"][0]["triggers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["index"].as_u64().unwrap_or(u64::MAX),
                t["error"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn explain_measures_triggers_concurrently_and_keeps_their_order() {
    let servers = format!("127.0.0.1:{}", closed_port());
    let (report, elapsed, printed) = explain_json(&triggers_on(&servers, 20), "2");
    // One after another, 20 triggers × 2 s would take 40 s.
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?}: {printed}"
    );
    let errors = trigger_errors(&report);
    assert_eq!(
        errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert!(errors.iter().all(|(_, e)| !e.is_empty()), "{errors:#?}");
}

#[test]
fn explain_says_when_the_connection_is_refused() {
    let servers = format!("127.0.0.1:{}", closed_port());
    let (report, _, printed) = explain_json(&triggers_on(&servers, 1), "3");
    let errors = trigger_errors(&report);
    assert!(errors[0].1.contains("connection refused"), "{printed}");
    assert!(!errors[0].1.contains("timed out"), "{printed}");
}

#[test]
fn explain_says_when_the_server_is_not_a_kafka_broker() {
    use std::io::{Read, Write};
    // Answers every connection with an HTTP error page, whatever it was sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buffer = [0_u8; 1024];
                let _ = stream.read(&mut buffer);
                let _ = stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\nbad request",
                );
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    let (report, _, printed) = explain_json(&triggers_on(&format!("127.0.0.1:{port}"), 1), "3");
    let errors = trigger_errors(&report);
    assert!(errors[0].1.contains("not a Kafka broker"), "{printed}");
    assert!(!errors[0].1.contains("timed out"), "{printed}");
}

#[test]
fn explain_says_timed_out_when_the_cluster_never_answers() {
    // Accepts connections and never writes a byte.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let (report, _, printed) = explain_json(&triggers_on(&format!("127.0.0.1:{port}"), 1), "2");
    let errors = trigger_errors(&report);
    assert!(errors[0].1.contains("timed out"), "{printed}");
}

#[test]
fn empty_kafka_tool_values_are_refused_naming_the_flag() {
    let servers = format!("127.0.0.1:{}", closed_port());
    let cases: [(&[&str], &str); 5] = [
        (&["produce", "--topic", ""], "--topic"),
        (
            &["produce", "--topic", "t", "--key-separator", ""],
            "--key-separator",
        ),
        (&["consume", "--topic", "", "--group", "g"], "--topic"),
        (&["consume", "--topic", "t", "--group", ""], "--group"),
        (&["topic", "create", ""], "<NAME>"),
    ];
    for (args, flag) in cases {
        let output = jobtide()
            .arg("kafka")
            .args(args)
            .args(["--bootstrap-servers", &servers, "--timeout", "2"])
            .write_stdin("k:v\n")
            .output()
            .expect("run");
        let printed = printed(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {printed}");
        assert!(
            printed.contains(flag) && printed.contains("a value is required"),
            "{args:?}: {printed}"
        );
    }
}

#[test]
fn kafka_commands_against_a_dead_broker_honour_their_timeout() {
    let servers = format!("127.0.0.1:{}", closed_port());
    let began = Instant::now();
    let output = jobtide()
        .args([
            "kafka",
            "consume",
            "--bootstrap-servers",
            &servers,
            "--topic",
            "t",
        ])
        .args(["--group", "g", "--max-messages", "1", "--timeout", "3"])
        .timeout(Duration::from_mins(1))
        .output()
        .expect("run");
    let took = began.elapsed();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        took >= Duration::from_millis(2500),
        "consume waits out its --timeout against a broker that is down: {took:?}"
    );
    let began = Instant::now();
    let output = jobtide()
        .args([
            "kafka",
            "topic",
            "create",
            "--bootstrap-servers",
            &servers,
            "t",
        ])
        .args(["--partitions", "1", "--timeout", "3"])
        .timeout(Duration::from_mins(1))
        .output()
        .expect("run");
    let took = began.elapsed();
    assert_ne!(output.status.code(), Some(0), "{output:?}");
    assert!(
        took < Duration::from_secs(20),
        "topic create gives up near its --timeout, not after the admin client's minute: {took:?}"
    );
}
