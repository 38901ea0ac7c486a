//! The operator at scale: `jobtide operator` as its own process against the embedded API server
//! (in this process) holding N ScaledJobs on librdkafka's mock cluster, every ScaledJob polling
//! every 30 s. Measures the operator process alone (from /proc): RSS, CPU seconds per poll round
//! (one pollingInterval), and reconcile latency from its own `/metrics` histogram.
//!
//! `cargo bench -p jobtide-cli --bench operator_scale` — environment: `BENCH_SCALED_JOBS` (1000),
//! `BENCH_GROUPS` (scaled jobs / 10), `BENCH_TOPICS` (10), `BENCH_PARTITIONS` (10),
//! `BENCH_ROUNDS` (2), `BENCH_INTERVAL` (30).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // a benchmark program

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jobtide_api::ScaledJob;
use jobtide_devcluster::DevCluster;
use jobtide_kafka::ffi::MockKafka;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (RSS KiB, CPU seconds) of a process.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the command.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, ticks as f64 / 100.0)
}

/// The p50 and p99 of a Prometheus histogram's `ok` series, from cumulative buckets.
fn quantiles(metrics: &str) -> (f64, f64, u64) {
    let mut buckets: Vec<(f64, u64)> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("jobtide_reconcile_duration_seconds_bucket{")
                && l.contains("result=\"ok\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                },
                count,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0, |b| b.1);
    let at = |q: f64| {
        let rank = (q * total as f64).ceil() as u64;
        buckets
            .iter()
            .find(|(_, c)| *c >= rank)
            .map_or(f64::NAN, |(le, _)| *le)
    };
    (at(0.5), at(0.99), total)
}

async fn get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let scaled_jobs = env("BENCH_SCALED_JOBS", 1000);
    let groups = env("BENCH_GROUPS", (scaled_jobs / 10).max(1));
    let topics = env("BENCH_TOPICS", 10);
    let partitions = env("BENCH_PARTITIONS", 10);
    let rounds = env("BENCH_ROUNDS", 2);
    let interval = env("BENCH_INTERVAL", 30);

    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jobtide_api::crd::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let kafka = MockKafka::start(3).unwrap();
    for t in 0..topics {
        kafka
            .create_topic(&format!("topic-{t}"), i32::try_from(partitions).unwrap())
            .unwrap();
    }
    // Some lag on every topic (nobody commits): every trigger is active; maxReplicaCount 1 gives
    // each ScaledJob one Job, which never runs (no runner here) and so caps creation there.
    for t in 0..topics {
        let records: Vec<_> = (0..partitions * 2)
            .map(|i| (Some(i.to_string()), format!("m{i}")))
            .collect();
        jobtide_kafka::tools::produce(
            &kafka.bootstrap_servers(),
            &format!("topic-{t}"),
            &records,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    let api: Api<ScaledJob> = Api::namespaced(client.clone(), "default");
    let servers = kafka.bootstrap_servers();
    let created = Instant::now();
    futures::stream::iter(0..scaled_jobs)
        .for_each_concurrent(32, |i| {
            let api = api.clone();
            let servers = servers.clone();
            async move {
                let sj: ScaledJob = serde_json::from_value(json!({
                    "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
                    "metadata": {"name": format!("sj-{i}"), "namespace": "default"},
                    "spec": {
                        "jobTargetRef": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                            {"name": "main", "image": "busybox", "command": ["true"]}]}}},
                        "pollingInterval": interval, "maxReplicaCount": 1,
                        "triggers": [{"type": "kafka", "metadata": {"bootstrapServers": servers,
                            "consumerGroup": format!("group-{}", i % groups), "topic": format!("topic-{}", i % topics),
                            "lagThreshold": "5", "offsetResetPolicy": "earliest"}}],
                    },
                }))
                .unwrap();
                api.create(&PostParams::default(), &sj).await.unwrap();
            }
        })
        .await;
    eprintln!(
        "created {scaled_jobs} ScaledJobs in {:.1} s",
        created.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig()).unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let started = Instant::now();
    let mut operator = Command::new(env!("CARGO_BIN_EXE_jobtide"))
        .args(["operator", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--metrics-bind-address", &metrics_addr])
        .args(["--health-probe-bind-address", "127.0.0.1:0"])
        .args(["--kube-api-qps", "0", "--log-level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = operator.id();

    // Wait until every ScaledJob has been polled once (Active condition True).
    loop {
        let listed = api.list(&ListParams::default()).await.unwrap();
        let polled = listed
            .items
            .iter()
            .filter(|sj| {
                sj.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Active" && c.status == "True"))
            })
            .count();
        if polled == scaled_jobs {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_mins(10),
            "only {polled} of {scaled_jobs} ScaledJobs polled after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first_round = started.elapsed();
    let (_, cpu_start) = usage(pid);
    let window = Instant::now();
    let mut peak_rss = 0;
    while window.elapsed() < Duration::from_secs((interval * rounds) as u64) {
        peak_rss = peak_rss.max(usage(pid).0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (rss, cpu_end) = usage(pid);
    let metrics = get(&metrics_addr, "/metrics").await;
    let (p50, p99, reconciles) = quantiles(&metrics);
    let requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("jobtide_kafka_requests_total"))
        .collect();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = operator.wait();

    println!(
        "operator_scale: {scaled_jobs} ScaledJobs, {groups} groups, {topics} topics x {partitions} partitions, pollingInterval {interval} s"
    );
    println!(
        "  start to every ScaledJob polled once: {:.1} s",
        first_round.as_secs_f64()
    );
    println!(
        "  CPU per poll round ({rounds} rounds): {:.2} s",
        (cpu_end - cpu_start) / rounds as f64
    );
    println!(
        "  RSS: {:.1} MiB at the end, {:.1} MiB peak",
        rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    println!(
        "  reconcile latency (histogram bucket upper bounds): p50 <= {p50} s, p99 <= {p99} s over {reconciles} reconciles"
    );
    for line in requests {
        println!("  {line}");
    }
}
