//! Sharded replicas at scale: R `jobtide operator --sharded` processes against the embedded API
//! server (in this process) holding N ScaledJobs on librdkafka's mock cluster, every ScaledJob
//! polling every 30 s. Measures each replica alone (from /proc and its own `/metrics`): its share
//! of the ScaledJobs, RSS, CPU seconds per poll round and polls per round — the per-replica cost
//! and how evenly the work divides. Run it with `BENCH_REPLICAS=1` for the one-replica baseline
//! on the same setup.
//!
//! `cargo bench -p jobtide-cli --bench operator_shards` — environment: `BENCH_REPLICAS` (3),
//! `BENCH_SCALED_JOBS` (1000), `BENCH_GROUPS` (scaled jobs / 10), `BENCH_TOPICS` (10),
//! `BENCH_PARTITIONS` (10), `BENCH_ROUNDS` (2), `BENCH_INTERVAL` (30).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // a benchmark program

use std::process::{Child, Command, Stdio};
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

/// The sum of every sample of `name` (all its label sets).
fn total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Replica {
    name: String,
    child: Child,
    metrics: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let replicas = env("BENCH_REPLICAS", 3);
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

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig()).unwrap();
    let started = Instant::now();
    let mut running: Vec<Replica> = (0..replicas)
        .map(|r| {
            let name = format!("replica-{r}");
            let metrics = format!("127.0.0.1:{}", free_port());
            let child = Command::new(env!("CARGO_BIN_EXE_jobtide"))
                .args(["operator", "--sharded", "--kubeconfig"])
                .arg(&kubeconfig)
                .args(["--metrics-bind-address", &metrics])
                .args(["--health-probe-bind-address", "127.0.0.1:0"])
                .args(["--leader-election-namespace", "default"])
                .args(["--kube-api-qps", "0", "--log-level", "warn"])
                .env("POD_NAME", &name)
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            Replica {
                name,
                child,
                metrics,
            }
        })
        .collect();

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
    let mut before = Vec::new();
    for replica in &running {
        let metrics = get(&replica.metrics, "/metrics").await;
        before.push((
            usage(replica.child.id()).1,
            total(&metrics, "jobtide_polls_total"),
        ));
    }
    let window = Instant::now();
    let mut peak = vec![0; running.len()];
    while window.elapsed() < Duration::from_secs((interval * rounds) as u64) {
        for (peak, replica) in peak.iter_mut().zip(&running) {
            *peak = (*peak).max(usage(replica.child.id()).0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "operator_shards: {replicas} replicas (--sharded), {scaled_jobs} ScaledJobs, {groups} groups, {topics} topics x {partitions} partitions, pollingInterval {interval} s"
    );
    println!(
        "  start to every ScaledJob polled once: {:.1} s",
        first_round.as_secs_f64()
    );
    for ((replica, (cpu_before, polls_before)), peak) in running.iter().zip(before).zip(peak) {
        let (rss, cpu) = usage(replica.child.id());
        let metrics = get(&replica.metrics, "/metrics").await;
        let owned = total(&metrics, "jobtide_owned_scaled_jobs");
        let members = total(&metrics, "jobtide_shard_members");
        let polls = total(&metrics, "jobtide_polls_total") - polls_before;
        println!(
            "  {}: owns {owned} ScaledJobs (of {members} members), {:.0} polls and {:.2} s CPU per round, RSS {:.1} MiB at the end ({:.1} MiB peak)",
            replica.name,
            polls / rounds as f64,
            (cpu - cpu_before) / rounds as f64,
            rss as f64 / 1024.0,
            peak as f64 / 1024.0,
        );
    }
    for replica in &mut running {
        let _ = Command::new("kill")
            .args(["-TERM", &replica.child.id().to_string()])
            .status();
        let _ = replica.child.wait();
    }
}
