//! Dispatch mode's traces, received by a real OpenTelemetry Collector (issue 17): the collector
//! built from its Go modules (`peers/otelcol`, `scripts/install-otelcol`, `JOBTIDE_OTELCOL`) with
//! the OTLP receiver on loopback and the contrib file exporter; `jobtide dev --no-operator` holds
//! the API server, the runner and the broker; a `jobtide operator` exports its spans with
//! `OTEL_TRACES_EXPORTER=otlp`.
//!
//! Three messages: one with a producer's `traceparent` that succeeds, one without that succeeds,
//! one with a `traceparent` whose Jobs fail (`maxAttempts: 2`, no dead-letter topic). From the
//! collector's file: one `jobtide.message` span per message, parented on the producer's span (or
//! a new trace), with one `jobtide.job` child per attempt (each with `jobtide.job.queued` and
//! `jobtide.job.running` under it); every Job's `TRACEPARENT` names its `jobtide.job` span.
//!
//! Without `JOBTIDE_OTELCOL` the test skips with the reason; under CI (`CI=true`) it fails.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

#[allow(dead_code)] // shared with dispatch_crash.rs, which uses all of it
mod processes;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobtide_api::ScaledJob;
use jobtide_kafka::tools::{RawRecord, produce_raw};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::{ListParams, PostParams};
use processes::{Dev, Operator, required, tail};
use serde_json::{Value, json};

const TOPIC: &str = "orders";
/// The collector release `peers/otelcol` pins (scripts/install-otelcol).
const COLLECTOR: &str = "OpenTelemetry Collector v0.161.0";
const PRODUCER_A: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const PRODUCER_C: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// The collector, killed on drop.
struct Collector {
    child: Child,
    port: u16,
    spans: PathBuf,
    log: PathBuf,
}

impl Collector {
    fn start(binary: &str, dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spans = dir.join("spans.jsonl");
        let config = dir.join("otelcol.yaml");
        // JSON strings are valid YAML scalars: the paths are quoted whatever they hold.
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n\
                 exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n\
                 service:\n  telemetry:\n    metrics:\n      level: none\n\
                 \x20 pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
                serde_json::to_string(&spans.display().to_string()).unwrap()
            ),
        )
        .unwrap();
        let log = dir.join("otelcol.log");
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the collector");
        let collector = Self {
            child,
            port,
            spans,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the collector did not listen on {port} within 30 s; its log:\n{}",
                tail(&collector.log, 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        collector
    }

    /// Every span the file exporter wrote (one OTLP/JSON export request per line).
    fn spans(&self) -> Vec<Span> {
        let text = std::fs::read_to_string(&self.spans).unwrap_or_default();
        let mut spans = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let request: Value = serde_json::from_str(line).expect("an OTLP/JSON line");
            for resource in request["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        spans.push(Span::of(span));
                    }
                }
            }
        }
        spans
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test reads of one span.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    start: u128,
    end: u128,
    error: bool,
    attributes: BTreeMap<String, String>,
}

impl Span {
    fn of(span: &Value) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let nanos = |v: &Value| v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
        let attributes = span["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let value = &kv["value"];
                let value = value["stringValue"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| value["intValue"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| value.to_string());
                (text(&kv["key"]), value)
            })
            .collect();
        Self {
            name: text(&span["name"]),
            trace: text(&span["traceId"]),
            id: text(&span["spanId"]),
            parent: text(&span["parentSpanId"]),
            start: nanos(&span["startTimeUnixNano"]),
            end: nanos(&span["endTimeUnixNano"]),
            // STATUS_CODE_ERROR is 2.
            error: span["status"]["code"] == json!(2),
            attributes,
        }
    }

    fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// Jobs write `offset attempt $TRACEPARENT` to `runs`; a message whose value is `fail` fails.
fn scaled_job(runs: &Path) -> ScaledJob {
    let script = format!(
        r#"printf '%s %s %s\n' "$JOBTIDE_OFFSET" "$JOBTIDE_ATTEMPT" "$TRACEPARENT" >> '{}'; test "$(cat "$JOBTIDE_MESSAGE_DIR/value")" != fail"#,
        runs.display()
    );
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "orders", "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "worker", "image": "busybox", "command": ["/bin/sh", "-c"], "args": [script]}]}}},
            "maxReplicaCount": 4,
            "successfulJobsHistoryLimit": 100,
            "failedJobsHistoryLimit": 100,
            "triggers": [{"type": "kafka-dispatch", "metadata": {
                "bootstrapServers": "kafka.invalid:9092",
                "consumerGroup": "orders-dispatch", "topic": TOPIC, "offsetResetPolicy": "earliest",
                "maxAttempts": "2", "payload": "file"}}],
        },
    }))
    .unwrap()
}

fn record(value: &str, traceparent: Option<&str>) -> RawRecord {
    RawRecord {
        key: None,
        value: Some(value.as_bytes().to_vec()),
        headers: traceparent
            .map(|t| vec![("traceparent".to_owned(), Some(t.as_bytes().to_vec()))])
            .unwrap_or_default(),
    }
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// The message span of `offset`, its Job spans by attempt, and their children, checked as a tree.
fn message_tree(spans: &[Span], offset: i64, attempts: u32) -> (&Span, Vec<&Span>) {
    let messages: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.name == "jobtide.message"
                && s.attribute("messaging.kafka.offset") == offset.to_string()
        })
        .collect();
    assert_eq!(
        messages.len(),
        1,
        "one message span for offset {offset}: {messages:#?}"
    );
    let message = messages[0];
    assert_eq!(message.attribute("jobtide.attempts"), attempts.to_string());
    assert_eq!(message.attribute("messaging.destination.name"), TOPIC);
    assert_eq!(message.attribute("messaging.destination.partition.id"), "0");
    let mut jobs: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "jobtide.job" && s.parent == message.id)
        .collect();
    jobs.sort_by_key(|s| s.attribute("jobtide.attempt").to_owned());
    assert_eq!(
        jobs.iter()
            .map(|s| s.attribute("jobtide.attempt"))
            .collect::<Vec<_>>(),
        (1..=attempts).map(|a| a.to_string()).collect::<Vec<_>>(),
        "one job span per attempt under the message span of offset {offset}"
    );
    for job in &jobs {
        assert_eq!(job.trace, message.trace);
        assert!(
            message.start <= job.start && job.end <= message.end,
            "{job:#?} inside {message:#?}"
        );
        let mut children: Vec<&str> = spans
            .iter()
            .filter(|s| s.parent == job.id)
            .map(|s| {
                assert_eq!(s.trace, job.trace);
                assert!(
                    job.start <= s.start && s.end <= job.end,
                    "{s:#?} inside {job:#?}"
                );
                s.name.as_str()
            })
            .collect();
        children.sort_unstable();
        assert_eq!(children, ["jobtide.job.queued", "jobtide.job.running"]);
    }
    (message, jobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_receives_one_trace_per_message_parented_on_the_producer() {
    let Some(binary) = required(
        std::env::var("JOBTIDE_OTELCOL")
            .ok()
            .filter(|path| !path.is_empty()),
        "JOBTIDE_OTELCOL is not set (path to the collector scripts/install-otelcol builds; .ci/run sets it)",
    ) else {
        return;
    };
    if let Ok(peers) = std::env::var("JOBTIDE_PEERS_FILE") {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(peers)
            .unwrap();
        writeln!(file, "{COLLECTOR}").unwrap();
    }
    let dev = Dev::start(&[
        "--kafka-addr",
        "127.0.0.1:0",
        "--create-topic",
        &format!("{TOPIC}:1"),
    ]);
    let collector = Collector::start(&binary, dev.dir.path());
    let client = dev.client();
    let runs = dev.dir.path().join("runs");
    Api::<ScaledJob>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &scaled_job(&runs))
        .await
        .unwrap();
    let placed = produce_raw(
        &dev.kafka,
        TOPIC,
        &[
            record("ok", Some(PRODUCER_A)),
            record("ok", None),
            record("fail", Some(PRODUCER_C)),
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(placed, [(0, 0), (0, 1), (0, 2)]);
    let endpoint = format!("http://127.0.0.1:{}", collector.port);
    let operator = Operator::start_with_env(
        &dev,
        "traced",
        &[],
        &[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );

    // 4 Jobs: offsets 0 and 1 once, offset 2 twice (both fail); all finished.
    let jobs = Api::<Job>::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let list = jobs.list(&ListParams::default()).await.unwrap().items;
        if list.len() == 4 && list.iter().all(finished) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 4 Jobs did not finish within 90 s: {:?}; the operator's log:\n{}",
            list.iter()
                .map(|j| j.metadata.name.clone())
                .collect::<Vec<_>>(),
            tail(&operator.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The message span of the failed message is emitted once its failure is recorded; every
    // span reaches the file within about a second after that (100 ms batches and flushes).
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = collector.spans();
        if spans.iter().filter(|s| s.name == "jobtide.message").count() >= 3 {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "3 message spans did not reach the collector within 30 s ({} spans); the operator's log:\n{}\nthe collector's:\n{}",
            spans.len(),
            tail(&operator.log, 30),
            tail(&collector.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A second look after the operator stopped (it flushes at exit): nothing emitted twice.
    assert!(!spans.is_empty());
    operator.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = collector.spans();
    let ids: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        spans.len(),
        "every span exported once: {spans:#?}"
    );
    let dispatch = spans
        .iter()
        .filter(|s| s.name.starts_with("jobtide.message") || s.name.starts_with("jobtide.job"))
        .count();
    assert_eq!(
        dispatch,
        3 + 4 * 3,
        "3 message spans, 4 Job spans with 2 children each"
    );

    let (a, a_jobs) = message_tree(&spans, 0, 1);
    assert_eq!(a.trace, PRODUCER_A[3..35], "the producer's trace");
    assert_eq!(
        a.parent,
        PRODUCER_A[36..52],
        "the producer's span is the parent"
    );
    assert_eq!(a.attribute("jobtide.outcome"), "succeeded");
    assert!(!a.error && !a_jobs[0].error);

    let (b, _) = message_tree(&spans, 1, 1);
    assert_eq!(b.parent, "", "no traceparent: a new trace");
    assert_ne!(b.trace, a.trace);
    assert_eq!(b.attribute("jobtide.outcome"), "succeeded");

    let (c, c_jobs) = message_tree(&spans, 2, 2);
    assert_eq!(c.trace, PRODUCER_C[3..35]);
    assert_eq!(c.parent, PRODUCER_C[36..52]);
    assert_eq!(c.attribute("jobtide.outcome"), "failed");
    assert!(
        c.error
            && c_jobs
                .iter()
                .all(|j| j.error && j.attribute("jobtide.outcome") == "failed")
    );

    // Each Job's TRACEPARENT names its own job span: the Job's work joins the trace.
    let runs = std::fs::read_to_string(&runs).unwrap();
    let mut seen: Vec<String> = runs.lines().map(str::to_owned).collect();
    seen.sort();
    let mut expected: Vec<String> = [
        (0, 1, a, a_jobs[0]),
        (2, 1, c, c_jobs[0]),
        (2, 2, c, c_jobs[1]),
    ]
    .into_iter()
    .map(|(offset, attempt, message, job)| {
        format!("{offset} {attempt} 00-{}-{}-01", message.trace, job.id)
    })
    .collect();
    let b_job = spans
        .iter()
        .find(|s| s.name == "jobtide.job" && s.parent == b.id)
        .unwrap();
    expected.push(format!("1 1 00-{}-{}-01", b.trace, b_job.id));
    expected.sort();
    assert_eq!(seen, expected);
}
