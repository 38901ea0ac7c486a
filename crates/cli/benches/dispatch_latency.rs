//! Dispatch mode's latency and throughput, the product as it runs: `jobtide dev --no-operator`
//! (the embedded API server, the local runner and librdkafka's mock broker) and `jobtide
//! operator --kubeconfig … --bootstrap-servers-override …` each as its own process; this program
//! produces messages and watches Jobs (a watch on Jobs, receive times taken locally: a Job's
//! `creationTimestamp` has whole seconds only).
//!
//! Each run has two phases, each on a fresh `jobtide dev` and a fresh operator:
//! 1. **Latency**: a `kafka-dispatch` ScaledJob (`payload: file`, `maxReplicaCount` 1000, Jobs that
//!    run `true`), operator flags at their defaults. `BENCH_MESSAGES` single messages, one at a
//!    time 100–200 ms apart (random, so that the broker's fetch cycle is sampled at every phase):
//!    the time from the produce call's start to the Job's ADDED event on the watch. Interleaved
//!    with them, the **floor** on the same broker and API server: one produce → receive by a plain
//!    consumer already assigned to its partition (the dispatcher's fetch settings), plus one plain
//!    Job created → its ADDED event. Then, for reference, the broker at its best (the operator
//!    stopped): the same round trip with a consumer asking every millisecond (`fetch.wait.max.ms`
//!    1; librdkafka's mock broker holds a fetch that finds nothing for the whole
//!    `fetch.wait.max.ms`, even when a message arrives meanwhile, which Kafka doesn't).
//! 2. **Burst**: `BENCH_BURST` messages at once on a topic of `BENCH_BURST_PARTITIONS`
//!    partitions, `maxReplicaCount` above the burst, `--max-parallel-pods 1` (Jobs are created,
//!    not run: the first sleeps, the rest stay Pending), the operator with `--kube-api-qps
//!    BENCH_BURST_QPS`: from the first produce call to the last Job's ADDED event, and the
//!    operator process's peak RSS (VmHWM) and CPU seconds.
//!
//! `cargo bench -p jobtide-cli --bench dispatch_latency` — environment: `BENCH_RUNS` (5),
//! `BENCH_MESSAGES` (200), `BENCH_BURST` (10000), `BENCH_BURST_PARTITIONS` (3),
//! `BENCH_BURST_QPS` (0: unlimited; the operator's default is 20), `BENCH_KEEP_LOGS` (set: keep
//! the processes' logs and print where).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // a benchmark program

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jobtide_api::ScaledJob;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client, Config, ResourceExt};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::json;

/// Every wait gives up after this long.
const TIMEOUT: Duration = Duration::from_mins(30);
/// Messages dispatched before the measured ones (connections, caches, first fetches).
const WARMUP: usize = 5;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small xorshift generator for the spacing (no dependency for one random number).
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Self(seed | 1)
    }

    /// A duration in [low, high) milliseconds.
    fn between(&mut self, low: u64, high: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(low + self.0 % (high - low))
    }
}

/// A process this program started; stopped with SIGTERM when dropped.
struct Process {
    child: Child,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// `jobtide dev --no-operator` and what it printed.
struct Dev {
    process: Process,
    api_server: String,
    kafka: String,
    kubeconfig: PathBuf,
}

fn jobtide() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jobtide"))
}

async fn start_dev(dir: &Path, topics: &[String], max_parallel_pods: usize) -> Dev {
    let out = dir.join("dev.out");
    let kubeconfig = dir.join("kubeconfig");
    let mut command = jobtide();
    command
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
        .args(["--max-parallel-pods", &max_parallel_pods.to_string()]);
    for topic in topics {
        command.args(["--create-topic", topic]);
    }
    let process = Process {
        child: command
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.join("dev.log")).unwrap())
            .spawn()
            .unwrap(),
    };
    let began = Instant::now();
    let printed = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains("Ctrl-C stops everything.") {
            break text;
        }
        assert!(
            began.elapsed() < Duration::from_mins(1),
            "jobtide dev did not start: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let field = |name: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .unwrap()
            .to_owned()
    };
    Dev {
        process,
        api_server: field("api-server: "),
        kafka: field("kafka: "),
        kubeconfig,
    }
}

fn start_operator(dir: &Path, dev: &Dev, extra: &[&str]) -> Process {
    Process {
        child: jobtide()
            .args(["operator", "--kubeconfig"])
            .arg(&dev.kubeconfig)
            .args(["--bootstrap-servers-override", &dev.kafka])
            .args(["--metrics-bind-address", "127.0.0.1:0"])
            .args(["--health-probe-bind-address", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("operator.log")).unwrap())
            .spawn()
            .unwrap(),
    }
}

/// A field of /proc/<pid>/status in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// CPU seconds (user + system) of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the command.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// When this program's watch first saw each Job: dispatched Jobs by
/// `<scaledjob>/<partition>/<offset>`, others by name; and how many of each ScaledJob.
#[derive(Default)]
struct Seen {
    at: HashMap<String, Instant>,
    per_scaled_job: HashMap<String, usize>,
}

type Shared = Arc<Mutex<Seen>>;

fn key(job: &Job) -> (String, Option<String>) {
    let labels = job.metadata.labels.clone().unwrap_or_default();
    match (
        labels.get("scaledjob.keda.sh/name"),
        labels.get("jobtide.io/partition"),
        labels.get("jobtide.io/offset"),
    ) {
        (Some(owner), Some(partition), Some(offset)) => {
            (format!("{owner}/{partition}/{offset}"), Some(owner.clone()))
        }
        _ => (job.name_any(), None),
    }
}

/// Watches the Jobs of `default` for good, recording when each was first seen.
async fn watch_jobs(client: Client, seen: Shared) {
    let api: Api<Job> = Api::namespaced(client, "default");
    let mut version = api
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    loop {
        let stream = api
            .watch(&WatchParams::default().timeout(290), &version)
            .await
            .unwrap();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let now = Instant::now();
            let job = match event.unwrap() {
                WatchEvent::Added(job) | WatchEvent::Modified(job) | WatchEvent::Deleted(job) => {
                    job
                }
                WatchEvent::Bookmark(bookmark) => {
                    version = bookmark.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(error) => panic!("watching Jobs: {error:?}"),
            };
            version = job.resource_version().unwrap_or(version);
            let (key, owner) = key(&job);
            let mut seen = seen.lock().unwrap();
            if let std::collections::hash_map::Entry::Vacant(entry) = seen.at.entry(key) {
                entry.insert(now);
                if let Some(owner) = owner {
                    *seen.per_scaled_job.entry(owner).or_default() += 1;
                }
            }
        }
    }
}

/// When the watch saw the Job `key`.
async fn seen_at(seen: &Shared, key: &str) -> Instant {
    let began = Instant::now();
    loop {
        if let Some(at) = seen.lock().unwrap().at.get(key) {
            return *at;
        }
        assert!(began.elapsed() < TIMEOUT, "no Job {key}");
        // Only this program's wait: the time recorded is the watch's.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn producer(servers: &str, linger_ms: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("linger.ms", linger_ms)
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap()
}

/// Produces one message and returns (partition, offset).
async fn produce(producer: &FutureProducer, topic: &str, value: &str) -> (i32, i64) {
    let delivered = producer
        .send(
            FutureRecord::<str, str>::to(topic).payload(value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    (delivered.partition, delivered.offset)
}

fn scaled_job(name: &str, topic: &str, max: usize, command: &[&str]) -> ScaledJob {
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": command}]}}},
            "maxReplicaCount": max,
            "triggers": [{"type": "kafka-dispatch", "metadata": {"bootstrapServers": "kafka:9092",
                "consumerGroup": format!("{name}-dispatch"), "topic": topic,
                "offsetResetPolicy": "earliest", "payload": "file"}}],
        },
    }))
    .unwrap()
}

/// A plain Job like the dispatched ones, suspended (the floor measures its creation only).
fn plain_job(name: &str) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"suspend": true, "backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}},
    }))
    .unwrap()
}

fn client(dev: &Dev) -> Client {
    Client::try_from(Config::new(dev.api_server.parse().unwrap())).unwrap()
}

/// Nearest-rank quantile of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[derive(Debug, Clone, Copy)]
struct Quantiles {
    p50: f64,
    p99: f64,
    max: f64,
}

fn quantiles(mut samples: Vec<f64>) -> Quantiles {
    samples.sort_by(f64::total_cmp);
    Quantiles {
        p50: quantile(&samples, 0.5),
        p99: quantile(&samples, 0.99),
        max: *samples.last().unwrap(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Latency {
    dispatch: Quantiles,
    floor: Quantiles,
    kafka: Quantiles,
    best_floor: Quantiles,
    best_kafka: Quantiles,
    job: Quantiles,
}

/// A consumer assigned at the end of partition 0 of `topic`, each receive time-stamped as it
/// arrives.
fn floor_consumer(
    servers: &str,
    topic: &str,
    fetch_wait_ms: &str,
) -> (
    Arc<StreamConsumer>,
    tokio::sync::mpsc::UnboundedReceiver<Instant>,
    tokio::task::JoinHandle<()>,
) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", format!("bench-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "4096")
        .set("fetch.wait.max.ms", fetch_wait_ms)
        .create()
        .unwrap();
    let (_, end) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Offset(end))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let consumer = Arc::new(consumer);
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    let reader = Arc::clone(&consumer);
    let task = tokio::spawn(async move {
        loop {
            reader.recv().await.unwrap();
            let _ = sender.send(Instant::now());
        }
    });
    (consumer, received, task)
}

async fn latency_phase(dir: &Path, messages: usize) -> Latency {
    let dev = start_dev(dir, &["latency".into(), "floor".into(), "fast".into()], 2).await;
    let client = client(&dev);
    let seen = Shared::default();
    let watcher = tokio::spawn(watch_jobs(client.clone(), Arc::clone(&seen)));
    let producer = producer(&dev.kafka, "0");

    // The floor's consumer, with the dispatcher's fetch settings.
    let (_floor, mut received, reader) = floor_consumer(&dev.kafka, "floor", "100");

    let operator = start_operator(dir, &dev, &[]);
    let scaled_jobs: Api<ScaledJob> = Api::namespaced(client.clone(), "default");
    scaled_jobs
        .create(
            &PostParams::default(),
            &scaled_job("latency", "latency", 1000, &["true"]),
        )
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let mut jitter = Jitter::new();
    let (mut dispatch, mut kafka, mut job) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..WARMUP + messages {
        tokio::time::sleep(jitter.between(100, 200)).await;
        let began = Instant::now();
        let (partition, offset) = produce(&producer, "latency", &format!("m{i}")).await;
        let at = seen_at(&seen, &format!("latency/{partition}/{offset}")).await;
        let dispatched = at - began;

        tokio::time::sleep(jitter.between(100, 200)).await;
        while received.try_recv().is_ok() {}
        let began = Instant::now();
        produce(&producer, "floor", &format!("f{i}")).await;
        let at = tokio::time::timeout(TIMEOUT, received.recv())
            .await
            .unwrap()
            .unwrap();
        let round_trip = at - began;

        let name = format!("floor-{i}");
        let began = Instant::now();
        jobs.create(&PostParams::default(), &plain_job(&name))
            .await
            .unwrap();
        let created = seen_at(&seen, &name).await - began;

        if i >= WARMUP {
            dispatch.push(ms(dispatched));
            kafka.push(ms(round_trip));
            job.push(ms(created));
        }
    }
    let floor: Vec<f64> = kafka.iter().zip(&job).map(|(k, j)| k + j).collect();
    reader.abort();
    drop(operator);

    // The broker at its best, after the rest (its consumer asks every millisecond, which is load
    // of its own): the same round trip, Jobs' creation as measured above.
    let (_fast, mut fast_received, fast_reader) = floor_consumer(&dev.kafka, "fast", "1");
    let mut best = Vec::new();
    for i in 0..WARMUP + messages {
        tokio::time::sleep(jitter.between(20, 50)).await;
        while fast_received.try_recv().is_ok() {}
        let began = Instant::now();
        produce(&producer, "fast", &format!("f{i}")).await;
        let at = tokio::time::timeout(TIMEOUT, fast_received.recv())
            .await
            .unwrap()
            .unwrap();
        if i >= WARMUP {
            best.push(ms(at - began));
        }
    }
    let best_floor: Vec<f64> = best.iter().zip(&job).map(|(k, j)| k + j).collect();
    fast_reader.abort();
    watcher.abort();
    drop(dev.process);
    Latency {
        dispatch: quantiles(dispatch),
        floor: quantiles(floor),
        kafka: quantiles(kafka),
        best_floor: quantiles(best_floor),
        best_kafka: quantiles(best),
        job: quantiles(job),
    }
}

struct Burst {
    seconds: f64,
    jobs_per_second: f64,
    first_half_per_second: f64,
    second_half_per_second: f64,
    first_job_ms: f64,
    rss_before_mib: f64,
    peak_rss_mib: f64,
    cpu_seconds: f64,
}

async fn burst_phase(dir: &Path, burst: usize, partitions: usize, qps: usize) -> Burst {
    let dev = start_dev(dir, &[format!("burst:{partitions}")], 1).await;
    let client = client(&dev);
    let seen = Shared::default();
    let watcher = tokio::spawn(watch_jobs(client.clone(), Arc::clone(&seen)));
    let operator = start_operator(dir, &dev, &["--kube-api-qps", &qps.to_string()]);
    let pid = operator.pid();
    let scaled_jobs: Api<ScaledJob> = Api::namespaced(client.clone(), "default");
    scaled_jobs
        .create(
            &PostParams::default(),
            &scaled_job("burst", "burst", burst + 1, &["sleep", "3600"]),
        )
        .await
        .unwrap();
    // One message first: the dispatcher runs and is connected.
    let producer = producer(&dev.kafka, "5");
    let (partition, offset) = produce(&producer, "burst", "warm-up").await;
    seen_at(&seen, &format!("burst/{partition}/{offset}")).await;
    let count = || seen.lock().unwrap().per_scaled_job.get("burst").copied();
    assert_eq!(count(), Some(1));

    let rss_before = status_kib(pid, "VmRSS:");
    let cpu_before = cpu_seconds(pid);
    let values: Vec<String> = (0..burst).map(|i| format!("b{i}")).collect();
    let began = Instant::now();
    let sends = values.iter().map(|value| {
        producer.send(
            FutureRecord::<str, str>::to("burst").payload(value),
            Duration::from_mins(1),
        )
    });
    for sent in futures::future::join_all(sends.collect::<Vec<_>>()).await {
        sent.map_err(|(e, _)| e).unwrap();
    }
    let production = began.elapsed();
    while count() < Some(burst + 1) {
        assert!(
            began.elapsed() < TIMEOUT,
            "{:?} of {burst} Jobs",
            count().map(|c| c - 1)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut times: Vec<Instant> = seen
        .lock()
        .unwrap()
        .at
        .iter()
        .filter(|(k, at)| k.starts_with("burst/") && **at >= began)
        .map(|(_, at)| *at)
        .collect();
    times.sort();
    let (first, half, last) = (times[0], times[times.len() / 2], times[times.len() - 1]);
    let cpu = cpu_seconds(pid) - cpu_before;
    let peak = status_kib(pid, "VmHWM:");
    // Exactly one Job per message: nothing more turns up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(), Some(burst + 1), "one Job per message");
    eprintln!("  burst produced in {:.1} s", production.as_secs_f64());
    watcher.abort();
    drop(operator);
    drop(dev.process);
    let seconds = (last - began).as_secs_f64();
    Burst {
        seconds,
        jobs_per_second: burst as f64 / seconds,
        first_half_per_second: (times.len() / 2) as f64 / (half - began).as_secs_f64(),
        second_half_per_second: (times.len() - times.len() / 2) as f64
            / (last - half).as_secs_f64(),
        first_job_ms: ms(first - began),
        rss_before_mib: rss_before as f64 / 1024.0,
        peak_rss_mib: peak as f64 / 1024.0,
        cpu_seconds: cpu,
    }
}

/// "median (min–max)" of one figure over the runs.
fn spread(values: &[f64], digits: usize) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    // The lower median for an even count: a value that was measured.
    let median = sorted[(sorted.len() - 1) / 2];
    format!(
        "{median:.digits$} ({:.digits$}–{:.digits$})",
        sorted[0],
        sorted[sorted.len() - 1]
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs = env("BENCH_RUNS", 5);
    let messages = env("BENCH_MESSAGES", 200);
    let burst = env("BENCH_BURST", 10_000);
    let partitions = env("BENCH_BURST_PARTITIONS", 3);
    let qps = env("BENCH_BURST_QPS", 0);
    let keep_logs = std::env::var_os("BENCH_KEEP_LOGS").is_some();

    let mut figures: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for run in 1..=runs {
        let dir = tempfile::tempdir().unwrap();
        let latency_dir = dir.path().join("latency");
        let burst_dir = dir.path().join("burst");
        std::fs::create_dir_all(&latency_dir).unwrap();
        std::fs::create_dir_all(&burst_dir).unwrap();
        let latency = if messages > 0 {
            Some(latency_phase(&latency_dir, messages).await)
        } else {
            None
        };
        let burst = if burst > 0 {
            Some(burst_phase(&burst_dir, burst, partitions, qps).await)
        } else {
            None
        };
        let mut line = format!("run {run}/{runs}:");
        if let Some(l) = &latency {
            let _ = write!(
                line,
                " message→Job p50 {:.1} p99 {:.1} max {:.1} ms; floor p50 {:.1} p99 {:.1} ms (Kafka {:.1}/{:.1}, Job {:.1}/{:.1}); broker-best floor p50 {:.1} p99 {:.1} ms (Kafka {:.1}/{:.1});",
                l.dispatch.p50,
                l.dispatch.p99,
                l.dispatch.max,
                l.floor.p50,
                l.floor.p99,
                l.kafka.p50,
                l.kafka.p99,
                l.job.p50,
                l.job.p99,
                l.best_floor.p50,
                l.best_floor.p99,
                l.best_kafka.p50,
                l.best_kafka.p99
            );
            for (name, value) in [
                ("message→Job p50 ms", l.dispatch.p50),
                ("message→Job p99 ms", l.dispatch.p99),
                ("message→Job max ms", l.dispatch.max),
                ("floor p50 ms", l.floor.p50),
                ("floor p99 ms", l.floor.p99),
                ("floor Kafka round trip p50 ms", l.kafka.p50),
                ("floor Kafka round trip p99 ms", l.kafka.p99),
                ("floor Job create p50 ms", l.job.p50),
                ("floor Job create p99 ms", l.job.p99),
                ("broker-best floor p50 ms", l.best_floor.p50),
                ("broker-best floor p99 ms", l.best_floor.p99),
                ("broker-best Kafka round trip p50 ms", l.best_kafka.p50),
                ("broker-best Kafka round trip p99 ms", l.best_kafka.p99),
            ] {
                figures.entry(name).or_default().push(value);
            }
        }
        if let Some(b) = &burst {
            let _ = write!(
                line,
                " burst {:.1} s = {:.0} Jobs/s (first half {:.0}/s, second {:.0}/s; first Job after {:.0} ms), operator RSS {:.1} → peak {:.1} MiB, {:.1} CPU s",
                b.seconds,
                b.jobs_per_second,
                b.first_half_per_second,
                b.second_half_per_second,
                b.first_job_ms,
                b.rss_before_mib,
                b.peak_rss_mib,
                b.cpu_seconds
            );
            for (name, value) in [
                ("burst seconds", b.seconds),
                ("burst Jobs/s", b.jobs_per_second),
                ("burst Jobs/s, first half", b.first_half_per_second),
                ("burst Jobs/s, second half", b.second_half_per_second),
                ("operator RSS before MiB", b.rss_before_mib),
                ("operator peak RSS MiB", b.peak_rss_mib),
                ("operator CPU s", b.cpu_seconds),
            ] {
                figures.entry(name).or_default().push(value);
            }
        }
        println!("{line}");
        if keep_logs {
            println!("  logs: {}", dir.keep().display());
        }
    }

    println!(
        "dispatch_latency: {runs} runs; {messages} single messages (after {WARMUP} warm-up); burst {burst} messages on {partitions} partitions, --kube-api-qps {qps}"
    );
    println!("median (min–max) over {runs} runs:");
    for (name, values) in &figures {
        println!("  {name}: {}", spread(values, 1));
    }
    if let (Some(p50), Some(p99), Some(f50), Some(f99)) = (
        figures.get("message→Job p50 ms"),
        figures.get("message→Job p99 ms"),
        figures.get("floor p50 ms"),
        figures.get("floor p99 ms"),
    ) {
        let median = |v: &Vec<f64>| {
            let mut s = v.clone();
            s.sort_by(f64::total_cmp);
            s[(s.len() - 1) / 2]
        };
        let (p50, p99, f50, f99) = (median(p50), median(p99), median(f50), median(f99));
        println!(
            "targets: p99 < 200 ms: {} ({p99:.1} ms); p50 <= 3x floor p50: {} ({:.2}x); p99 <= 3x floor p99: {} ({:.2}x)",
            if p99 < 200.0 { "met" } else { "NOT met" },
            if p50 <= 3.0 * f50 { "met" } else { "NOT met" },
            p50 / f50,
            if p99 <= 3.0 * f99 { "met" } else { "NOT met" },
            p99 / f99
        );
    }
}
