//! `jobtide dev`'s live page in a real browser (issue 17): headless Chromium (Debian's
//! `chromium`, installed by `.ci/run` through `scripts/install-deps`) loads the page from dev's
//! metrics address, runs its script, and the test reads the DOM it rendered (`--dump-dom`).
//!
//! The dev cluster runs a lag-mode ScaledJob on a 2-partition topic (Jobs that don't consume, so
//! the lag stays), a dispatch-mode one on another 2-partition topic (one Job per message), and a
//! lag-mode one whose topic is markup. The page must show both working ScaledJobs with their
//! mode, lag points for each of their partitions, their Jobs on the timeline, and the markup as
//! text. A screenshot goes to `$JOBTIDE_LIVE_SCREENSHOT` when set (docs/live-page.png).
//!
//! The browser is `$JOBTIDE_CHROMIUM`, else `chromium` on `PATH`; without it the test skips
//! with the reason, and under CI (`CI=true`) it fails.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::dev::{eventually, start_dev};
use jobtide_api::ScaledJob;
use kube::Api;
use kube::api::PostParams;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

const HOSTILE_TOPIC: &str = "<img src=x onerror=alert(1)>";

/// The browser, or `None` (skip) with the reason printed; under CI a missing browser fails.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("JOBTIDE_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join("chromium"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            !jobtide_testpeers::under_ci(),
            "CI must provide chromium (scripts/install-deps chromium, from .ci/run)"
        );
        eprintln!("skipped: no chromium (set JOBTIDE_CHROMIUM or install Debian's chromium)");
    }
    found
}

/// `GET http://{addr}{path}`: the body (HTTP/1.0, so the server closes after it).
fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

fn scaled_job(name: &str, trigger: &str, metadata: &Value, command: &[&str]) -> ScaledJob {
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "pollingInterval": 1, "maxReplicaCount": if trigger == "kafka" { 1 } else { 2 },
            "successfulJobsHistoryLimit": 20, "failedJobsHistoryLimit": 20,
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "worker", "image": "busybox", "command": command}]}}},
            "triggers": [{"type": trigger, "metadata": metadata}],
        },
    }))
    .unwrap()
}

/// The samples of each partition of `name` in the page's state: (topic, partition) → count.
fn samples(state: &Value, name: &str) -> Vec<(String, i64, usize)> {
    state["scaledJobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sj| sj["name"] == name)
        .map(|sj| {
            sj["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["topic"].as_str().unwrap().to_owned(),
                        p["partition"].as_i64().unwrap(),
                        p["samples"].as_array().unwrap().len(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `data-points` of each lag series in the chart section of the ScaledJob `title`.
fn drawn_series(dom: &str, title: &str) -> Vec<(i64, usize)> {
    let heading = format!("<h3>{title}</h3>");
    let start = dom
        .find(&heading)
        .unwrap_or_else(|| panic!("no chart for {title}:\n{dom}"));
    let section = &dom[start..];
    let section = &section[..section.find("</section>").unwrap()];
    section
        .split("<g class=\"series\" ")
        .skip(1)
        .map(|g| {
            let attr = |name: &str| -> i64 {
                let at = g.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                g[at..at + g[at..].find('"').unwrap()].parse().unwrap()
            };
            (
                attr("data-partition"),
                usize::try_from(attr("data-points")).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_page_shows_scaled_jobs_lag_per_partition_and_jobs_in_a_browser() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dev = start_dev(&[
        "--kafka-addr",
        "127.0.0.1:0",
        "--create-topic",
        "lagged:2",
        "--create-topic",
        "orders:2",
    ]);
    let addr = dev
        .metrics
        .strip_prefix("http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .unwrap()
        .to_owned();

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &dev.kafka)
        .create()
        .unwrap();
    for (topic, partition, count) in [
        ("lagged", 0, 3),
        ("lagged", 1, 2),
        ("orders", 0, 3),
        ("orders", 1, 1),
    ] {
        for i in 0..count {
            let value = format!("{topic}-{partition}-{i}");
            producer
                .send(
                    FutureRecord::<str, str>::to(topic)
                        .partition(partition)
                        .payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }

    let api: Api<ScaledJob> = Api::namespaced(dev.client(), "default");
    for sj in [
        scaled_job(
            "lagger",
            "kafka",
            &json!({"bootstrapServers": "kafka.invalid:9092", "consumerGroup": "lagger",
                "topic": "lagged", "lagThreshold": "1", "offsetResetPolicy": "earliest"}),
            &["sh", "-c", "sleep 2"],
        ),
        scaled_job(
            "dispatcher",
            "kafka-dispatch",
            &json!({"bootstrapServers": "kafka.invalid:9092", "consumerGroup": "dispatcher",
                "topic": "orders", "offsetResetPolicy": "earliest", "payload": "none"}),
            &["sh", "-c", "sleep 1"],
        ),
        scaled_job(
            "hostile",
            "kafka",
            &json!({"bootstrapServers": "kafka.invalid:9092", "consumerGroup": "hostile",
                "topic": HOSTILE_TOPIC, "lagThreshold": "1"}),
            &["true"],
        ),
    ] {
        api.create(&PostParams::default(), &sj).await.unwrap();
    }

    // What the page will draw, from its own JSON endpoint: every partition of both working
    // ScaledJobs with a few samples, the four messages dispatched and done, lag-mode Jobs done.
    let state = eventually(
        "lag samples and finished Jobs in the page's state",
        90,
        async || {
            let state: Value = serde_json::from_str(&get(&addr, "/live/state.json")).unwrap();
            let enough = |name: &str, topic: &str| {
                let series = samples(&state, name);
                (0..2).all(|p| {
                    series
                        .iter()
                        .any(|(t, partition, n)| t == topic && *partition == p && *n >= 3)
                })
            };
            let finished = |name: &str| {
                state["jobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|j| j["scaledJob"] == name && j["state"] == "succeeded")
                    .count()
            };
            (enough("lagger", "lagged")
                && enough("dispatcher", "orders")
                && finished("dispatcher") == 4
                && finished("lagger") >= 1)
                .then_some(state)
        },
    )
    .await;
    let lag_of = |name: &str| {
        state["scaledJobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|sj| sj["name"] == name)
            .unwrap()["lag"]
            .clone()
    };
    assert_eq!(
        lag_of("lagger"),
        json!(5),
        "Jobs that don't consume leave the lag"
    );
    eprintln!("state: {state}");

    let dump = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("http://{addr}/"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(
        dump.status.success() && dom.contains("</html>"),
        "chromium failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );

    // Both ScaledJobs, with their mode.
    for (name, mode) in [("lagger", "lag"), ("dispatcher", "dispatch")] {
        assert!(
            dom.contains(&format!(
                "<tr class=\"scaled-job\" data-mode=\"{mode}\"><td class=\"name\">default/{name}</td>"
            )),
            "{name} ({mode}) is not listed:\n{dom}"
        );
    }
    // Lag points for each partition.
    for name in ["lagger", "dispatcher"] {
        let series = drawn_series(&dom, &format!("default/{name}"));
        let partitions: Vec<i64> = series.iter().map(|(p, _)| *p).collect();
        assert_eq!(partitions, [0, 1], "{name}: {series:?}");
        assert!(
            series.iter().all(|(_, points)| *points >= 3),
            "{name}: {series:?}"
        );
    }
    // The Jobs on the timeline: every finished one drawn as such, with its pod's start.
    let succeeded = dom
        .matches("<g class=\"job\" data-state=\"succeeded\" data-running=\"true\">")
        .count();
    assert!(succeeded >= 5, "{succeeded} succeeded Jobs drawn:\n{dom}");
    assert!(
        dom.contains("dispatcher · dispatcher-"),
        "dispatch Jobs are named on the timeline"
    );
    // The tenant's markup is text: escaped in the DOM, and no element made of it.
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the hostile topic is not shown as text:\n{dom}"
    );
    assert!(
        !dom.contains("<img"),
        "the hostile topic became an element:\n{dom}"
    );

    if let Some(path) = std::env::var_os("JOBTIDE_LIVE_SCREENSHOT") {
        let path = std::path::absolute(PathBuf::from(path)).unwrap();
        let shot = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--virtual-time-budget=5000",
                "--window-size=1000,940",
            ])
            .arg(format!("--screenshot={}", path.display()))
            .arg(format!("http://{addr}/"))
            .output()
            .unwrap();
        assert!(
            shot.status.success(),
            "{}",
            String::from_utf8_lossy(&shot.stderr)
        );
        let png = std::fs::read(&path).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    }
    let version = Command::new(&chromium).arg("--version").output().unwrap();
    jobtide_testpeers::peers::record(String::from_utf8_lossy(&version.stdout).trim());
}
