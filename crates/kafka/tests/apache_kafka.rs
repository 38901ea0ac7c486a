//! jobtide against a real Apache Kafka broker (KRaft, one node, started from the jars in
//! `JOBTIDE_KAFKA_HOME` by `crates/testpeers/src/kafka.rs`), with Kafka's own tools and Python
//! `confluent-kafka` as oracles: lag of both trigger types, transactional topics, retention,
//! compaction,
//! SASL (PLAIN, SCRAM-SHA-256/512) and TLS (server and mutual), and dispatch mode's consumer.
//!
//! Every test shares one broker (its topics and groups are the test's own). `.ci/run` installs
//! Kafka (`scripts/install-peers`) and sets `JOBTIDE_KAFKA_HOME`; elsewhere the tests skip with a
//! printed reason, and under CI (`CI=true`) a missing install is a failure.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use jobtide_api::resolve::TriggerInputs;
use jobtide_api::scaledjob::ScaleTrigger;
use jobtide_api::secret::Secret;
use jobtide_api::trigger::{TriggerConfig, parse_trigger};
use jobtide_core::dispatch::Message;
use jobtide_core::lag::PersistentLagMemory;
use jobtide_kafka::dispatch::DispatchConsumer;
use jobtide_kafka::kerberos::GssapiSupport;
use jobtide_kafka::problem::BrokerProblem;
use jobtide_kafka::scaler::{Measurement, ScalerError, measure_trigger};
use jobtide_kafka::source::SourcePool;
use jobtide_kafka::tools::{RawRecord, StartFrom, consume, produce, produce_raw};
use jobtide_testpeers::kafka::{
    Broker, KEY_PASSWORD, PLAIN_PASSWORD, PLAIN_USER, SCRAM_PASSWORD, SCRAM_USER,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(20);

/// Python `confluent-kafka` (its own librdkafka) as an outside client.
const PYTHON: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

command, servers = sys.argv[1], sys.argv[2]

def consumer(group, isolation):
    return Consumer({"bootstrap.servers": servers, "group.id": group,
                     "enable.auto.commit": False, "isolation.level": isolation,
                     "auto.offset.reset": "earliest"})

def text(b):
    return None if b is None else b.decode()

if command == "offsets":
    # committed offsets and watermarks of every partition
    group, topic, partitions, isolation = sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
    c = consumer(group, isolation)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    out = {}
    for p in range(partitions):
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        out[str(p)] = {"committed": committed[p] if committed[p] >= 0 else None,
                       "low": low, "high": high}
    c.close()
    print(json.dumps(out))
elif command == "commit":
    # commit `offset` for partition 0 of `topic` in `group`, reading nothing
    group, topic, offset = sys.argv[3], sys.argv[4], int(sys.argv[5])
    c = consumer(group, "read_uncommitted")
    c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    c.close()
    print(json.dumps({"committed": offset}))
elif command == "read":
    # read `count` messages of partition 0 from its start (by assignment), then commit:
    # "position" (what a consumer's plain commit() does), "last" (the last message's offset + 1,
    # what committing each message does) or "no"
    group, topic, isolation, count, commit = (sys.argv[3], sys.argv[4], sys.argv[5],
                                              int(sys.argv[6]), sys.argv[7])
    c = consumer(group, isolation)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got, deadline = [], time.time() + 20
    while len(got) < count and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got.append({"offset": m.offset(), "key": text(m.key()), "value": text(m.value()),
                    "headers": [[k, text(v)] for k, v in (m.headers() or [])]})
    # nothing more is visible
    extra = c.poll(1.0)
    position = c.position([TopicPartition(topic, 0)])[0].offset
    if commit == "position":
        c.commit(asynchronous=False)
    elif commit == "last":
        c.commit(offsets=[TopicPartition(topic, 0, got[-1]["offset"] + 1)], asynchronous=False)
    c.close()
    print(json.dumps({"messages": got, "position": position,
                      "more": extra is not None and not extra.error()}))
"#;

fn python(args: &[&str]) -> Value {
    let output = Command::new("python3")
        .args(["-c", PYTHON])
        .args(args)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "python {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("python JSON")
}

/// A trigger as a ScaledJob would declare it, through jobtide's own parser.
fn trigger(type_: &str, metadata: &[(&str, &str)], auth: &[(&str, &str)]) -> TriggerConfig {
    let trigger = ScaleTrigger {
        type_: type_.into(),
        name: None,
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        authentication_ref: None,
        use_cached_metrics: None,
        metric_type: None,
    };
    let inputs = TriggerInputs {
        auth_params: auth
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Secret::new(*v)))
            .collect(),
        ..TriggerInputs::default()
    };
    let parsed = parse_trigger(0, &trigger, &inputs);
    parsed
        .config
        .unwrap_or_else(|e| panic!("{type_} trigger {metadata:?}: {e:?}"))
}

async fn measure(config: &TriggerConfig) -> Result<Measurement, ScalerError> {
    measure_trigger(
        &SourcePool::new(),
        config,
        None,
        &PersistentLagMemory::new(),
        TIMEOUT,
    )
    .await
}

fn records(prefix: &str, n: usize) -> Vec<(Option<String>, String)> {
    (0..n)
        .map(|i| (Some(format!("{prefix}-k{i}")), format!("{prefix}-v{i}")))
        .collect()
}

fn int(value: &Value) -> Option<i64> {
    value.as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_matches_kafka_consumer_groups_and_confluent_kafka() {
    let Some(kafka) = Broker::shared() else {
        return;
    };
    let servers = &kafka.listeners.plaintext;
    kafka.create_topic("lag-orders", 3).await;
    produce(servers, "lag-orders", &records("lag", 30), TIMEOUT)
        .await
        .expect("produce");
    // A real consumer group (join, sync, commit per message) reads 11 of them …
    let read = consume(
        servers,
        "lag-orders",
        "lag-billing",
        11,
        StartFrom::Earliest,
        TIMEOUT,
    )
    .await
    .expect("consume");
    assert_eq!(read.len(), 11);
    // … and more arrive.
    produce(servers, "lag-orders", &records("lag-more", 7), TIMEOUT)
        .await
        .expect("produce");

    let common = [
        ("bootstrapServers", servers.as_str()),
        ("consumerGroup", "lag-billing"),
        ("lagThreshold", "1"),
        ("offsetResetPolicy", "earliest"),
    ];
    let with_topic = |extra: &[(&'static str, &'static str)]| {
        let mut m = common.to_vec();
        m.extend_from_slice(extra);
        m
    };
    let kafka_trigger = trigger("kafka", &with_topic(&[("topic", "lag-orders")]), &[]);
    let apache_trigger = trigger("apache-kafka", &with_topic(&[("topic", "lag-orders")]), &[]);
    // Without a topic: every topic the group committed, from the all-topics OffsetFetch (which
    // librdkafka's mock cluster doesn't implement, Apache Kafka does).
    let topicless_trigger = trigger("kafka", &common, &[]);
    let ours = measure(&kafka_trigger).await.expect("kafka trigger");
    let apache = measure(&apache_trigger)
        .await
        .expect("apache-kafka trigger");
    let topicless = measure(&topicless_trigger)
        .await
        .expect("topic-less trigger");
    assert_eq!(ours.partitions, apache.partitions, "apache-kafka = kafka");
    assert_eq!(ours.partitions, topicless.partitions, "topic-less = kafka");
    assert_eq!(ours.partitions.iter().map(|p| p.end).sum::<i64>(), 37);
    assert_eq!(ours.total_lag, 37 - 11, "{ours:#?}");

    // Kafka's own view: kafka-consumer-groups --describe.
    let rows = kafka.describe_group("lag-billing");
    for partition in &ours.partitions {
        match rows
            .iter()
            .find(|r| r.topic == "lag-orders" && r.partition == partition.partition)
        {
            Some(row) => {
                assert_eq!(row.log_end, Some(partition.end), "{row:?}");
                assert_eq!(row.current, partition.committed, "{row:?}");
                assert_eq!(row.lag, Some(partition.lag), "{row:?}");
            }
            // The tool lists only what the group committed; jobtide (earliest) counts the
            // partition from its log start.
            None => assert_eq!(
                (partition.committed, partition.lag),
                (None, partition.end),
                "{rows:#?}"
            ),
        }
    }
    assert!(!rows.is_empty());
    // Python confluent-kafka's view.
    let theirs = python(&[
        "offsets",
        servers,
        "lag-billing",
        "lag-orders",
        "3",
        "read_uncommitted",
    ]);
    for partition in &ours.partitions {
        let other = &theirs[partition.partition.to_string()];
        assert_eq!(int(&other["high"]), Some(partition.end));
        assert_eq!(int(&other["committed"]), partition.committed);
        assert_eq!(int(&other["low"]), partition.log_start.or(Some(0)));
    }
}

/// The transactional producer (Python confluent-kafka) writes, to partition 0 of `topic`:
/// committed c1–c3 (offsets 0–2, marker 3), aborted a1–a2 (4–5, marker 6), committed c4–c5 (7–8,
/// marker 9), then o1–o2 (10–11) in a transaction it keeps open until told to commit (marker 12).
const TRANSACTIONAL_PRODUCER: &str = r#"
import sys
from confluent_kafka import Producer
servers, topic = sys.argv[1], sys.argv[2]
p = Producer({"bootstrap.servers": servers, "transactional.id": "jobtide-test-" + topic})
p.init_transactions(30)
def transaction(values):
    p.begin_transaction()
    for v in values:
        p.produce(topic, value=v.encode(), partition=0)
    p.flush()
transaction(["c1", "c2", "c3"]); p.commit_transaction()
transaction(["a1", "a2"]); p.abort_transaction()
transaction(["c4", "c5"]); p.commit_transaction()
transaction(["o1", "o2"])
print("open", flush=True)
sys.stdin.readline()
p.commit_transaction()
print("committed", flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_lag_counts_against_the_last_stable_offset() {
    let Some(kafka) = Broker::shared() else {
        return;
    };
    let servers = kafka.listeners.plaintext.clone();
    let topic = "txn-orders";
    kafka.create_topic(topic, 1).await;
    let mut producer = Command::new("python3")
        .args(["-c", TRANSACTIONAL_PRODUCER, &servers, topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut said = BufReader::new(producer.stdout.take().expect("stdout")).lines();
    assert_eq!(said.next().and_then(Result::ok).as_deref(), Some("open"));

    // Kafka's view (Java AdminClient): high watermark 12, last stable offset 10 (the open
    // transaction's first offset).
    let admin = &kafka.admin_offsets("txn-readers", topic)["0"];
    assert_eq!(
        (int(&admin["end"]), int(&admin["stable"])),
        (Some(12), Some(10)),
        "{admin}"
    );

    // A read_committed consumer reads what is visible and commits its position, which librdkafka
    // (like the Java consumer) moves past transaction markers and aborted records: 10.
    let read = python(&[
        "read",
        &servers,
        "txn-readers",
        topic,
        "read_committed",
        "5",
        "position",
    ]);
    let values: Vec<&str> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["c1", "c2", "c3", "c4", "c5"]);
    assert_eq!(read["more"], false, "the open transaction is invisible");
    assert_eq!(int(&read["position"]), Some(10));

    let metadata = |group: &'static str, isolation: &'static str| {
        vec![
            ("bootstrapServers", servers.as_str()),
            ("consumerGroup", group),
            ("topic", topic),
            ("lagThreshold", "1"),
            ("offsetResetPolicy", "earliest"),
            ("isolationLevel", isolation),
        ]
    };
    for type_ in ["kafka", "apache-kafka"] {
        let committed = measure(&trigger(
            type_,
            &metadata("txn-readers", "read_committed"),
            &[],
        ))
        .await
        .expect("read_committed");
        let p = &committed.partitions[0];
        assert_eq!(
            (p.committed, p.end, committed.total_lag),
            (Some(10), 10, 0),
            "{type_} read_committed: no lag for a consumer that read everything committed"
        );
        // KEDA's count (the high watermark): the open transaction's two records (and, later,
        // its marker) look like lag.
        let uncommitted = measure(&trigger(
            type_,
            &metadata("txn-readers", "read_uncommitted"),
            &[],
        ))
        .await
        .expect("read_uncommitted");
        assert_eq!(
            (uncommitted.partitions[0].end, uncommitted.total_lag),
            (12, 2),
            "{type_} read_uncommitted"
        );
    }
    // A consumer that commits its last message's offset + 1 (8 + 1) rather than its position
    // leaves the marker at 9 behind: 1 in both counts, the last stable offset can't help.
    let read = python(&[
        "read",
        &servers,
        "txn-per-message",
        topic,
        "read_committed",
        "5",
        "last",
    ]);
    assert_eq!(read["messages"].as_array().map(Vec::len), Some(5));
    for (isolation, lag) in [("read_committed", 1), ("read_uncommitted", 3)] {
        let measured = measure(&trigger(
            "kafka",
            &metadata("txn-per-message", isolation),
            &[],
        ))
        .await
        .expect("per-message commits");
        assert_eq!(measured.total_lag, lag, "{isolation}");
    }
    // A group that hasn't read yet: aborted records and markers below the last stable offset
    // count too (no client can tell them apart without reading them).
    let fresh = measure(&trigger(
        "kafka",
        &metadata("txn-new", "read_committed"),
        &[],
    ))
    .await
    .expect("fresh group");
    assert_eq!(fresh.total_lag, 10);

    // Dispatch mode reads read_committed by default: aborted and open records never become Jobs.
    let dispatch = trigger(
        "kafka-dispatch",
        &[
            ("bootstrapServers", servers.as_str()),
            ("consumerGroup", "txn-dispatch"),
            ("topic", topic),
            ("offsetResetPolicy", "earliest"),
        ],
        &[],
    );
    let TriggerConfig::KafkaDispatch(dispatch) = dispatch else {
        unreachable!()
    };
    let consumer = DispatchConsumer::connect(&dispatch, None, &GssapiSupport::Disabled)
        .expect("dispatch consumer");
    let start = consumer.start_positions().await.expect("start positions");
    assert_eq!(start, BTreeMap::from([(0, 0)]));
    consumer.assign(&start).expect("assign");
    let mut offsets = Vec::new();
    while let Ok(message) = tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await {
        let message = message.expect("recv");
        offsets.push((
            message.offset,
            String::from_utf8(message.value.unwrap()).unwrap(),
        ));
    }
    assert_eq!(
        offsets,
        [(0, "c1"), (1, "c2"), (2, "c3"), (7, "c4"), (8, "c5")].map(|(o, v)| (o, v.to_owned()))
    );

    // The transaction commits: high watermark and last stable offset meet past its marker.
    writeln!(producer.stdin.as_mut().expect("stdin")).expect("tell the producer");
    assert_eq!(
        said.next().and_then(Result::ok).as_deref(),
        Some("committed")
    );
    producer.wait().expect("producer");
    let admin = &kafka.admin_offsets("txn-readers", topic)["0"];
    assert_eq!(
        (int(&admin["end"]), int(&admin["stable"])),
        (Some(13), Some(13)),
        "{admin}"
    );
    let read = python(&[
        "read",
        &servers,
        "txn-readers",
        topic,
        "read_committed",
        "7",
        "position",
    ]);
    assert_eq!(int(&read["position"]), Some(13));
    for isolation in ["read_committed", "read_uncommitted"] {
        let after = measure(&trigger("kafka", &metadata("txn-readers", isolation), &[]))
            .await
            .expect("after commit");
        assert_eq!(after.total_lag, 0, "{isolation}: {after:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_below_the_commit_count_only_what_is_retained() {
    let Some(kafka) = Broker::shared() else {
        return;
    };
    let servers = &kafka.listeners.plaintext;
    let topic = "retention-orders";
    kafka.create_topic(topic, 1).await;
    produce(servers, topic, &records("ret", 20), TIMEOUT)
        .await
        .expect("produce");
    let read = consume(
        servers,
        topic,
        "retention-slow",
        5,
        StartFrom::Earliest,
        TIMEOUT,
    )
    .await
    .expect("consume");
    assert_eq!(read.len(), 5);
    // Retention (here: kafka-delete-records' AdminClient call) removes offsets 0–11.
    assert_eq!(kafka.delete_records(topic, 0, 12), 12);

    let admin = &kafka.admin_offsets("retention-slow", topic)["0"];
    assert_eq!(
        (
            int(&admin["committed"]),
            int(&admin["start"]),
            int(&admin["end"])
        ),
        (Some(5), Some(12), Some(20)),
        "{admin}"
    );
    let py = &python(&[
        "offsets",
        servers,
        "retention-slow",
        topic,
        "1",
        "read_uncommitted",
    ])["0"];
    assert_eq!((int(&py["low"]), int(&py["high"])), (Some(12), Some(20)));

    for (group, policy) in [
        ("retention-slow", "latest"),
        ("retention-slow", "earliest"),
        ("retention-new", "earliest"),
    ] {
        for type_ in ["kafka", "apache-kafka"] {
            let measured = measure(&trigger(
                type_,
                &[
                    ("bootstrapServers", servers.as_str()),
                    ("consumerGroup", group),
                    ("topic", topic),
                    ("lagThreshold", "1"),
                    ("offsetResetPolicy", policy),
                ],
                &[],
            ))
            .await
            .expect("measure");
            // D3: what is retained, 20 − 12 (KEDA: 20 − 5 = 15 for the slow group, 20 for
            // the new one).
            assert_eq!(measured.total_lag, 8, "{type_} {group} {policy}");
        }
    }
    // Kafka's tool counts the deleted records as lag (end − committed): KEDA's number.
    let rows = kafka.describe_group("retention-slow");
    assert_eq!(rows[0].lag, Some(15), "{rows:?}");
}

/// Compaction removes records inside the offset range, not below it: lag stays offset arithmetic
/// (high watermark − committed), as Kafka's own tool and KEDA count it, although fewer records
/// are left to read. Only reading the records could tell; docs/differences-from-keda.md says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_has_the_lag_kafka_reports_in_offsets() {
    let Some(kafka) = Broker::shared() else {
        return;
    };
    let servers = &kafka.listeners.plaintext;
    let topic = "compacted-prices";
    kafka
        .create_topic_with(
            topic,
            1,
            &[
                ("cleanup.policy", "compact"),
                ("segment.ms", "100"),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("min.compaction.lag.ms", "0"),
            ],
        )
        .await;
    // 20 records over 4 keys: offsets 0–19, the last record of each key at 16–19.
    let prices: Vec<(Option<String>, String)> = (0..20)
        .map(|i| (Some(format!("k{}", i % 4)), format!("v{i}")))
        .collect();
    produce(servers, topic, &prices, TIMEOUT)
        .await
        .expect("produce");
    // The group has done 0–4. (Committed directly: with segment.ms this short, a consumer might
    // only see the records left after a first compaction.)
    python(&["commit", servers, "compacted-slow", topic, "5"]);
    // Once segment.ms has passed, the next record rolls the segment, so 0–19 become cleanable.
    tokio::time::sleep(Duration::from_millis(300)).await;
    produce(
        servers,
        topic,
        &[(Some("roll".into()), "roll".into())],
        TIMEOUT,
    )
    .await
    .expect("produce");

    // The cleaner keeps the last record of each key: an outside client reads 16–20 and no more.
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    let offsets = loop {
        let read = python(&[
            "read",
            servers,
            "compacted-reader",
            topic,
            "read_uncommitted",
            "5",
            "no",
        ]);
        let offsets: Vec<Option<i64>> = read["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| int(&m["offset"]))
            .collect();
        if offsets.first() == Some(&Some(16)) || std::time::Instant::now() > deadline {
            assert_eq!(read["more"], Value::Bool(false), "{read}");
            break offsets;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        offsets,
        [16, 17, 18, 19, 20].map(Some),
        "the log was not compacted within 60 s"
    );

    let py = &python(&[
        "offsets",
        servers,
        "compacted-slow",
        topic,
        "1",
        "read_uncommitted",
    ])["0"];
    assert_eq!(
        (int(&py["committed"]), int(&py["low"]), int(&py["high"])),
        (Some(5), Some(0), Some(21)),
        "{py}"
    );
    let rows = kafka.describe_group("compacted-slow");
    assert_eq!(rows[0].lag, Some(16), "{rows:?}");
    for type_ in ["kafka", "apache-kafka"] {
        let measured = measure(&trigger(
            type_,
            &[
                ("bootstrapServers", servers.as_str()),
                ("consumerGroup", "compacted-slow"),
                ("topic", topic),
                ("lagThreshold", "1"),
            ],
            &[],
        ))
        .await
        .expect("measure");
        // 21 − 5 offsets, though only 5 records (16–20) are left to read.
        assert_eq!(measured.total_lag, 16, "{type_}: {measured:#?}");
    }
}

/// A `kafka` trigger's connection through every listener and mechanism: (what, type, metadata,
/// auth params).
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, String)>,
    Vec<(&'static str, String)>,
);

fn secure_cases(kafka: &Broker) -> Vec<Case> {
    let l = &kafka.listeners;
    let tls = &kafka.tls;
    let sasl = |mechanism: &str, user: &str, password: &str| {
        vec![
            ("sasl", mechanism.to_owned()),
            ("username", user.to_owned()),
            ("password", password.to_owned()),
        ]
    };
    let mut cases: Vec<Case> = Vec::new();
    for type_ in ["kafka", "apache-kafka"] {
        cases.extend([
            (
                "SASL/PLAIN",
                type_,
                vec![("bootstrapServers", l.sasl_plaintext.clone())],
                sasl("plaintext", PLAIN_USER, PLAIN_PASSWORD),
            ),
            (
                "SASL/SCRAM-SHA-256",
                type_,
                vec![("bootstrapServers", l.sasl_plaintext.clone())],
                sasl("scram_sha256", SCRAM_USER, SCRAM_PASSWORD),
            ),
            (
                "SASL/SCRAM-SHA-512",
                type_,
                vec![("bootstrapServers", l.sasl_plaintext.clone())],
                sasl("scram_sha512", SCRAM_USER, SCRAM_PASSWORD),
            ),
            (
                "TLS",
                type_,
                vec![("bootstrapServers", l.ssl.clone())],
                vec![("tls", "enable".into()), ("ca", tls.ca.clone())],
            ),
            (
                "mutual TLS",
                type_,
                vec![("bootstrapServers", l.mtls.clone())],
                vec![
                    ("tls", "enable".into()),
                    ("ca", tls.ca.clone()),
                    ("cert", tls.client_cert.clone()),
                    ("key", tls.client_key.clone()),
                ],
            ),
            (
                "mutual TLS, traditional encrypted key",
                type_,
                vec![("bootstrapServers", l.mtls.clone())],
                vec![
                    ("tls", "enable".into()),
                    ("ca", tls.ca.clone()),
                    ("cert", tls.client_cert.clone()),
                    ("key", tls.client_key_traditional_encrypted.clone()),
                    ("keyPassword", KEY_PASSWORD.into()),
                ],
            ),
            (
                "mutual TLS, encrypted PKCS#8 key",
                type_,
                vec![("bootstrapServers", l.mtls.clone())],
                vec![
                    ("tls", "enable".into()),
                    ("ca", tls.ca.clone()),
                    ("cert", tls.client_cert.clone()),
                    ("key", tls.client_key_pkcs8_encrypted.clone()),
                    ("keyPassword", KEY_PASSWORD.into()),
                ],
            ),
            (
                "SASL/SCRAM-SHA-512 over TLS",
                type_,
                vec![("bootstrapServers", l.sasl_ssl.clone())],
                [
                    vec![("tls", "enable".into()), ("ca", tls.ca.clone())],
                    sasl("scram_sha512", SCRAM_USER, SCRAM_PASSWORD),
                ]
                .concat(),
            ),
        ]);
    }
    cases.push((
        "TLS, unsafeSsl without a CA",
        "kafka",
        vec![
            ("bootstrapServers", l.ssl.clone()),
            ("unsafeSsl", "true".into()),
        ],
        vec![("tls", "enable".into())],
    ));
    cases
}

fn secure_trigger(
    type_: &str,
    metadata: &[(&'static str, String)],
    auth: &[(&'static str, String)],
) -> TriggerConfig {
    let mut m: Vec<(&str, &str)> = vec![
        ("consumerGroup", "secure-readers"),
        ("topic", "secure-orders"),
        ("lagThreshold", "1"),
    ];
    m.extend(metadata.iter().map(|(k, v)| (*k, v.as_str())));
    let a: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    trigger(type_, &m, &a)
}

async fn secure_topic(kafka: &Broker) {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_init(|| async {
            let servers = &kafka.listeners.plaintext;
            kafka.create_topic("secure-orders", 1).await;
            produce(servers, "secure-orders", &records("sec", 9), TIMEOUT)
                .await
                .expect("produce");
            let read = consume(
                servers,
                "secure-orders",
                "secure-readers",
                4,
                StartFrom::Earliest,
                TIMEOUT,
            )
            .await
            .expect("consume");
            assert_eq!(read.len(), 4);
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_and_tls_triggers_measure_lag() {
    let Some(kafka) = Broker::shared() else {
        return;
    };
    secure_topic(kafka).await;
    let cases = secure_cases(kafka);
    let results = futures_join(
        cases
            .into_iter()
            .map(|(what, type_, metadata, auth)| async move {
                let config = secure_trigger(type_, &metadata, &auth);
                (what, type_, measure(&config).await)
            }),
    )
    .await;
    for (what, type_, result) in results {
        match result {
            Ok(measured) => assert_eq!(measured.total_lag, 5, "{type_} {what}"),
            Err(error) => panic!("{type_} {what}: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_clear_errors() {
    let Some(kafka) = Broker::shared() else {
        return;
    };
    secure_topic(kafka).await;
    let l = &kafka.listeners;
    let tls = &kafka.tls;
    let cases: Vec<Case> = vec![
        (
            "SCRAM-SHA-256, wrong password",
            "kafka",
            vec![("bootstrapServers", l.sasl_plaintext.clone())],
            vec![
                ("sasl", "scram_sha256".into()),
                ("username", SCRAM_USER.into()),
                ("password", "wrong".into()),
            ],
        ),
        (
            "SASL/PLAIN, wrong password",
            "apache-kafka",
            vec![("bootstrapServers", l.sasl_plaintext.clone())],
            vec![
                ("sasl", "plaintext".into()),
                ("username", PLAIN_USER.into()),
                ("password", "wrong".into()),
            ],
        ),
        (
            "mutual TLS without a client certificate",
            "kafka",
            vec![("bootstrapServers", l.mtls.clone())],
            vec![("tls", "enable".into()), ("ca", tls.ca.clone())],
        ),
        (
            "TLS without the CA",
            "kafka",
            vec![("bootstrapServers", l.ssl.clone())],
            vec![("tls", "enable".into())],
        ),
    ];
    // What each must be: refusals (authentication, certificate verification, the broker's
    // alert that our certificate is missing) end the measurement as soon as librdkafka logs
    // them, not at the timeout.
    let expected = [
        Some(BrokerProblem::Authentication),
        Some(BrokerProblem::Authentication),
        Some(BrokerProblem::Tls),
        Some(BrokerProblem::Tls),
    ];
    let timeout = Duration::from_secs(8);
    let results = futures_join(cases.into_iter().map(
        move |(what, type_, metadata, auth)| async move {
            let config = secure_trigger(type_, &metadata, &auth);
            let started = std::time::Instant::now();
            let result = measure_trigger(
                &SourcePool::new(),
                &config,
                None,
                &PersistentLagMemory::new(),
                timeout,
            )
            .await;
            (what, result, started.elapsed())
        },
    ))
    .await;
    for ((what, result, took), expected) in results.into_iter().zip(expected) {
        let error = result.expect_err(what);
        eprintln!("{what} ({took:.1?}): {error}");
        match (&error, expected) {
            (ScalerError::Unreachable { problem, .. }, Some(expected)) => {
                assert_eq!(*problem, expected, "{what}: {error}");
                assert!(took < timeout, "{what}: refused after {took:?}");
            }
            // A timeout, or librdkafka giving up first (the peer closed the connection).
            (_, None) => assert!(
                matches!(
                    error,
                    ScalerError::Timeout(_)
                        | ScalerError::Unreachable { .. }
                        | ScalerError::DescribeTopics(_)
                ),
                "{what}: {error:?}"
            ),
            _ => panic!("{what}: {error:?}"),
        }
        // Never a credential or a broker address (they may come from a Secret).
        let text = error.to_string();
        assert!(!text.contains("127.0.0.1"), "{what}: {text}");
    }
}

/// Runs futures concurrently on the test's runtime, in order.
async fn futures_join<F: Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_consumer_positions_commits_and_dead_letters() {
    let Some(kafka) = Broker::shared() else {
        return;
    };
    let plaintext = &kafka.listeners.plaintext;
    let (topic, dead) = ("dispatch-orders", "dispatch-dead");
    kafka.create_topic(topic, 2).await;
    kafka.create_topic(dead, 1).await;
    let raw: Vec<RawRecord> = (0..8)
        .map(|i| RawRecord {
            key: Some(format!("order-{i}").into_bytes()),
            value: Some(format!("{{\"order\":{i}}}").into_bytes()),
            headers: vec![("traceparent".into(), Some(format!("00-{i}").into_bytes()))],
        })
        .collect();
    let placed = produce_raw(plaintext, topic, &raw, TIMEOUT)
        .await
        .expect("produce");
    let ends: BTreeMap<i32, i64> = [0, 1]
        .into_iter()
        .map(|p| {
            let n = placed.iter().filter(|(q, _)| *q == p).count();
            (p, i64::try_from(n).unwrap())
        })
        .collect();
    assert!(ends.values().all(|n| *n >= 2), "both partitions: {ends:?}");

    // Over SASL/SCRAM-SHA-512 and TLS, as a tenant would configure it.
    let dispatch = |reset: &'static str| {
        let config = trigger(
            "kafka-dispatch",
            &[
                ("bootstrapServers", kafka.listeners.sasl_ssl.as_str()),
                ("consumerGroup", "dispatcher"),
                ("topic", topic),
                ("offsetResetPolicy", reset),
                ("deadLetterTopic", dead),
                ("tls", "enable"),
                ("sasl", "scram_sha512"),
            ],
            &[
                ("ca", kafka.tls.ca.as_str()),
                ("username", SCRAM_USER),
                ("password", SCRAM_PASSWORD),
            ],
        );
        let TriggerConfig::KafkaDispatch(config) = config else {
            unreachable!()
        };
        DispatchConsumer::connect(&config, None, &GssapiSupport::Disabled).expect("connect")
    };
    let latest = dispatch("latest");
    assert_eq!(latest.start_positions().await.expect("latest"), ends);
    let consumer = dispatch("earliest");
    let start = consumer.start_positions().await.expect("earliest");
    assert_eq!(start, BTreeMap::from([(0, 0), (1, 0)]));
    consumer.assign(&start).expect("assign");
    let mut messages: Vec<Message> = Vec::new();
    for _ in 0..8 {
        let message = tokio::time::timeout(TIMEOUT, consumer.recv())
            .await
            .expect("a message in time")
            .expect("recv");
        messages.push(message);
    }
    for message in &messages {
        let i = placed
            .iter()
            .position(|p| *p == (message.partition, message.offset))
            .expect("a produced record");
        assert_eq!(message.key, raw[i].key);
        assert_eq!(message.value, raw[i].value);
        assert_eq!(message.headers, raw[i].headers);
        assert!(message.timestamp_ms.is_some());
    }

    // Commits without joining the group, read back by confluent-kafka and Kafka's AdminClient.
    consumer.commit(&[(0, 1), (1, 1)]).await.expect("commit");
    let theirs = python(&[
        "offsets",
        plaintext,
        "dispatcher",
        topic,
        "2",
        "read_committed",
    ]);
    let admin = kafka.admin_offsets("dispatcher", topic);
    for (partition, offset) in [(0, 1), (1, 1)] {
        assert_eq!(
            int(&theirs[partition.to_string()]["committed"]),
            Some(offset)
        );
        assert_eq!(
            int(&admin[partition.to_string()]["committed"]),
            Some(offset)
        );
    }
    assert_eq!(
        dispatch("earliest").start_positions().await.expect("again"),
        BTreeMap::from([(0, 1), (1, 1)]),
        "a restarted consumer starts at the commits"
    );
    // Records deleted past a commit: the next start is the log start.
    assert_eq!(kafka.delete_records(topic, 1, ends[&1]), ends[&1]);
    assert_eq!(
        dispatch("earliest")
            .start_positions()
            .await
            .expect("after deletion"),
        BTreeMap::from([(0, 1), (1, ends[&1])])
    );

    // A dead letter: the message (key, value, headers) plus where it came from and why.
    let failed = &messages[0];
    consumer
        .dead_letter(failed, 3, "Job orders-x failed: BackoffLimitExceeded")
        .await
        .expect("dead letter");
    let read = python(&[
        "read",
        plaintext,
        "dlq-reader",
        dead,
        "read_committed",
        "1",
        "no",
    ]);
    let letter = &read["messages"][0];
    assert_eq!(
        letter["key"].as_str().map(str::as_bytes),
        failed.key.as_deref()
    );
    assert_eq!(
        letter["value"].as_str().map(str::as_bytes),
        failed.value.as_deref()
    );
    let headers: Vec<(String, String)> = letter["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        (
            "traceparent",
            String::from_utf8(failed.headers[0].1.clone().unwrap()).unwrap(),
        ),
        ("jobtide-original-topic", topic.to_owned()),
        ("jobtide-original-partition", failed.partition.to_string()),
        ("jobtide-original-offset", failed.offset.to_string()),
        ("jobtide-attempts", "3".to_owned()),
        (
            "jobtide-failure",
            "Job orders-x failed: BackoffLimitExceeded".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(headers, expected);
}
