//! The real binaries as child processes for crash tests: `jobtide dev --no-operator`,
//! `jobtide operator` instances killed and restarted at will, tansu, and Python confluent-kafka
//! as the outside client. Every child is killed on drop (no orphans when a test fails), and every
//! wait is bounded.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Whether this run is CI's, where a missing tool is a failure rather than a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// `Some(value)`, or under CI a failure naming `why`, elsewhere `None` after printing why the
/// test is skipped.
pub fn required<T>(value: Option<T>, why: &str) -> Option<T> {
    if value.is_none() {
        assert!(!under_ci(), "CI must provide this: {why}");
        eprintln!("skipped: {why}");
    }
    value
}

/// Sends SIGTERM to `child`, waits up to `grace`, then SIGKILLs it; the exit status.
fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// The last `lines` lines of the file at `path` (for failure messages).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running `jobtide dev --no-operator`: the embedded API server and runner, and either its own
/// broker or an external one. Stopped with SIGTERM (then SIGKILL) on drop.
pub struct Dev {
    child: Child,
    /// The API server's URL.
    pub api: String,
    /// The Kafka bootstrap servers it uses.
    pub kafka: String,
    /// The kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    /// A scratch directory that lives as long as dev.
    pub dir: tempfile::TempDir,
}

impl Dev {
    /// Starts dev with `extra` arguments (`--kafka-addr …` or `--bootstrap-servers …`, topics)
    /// and waits (30 s at most) for it to print its addresses.
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut child = Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
            .args(["dev", "--no-operator"])
            .args(["--api-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            // Pods' volumes under this test's directory, not the user's state directory.
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(extra)
            .env("JOBTIDE_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start jobtide dev");
        let stdout = child.stdout.take().expect("dev's stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        // Reads dev's stdout to the end, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut dev = Self {
            child,
            api: String::new(),
            kafka: String::new(),
            kubeconfig,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while dev.api.is_empty() || dev.kafka.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines_rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("jobtide dev printed no addresses within 30 s"));
            if let Some(rest) = line.strip_prefix("api-server: ") {
                rest.clone_into(&mut dev.api);
            }
            if let Some(rest) = line.strip_prefix("kafka: ") {
                let servers = rest.split_whitespace().next().unwrap_or_default();
                servers.clone_into(&mut dev.kafka);
            }
        }
        dev
    }

    /// A kube client for dev's API server.
    pub fn client(&self) -> kube::Client {
        let url = self.api.parse().expect("the API server's URL");
        kube::Client::try_from(kube::Config::new(url)).expect("kube client")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(15));
    }
}

/// A running `jobtide operator` against a dev, its log in a file. SIGKILLed on drop.
pub struct Operator {
    child: Child,
    /// Its name (`POD_NAME`: its leader-election identity).
    pub name: String,
    /// Its log file (warnings and errors).
    pub log: PathBuf,
}

impl Operator {
    /// Starts `jobtide operator` called `name` on `dev`'s API server, reading dev's Kafka for
    /// every trigger, with `extra` arguments.
    pub fn start(dev: &Dev, name: &str, extra: &[&str]) -> Self {
        Self::start_with_env(dev, name, extra, &[])
    }

    /// [`Operator::start`] with `env` added to its environment.
    pub fn start_with_env(dev: &Dev, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let log = dev.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("operator log file");
        let child = Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
            .arg("operator")
            .arg("--kubeconfig")
            .arg(&dev.kubeconfig)
            .args(["--bootstrap-servers-override", &dev.kafka])
            .args(["--metrics-bind-address", "127.0.0.1:0"])
            .args(["--health-probe-bind-address", "127.0.0.1:0"])
            .args(extra)
            .env("POD_NAME", name)
            .env("JOBTIDE_LOG_LEVEL", "warn,jobtide_controller::leader=info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start jobtide operator");
        Self {
            child,
            name: name.to_owned(),
            log,
        }
    }

    /// Fails the test if the operator exited by itself (it should run until stopped).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "operator {} exited by itself ({status}); its log ends:\n{}",
                self.name,
                tail(&self.log, 30)
            );
        }
    }

    /// SIGKILL: no shutdown at all (no lease released, nothing finished).
    pub fn kill(mut self) {
        self.assert_running();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and its exit status (SIGKILL after 40 s: it finishes reconciles for 30 s at most).
    pub fn terminate(mut self) -> Option<ExitStatus> {
        self.assert_running();
        terminate(&mut self.child, Duration::from_secs(40))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tansu with its sqlite storage engine on a free loopback port, killed on drop.
pub struct Tansu {
    child: Child,
    /// Its bootstrap servers.
    pub servers: String,
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts `$JOBTIDE_TANSU`; `None` (a printed skip, or a failure under CI) when unset.
    pub fn start() -> Option<Self> {
        let binary = required(
            std::env::var("JOBTIDE_TANSU").ok(),
            "JOBTIDE_TANSU is not set (path to a tansu 0.6 binary built with --features dynostore,libsql; .ci/run installs it)",
        )?;
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("address")
            .port();
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(binary)
            .current_dir(dir.path())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let tansu = Self {
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
        Some(tansu)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A group's committed offset and the log's watermarks of one partition, as Python
/// confluent-kafka (its own bundled librdkafka) reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenOutside {
    /// The group's committed offset (`None`: no commit).
    pub committed: Option<i64>,
    /// The log start.
    pub low: i64,
    /// The log end (high watermark).
    pub high: i64,
}

const ORACLE: &str = r#"
import json, sys
from confluent_kafka import Consumer, TopicPartition
servers, topic, group, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = Consumer({"bootstrap.servers": servers, "group.id": group, "enable.auto.commit": False})
tps = [TopicPartition(topic, p) for p in range(partitions)]
committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
out = {}
for p in range(partitions):
    low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
    out[p] = {"committed": committed[p] if committed[p] >= 0 else None, "low": low, "high": high}
c.close()
print(json.dumps(out))
"#;

/// Python with confluent_kafka, the outside client.
#[derive(Debug, Clone, Copy)]
pub struct Oracle;

impl Oracle {
    /// The oracle; `None` (a printed skip, or a failure under CI) when python3 can't import
    /// confluent_kafka.
    pub fn find() -> Option<Self> {
        let available = Command::new("python3")
            .args(["-c", "import confluent_kafka"])
            .output()
            .is_ok_and(|o| o.status.success());
        required(
            available.then_some(Self),
            "python3 with confluent_kafka is not available (pip install confluent-kafka; .ci/run installs it)",
        )
    }

    /// Per partition of `topic`, what the outside client sees of `group` (60 s at most).
    pub async fn read(
        self,
        servers: &str,
        topic: &str,
        group: &str,
        partitions: i32,
    ) -> Vec<SeenOutside> {
        let output = tokio::time::timeout(
            Duration::from_mins(1),
            tokio::process::Command::new("python3")
                .args(["-c", ORACLE, servers, topic, group, &partitions.to_string()])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the confluent-kafka oracle answered within 60 s")
        .expect("run python3");
        assert!(
            output.status.success(),
            "the confluent-kafka oracle failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("the oracle's JSON");
        (0..partitions)
            .map(|p| {
                let one = &seen[p.to_string()];
                SeenOutside {
                    committed: one["committed"].as_i64(),
                    low: one["low"].as_i64().expect("low watermark"),
                    high: one["high"].as_i64().expect("high watermark"),
                }
            })
            .collect()
    }
}

/// A small seeded generator (splitmix64): the seed is printed, and `JOBTIDE_CRASH_SEED` replays
/// a run's kill moments.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `JOBTIDE_CRASH_SEED`, else from the clock; prints the seed.
    pub fn seeded(what: &str) -> Self {
        let seed = std::env::var("JOBTIDE_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                now.as_secs() ^ u64::from(now.subsec_nanos())
            });
        eprintln!("{what}: seed {seed} (replay with JOBTIDE_CRASH_SEED={seed})");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A duration in `[from, to)` milliseconds.
    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from).max(1))
    }
}
