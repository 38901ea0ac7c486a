//! What tracing costs the operator in dispatch mode: its CPU seconds per 1,000 dispatched
//! messages, traces off vs on (`OTEL_TRACES_EXPORTER=otlp` to a real OpenTelemetry Collector,
//! `JOBTIDE_OTELCOL`, writing to a file).
//!
//! Each run, once off and once on (alternating which goes first), on a fresh `jobtide dev
//! --no-operator` (embedded API server, runner, broker) and a fresh `jobtide operator`:
//! `BENCH_MESSAGES` messages (with a `traceparent` header) on one partition, Jobs that run `true`
//! (`maxReplicaCount` 20, dev's `--max-parallel-pods 8`), measured from the first produce to the
//! ScaledJob's status showing every offset committed (every Job finished, every span emitted):
//! the wall time, and the operator process's CPU seconds (user + system, /proc) until then plus
//! its shutdown (SIGTERM), which exports the spans still batched — so every span's export is
//! counted.
//!
//! `cargo bench -p jobtide-cli --bench dispatch_tracing` — environment: `BENCH_RUNS` (3),
//! `BENCH_MESSAGES` (1000), `JOBTIDE_OTELCOL` (required: scripts/install-otelcol prints it).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss
)] // a benchmark program

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobtide_api::ScaledJob;
use kube::api::PostParams;
use kube::{Api, Client};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process, SIGTERMed (then waited for) on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    let began = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{what} did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The state letter and CPU seconds (user + system) of a process, from `/proc/PID/stat`.
fn stat(pid: u32) -> (char, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // state, utime and stime are fields 3, 14 and 15 (1-based), i.e. 0, 11 and 12 after the
    // command.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (fields[0].chars().next().unwrap(), ticks as f64 / 100.0)
}

/// CPU seconds (user + system) of a running process.
fn cpu_seconds(pid: u32) -> f64 {
    stat(pid).1
}

/// SIGTERMs the operator and waits for it to exit, so that the spans still batched are
/// exported (traces on) and counted; its CPU seconds then, read while it is a zombie (exited,
/// not yet reaped: /proc still holds its final times).
fn stop_and_cpu_seconds(pid: u32) -> f64 {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let began = Instant::now();
    loop {
        let (state, cpu) = stat(pid);
        if state == 'Z' {
            return cpu;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the operator did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_collector(binary: &str, dir: &Path) -> (Process, u16) {
    let port = free_port();
    let config = dir.join("otelcol.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n\
             exporters:\n  file:\n    path: {}\n\
             service:\n  telemetry:\n    metrics:\n      level: none\n\
             \x20 pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
            serde_json::to_string(&dir.join("spans.jsonl").display().to_string()).unwrap()
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("otelcol.log")).unwrap())
        .spawn()
        .unwrap();
    wait_listening(port, "the collector");
    (Process(child), port)
}

/// `jobtide dev --no-operator`: the process, its Kafka and its kubeconfig.
fn start_dev(dir: &Path) -> (Process, String, std::path::PathBuf) {
    let out = dir.join("dev.out");
    let kubeconfig = dir.join("kubeconfig");
    let child = Command::new(env!("CARGO_BIN_EXE_jobtide"))
        .args(["dev", "--no-operator", "--api-addr", "127.0.0.1:0"])
        .args([
            "--kafka-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--max-parallel-pods", "8", "--create-topic", "orders:1"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.join("dev.log")).unwrap())
        .spawn()
        .unwrap();
    let process = Process(child);
    let began = Instant::now();
    let printed = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains("Ctrl-C stops everything.") {
            break text;
        }
        assert!(began.elapsed() < Duration::from_mins(1), "dev: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let kafka = printed
        .lines()
        .find_map(|l| l.strip_prefix("kafka: "))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .to_owned();
    (process, kafka, kubeconfig)
}

/// One measured dispatch of `messages`: (operator CPU seconds, wall seconds).
async fn run(dir: &Path, messages: usize, traced: Option<&str>) -> (f64, f64) {
    let (_collector, port) = match traced {
        Some(binary) => {
            let (process, port) = start_collector(binary, dir);
            (Some(process), port)
        }
        None => (None, 0),
    };
    let (_dev, kafka, kubeconfig) = start_dev(dir);
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut operator = Command::new(env!("CARGO_BIN_EXE_jobtide"));
    operator
        .args(["operator", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--bootstrap-servers-override",
            &kafka,
            "--kube-api-qps",
            "0",
        ])
        .args(["--metrics-bind-address", "127.0.0.1:0"])
        .args(["--health-probe-bind-address", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("operator.log")).unwrap());
    if traced.is_some() {
        operator
            .env("OTEL_TRACES_EXPORTER", "otlp")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    }
    let operator = Process(operator.spawn().unwrap());
    let pid = operator.0.id();
    let client = Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let scaled_jobs: Api<ScaledJob> = Api::namespaced(client, "default");
    let scaled_job: ScaledJob = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "orders", "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "worker", "image": "busybox", "command": ["true"]}]}}},
            "maxReplicaCount": 20, "successfulJobsHistoryLimit": 10, "failedJobsHistoryLimit": 10,
            "triggers": [{"type": "kafka-dispatch", "metadata": {
                "bootstrapServers": "kafka.invalid:9092", "consumerGroup": "orders-dispatch",
                "topic": "orders", "offsetResetPolicy": "earliest", "payload": "none"}}],
        },
    }))
    .unwrap();
    scaled_jobs
        .create(&PostParams::default(), &scaled_job)
        .await
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let cpu_before = cpu_seconds(pid);
    let began = Instant::now();
    let values: Vec<String> = (0..messages).map(|i| format!("m{i}")).collect();
    let sends: Vec<_> = values
        .iter()
        .map(|value| {
            let headers = OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some(TRACEPARENT),
            });
            producer.send(
                FutureRecord::<str, str>::to("orders")
                    .payload(value)
                    .headers(headers),
                Duration::from_mins(1),
            )
        })
        .collect();
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|(e, _)| e).unwrap();
    }
    let want = i64::try_from(messages).unwrap();
    loop {
        let status = scaled_jobs.get("orders").await.unwrap();
        let committed =
            serde_json::to_value(&status).unwrap()["status"]["dispatch"]["committed"]["0"].as_i64();
        if committed == Some(want) {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_mins(20),
            "committed {committed:?} of {messages}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wall = began.elapsed().as_secs_f64();
    let result = (stop_and_cpu_seconds(pid) - cpu_before, wall);
    drop(operator);
    result
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs = env("BENCH_RUNS", 3);
    let messages = env("BENCH_MESSAGES", 1000);
    let Ok(collector) = std::env::var("JOBTIDE_OTELCOL") else {
        eprintln!(
            "dispatch_tracing: JOBTIDE_OTELCOL is not set (scripts/install-otelcol prints it)"
        );
        return;
    };
    let per_thousand = |cpu: f64| cpu * 1000.0 / messages as f64;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut off_wall, mut on_wall) = (Vec::new(), Vec::new());
    for round in 0..runs {
        for traced in [round % 2 == 1, round % 2 == 0] {
            let dir = tempfile::tempdir().unwrap();
            let (cpu, wall) = run(dir.path(), messages, traced.then_some(collector.as_str())).await;
            println!(
                "run {}/{runs} traces {}: operator {cpu:.2} CPU s ({:.2} per 1,000 messages), {wall:.1} s",
                round + 1,
                if traced { "on " } else { "off" },
                per_thousand(cpu)
            );
            if traced {
                on.push(per_thousand(cpu));
                on_wall.push(wall);
            } else {
                off.push(per_thousand(cpu));
                off_wall.push(wall);
            }
        }
    }
    let (off_cpu, on_cpu) = (median(&mut off), median(&mut on));
    println!(
        "dispatch_tracing: {messages} messages, {runs} runs each; median operator CPU s per 1,000 messages: traces off {off_cpu:.2}, on {on_cpu:.2} ({:+.0}%); wall s off {:.1}, on {:.1}",
        (on_cpu / off_cpu - 1.0) * 100.0,
        median(&mut off_wall),
        median(&mut on_wall)
    );
}
