//! A burst of 200 messages on a cluster that has room for 4 Jobs and grows to 20 after 10 s
//! (issue 16's report), in this process: the embedded API server with the local runner (its node:
//! 4 pods), the simulated node pool (`min=0,max=4,cpu=4,memory=8Gi,pods=4,delay=10s`: up to 16
//! more pods, each node Ready 10 s after the scale-up decision), librdkafka's mock cluster (topic
//! of 20 partitions) and the operator, as `jobtide dev --max-parallel-pods 4 --node-pool …` runs
//! them. Every Job's pod requests 1 cpu; `maxReplicaCount` 20; history limits 300 (no Job is
//! deleted during a run); pending budget: the default.
//!
//! Modes (`BENCH_MODES`, comma-separated; default all three):
//! - `lag-default`, `lag-accurate`: a `kafka` trigger (`lagThreshold` 1) and the scaling strategy
//!   named; each Job runs `jobtide kafka consume --max-messages 1` in the trigger's group, then
//!   `sleep 2` (the work);
//! - `dispatch`: a `kafka-dispatch` trigger (`payload: none`); each Job runs `sleep 2`.
//!
//! Reports per run: Jobs created / messages, and the time from the ScaledJob's creation until 200
//! Jobs have succeeded (each succeeded Job consumed one message: every message's work is done),
//! plus the most Jobs waiting for capacity at once; then the median over `BENCH_RUNS` (3) runs.
//! A run that has not drained after `BENCH_TIMEOUT` seconds (600) is reported as such.
//!
//! `cargo bench -p jobtide-cli --bench capacity_burst`

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss
)] // a benchmark program

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobtide_api::ScaledJob;
use jobtide_controller::operator::{self, Leadership};
use jobtide_controller::{Config as OperatorConfig, Context};
use jobtide_devcluster::DevCluster;
use jobtide_devcluster::autoscaler::{Autoscaler, NodePool};
use jobtide_devcluster::runner::RunnerConfig;
use jobtide_kafka::ffi::MockKafka;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::json;

const MESSAGES: usize = 200;
const PARTITIONS: i32 = 20;
const POOL: &str = "min=0,max=4,cpu=4,memory=8Gi,pods=4,delay=10s";

struct Outcome {
    jobs: usize,
    succeeded: usize,
    drained: Option<Duration>,
    most_waiting: usize,
}

fn scaled_job(mode: &str, servers: &str) -> ScaledJob {
    let (trigger, script, strategy) = match mode {
        "dispatch" => (
            json!({"type": "kafka-dispatch", "metadata": {"bootstrapServers": servers,
                "consumerGroup": "burst-dispatch", "topic": "burst", "offsetResetPolicy": "earliest",
                "payload": "none"}}),
            "sleep 2".to_owned(),
            "default",
        ),
        lag => (
            json!({"type": "kafka", "metadata": {"bootstrapServers": servers, "consumerGroup": "burst",
                "topic": "burst", "lagThreshold": "1", "offsetResetPolicy": "earliest"}}),
            "jobtide kafka consume --topic burst --group burst --max-messages 1 --from-beginning >/dev/null && sleep 2".to_owned(),
            lag.strip_prefix("lag-").unwrap(),
        ),
    };
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "burst", "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["/bin/sh", "-c"],
                    "args": [script], "resources": {"requests": {"cpu": "1"}}}]}}},
            "pollingInterval": 1, "maxReplicaCount": 20,
            "successfulJobsHistoryLimit": 300, "failedJobsHistoryLimit": 300,
            "scalingStrategy": {"strategy": strategy},
            "triggers": [trigger],
        },
    }))
    .unwrap()
}

fn succeeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.succeeded)
        .is_some_and(|n| n > 0)
}

fn waiting(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

async fn run(mode: &str, timeout: Duration) -> Outcome {
    let jobtide = Path::new(env!("CARGO_BIN_EXE_jobtide"));
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("burst", PARTITIONS).unwrap();
    let volumes = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_runner(
        "127.0.0.1:0".parse().unwrap(),
        None,
        RunnerConfig {
            max_parallel_pods: 4,
            path_prepend: vec![jobtide.parent().unwrap().to_path_buf()],
            default_env: BTreeMap::from([(
                "JOBTIDE_BOOTSTRAP_SERVERS".to_owned(),
                kafka.bootstrap_servers(),
            )]),
            volumes_dir: Some(volumes.path().to_path_buf()),
        },
    )
    .await
    .unwrap();
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jobtide_api::crd::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let pool: NodePool = POOL.parse().unwrap();
    let autoscaler = Autoscaler::start(
        client.clone(),
        Arc::clone(cluster.runner.as_ref().unwrap()),
        pool,
        Duration::from_secs(1),
    );
    let records: Vec<_> = (0..MESSAGES)
        .map(|i| (Some(i.to_string()), format!("message-{i}")))
        .collect();
    jobtide_kafka::tools::produce(
        &kafka.bootstrap_servers(),
        "burst",
        &records,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let context = Arc::new(Context::new(
        client.clone(),
        OperatorConfig::new("bench", "capacity-burst"),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (health, task) = operator::spawn(Arc::clone(&context), Leadership::Always, async move {
        let _ = stopped.await;
    });
    while !health.is_ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let api: Api<ScaledJob> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    api.create(
        &PostParams::default(),
        &scaled_job(mode, &kafka.bootstrap_servers()),
    )
    .await
    .unwrap();
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut most_waiting = 0;
    let mut done;
    let drained = loop {
        let jobs = jobs_api.list(&ListParams::default()).await.unwrap().items;
        let pods = pods_api.list(&ListParams::default()).await.unwrap().items;
        most_waiting = most_waiting.max(pods.iter().filter(|p| waiting(p)).count());
        done = jobs.iter().filter(|j| succeeded(j)).count();
        if done >= MESSAGES {
            break Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Jobs the operator goes on creating shortly after the drain count too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = jobs_api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    eprintln!(
        "  nodes added by the pool: {}, autoscaler rounds: {}",
        autoscaler.nodes_added(),
        autoscaler.rounds()
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    drop(autoscaler);
    drop(cluster);
    drop(kafka);
    Outcome {
        jobs,
        succeeded: done,
        drained,
        most_waiting,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let timeout = Duration::from_secs(
        std::env::var("BENCH_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600),
    );
    let modes = std::env::var("BENCH_MODES")
        .unwrap_or_else(|_| "lag-default,lag-accurate,dispatch".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "capacity_burst: {MESSAGES} messages, {PARTITIONS} partitions, runner node 4 pods, pool {POOL}; load average at start: {}",
        load.trim()
    );
    println!(
        "| mode | Jobs / messages (median) | time to drain, s (median) | most pods waiting | runs (jobs, s) |"
    );
    println!("|---|---|---|---|---|");
    for mode in modes.split(',').map(str::trim) {
        let mut jobs = Vec::new();
        let mut times = Vec::new();
        let mut waiting = Vec::new();
        let mut each = Vec::new();
        for run_index in 0..runs {
            eprintln!("{mode}: run {}", run_index + 1);
            let outcome = runtime.block_on(run(mode, timeout));
            eprintln!(
                "{mode}: run {}: {} Jobs, {} succeeded, drained: {:?}, most pods waiting: {}",
                run_index + 1,
                outcome.jobs,
                outcome.succeeded,
                outcome.drained,
                outcome.most_waiting
            );
            jobs.push(outcome.jobs as f64);
            waiting.push(outcome.most_waiting as f64);
            match outcome.drained {
                Some(time) => {
                    times.push(time.as_secs_f64());
                    each.push(format!("{}, {:.1}", outcome.jobs, time.as_secs_f64()));
                }
                None => each.push(format!(
                    "{}, not drained in {} s",
                    outcome.jobs,
                    timeout.as_secs()
                )),
            }
        }
        let time = if times.len() == runs {
            format!("{:.1}", median(&mut times))
        } else {
            "not drained".to_owned()
        };
        println!(
            "| {mode} | {:.0} / {MESSAGES} = {:.2} | {time} | {:.0} | {} |",
            median(&mut jobs),
            median(&mut jobs.clone()) / MESSAGES as f64,
            median(&mut waiting),
            each.join("; ")
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
}
