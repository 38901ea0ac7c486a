//! A running `jobtide dev` for the CLI's end-to-end tests (the real binary as a process).

#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobtide_api::ScaledJob;
use k8s_openapi::api::batch::v1::Job;
use kube::Client;

/// A running `jobtide dev`, stopped with SIGTERM on drop.
pub struct Dev {
    child: Option<Child>,
    pub api: String,
    pub kafka: String,
    /// `http://…/metrics`.
    pub metrics: String,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn start_dev(extra: &[&str]) -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
        .args([
            "dev",
            "--api-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--kubeconfig-out",
        ])
        .arg(&kubeconfig)
        .args(extra)
        .env("JOBTIDE_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut api, mut kafka, mut metrics) = (String::new(), String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        eprintln!("dev: {line}");
        if let Some(rest) = line.strip_prefix("api-server: ") {
            rest.clone_into(&mut api);
        }
        if let Some(rest) = line.strip_prefix("kafka: ") {
            rest.split_whitespace()
                .next()
                .unwrap()
                .clone_into(&mut kafka);
        }
        if let Some(rest) = line.strip_prefix("metrics: ") {
            rest.clone_into(&mut metrics);
            break;
        }
    }
    assert!(
        !api.is_empty() && !kafka.is_empty(),
        "dev printed no addresses"
    );
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Dev {
        child: Some(child),
        api,
        kafka,
        metrics,
        kubeconfig,
        _dir: dir,
    }
}

impl Dev {
    pub fn client(&self) -> Client {
        Client::try_from(kube::Config::new(self.api.parse().unwrap())).unwrap()
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "jobtide dev did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Option<String> {
        let binary = super::kubectl()?;
        let output = Command::new(binary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(stdout)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

pub async fn eventually<T>(
    what: &str,
    seconds: u64,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The example ScaledJob of the walkthrough (`examples/dev-scaledjob.yaml`).
pub fn example() -> ScaledJob {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dev-scaledjob.yaml"),
    )
    .unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// Whether `job` completed.
pub fn completed(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Complete" && c.status == "True")
}
