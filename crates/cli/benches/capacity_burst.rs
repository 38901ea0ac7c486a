//! A burst of 200 messages on a cluster that has room for 4 Jobs and grows to 20 after 10 s
//! (issue 16's report), in this process: the embedded API server with the local runner (its node:
//! 4 pods), the simulated node pool (`min=0,max=4,cpu=4,memory=8Gi,pods=4,delay=10s`: up to 16
//! more pods, each node Ready 10 s after the scale-up decision), librdkafka's mock cluster (topic
//! of 20 partitions) and the operator, as `jobtide dev --max-parallel-pods 4 --node-pool …` runs
//! them. Every Job's pod requests 1 cpu; `maxReplicaCount` 20; history limits 300 (no Job is
//! deleted while fewer than 300 have failed); pending budget: the default.
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
//! A run that has not drained after `BENCH_TIMEOUT` seconds (600) is reported as such, with the
//! group's lag left. Per run also (stderr and the last column): Jobs failed (in lag mode, a Job
//! whose consumer got no message within `jobtide kafka consume`'s 30 s fails), the crash-loop
//! guard's `CrashLoopBackOff` events, the group's lag at the end (lag modes), and the last line
//! of the first failed pod's log. The Jobs counted are those listed at the end: once more than
//! 300 have failed, history cleanup deletes the oldest failed ones, so a count above 300 is a
//! lower bound of the Jobs created.
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
use jobtide_api::resolve::TriggerInputs;
use jobtide_api::trigger::parse_trigger;
use jobtide_controller::operator::{self, Leadership};
use jobtide_controller::{Config as OperatorConfig, Context};
use jobtide_core::lag::PersistentLagMemory;
use jobtide_devcluster::DevCluster;
use jobtide_devcluster::autoscaler::{Autoscaler, NodePool};
use jobtide_devcluster::runner::RunnerConfig;
use jobtide_kafka::ffi::MockKafka;
use jobtide_kafka::scaler::measure_trigger;
use jobtide_kafka::source::SourcePool;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, LogParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::json;

const MESSAGES: usize = 200;
const PARTITIONS: i32 = 20;
const POOL: &str = "min=0,max=4,cpu=4,memory=8Gi,pods=4,delay=10s";

struct Outcome {
    jobs: usize,
    succeeded: usize,
    failed: usize,
    drained: Option<Duration>,
    most_waiting: usize,
    crash_loop_trips: i32,
    /// The trigger group's lag at the end (lag modes).
    lag_left: Option<i64>,
    first_failure: Option<String>,
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

fn failed(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.failed)
        .is_some_and(|n| n > 0)
}

/// The lag of the ScaledJob's `kafka` trigger, as the operator measures it (uncapped sum over
/// the partitions); `None` for dispatch or when the measurement fails.
async fn lag_left(scaled_job: &ScaledJob) -> Option<i64> {
    let trigger = &scaled_job.spec.triggers[0];
    if trigger.type_ != "kafka" {
        return None;
    }
    let config = parse_trigger(0, trigger, &TriggerInputs::default())
        .config
        .ok()?;
    let measured = measure_trigger(
        &SourcePool::new(),
        &config,
        None,
        &PersistentLagMemory::new(),
        Duration::from_secs(10),
    )
    .await
    .ok()?;
    Some(measured.partitions.iter().map(|p| p.lag).sum())
}

/// How many times the crash-loop guard tripped (its events, with their repeats).
async fn crash_loop_trips(client: &Client) -> i32 {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events.list(&ListParams::default()).await.map_or(0, |list| {
        list.items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("CrashLoopBackOff"))
            .map(|e| e.series.as_ref().map_or(1, |s| s.count))
            .sum()
    })
}

/// The last line of the log of the first failed Job's pod.
async fn first_failure(pods_api: &Api<Pod>, jobs: &[Job]) -> Option<String> {
    let job = jobs.iter().find(|j| failed(j))?;
    let name = job.metadata.name.as_deref()?;
    let pods = pods_api
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await
        .ok()?;
    let pod = pods.items.first()?.metadata.name.clone()?;
    let log = pods_api.logs(&pod, &LogParams::default()).await.ok()?;
    log.lines().last().map(str::to_owned)
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
    let manifest = scaled_job(mode, &kafka.bootstrap_servers());
    api.create(&PostParams::default(), &manifest).await.unwrap();
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut most_waiting = 0;
    let mut done;
    let mut reported = Instant::now();
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
        if reported.elapsed() >= Duration::from_secs(30) {
            reported = Instant::now();
            eprintln!(
                "  {:.0} s: {} Jobs, {done} succeeded, {} failed, lag {:?}",
                started.elapsed().as_secs_f64(),
                jobs.len(),
                jobs.iter().filter(|j| failed(j)).count(),
                lag_left(&manifest).await
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Jobs the operator goes on creating shortly after the drain count too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = jobs_api.list(&ListParams::default()).await.unwrap().items;
    let jobs = all.len();
    let failed_jobs = all.iter().filter(|j| failed(j)).count();
    let lag = lag_left(&manifest).await;
    let trips = crash_loop_trips(&client).await;
    let failure = first_failure(&pods_api, &all).await;
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
        failed: failed_jobs,
        drained,
        most_waiting,
        crash_loop_trips: trips,
        lag_left: lag,
        first_failure: failure,
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
                "{mode}: run {}: {} Jobs, {} succeeded, {} failed, drained: {:?}, most pods \
                 waiting: {}, CrashLoopBackOff: {}, lag left: {:?}, a failed pod's last line: {:?}",
                run_index + 1,
                outcome.jobs,
                outcome.succeeded,
                outcome.failed,
                outcome.drained,
                outcome.most_waiting,
                outcome.crash_loop_trips,
                outcome.lag_left,
                outcome.first_failure
            );
            let extra = format!(
                "{} failed, {} CrashLoopBackOff{}",
                outcome.failed,
                outcome.crash_loop_trips,
                outcome
                    .lag_left
                    .map(|l| format!(", lag left {l}"))
                    .unwrap_or_default()
            );
            jobs.push(outcome.jobs as f64);
            waiting.push(outcome.most_waiting as f64);
            match outcome.drained {
                Some(time) => {
                    times.push(time.as_secs_f64());
                    each.push(format!(
                        "{} Jobs, {:.1} s ({extra})",
                        outcome.jobs,
                        time.as_secs_f64()
                    ));
                }
                None => each.push(format!(
                    "{} Jobs, not drained in {} s: {} succeeded ({extra})",
                    outcome.jobs,
                    timeout.as_secs(),
                    outcome.succeeded
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
