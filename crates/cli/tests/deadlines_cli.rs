//! Every network call of every command ends: `--timeout` bounds `jobtide explain`'s calls to the
//! Kafka cluster and to the Kubernetes API, and a timeout that can't be a deadline is refused
//! (issue 18).

#![allow(clippy::unwrap_used)] // test code

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;

fn jobtide() -> Command {
    let mut command = Command::cargo_bin("jobtide").unwrap();
    command.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    command
}

#[test]
fn explain_gives_up_on_a_server_that_never_answers_after_its_timeout() {
    // A server that accepts connections and never writes a byte.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let server = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .args(["explain", "--server", &server, "--timeout", "3"])
        .args(["-f", "examples/seed-scaledjob.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A bounded wait: a hang fails the test instead of hanging it.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`jobtide explain --server {server} --timeout 3` still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    let output = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !status.success(),
        "a cluster that can't be read is a failure: {printed}"
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "gave up after {elapsed:?}, not about --timeout 3 s (measurement, then the cluster)"
    );
    assert!(
        printed.contains(&server) && printed.contains("timed out"),
        "the message names the server and the timeout: {printed}"
    );
}

#[test]
fn a_timeout_that_cannot_be_a_deadline_is_refused_naming_the_flag() {
    for args in [
        vec!["explain", "-f", "examples/seed-scaledjob.yaml"],
        vec![
            "kafka",
            "consume",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--group",
            "g",
        ],
        vec![
            "kafka",
            "produce",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--value",
            "v",
        ],
        vec![
            "kafka",
            "topic",
            "create",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "t",
        ],
    ] {
        for timeout in ["18446744073709551615", "86401", "0"] {
            let output = jobtide()
                .args(&args)
                .args(["--timeout", timeout])
                .timeout(Duration::from_secs(30))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{args:?} --timeout {timeout}: {stderr}"
            );
            assert!(
                stderr.contains("--timeout"),
                "{args:?} --timeout {timeout}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}
