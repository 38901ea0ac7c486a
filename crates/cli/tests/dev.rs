//! `jobtide dev` end to end: the seed walkthrough (`../shared/examples/seed-walkthrough.md`) on
//! one machine, driven through the real binary, kube-rs and kubectl (when on the machine), with
//! the embedded broker and — when `JOBTIDE_TANSU` is set (CI) — with tansu.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use common::dev::{Dev, completed, eventually, example, start_dev};

use std::collections::BTreeSet;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobtide_api::ScaledJob;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, LogParams, PostParams};
use kube::{Api, ResourceExt};

fn condition(sj: &ScaledJob, type_: &str) -> Option<(String, String)> {
    let c = sj
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

/// Processes whose command line is `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.trim_end() == marker {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Steps 1–8 of the walkthrough on a running dev, with the example manifest.
async fn walkthrough(dev: &mut Dev) {
    let client = dev.client();
    let scaled_jobs: Api<ScaledJob> = Api::namespaced(client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // 1. Apply the example (kubectl when on the machine, else kube-rs).
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dev-scaledjob.yaml");
    if dev
        .kubectl(&[
            "apply",
            "--validate=false",
            "-f",
            manifest.to_str().unwrap(),
        ])
        .is_none()
    {
        eprintln!("kubectl not found: applying with kube-rs, kubectl checks skipped");
        scaled_jobs
            .create(&PostParams::default(), &example())
            .await
            .unwrap();
    }
    // 2, 3. Ready True; not active (nothing waiting).
    eventually("Ready True", 10, async || {
        let sj = scaled_jobs.get("kafka-scaledjob").await.ok()?;
        (condition(&sj, "Ready")? == ("True".into(), "ScaledJobReady".into())).then_some(())
    })
    .await;
    if let Some(table) = dev.kubectl(&["get", "scaledjob"]) {
        let header: Vec<_> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "MIN",
                "MAX",
                "READY",
                "ACTIVE",
                "PAUSED",
                "TRIGGERS",
                "AUTHENTICATIONS",
                "AGE"
            ]
        );
        let row: Vec<_> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(&row[..3], ["kafka-scaledjob", "30", "True"], "{table}");
    }

    // 5. Three messages.
    let messages: Vec<(Option<String>, String)> = (18..21)
        .map(|id| {
            (
                Some(id.to_string()),
                format!(r#"{{"ordertime":1497014222380,"orderid":{id},"itemid":"Item_{id}"}}"#),
            )
        })
        .collect();
    jobtide_kafka::tools::produce(&dev.kafka, "test-topic", &messages, Duration::from_secs(30))
        .await
        .unwrap();

    // 6. Jobs run and complete, one per message.
    let done = eventually("three completed Jobs and nothing waiting", 90, async || {
        let listed = jobs.list(&ListParams::default()).await.ok()?.items;
        let sj = scaled_jobs.get("kafka-scaledjob").await.ok()?;
        (listed.len() == 3
            && listed.iter().all(completed)
            && condition(&sj, "Active")?.0 == "False")
            .then_some(listed)
    })
    .await;
    // 7, 8. Each pod's log has one message; together, each message exactly once.
    let mut consumed = BTreeSet::new();
    for job in &done {
        let listed = pods
            .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
            .await
            .unwrap()
            .items;
        assert_eq!(listed.len(), 1, "one pod per Job");
        let log = pods
            .logs(&listed[0].name_any(), &LogParams::default())
            .await
            .unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.first(), Some(&"start"), "{log}");
        assert!(lines.contains(&"Processed a total of 1 messages"), "{log}");
        assert_eq!(lines.last(), Some(&"end!"), "{log}");
        let message = lines
            .iter()
            .find(|l| l.contains("orderid"))
            .unwrap_or_else(|| panic!("no message in {log}"));
        assert!(
            consumed.insert((*message).to_owned()),
            "consumed twice: {message}"
        );
    }
    let expected: BTreeSet<String> = messages
        .iter()
        .map(|(k, v)| format!("{}\t{v}", k.as_deref().unwrap()))
        .collect();
    assert_eq!(consumed, expected);

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let events: Vec<(String, String)> = events
        .list(&ListParams::default().fields("involvedObject.name=kafka-scaledjob"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect();
    for expected in [
        ("KEDAScalersStarted", "Started scalers watch"),
        ("ScaledJobReady", "ScaledJob is ready for scaling"),
        ("KEDAScalersStarted", "Scaler kafka is built"),
        ("KEDAJobsCreated", "Created 1 jobs"),
    ] {
        assert!(
            events
                .iter()
                .any(|(r, m)| r == expected.0 && m == expected.1),
            "missing {expected:?} in {events:?}"
        );
    }
    if let Some(table) = dev.kubectl(&["get", "jobs"]) {
        assert_eq!(table.matches(" 1/1 ").count(), 3, "{table}");
    }
    if let Some(table) = dev.kubectl(&["get", "pods"]) {
        assert_eq!(table.matches("Completed").count(), 3, "{table}");
        let pod = table
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        let log = dev.kubectl(&["logs", pod]).unwrap();
        assert!(
            log.contains("orderid") && log.starts_with("start\n"),
            "{log}"
        );
    }
    if let Some(described) = dev.kubectl(&["describe", "scaledjob", "kafka-scaledjob"]) {
        assert!(described.contains("KEDAJobsCreated"), "{described}");
        assert!(described.contains("Created 1 jobs"), "{described}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_on_dev_with_the_embedded_broker() {
    let mut dev = start_dev(&[
        "--kafka-addr",
        "127.0.0.1:0",
        "--create-topic",
        "test-topic",
    ]);
    walkthrough(&mut dev).await;

    // A manifest with a bad trigger shows up as in a cluster: Ready False and a Warning event.
    let client = dev.client();
    let scaled_jobs: Api<ScaledJob> = Api::namespaced(client.clone(), "default");
    let mut bad = example();
    bad.metadata.name = Some("bad-trigger".into());
    bad.spec.triggers[0]
        .metadata
        .insert("lagThreshold".into(), "many".into());
    scaled_jobs
        .create(&PostParams::default(), &bad)
        .await
        .unwrap();
    eventually("Ready False for the bad trigger", 15, async || {
        let sj = scaled_jobs.get("bad-trigger").await.ok()?;
        (condition(&sj, "Ready")?.0 == "False").then_some(())
    })
    .await;
    if let Some(described) = dev.kubectl(&["describe", "scaledjob", "bad-trigger"]) {
        assert!(described.contains("Warning"), "{described}");
        assert!(described.contains("lagThreshold"), "{described}");
    }

    // Stopping dev stops every process it started, pods' children included.
    let mut sleeper = example();
    sleeper.metadata.name = Some("sleeper".into());
    sleeper.spec.min_replica_count = Some(1);
    let container = &mut sleeper
        .spec
        .job_target_ref
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0];
    container.args = Some(vec!["sleep 297 & sleep 298".into()]);
    scaled_jobs
        .create(&PostParams::default(), &sleeper)
        .await
        .unwrap();
    eventually("the sleeper's processes", 30, async || {
        (processes_with("sleep 297").len() == 1 && processes_with("sleep 298").len() == 1)
            .then_some(())
    })
    .await;
    let status = dev.stop();
    assert!(status.success(), "jobtide dev exited with {status}");
    let left: Vec<String> = ["sleep 297", "sleep 298"]
        .iter()
        .flat_map(|m| processes_with(m))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_on_dev_with_tansu() {
    let Ok(binary) = std::env::var("JOBTIDE_TANSU") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must set JOBTIDE_TANSU (.ci/run installs tansu)"
        );
        eprintln!("skipped: JOBTIDE_TANSU is not set");
        return;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut tansu = Command::new(binary)
        .current_dir(dir.path())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let servers = format!("127.0.0.1:{port}");
    let mut dev = start_dev(&[
        "--bootstrap-servers",
        &servers,
        "--create-topic",
        "test-topic",
    ]);
    assert_eq!(dev.kafka, servers);
    walkthrough(&mut dev).await;
    assert!(dev.stop().success());
    let _ = tansu.kill();
    let _ = tansu.wait();
}

#[test]
fn an_occupied_port_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
        .args(["dev", "--api-addr", &addr, "--kafka-addr", "127.0.0.1:0"])
        .arg("--kubeconfig-out")
        .arg(dir.path().join("kubeconfig"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("--api-addr {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
}

/// `jobtide dev --bootstrap-servers` against Apache Kafka (KRaft, `JOBTIDE_KAFKA_HOME`): the
/// walkthrough in lag mode, then dispatch mode (examples/dev-dispatch.yaml), each checked
/// against Kafka's own view of the group (`kafka-consumer-groups --describe`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_and_dispatch_on_dev_with_apache_kafka() {
    let Some(kafka) = jobtide_testpeers::kafka::Broker::shared() else {
        return;
    };
    kafka.create_topic("test-topic", 1).await;
    kafka.create_topic("orders", 2).await;
    kafka.create_topic("orders-dlq", 1).await;
    let servers = kafka.listeners.plaintext.clone();
    let mut dev = start_dev(&["--bootstrap-servers", &servers]);
    assert_eq!(dev.kafka, servers);
    walkthrough(&mut dev).await;
    // The Jobs' consumers committed every message of the walkthrough: Kafka sees no lag.
    let rows = kafka.describe_group("my-group");
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.lag == Some(0)),
        "{rows:?}"
    );

    // Dispatch mode: one Job per message, the group committed by the operator once each is done.
    let client = dev.client();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dev-dispatch.yaml");
    let dispatch: ScaledJob =
        serde_saphyr::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    Api::<ScaledJob>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &dispatch)
        .await
        .unwrap();
    let messages: Vec<(Option<String>, String)> = (0..6)
        .map(|i| (Some(format!("order-{i}")), format!("{{\"order\":{i}}}")))
        .collect();
    jobtide_kafka::tools::produce(&servers, "orders", &messages, Duration::from_secs(30))
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let selector = ListParams::default().labels("scaledjob.keda.sh/name=orders-dispatch");
    let done = eventually("six completed dispatch Jobs", 90, async || {
        let listed = jobs.list(&selector).await.ok()?.items;
        (listed.len() == 6 && listed.iter().all(completed)).then_some(listed)
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut values = BTreeSet::new();
    for job in &done {
        let listed = pods
            .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
            .await
            .unwrap()
            .items;
        assert_eq!(listed.len(), 1, "one pod per Job");
        let log = pods
            .logs(&listed[0].name_any(), &LogParams::default())
            .await
            .unwrap();
        let value = log
            .lines()
            .find_map(|l| l.strip_prefix("value: "))
            .unwrap_or_else(|| panic!("no value in {log}"));
        assert!(values.insert(value.to_owned()), "dispatched twice: {value}");
    }
    let expected: BTreeSet<String> = messages.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(values, expected);
    // Kafka's own view: the operator's group committed all six, without ever joining it.
    let committed = eventually("the dispatch group's commits", 30, async || {
        let rows = kafka.describe_group("orders-dispatch");
        let sum: i64 = rows.iter().filter_map(|r| r.current).sum();
        (sum == 6 && rows.iter().all(|r| r.lag == Some(0))).then_some(rows)
    })
    .await;
    assert_eq!(committed.len(), 2, "{committed:?}");
    assert!(dev.stop().success());
}
