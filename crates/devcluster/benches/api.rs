//! The embedded API server under load, through kube-rs on loopback: create → watch delivery
//! latency with 10,000 objects stored, listing 10,000 Jobs, and memory for 10,000 Jobs + 10,000
//! Pods. `cargo bench -p jobtide-devcluster --bench api` (env `BENCH_OBJECTS`, `BENCH_SAMPLES`).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // a benchmark: failing loudly is right

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jobtide_devcluster::DevCluster;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn create_many<K>(api: &Api<K>, objects: Vec<K>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    futures::stream::iter(objects)
        .for_each_concurrent(32, |object| async move {
            api.create(&PostParams::default(), &object)
                .await
                .expect("create");
        })
        .await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let objects = env("BENCH_OBJECTS", 10_000);
    let samples = env("BENCH_SAMPLES", 2_000);
    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    let rss_start = rss_mib();
    println!(
        "objects: {objects} Jobs + {objects} Pods; {samples} watch samples; RSS at start {rss_start:.1} MiB (server and client in one process)"
    );

    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    let job_objects: Vec<Job> = (0..objects)
        .map(|i| serde_json::from_value(json!({"metadata": {"name": format!("job-{i}"), "labels": {"scaledjob.keda.sh/name": "bench"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}}})).unwrap())
        .collect();
    create_many(&jobs, job_objects).await;
    println!(
        "created {objects} Jobs in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod_objects: Vec<Pod> = (0..objects)
        .map(|i| serde_json::from_value(json!({"metadata": {"name": format!("pod-{i}"), "labels": {"job-name": format!("job-{i}")}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}})).unwrap())
        .collect();
    create_many(&pods, pod_objects).await;
    println!(
        "RSS with {objects} Jobs + {objects} Pods stored: {:.1} MiB (+{:.1} MiB)",
        rss_mib(),
        rss_mib() - rss_start
    );

    let mut list_times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let listed = jobs.list(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), objects);
        list_times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    list_times.sort_by(f64::total_cmp);
    println!(
        "list {objects} Jobs: median {:.1} ms (5 runs: {:?})",
        list_times[2],
        list_times
            .iter()
            .map(|t| (t * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );

    // Watch delivery: create ConfigMaps one by one; latency from just before the create call to
    // the moment the watch stream yields the ADDED event.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let rv = jobs
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = config_maps
        .watch(&WatchParams::default().timeout(290), &rv)
        .await
        .unwrap()
        .boxed();
    let receiver = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while latencies.len() < samples {
                match stream.try_next().await {
                    Ok(Some(WatchEvent::Added(object))) => {
                        let at = Instant::now();
                        if let Some(start) = sent.lock().unwrap().get(&object.name_any()) {
                            latencies.push(at.duration_since(*start).as_secs_f64() * 1000.0);
                        }
                    }
                    Ok(Some(_)) => {}
                    other => panic!("watch ended: {other:?}"),
                }
            }
            latencies
        })
    };
    let mut create_times = Vec::new();
    for i in 0..samples {
        let name = format!("cm-{i}");
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}}))
                .unwrap();
        sent.lock().unwrap().insert(name, Instant::now());
        let started = Instant::now();
        config_maps
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
        create_times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let mut latencies = tokio::time::timeout(Duration::from_mins(1), receiver)
        .await
        .unwrap()
        .unwrap();
    latencies.sort_by(f64::total_cmp);
    create_times.sort_by(f64::total_cmp);
    println!(
        "create → watch delivery over {samples} objects: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (create call itself: p50 {:.2} ms, p99 {:.2} ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        percentile(&create_times, 0.5),
        percentile(&create_times, 0.99)
    );
    println!("final RSS {:.1} MiB", rss_mib());
}
