//! One poll round of many triggers against librdkafka's mock cluster: Kafka requests per round,
//! wall time per round and RSS, for jobtide's shared, batching sources and — in the same run —
//! for KEDA's model of one client per trigger.
//!
//! `cargo bench -p jobtide-kafka --bench poll_round` (defaults: 1,000 triggers over 100 groups
//! on 10 topics × 100 partitions, 3 brokers, 5 rounds). Override with env `BENCH_TRIGGERS`, `BENCH_GROUPS`,
//! `BENCH_TOPICS`, `BENCH_PARTITIONS`, `BENCH_ROUNDS`, `BENCH_KEDA_TRIGGERS` (the one-client-per-trigger
//! run, default 100 triggers: at 1,000 clients it exhausts this machine's 24 GiB; 0 skips it).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jobtide_api::trigger::connection::{KafkaConnection, Sasl};
use jobtide_core::kafka::LagPolicy;
use jobtide_core::lag::PersistentLagMemory;
use jobtide_kafka::client_config::Isolation;
use jobtide_kafka::ffi::MockKafka;
use jobtide_kafka::scaler::{LagTarget, Topics, measure};
use jobtide_kafka::source::SourcePool;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn total(requests: &BTreeMap<String, i64>) -> i64 {
    requests.values().sum()
}

fn delta(after: &BTreeMap<String, i64>, before: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn sum_requests(pools: &[SourcePool]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for pool in pools {
        for source in pool.sources() {
            for (k, v) in source.requests_sent() {
                *out.entry(k).or_insert(0) += v;
            }
        }
    }
    out
}

async fn round(pools: &[SourcePool], targets: &[LagTarget]) -> Duration {
    let started = Instant::now();
    let memory = PersistentLagMemory::new();
    let futures = targets.iter().enumerate().map(|(i, target)| {
        let pool = &pools[i % pools.len()];
        let memory = &memory;
        async move { measure(pool, target, memory, Duration::from_secs(30)).await }
    });
    let results = futures_join_all(futures).await;
    let elapsed = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "{:?}", results.iter().find(|r| r.is_err()));
    elapsed
}

async fn futures_join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(future);
    }
    let mut out = Vec::with_capacity(set.len());
    // Poll all concurrently on the current task.
    let pinned: Vec<std::pin::Pin<Box<F>>> = set.into_iter().map(Box::pin).collect();
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> = pinned.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        results[i] = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().map(Option::unwrap));
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let triggers = env("BENCH_TRIGGERS", 1000);
    let groups = env("BENCH_GROUPS", 100);
    let topics = env("BENCH_TOPICS", 10);
    let partitions = env("BENCH_PARTITIONS", 100);
    let rounds = env("BENCH_ROUNDS", 5);
    let keda_triggers = env("BENCH_KEDA_TRIGGERS", 100);
    let mock = MockKafka::start(3).expect("mock");
    let servers = mock.bootstrap_servers();
    let partitions_i32 = i32::try_from(partitions).unwrap();
    for t in 0..topics {
        mock.create_topic(&format!("topic-{t}"), partitions_i32)
            .expect("topic");
    }
    // One message per partition, and a commit at offset 0 for every (group, topic) pair in use.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .create()
        .unwrap();
    for t in 0..topics {
        for p in 0..partitions_i32 {
            producer
                .send(
                    BaseRecord::<(), str>::to(&format!("topic-{t}"))
                        .partition(p)
                        .payload("m"),
                )
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    for g in 0..groups {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", format!("group-{g}"))
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for t in (0..topics).filter(|t| (0..triggers).any(|i| i % groups == g && i % topics == *t))
        {
            for p in 0..partitions_i32 {
                list.add_partition_offset(&format!("topic-{t}"), p, Offset::Offset(0))
                    .unwrap();
            }
        }
        if list.count() > 0 {
            consumer.commit(&list, CommitMode::Sync).unwrap();
        }
    }
    let connection = KafkaConnection {
        bootstrap_servers: vec![servers.clone()],
        tls: None,
        sasl: Sasl::None,
    };
    let targets: Vec<LagTarget> = (0..triggers)
        .map(|i| LagTarget {
            connection: connection.clone(),
            group: format!("group-{}", i % groups),
            topics: Topics::Named(vec![format!("topic-{}", i % topics)]),
            policy: LagPolicy::default(),
            isolation: Isolation::default(),
        })
        .collect();
    println!(
        "workload: {triggers} triggers, {groups} groups, {topics} topics x {partitions} partitions, 3 mock brokers, {rounds} rounds"
    );
    let rss_before = rss_mib();

    // jobtide: one shared, batching source.
    let shared = vec![SourcePool::with_statistics(Duration::from_secs(1))];
    round(&shared, &targets).await; // warm-up: connections and metadata cache
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut times = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..rounds {
        let before = sum_requests(&shared);
        times.push(round(&shared, &targets).await.as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(2200)).await;
        requests.push(delta(&sum_requests(&shared), &before));
    }
    let per_round: Vec<f64> = requests.iter().map(|r| total(r) as f64).collect();
    println!(
        "jobtide (1 shared client): median round {:.1} ms, median requests/round {} {:?}, clients {}, RSS {:.1} MiB (before {:.1} MiB)",
        median(times),
        median(per_round),
        requests.last().cloned().unwrap_or_default(),
        shared[0].len(),
        rss_mib(),
        rss_before
    );

    if keda_triggers == 0 {
        return;
    }
    // KEDA's model: a client per trigger.
    let keda_targets = &targets[..keda_triggers.min(targets.len())];
    let pools: Vec<SourcePool> = (0..keda_targets.len())
        .map(|_| SourcePool::with_statistics(Duration::from_secs(1)))
        .collect();
    let rss_before = rss_mib();
    round(&pools, keda_targets).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut times = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..rounds {
        let before = sum_requests(&pools);
        times.push(round(&pools, keda_targets).await.as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(2200)).await;
        requests.push(delta(&sum_requests(&pools), &before));
    }
    let per_round: Vec<f64> = requests.iter().map(|r| total(r) as f64).collect();
    println!(
        "KEDA model ({} clients, one per trigger): median round {:.1} ms, median requests/round {} {:?}, RSS {:.1} MiB (before {:.1} MiB)",
        pools.len(),
        median(times),
        median(per_round),
        requests.last().cloned().unwrap_or_default(),
        rss_mib(),
        rss_before
    );
}
