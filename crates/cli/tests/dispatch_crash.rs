//! Dispatch mode under crashes, with the real binaries as processes (issue 13): `jobtide dev
//! --no-operator` holds the API server, the runner and the broker, and separate `jobtide
//! operator` processes are SIGKILLed and restarted while they dispatch a burst.
//!
//! - The crash loop on dev's embedded broker: 200 messages on 4 partitions (half produced before,
//!   half while the operator is being killed), 10 SIGKILLs 0.3–2 s after each start (a seeded
//!   generator; the seed is printed, `JOBTIDE_CRASH_SEED` replays it), then one operator left to
//!   finish.
//! - The same crash loop on tansu (sqlite engine), an independent Kafka-protocol broker: the topic
//!   created through the Admin API (`jobtide dev --create-topic`), 200 messages, 10 kills.
//! - Leader takeover: two `--leader-elect` operators on 160 messages; the leader is stopped
//!   (SIGTERM releases the lease) mid-burst and the standby takes over, then a third instance
//!   joins and the new leader is SIGKILLed, so the third takes over when the lease expires.
//!
//! Each asserts the same end state: every message has exactly one Job, attempt 1, Complete
//! (by its `jobtide.io/partition` and `jobtide.io/offset` labels); each Job's pod ran once with
//! its own message (each appends `partition offset attempt pod value` to a file: a Job deleted
//! and created again, or a pod started twice, shows twice); and Python confluent-kafka, an
//! outside client, sees the group's committed offset at the log end of every partition.
//!
//! Python confluent-kafka and tansu (`JOBTIDE_TANSU`) are required under CI (`CI=true`: a
//! missing one fails the test); elsewhere their tests skip with a printed reason. The tests run
//! one at a time (each starts up to 8 pods and an operator on a 2-core machine).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod processes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jobtide_api::ScaledJob;
use jobtide_kafka::tools::{Record, produce};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use processes::{Dev, Operator, Oracle, Rng, SeenOutside, Tansu};
use serde_json::json;

const SCALED_JOB: &str = "orders";
const TOPIC: &str = "orders";
const GROUP: &str = "orders-dispatch";
const PARTITIONS: i32 = 4;
/// The in-flight cap, and dev's pods run at once.
const MAX_IN_FLIGHT: u32 = 8;
const KILLS: usize = 10;
/// Messages of each crash loop: at about 6 dispatched a second on 2 cores, the 10 kills land
/// mid-burst (a third to a half done at the last).
const MESSAGES: usize = 200;

/// One test at a time: each runs up to 8 pods and an operator.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A dispatch ScaledJob whose Jobs append `partition offset attempt value` to `runs`, the value
/// read from `$JOBTIDE_MESSAGE_DIR`; history limits keep every Job.
fn scaled_job(runs: &Path) -> ScaledJob {
    let script = format!(
        r#"printf '%s %s %s %s %s\n' "$JOBTIDE_PARTITION" "$JOBTIDE_OFFSET" "$JOBTIDE_ATTEMPT" "$HOSTNAME" "$(cat "$JOBTIDE_MESSAGE_DIR/value")" >> '{}'"#,
        runs.display()
    );
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": SCALED_JOB, "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "worker", "image": "busybox", "command": ["/bin/sh", "-c"], "args": [script]}]}}},
            "maxReplicaCount": MAX_IN_FLIGHT,
            "successfulJobsHistoryLimit": 1000,
            "failedJobsHistoryLimit": 1000,
            "triggers": [{"type": "kafka-dispatch", "metadata": {
                // Replaced by the operator's --bootstrap-servers-override.
                "bootstrapServers": "kafka.invalid:9092",
                "consumerGroup": GROUP, "topic": TOPIC, "offsetResetPolicy": "earliest", "payload": "file"}}],
        },
    }))
    .unwrap()
}

/// A burst being dispatched on a dev: what was produced, and the file the Jobs write.
struct Burst {
    client: Client,
    kafka: String,
    runs: PathBuf,
    produced: Vec<Record>,
}

impl Burst {
    /// Applies the ScaledJob on `dev`.
    async fn on(dev: &Dev) -> Self {
        let runs = dev.dir.path().join("runs");
        let client = dev.client();
        Api::<ScaledJob>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &scaled_job(&runs))
            .await
            .unwrap();
        Self {
            client,
            kafka: dev.kafka.clone(),
            runs,
            produced: Vec::new(),
        }
    }

    /// Produces the messages `from..to` (values `order-<n>`, keys spread them over the
    /// partitions).
    async fn produce(&mut self, from: usize, to: usize) {
        self.produced
            .extend(produce_orders(&self.kafka, from, to).await);
    }

    async fn jobs(&self) -> Vec<Job> {
        Api::<Job>::namespaced(self.client.clone(), "default")
            .list(&ListParams::default().labels(&format!("scaledjob.keda.sh/name={SCALED_JOB}")))
            .await
            .unwrap()
            .items
    }

    /// Jobs that completed.
    async fn completed(&self) -> usize {
        self.jobs().await.iter().filter(|j| complete(j)).count()
    }

    /// Waits (`seconds` at most) until every produced message's Job completed and the outside
    /// client sees the group committed at the log end of every partition.
    async fn wait_until_done(&self, oracle: Oracle, seconds: u64) -> Vec<SeenOutside> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut last = (0, Vec::new());
        loop {
            let completed = self.completed().await;
            if completed >= self.produced.len() {
                let seen = oracle.read(&self.kafka, TOPIC, GROUP, PARTITIONS).await;
                if seen.iter().all(|p| p.committed == Some(p.high)) {
                    return seen;
                }
                last.1 = seen;
            }
            last.0 = completed;
            assert!(
                Instant::now() < deadline,
                "not done within {seconds} s: {} of {} Jobs complete; the outside client saw {:?}",
                last.0,
                self.produced.len(),
                last.1
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The end state every test asserts: one Complete Job per message (attempt 1), each run
    /// once with its own message, and the group committed at the log end as `seen` says.
    async fn assert_exactly_once(&self, seen: &[SeenOutside]) {
        let expected: BTreeMap<(i32, i64), &str> = self
            .produced
            .iter()
            .map(|r| ((r.partition, r.offset), r.value.as_str()))
            .collect();
        assert_eq!(
            expected.len(),
            self.produced.len(),
            "the broker acknowledged every message at its own offset"
        );

        let mut jobs: BTreeMap<(i32, i64), Vec<(u32, bool)>> = BTreeMap::new();
        for job in self.jobs().await {
            let labels = job.metadata.labels.as_ref().unwrap();
            let label = |name: &str| labels.get(name).unwrap_or_else(|| panic!("{name} label"));
            jobs.entry((
                label("jobtide.io/partition").parse().unwrap(),
                label("jobtide.io/offset").parse().unwrap(),
            ))
            .or_default()
            .push((label("jobtide.io/attempt").parse().unwrap(), complete(&job)));
        }
        let without: Vec<_> = expected.keys().filter(|k| !jobs.contains_key(k)).collect();
        assert!(without.is_empty(), "messages without a Job: {without:?}");
        let strangers: Vec<_> = jobs.keys().filter(|k| !expected.contains_key(k)).collect();
        assert!(
            strangers.is_empty(),
            "Jobs for offsets never produced: {strangers:?}"
        );
        let not_once: Vec<_> = jobs
            .iter()
            .filter(|(_, attempts)| attempts.as_slice() != [(1, true)])
            .collect();
        assert!(
            not_once.is_empty(),
            "messages whose Jobs are not exactly one Complete attempt 1 (attempt, complete): {not_once:?}"
        );

        let mut runs: BTreeMap<(i32, i64, u32), Vec<(String, String)>> = BTreeMap::new();
        for line in std::fs::read_to_string(&self.runs).unwrap().lines() {
            let mut fields = line.splitn(5, ' ');
            let mut next = || fields.next().unwrap_or_else(|| panic!("run line {line:?}"));
            let (partition, offset, attempt) = (
                next().parse().unwrap(),
                next().parse().unwrap(),
                next().parse().unwrap(),
            );
            let pod = next();
            runs.entry((partition, offset, attempt))
                .or_default()
                .push((pod.to_owned(), next().to_owned()));
        }
        let ran: BTreeMap<(i32, i64), &str> = runs
            .iter()
            .map(|(&(p, o, attempt), values)| {
                assert_eq!(
                    (attempt, values.len()),
                    (1, 1),
                    "the Job of {p}/{o} ran once, as attempt 1: (pod, value) {values:?}"
                );
                ((p, o), values[0].1.as_str())
            })
            .collect();
        assert_eq!(
            ran, expected,
            "each message's Job ran once, with its own message"
        );

        let total: i64 = seen.iter().map(|p| p.high - p.low).sum();
        assert_eq!(
            usize::try_from(total).unwrap(),
            self.produced.len(),
            "the outside client counts every message: {seen:?}"
        );
        for (partition, p) in seen.iter().enumerate() {
            assert_eq!(
                p.committed,
                Some(p.high),
                "partition {partition}: committed at the log end"
            );
        }
    }
}

fn complete(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Complete" && c.status == "True")
}

async fn produce_orders(kafka: &str, from: usize, to: usize) -> Vec<Record> {
    let records: Vec<(Option<String>, String)> = (from..to)
        .map(|n| (Some(format!("key-{n}")), format!("order-{n}")))
        .collect();
    produce(kafka, TOPIC, &records, Duration::from_secs(30))
        .await
        .expect("produce")
}

/// Dispatches `messages` on `dev` while an operator is SIGKILLed [`KILLS`] times, each 0.3–2 s
/// after it started (half the messages produced before, half during the kills); then one
/// operator finishes. Asserts the end state and that the kills landed mid-burst.
async fn crash_loop(dev: &Dev, oracle: Oracle, messages: usize, finish_within: u64) {
    let mut burst = Burst::on(dev).await;
    burst.produce(0, messages / 2).await;
    let kafka = dev.kafka.clone();
    let late = tokio::spawn(async move {
        let mut produced = Vec::new();
        let step = (messages - messages / 2).div_ceil(10);
        for from in (messages / 2..messages).step_by(step) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            produced.extend(produce_orders(&kafka, from, (from + step).min(messages)).await);
        }
        produced
    });

    let mut rng = Rng::seeded("crash loop");
    let mut at_kills = Vec::new();
    for round in 0..KILLS {
        let operator = Operator::start(dev, &format!("crash-{round}"), &[]);
        tokio::time::sleep(rng.millis(300, 2000)).await;
        operator.kill();
        at_kills.push(burst.completed().await);
    }
    burst.produced.extend(
        tokio::time::timeout(Duration::from_mins(1), late)
            .await
            .expect("the late messages were produced within 60 s")
            .unwrap(),
    );
    let mut last = Operator::start(dev, "last", &[]);
    eprintln!("completed Jobs at each of the {KILLS} kills: {at_kills:?} (of {messages})");
    assert!(
        at_kills.last().is_some_and(|&done| done < messages),
        "the kills landed mid-burst (else the burst is too small to test them): {at_kills:?}"
    );
    let seen = burst.wait_until_done(oracle, finish_within).await;
    last.assert_running();
    burst.assert_exactly_once(&seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sigkilled_ten_times_mid_burst_dispatches_every_message_once_and_commits_to_the_end()
 {
    let Some(oracle) = Oracle::find() else { return };
    let _serial = SERIAL.lock().await;
    let began = Instant::now();
    let dev = Dev::start(&[
        "--kafka-addr",
        "127.0.0.1:0",
        "--create-topic",
        &format!("{TOPIC}:{PARTITIONS}"),
    ]);
    crash_loop(&dev, oracle, MESSAGES, 90).await;
    eprintln!("crash loop on the embedded broker: {:?}", began.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_crash_loop_on_tansu_dispatches_every_message_once_and_commits_to_the_end() {
    let Some(oracle) = Oracle::find() else { return };
    let _serial = SERIAL.lock().await;
    let Some(tansu) = Tansu::start() else { return };
    let began = Instant::now();
    let dev = Dev::start(&[
        "--bootstrap-servers",
        &tansu.servers,
        "--create-topic",
        &format!("{TOPIC}:{PARTITIONS}"),
    ]);
    assert_eq!(dev.kafka, tansu.servers);
    crash_loop(&dev, oracle, MESSAGES, 90).await;
    eprintln!("crash loop on tansu: {:?}", began.elapsed());
}

/// The Lease's holder, once it is one of `names` (`seconds` at most).
async fn holder_among(client: &Client, names: &[&str], seconds: u64) -> String {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let holder = leases
            .get_opt(LEASE)
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity);
        if let Some(holder) = holder.as_ref().filter(|h| names.contains(&h.as_str())) {
            return holder.clone();
        }
        assert!(
            Instant::now() < deadline,
            "none of {names:?} held the lease within {seconds} s (holder: {holder:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (`seconds` at most) until at least `count` Jobs completed.
async fn completed_at_least(burst: &Burst, count: usize, seconds: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let completed = burst.completed().await;
        if completed >= count {
            return completed;
        }
        assert!(
            Instant::now() < deadline,
            "{completed} Jobs completed within {seconds} s, wanted {count}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const LEASE: &str = "jobtide-takeover";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_stopped_then_a_killed_leader_and_dispatches_nothing_twice() {
    let Some(oracle) = Oracle::find() else { return };
    let _serial = SERIAL.lock().await;
    let began = Instant::now();
    let messages = 160;
    let dev = Dev::start(&[
        "--kafka-addr",
        "127.0.0.1:0",
        "--create-topic",
        &format!("{TOPIC}:{PARTITIONS}"),
    ]);
    let mut burst = Burst::on(&dev).await;
    burst.produce(0, messages).await;
    let elected = [
        "--leader-elect",
        "--leader-election-namespace",
        "default",
        "--leader-election-id",
        LEASE,
    ];
    let mut operators: BTreeMap<String, Operator> = ["a", "b"]
        .into_iter()
        .map(|name| (name.to_owned(), Operator::start(&dev, name, &elected)))
        .collect();

    // The first leader dispatches part of the burst, then stops: SIGTERM releases the lease.
    let first = holder_among(&burst.client, &["a", "b"], 30).await;
    let stopped_at = completed_at_least(&burst, 20, 60).await;
    let status = operators.remove(&first).unwrap().terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "the leader stopped cleanly on SIGTERM: {status:?}"
    );
    let second = if first == "a" { "b" } else { "a" };
    // The standby tries every 2 s; the released lease is free at once.
    holder_among(&burst.client, &[second], 10).await;
    completed_at_least(&burst, stopped_at + 20, 60).await;

    // A third instance joins as the standby; the second leader is SIGKILLed mid-burst and the
    // third takes over once the lease (15 s) expires.
    operators.insert("c".into(), Operator::start(&dev, "c", &elected));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder_among(&burst.client, &[second, "c"], 1).await, second);
    operators.remove(second).unwrap().kill();
    let at_kill = burst.completed().await;
    assert!(
        at_kill < messages,
        "the leader was killed mid-burst ({at_kill} of {messages} complete)"
    );
    holder_among(&burst.client, &["c"], 30).await;

    let seen = burst.wait_until_done(oracle, 90).await;
    operators.get_mut("c").unwrap().assert_running();
    burst.assert_exactly_once(&seen).await;
    eprintln!(
        "takeover: {:?} ({first} stopped at {stopped_at} complete Jobs, {second} killed at {at_kill}, of {messages})",
        began.elapsed()
    );
}
