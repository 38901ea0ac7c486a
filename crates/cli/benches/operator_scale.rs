//! The operator at scale: `jobtide operator` as its own process, at the default
//! `--kube-api-qps`/`--kube-api-burst`, against the embedded API server (in this process) holding
//! N ScaledJobs on librdkafka's mock cluster, every ScaledJob polling every 30 s. Measures the
//! operator process alone (from /proc): RSS, CPU seconds per poll round (one pollingInterval),
//! reconcile latency from its own `/metrics` histogram, and its API requests (the embedded
//! server's request log, by the operator's User-Agent) by verb and resource.
//!
//! Two modes (`BENCH_MODE`):
//! - `idle` (default): nothing to consume; half the ScaledJobs read a TriggerAuthentication of
//!   their own and its Secret, and each has `BENCH_JOBS` finished Jobs with one Succeeded pod
//!   each (kept by the history limits, so they stay in the operator's caches). Reports API
//!   requests per poll round after every ScaledJob has been polled once (the target is 0).
//! - `active`: every trigger has lag; `maxReplicaCount` 1 and no job runner, so each ScaledJob
//!   makes one Job. Reports API requests per created Job from the operator's start until every
//!   Job exists.
//!
//! `cargo bench -p jobtide-cli --bench operator_scale` — environment: `BENCH_MODE` (idle),
//! `BENCH_SCALED_JOBS` (1000), `BENCH_GROUPS` (scaled jobs / 10), `BENCH_TOPICS` (10),
//! `BENCH_PARTITIONS` (10), `BENCH_ROUNDS` (2), `BENCH_INTERVAL` (30), `BENCH_QPS` (the
//! operator's `--kube-api-qps`; unset: its default), `BENCH_START_MINUTES` (30: how long every
//! ScaledJob may take to be polled once), `BENCH_JOBS` (idle: finished Jobs per ScaledJob, 1),
//! `BENCH_OPERATOR` (the operator binary: this build's unless set, e.g. to an older build's
//! copy to compare), `BENCH_OPERATOR_WRAPPER` (a command line to run the operator under, e.g.
//! `env LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so
//! DUMP_HEAPTRACK_OUTPUT=/tmp/op.raw`: it must exec the operator; the operator is then
//! SIGKILLed at the end, so that the profile's "leaked" memory is what it held at rest).
//!
//! The embedded API server runs in this process and the operator in its own: RSS and CPU are
//! the operator's alone.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // a benchmark program

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jobtide_api::{ScaledJob, TriggerAuthentication};
use jobtide_devcluster::DevCluster;
use jobtide_kafka::ffi::MockKafka;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
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

/// The operator's requests in the log, by "verb resource", and their total.
fn operator_requests(cluster: &DevCluster) -> (BTreeMap<String, usize>, usize) {
    let mut by_kind = BTreeMap::new();
    let mut total = 0;
    for request in cluster.faults.requests() {
        if !request
            .user_agent
            .as_deref()
            .is_some_and(|a| a.starts_with("jobtide-operator"))
        {
            continue;
        }
        let resource = request.resource.as_deref().unwrap_or("-");
        *by_kind
            .entry(format!("{} {resource}", request.verb))
            .or_insert(0) += 1;
        total += 1;
    }
    (by_kind, total)
}

/// How many ScaledJobs show their first poll's status: Ready True, and Active True when
/// `active`.
async fn polled(api: &Api<ScaledJob>, active: bool) -> usize {
    let listed = api.list(&ListParams::default()).await.unwrap();
    listed
        .items
        .iter()
        .filter(|sj| {
            let conditions = sj.status.as_ref().and_then(|s| s.conditions.as_ref());
            let is = |type_: &str, status: &str| {
                conditions.is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == status))
            };
            is("Ready", "True") && is("Active", if active { "True" } else { "False" })
        })
        .count()
}

/// A finished Job of the ScaledJob `scaled_job` as the operator makes them (its labels, the
/// ScaledJob's template), Complete, with one Succeeded pod.
async fn finished_job(client: &Client, scaled_job: &str, index: usize) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = format!("{scaled_job}-done-{index}");
    let labels = json!({
        "scaledjob.keda.sh/name": scaled_job,
        "app.kubernetes.io/managed-by": "keda-operator",
        "app.kubernetes.io/name": scaled_job,
        "app.kubernetes.io/version": "bench",
        "app.kubernetes.io/part-of": scaled_job,
    });
    let container = json!({"name": "main", "image": "busybox", "command": ["true"],
        "env": [{"name": "KAFKA_TOPIC", "value": "topic"}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}});
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels,
            "annotations": {"scaledjob.keda.sh/generation": "1"}},
        "spec": {"template": {"metadata": {"labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [container]}}},
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let now = "2026-01-01T00:00:00Z";
    let status = json!({"status": {"startTime": now, "completionTime": now, "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True", "lastProbeTime": now,
            "lastTransitionTime": now}]}});
    jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-pod"), "labels": labels},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Succeeded", "startTime": now,
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted",
            "lastTransitionTime": now}],
        "containerStatuses": [{"name": "main", "image": "busybox", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": now, "finishedAt": now}}}]}});
    pods.patch_status(
        &format!("{name}-pod"),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let active = match std::env::var("BENCH_MODE").as_deref() {
        Ok("active") => true,
        Ok("idle") | Err(_) => false,
        Ok(other) => panic!("BENCH_MODE is idle or active, not {other}"),
    };
    let scaled_jobs = env("BENCH_SCALED_JOBS", 1000);
    let groups = env("BENCH_GROUPS", (scaled_jobs / 10).max(1));
    let topics = env("BENCH_TOPICS", 10);
    let partitions = env("BENCH_PARTITIONS", 10);
    let rounds = env("BENCH_ROUNDS", 2);
    let interval = env("BENCH_INTERVAL", 30);
    let jobs_per = if active { 0 } else { env("BENCH_JOBS", 1) };

    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    // Every request of the run stays in the log (80,000 at the start of 10,000 ScaledJobs).
    cluster.faults.set_request_log_capacity(4_000_000);
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
    // Active: some lag on every topic (nobody commits), so every trigger is active;
    // maxReplicaCount 1 gives each ScaledJob one Job, which never runs (no runner here) and so
    // caps creation there. Idle: empty topics.
    for t in (0..topics).filter(|_| active) {
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
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let tas: Api<TriggerAuthentication> = Api::namespaced(client.clone(), "default");
    let servers = kafka.bootstrap_servers();
    let created = Instant::now();
    futures::stream::iter(0..scaled_jobs)
        .for_each_concurrent(32, |i| {
            let (api, secrets, tas) = (api.clone(), secrets.clone(), tas.clone());
            let client = client.clone();
            let servers = servers.clone();
            async move {
                let mut sj: ScaledJob = serde_json::from_value(json!({
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
                // Half the ScaledJobs read a TriggerAuthentication of their own and its Secret.
                if i % 2 == 1 {
                    let secret: Secret = serde_json::from_value(json!({
                        "metadata": {"name": format!("creds-{i}")},
                        "stringData": {"tls": "disable"},
                    }))
                    .unwrap();
                    secrets.create(&PostParams::default(), &secret).await.unwrap();
                    let ta: TriggerAuthentication = serde_json::from_value(json!({
                        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
                        "metadata": {"name": format!("auth-{i}")},
                        "spec": {"secretTargetRef": [
                            {"parameter": "tls", "name": format!("creds-{i}"), "key": "tls"}]},
                    }))
                    .unwrap();
                    tas.create(&PostParams::default(), &ta).await.unwrap();
                    sj.spec.triggers[0].authentication_ref =
                        serde_json::from_value(json!({"name": format!("auth-{i}")})).unwrap();
                }
                api.create(&PostParams::default(), &sj).await.unwrap();
                for j in 0..jobs_per {
                    finished_job(&client, &format!("sj-{i}"), j).await;
                }
            }
        })
        .await;
    eprintln!(
        "created {scaled_jobs} ScaledJobs ({jobs_per} finished Jobs and pods each) in {:.1} s",
        created.elapsed().as_secs_f64()
    );
    cluster.faults.clear_requests();

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
    // The default --kube-api-qps 20 / --kube-api-burst 30 unless BENCH_QPS says otherwise.
    let qps = std::env::var("BENCH_QPS").ok();
    let binary = std::env::var("BENCH_OPERATOR")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_jobtide").to_owned());
    let wrapper = std::env::var("BENCH_OPERATOR_WRAPPER").unwrap_or_default();
    let profiled = !wrapper.trim().is_empty();
    let mut wrapper = wrapper.split_whitespace();
    let mut operator = match wrapper.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(wrapper).arg(&binary);
            command
        }
        None => Command::new(&binary),
    };
    operator
        .args(["operator", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--metrics-bind-address", &metrics_addr])
        .args(["--health-probe-bind-address", "127.0.0.1:0"])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null());
    if let Some(qps) = &qps {
        operator.args(["--kube-api-qps", qps]);
    }
    let mut operator = operator.spawn().unwrap();
    let pid = operator.id();

    // Wait until every ScaledJob has been polled once.
    let limit = Duration::from_mins(env("BENCH_START_MINUTES", 30) as u64);
    loop {
        let done = polled(&api, active).await;
        if done == scaled_jobs {
            break;
        }
        if started.elapsed() > limit {
            let (by_kind, total) = operator_requests(&cluster);
            eprintln!("after {limit:?}: {total} requests: {by_kind:#?}");
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            panic!("only {done} of {scaled_jobs} ScaledJobs polled after {limit:?}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let first_round = started.elapsed();
    let (start_requests, start_total) = operator_requests(&cluster);
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let jobs_created = jobs.list(&ListParams::default()).await.unwrap().items.len();
    // Idle: one round to settle (the first polls' status writes may still trail), then measure.
    if !active {
        tokio::time::sleep(Duration::from_secs(interval as u64)).await;
    }
    cluster.faults.clear_requests();
    let (_, cpu_start) = usage(pid);
    let window = Instant::now();
    let mut peak_rss = 0;
    while window.elapsed() < Duration::from_secs((interval * rounds) as u64) {
        peak_rss = peak_rss.max(usage(pid).0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (rss, cpu_end) = usage(pid);
    let (round_requests, round_total) = operator_requests(&cluster);
    let metrics = get(&metrics_addr, "/metrics").await;
    let (p50, p99, reconciles) = quantiles(&metrics);
    let kafka_requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("jobtide_kafka_requests_total"))
        .collect();
    // Under a profiler, SIGKILL: what is allocated then is what the operator holds at rest (a
    // graceful shutdown would free it first).
    let signal = if profiled { "-KILL" } else { "-TERM" };
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
    let _ = operator.wait();

    println!(
        "operator_scale ({}): {scaled_jobs} ScaledJobs ({} with a TriggerAuthentication and a Secret, {jobs_per} finished Jobs and pods each), {groups} groups, {topics} topics x {partitions} partitions, pollingInterval {interval} s, --kube-api-qps {}",
        if active { "active" } else { "idle" },
        scaled_jobs / 2,
        qps.as_deref().unwrap_or("20 (default)")
    );
    println!(
        "  start to every ScaledJob polled once: {:.1} s, {start_total} API requests",
        first_round.as_secs_f64()
    );
    if active {
        println!(
            "  Jobs created: {jobs_created}, API requests per created Job: {:.2}",
            start_total as f64 / jobs_created.max(1) as f64
        );
    }
    for (kind, count) in &start_requests {
        println!("    {kind}: {count}");
    }
    println!(
        "  API requests per poll round ({rounds} rounds): {:.1}",
        round_total as f64 / rounds as f64
    );
    for (kind, count) in &round_requests {
        println!("    {kind}: {count}");
    }
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
    for line in kafka_requests {
        println!("  {line}");
    }
}
