//! End to end against a second, independent Kafka-protocol broker: tansu with its sqlite storage
//! engine, started as a child process on loopback. `.ci/run` installs tansu and sets
//! `JOBTIDE_TANSU` to its binary; elsewhere the test skips with a printed reason (under CI a
//! missing binary is a failure).

#![allow(clippy::expect_used)] // test helpers: a failure is the test failing

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobtide_api::trigger::connection::{KafkaConnection, Sasl};
use jobtide_core::kafka::{LagPolicy, OffsetResetPolicy};
use jobtide_core::lag::PersistentLagMemory;
use jobtide_kafka::client_config::Isolation;
use jobtide_kafka::scaler::{LagTarget, ScalerError, Topics, measure};
use jobtide_kafka::source::SourcePool;
use jobtide_kafka::tools::{StartFrom, consume, create_topic, produce};

/// The broker process, killed on drop.
struct Tansu {
    child: Child,
    servers: String,
    _dir: tempfile::TempDir,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tansu() -> Option<Tansu> {
    let Ok(binary) = std::env::var("JOBTIDE_TANSU") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must set JOBTIDE_TANSU (.ci/run installs tansu)"
        );
        eprintln!(
            "skipped: JOBTIDE_TANSU is not set (path to a tansu 0.6 binary built with --features dynostore,libsql)"
        );
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&binary)
        .current_dir(dir.path())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "sqlite://tansu.db",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let tansu = Tansu {
        child,
        servers: format!("127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "tansu did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    jobtide_testpeers::peers::record(if version.is_empty() {
        "tansu"
    } else {
        &version
    });
    Some(tansu)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_end_to_end_on_tansu() {
    let Some(tansu) = start_tansu() else { return };
    let timeout = Duration::from_secs(20);
    create_topic(&tansu.servers, "orders", 3, timeout)
        .await
        .expect("create topic");
    let records: Vec<(Option<String>, String)> = (0..12)
        .map(|i| (Some(format!("k{i}")), format!("v{i}")))
        .collect();
    produce(&tansu.servers, "orders", &records, timeout)
        .await
        .expect("produce");
    let consumed = consume(
        &tansu.servers,
        "orders",
        "g",
        5,
        StartFrom::Earliest,
        timeout,
    )
    .await
    .expect("consume");
    assert_eq!(consumed.len(), 5);

    let target = LagTarget {
        connection: KafkaConnection {
            bootstrap_servers: vec![tansu.servers.clone()],
            tls: None,
            sasl: Sasl::None,
        },
        group: "g".into(),
        topics: Topics::Named(vec!["orders".into()]),
        policy: LagPolicy {
            lag_threshold: 1,
            offset_reset_policy: OffsetResetPolicy::Earliest,
            ..LagPolicy::default()
        },
        isolation: Isolation::default(),
    };
    let pool = SourcePool::new();
    let measurement = measure(&pool, &target, &PersistentLagMemory::new(), timeout)
        .await
        .expect("measure");
    assert_eq!(
        measurement.partitions.iter().map(|p| p.end).sum::<i64>(),
        12,
        "{measurement:#?}"
    );
    assert_eq!(measurement.total_lag, 7, "{measurement:#?}");

    let missing = LagTarget {
        topics: Topics::Named(vec!["test-topic".into()]),
        ..target
    };
    let error = measure(&pool, &missing, &PersistentLagMemory::new(), timeout)
        .await
        .expect_err("missing topic");
    assert_eq!(error, ScalerError::NoActivePartition("test-topic".into()));
}
