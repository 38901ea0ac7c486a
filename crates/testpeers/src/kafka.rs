//! Apache Kafka as a test peer: a single-node KRaft broker + controller started from the jars
//! `scripts/install-peers` puts in `JOBTIDE_KAFKA_HOME` (`libs/*.jar`), on loopback with free
//! ports, with every listener a trigger can name:
//!
//! | listener | security |
//! |---|---|
//! | `plaintext` | none |
//! | `sasl_plaintext` | SASL PLAIN ([`PLAIN_USER`]), SCRAM-SHA-256 and SCRAM-SHA-512 ([`SCRAM_USER`]) |
//! | `ssl` | TLS, server certificate signed by the test CA |
//! | `mtls` | TLS with a client certificate required (mutual TLS) |
//! | `sasl_ssl` | the SASL mechanisms of `sasl_plaintext`, over TLS |
//!
//! Storage is formatted with Kafka's own `kafka.tools.StorageTool` (SCRAM users added with
//! `--add-scram`; PLAIN users live in the listener's JAAS config). The CA, the server's and the
//! client's certificates are made by the `openssl` CLI in the broker's temporary directory.
//!
//! The JVM runs under a small `sh` wrapper that holds a pipe from this process: when the pipe
//! closes — the [`Broker`] is dropped, or the test process exits or dies, even by SIGKILL — the
//! wrapper kills the JVM (and then removes its directory), so no broker outlives its tests.
//!
//! Kafka's own tools are the oracles: [`Broker::describe_group`] runs `kafka-consumer-groups
//! --describe` (`ConsumerGroupCommand`) from the same jars; [`Broker::admin_offsets`] and
//! [`Broker::delete_records`] run `KafkaAdminOracle.java` (the Java AdminClient).

use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The SCRAM user (SCRAM-SHA-256 and SCRAM-SHA-512), created when storage is formatted.
pub const SCRAM_USER: &str = "scram-user";
/// [`SCRAM_USER`]'s password.
pub const SCRAM_PASSWORD: &str = "scram-secret";
/// The SASL/PLAIN user, from the listeners' JAAS configuration.
pub const PLAIN_USER: &str = "plain-user";
/// [`PLAIN_USER`]'s password.
pub const PLAIN_PASSWORD: &str = "plain-secret";
/// The password of the encrypted copies of the client key.
pub const KEY_PASSWORD: &str = "client-key-secret";

/// How long the broker may take to start (a JVM on two busy cores: usually 10–20 s).
const START_TIMEOUT: Duration = Duration::from_mins(3);
/// The broker's JVM: a small heap, one GC thread, the quick JIT (a test broker is short-lived).
const BROKER_JVM: &[&str] = &[
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
];
/// Kafka's command-line tools and the oracle.
const TOOL_JVM: &[&str] = &["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"];

/// An installed Apache Kafka (`JOBTIDE_KAFKA_HOME`).
#[derive(Debug, Clone)]
pub struct Install {
    /// The install directory (holds `libs/`).
    pub home: PathBuf,
    /// The Kafka version, e.g. `4.4.0`.
    pub version: String,
}

impl Install {
    /// The install `JOBTIDE_KAFKA_HOME` names; `None` (with a printed reason) when it isn't set or
    /// a tool the tests need is missing — a failure under CI (`CI=true`), where `.ci/run`
    /// installs everything.
    pub fn from_env() -> Option<Self> {
        let ci = std::env::var("CI").as_deref() == Ok("true");
        let skip = |reason: &str| {
            assert!(!ci, "CI must run the Apache Kafka tests: {reason}");
            eprintln!("skipped: {reason}");
        };
        let Some(home) = std::env::var_os("JOBTIDE_KAFKA_HOME").map(PathBuf::from) else {
            skip(
                "JOBTIDE_KAFKA_HOME is not set (run `export JOBTIDE_KAFKA_HOME=\"$(scripts/install-peers)\"`)",
            );
            return None;
        };
        let version = std::fs::read_to_string(home.join("version"))
            .map(|v| v.trim().to_owned())
            .ok()
            .or_else(|| kafka_jar_version(&home.join("libs")))
            .unwrap_or_else(|| {
                panic!(
                    "JOBTIDE_KAFKA_HOME={} holds no Kafka install (libs/kafka_2.13-<version>.jar); \
                     run scripts/install-peers",
                    home.display()
                )
            });
        for (program, args, reason) in [
            (
                "java",
                &["-version"][..],
                "java (17 or newer) is not on PATH",
            ),
            (
                "javac",
                &["-version"][..],
                "javac (a JDK 17) is not on PATH",
            ),
            (
                "openssl",
                &["version"][..],
                "the openssl CLI is not on PATH (it makes the test certificates)",
            ),
            (
                "python3",
                &["-c", "import confluent_kafka"][..],
                "python3 with confluent_kafka is not available (pip install confluent-kafka)",
            ),
        ] {
            let ok = Command::new(program)
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                skip(reason);
                return None;
            }
        }
        Some(Self { home, version })
    }

    /// The JVM class path of every jar of the install.
    pub fn classpath(&self) -> String {
        format!("{}/libs/*", self.home.display())
    }
}

fn kafka_jar_version(libs: &Path) -> Option<String> {
    std::fs::read_dir(libs).ok()?.find_map(|entry| {
        let name = entry.ok()?.file_name().into_string().ok()?;
        Some(
            name.strip_prefix("kafka_2.13-")?
                .strip_suffix(".jar")?
                .to_owned(),
        )
    })
}

/// The broker's listeners, as `host:port` bootstrap servers.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// No security.
    pub plaintext: String,
    /// SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 without TLS.
    pub sasl_plaintext: String,
    /// TLS (server authentication only).
    pub ssl: String,
    /// TLS with a required client certificate.
    pub mtls: String,
    /// SASL over TLS.
    pub sasl_ssl: String,
}

/// The TLS material the tests generate (PEM text).
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The CA that signed the server and client certificates.
    pub ca: String,
    /// The client certificate (for the `mtls` listener).
    pub client_cert: String,
    /// Its key, unencrypted PKCS#8.
    pub client_key: String,
    /// Its key encrypted with [`KEY_PASSWORD`] in OpenSSL's traditional form (`Proc-Type: 4,ENCRYPTED`,
    /// what Go's `x509.DecryptPEMBlock`, hence KEDA, reads).
    pub client_key_traditional_encrypted: String,
    /// Its key as encrypted PKCS#8 with [`KEY_PASSWORD`].
    pub client_key_pkcs8_encrypted: String,
}

/// A running broker, killed on drop.
#[derive(Debug)]
pub struct Broker {
    /// The install it runs from.
    pub install: Install,
    /// Where to reach it.
    pub listeners: Listeners,
    /// Certificates and keys.
    pub tls: TlsMaterial,
    /// How long formatting the storage took.
    pub format_time: Duration,
    /// How long from starting the JVM to a broker answering metadata on every listener.
    pub start_time: Duration,
    dir: tempfile::TempDir,
    wrapper: Mutex<Child>,
    /// The wrapper's pipe: closing it stops the broker.
    lifeline: Mutex<Option<ChildStdin>>,
    oracle_classes: OnceLock<PathBuf>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(mut lifeline) = self.lifeline.lock() {
            lifeline.take();
        }
        if let Ok(mut wrapper) = self.wrapper.lock() {
            let _ = wrapper.wait();
        }
    }
}

/// Runs `"$@"` (the JVM) in the background and kills it when stdin (this process's pipe) closes;
/// then removes the broker's directory ($1). A JVM that stops by itself leaves the directory for
/// its logs.
const WRAPPER: &str = r#"
dir="$1"; shift
exec 3<&0
"$@" </dev/null >"$dir/stdout.log" 2>&1 &
jvm=$!
( read -r _ <&3; kill -9 "$jvm" ) 2>/dev/null &
watcher=$!
wait "$jvm"
status=$?
kill "$watcher" 2>/dev/null
if [ "$status" -eq 137 ]; then rm -rf "$dir"; fi
exit "$status"
"#;

static SHARED: OnceLock<Result<Option<Broker>, String>> = OnceLock::new();

impl Broker {
    /// The broker every test of this process shares (started on first use; stopped when the
    /// process exits), or `None` when the tests skip (see [`Install::from_env`]).
    pub fn shared() -> Option<&'static Self> {
        let shared = SHARED.get_or_init(|| {
            let Some(install) = Install::from_env() else {
                return Ok(None);
            };
            std::panic::catch_unwind(|| Self::start(install))
                .map(Some)
                .map_err(|panic| {
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "starting Apache Kafka failed".into())
                })
        });
        match shared {
            Ok(broker) => broker.as_ref(),
            Err(message) => panic!("{message}"),
        }
    }

    /// Generates the TLS material, formats storage and starts a broker; panics with the broker's
    /// log when it doesn't come up within [`START_TIMEOUT`].
    pub fn start(install: Install) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jobtide-apache-kafka-")
            .tempdir()
            .expect("temporary directory");
        let tls = make_certificates(dir.path());
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        let [plaintext, sasl_plaintext, ssl, mtls, sasl_ssl, controller] = ports[..] else {
            unreachable!("six ports")
        };
        let listeners = Listeners {
            plaintext: format!("127.0.0.1:{plaintext}"),
            sasl_plaintext: format!("127.0.0.1:{sasl_plaintext}"),
            ssl: format!("127.0.0.1:{ssl}"),
            mtls: format!("127.0.0.1:{mtls}"),
            sasl_ssl: format!("127.0.0.1:{sasl_ssl}"),
        };
        let properties = dir.path().join("server.properties");
        std::fs::write(
            &properties,
            server_properties(dir.path(), &listeners, controller),
        )
        .expect("server.properties");
        let log4j = dir.path().join("log4j2.properties");
        std::fs::write(&log4j, log4j_config(&dir.path().join("server.log"))).expect("log4j2");

        let started = Instant::now();
        let format = Command::new("java")
            .args(TOOL_JVM)
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .args([
                "-cp",
                &install.classpath(),
                "kafka.tools.StorageTool",
                "format",
            ])
            .arg("--config")
            .arg(&properties)
            // Any 16 bytes, base64url: every broker has its own directory.
            .args(["--cluster-id", "am9idGlkZS1rYWZrYS0xMA"])
            .args(["--add-scram", &scram("SCRAM-SHA-256")])
            .args(["--add-scram", &scram("SCRAM-SHA-512")])
            .output()
            .expect("run java");
        assert!(
            format.status.success(),
            "formatting Kafka storage failed:\n{}{}",
            String::from_utf8_lossy(&format.stdout),
            String::from_utf8_lossy(&format.stderr)
        );
        let format_time = started.elapsed();

        let started = Instant::now();
        let mut wrapper = Command::new("sh")
            .args(["-c", WRAPPER, "sh"])
            .arg(dir.path())
            .arg("java")
            .args(BROKER_JVM)
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .args(["-cp", &install.classpath(), "kafka.Kafka"])
            .arg(&properties)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker");
        let lifeline = wrapper.stdin.take();
        let mut broker = Self {
            install,
            listeners,
            tls,
            format_time,
            start_time: Duration::ZERO,
            dir,
            wrapper: Mutex::new(wrapper),
            lifeline: Mutex::new(lifeline),
            oracle_classes: OnceLock::new(),
        };
        broker.await_ready(started);
        broker.start_time = started.elapsed();
        crate::peers::record(&broker.describe());
        eprintln!(
            "{} on 127.0.0.1: storage formatted in {:.1?}, started in {:.1?}",
            broker.describe(),
            broker.format_time,
            broker.start_time
        );
        broker
    }

    /// Waits until every listener accepts connections and the plaintext one answers metadata
    /// with this broker in it.
    fn await_ready(&self, started: Instant) {
        let deadline = started + START_TIMEOUT;
        let l = &self.listeners;
        for address in [
            &l.plaintext,
            &l.sasl_plaintext,
            &l.ssl,
            &l.mtls,
            &l.sasl_ssl,
        ] {
            while TcpStream::connect(address).is_err() {
                self.check_alive(deadline, address);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &l.plaintext)
            .create()
            .expect("metadata client");
        while !client
            .fetch_metadata(None, Duration::from_secs(5))
            .is_ok_and(|m| m.brokers().len() == 1)
        {
            self.check_alive(deadline, "metadata");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn check_alive(&self, deadline: Instant, waiting_for: &str) {
        let exited = self
            .wrapper
            .lock()
            .ok()
            .and_then(|mut w| w.try_wait().ok().flatten());
        if let Some(status) = exited {
            panic!(
                "Apache Kafka exited ({status}) before it was ready:\n{}",
                self.log_tail()
            );
        }
        assert!(
            Instant::now() < deadline,
            "Apache Kafka did not get ready ({waiting_for}) within {START_TIMEOUT:?}:\n{}",
            self.log_tail()
        );
    }

    /// The end of the broker's log and of its stdout/stderr.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["server.log", "stdout.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let _ = writeln!(out, "--- {name} (last 40 lines)");
            for line in &lines[lines.len().saturating_sub(40)..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// `Apache Kafka <version> (KRaft)`.
    pub fn describe(&self) -> String {
        format!("Apache Kafka {} (KRaft)", self.install.version)
    }

    /// Runs a Java class from the install's jars (a Kafka tool) with `args`.
    pub fn java(&self, extra_classpath: Option<&Path>, class: &str, args: &[&str]) -> Output {
        let mut classpath = self.install.classpath();
        if let Some(extra) = extra_classpath {
            classpath = format!("{classpath}:{}", extra.display());
        }
        Command::new("java")
            .args(TOOL_JVM)
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.tools_log4j().display()
            ))
            .args(["-cp", &classpath, class])
            .args(args)
            .output()
            .expect("run java")
    }

    /// Tools log warnings to stderr only.
    fn tools_log4j(&self) -> PathBuf {
        let path = self.dir.path().join("tools-log4j2.properties");
        if !path.exists() {
            let config = "rootLogger.level=WARN\nrootLogger.appenderRef.err.ref=err\n\
                          appender.err.type=Console\nappender.err.name=err\n\
                          appender.err.target=SYSTEM_ERR\nappender.err.layout.type=PatternLayout\n\
                          appender.err.layout.pattern=%p %m (%c)%n\n";
            std::fs::write(&path, config).expect("tools log4j2");
        }
        path
    }

    /// `kafka-consumer-groups --describe --group <group>`: one row per partition the group has
    /// committed (CURRENT-OFFSET, LOG-END-OFFSET and LAG as the tool prints them; `None` for `-`).
    pub fn describe_group(&self, group: &str) -> Vec<GroupRow> {
        self.describe_group_if_known(group)
            .unwrap_or_else(|| panic!("kafka-consumer-groups: group {group} not found"))
    }

    /// [`Self::describe_group`], or `None` while the group doesn't exist (nothing committed
    /// yet): for polling until a group's members commit.
    pub fn describe_group_if_known(&self, group: &str) -> Option<Vec<GroupRow>> {
        let output = self.java(
            None,
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            &[
                "--bootstrap-server",
                &self.listeners.plaintext,
                "--describe",
                "--group",
                group,
            ],
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        if stdout.contains("GroupIdNotFoundException") {
            return None;
        }
        assert!(
            output.status.success(),
            "kafka-consumer-groups failed:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(parse_describe_group(&stdout))
    }

    /// The Java AdminClient's view of `group` on `topic`: per partition `committed` (or null),
    /// `start` (log start), `end` (high watermark) and `stable` (last stable offset).
    pub fn admin_offsets(&self, group: &str, topic: &str) -> serde_json::Value {
        let output = self.oracle(&["offsets", &self.listeners.plaintext, group, topic]);
        serde_json::from_str(output.trim()).expect("oracle JSON")
    }

    /// Deletes the records of `topic`/`partition` below `before` (AdminClient `deleteRecords`, as
    /// `kafka-delete-records` does); the new log start offset.
    pub fn delete_records(&self, topic: &str, partition: i32, before: i64) -> i64 {
        let output = self.oracle(&[
            "delete-records",
            &self.listeners.plaintext,
            topic,
            &partition.to_string(),
            &before.to_string(),
        ]);
        output.trim().parse().expect("the new log start offset")
    }

    fn oracle(&self, args: &[&str]) -> String {
        let classes = self.oracle_classes.get_or_init(|| {
            let classes = self.dir.path().join("oracle-classes");
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("java/KafkaAdminOracle.java");
            let output = Command::new("javac")
                .args(["-nowarn", "-cp", &self.install.classpath(), "-d"])
                .arg(&classes)
                .arg(&source)
                .output()
                .expect("run javac");
            assert!(
                output.status.success(),
                "compiling {}:\n{}",
                source.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            classes
        });
        let output = self.java(Some(classes), "KafkaAdminOracle", args);
        assert!(
            output.status.success(),
            "KafkaAdminOracle {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Creates `topic` through the plaintext listener, retrying while the broker settles.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        self.create_topic_with(topic, partitions, &[]).await;
    }

    /// Creates `topic` with topic-level `config` (e.g. `cleanup.policy=compact`).
    pub async fn create_topic_with(&self, topic: &str, partitions: i32, config: &[(&str, &str)]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match create_topic(&self.listeners.plaintext, topic, partitions, config).await {
                Ok(()) => return,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("creating {topic}: {error}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => panic!("creating {topic}: {error}"),
            }
        }
    }
}

/// One row of `kafka-consumer-groups --describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    /// TOPIC.
    pub topic: String,
    /// PARTITION.
    pub partition: i32,
    /// CURRENT-OFFSET (`None` for `-`).
    pub current: Option<i64>,
    /// LOG-END-OFFSET.
    pub log_end: Option<i64>,
    /// LAG.
    pub lag: Option<i64>,
}

fn parse_describe_group(stdout: &str) -> Vec<GroupRow> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("GROUP "));
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("no table in kafka-consumer-groups output:\n{stdout}"))
        .split_whitespace()
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let (topic, partition, current, log_end, lag) = (
        column("TOPIC"),
        column("PARTITION"),
        column("CURRENT-OFFSET"),
        column("LOG-END-OFFSET"),
        column("LAG"),
    );
    let number = |s: &str| s.parse::<i64>().ok();
    lines
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() == header.len())
        .map(|fields| GroupRow {
            topic: fields[topic].to_owned(),
            partition: fields[partition].parse().expect("partition"),
            current: number(fields[current]),
            log_end: number(fields[log_end]),
            lag: number(fields[lag]),
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

fn scram(mechanism: &str) -> String {
    format!("{mechanism}=[name={SCRAM_USER},password={SCRAM_PASSWORD}]")
}

fn server_properties(dir: &Path, l: &Listeners, controller: u16) -> String {
    let dir = dir.display();
    let plain_jaas = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required \
         user_{PLAIN_USER}=\"{PLAIN_PASSWORD}\";"
    );
    let scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
    let mut sasl = String::new();
    for listener in ["sasl_plaintext", "sasl_ssl"] {
        let _ = writeln!(
            sasl,
            "listener.name.{listener}.plain.sasl.jaas.config={plain_jaas}"
        );
        for mechanism in ["scram-sha-256", "scram-sha-512"] {
            let _ = writeln!(
                sasl,
                "listener.name.{listener}.{mechanism}.sasl.jaas.config={scram_jaas}"
            );
        }
    }
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://{plaintext},SASL_PLAINTEXT://{sasl_plaintext},SSL://{ssl},MTLS://{mtls},SASL_SSL://{sasl_ssl},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://{plaintext},SASL_PLAINTEXT://{sasl_plaintext},SSL://{ssl},MTLS://{mtls},SASL_SSL://{sasl_ssl}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,MTLS:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={dir}/data
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.enable=true
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=4194304
log.cleaner.io.buffer.size=65536
log.cleaner.backoff.ms=200
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
{sasl}ssl.keystore.type=PEM
ssl.keystore.location={dir}/server-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location={dir}/ca.pem
listener.name.mtls.ssl.client.auth=required
",
        plaintext = l.plaintext,
        sasl_plaintext = l.sasl_plaintext,
        ssl = l.ssl,
        mtls = l.mtls,
        sasl_ssl = l.sasl_ssl,
    )
}

fn log4j_config(file: &Path) -> String {
    format!(
        "rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
logger.config.name=org.apache.kafka.common.config
logger.config.level=WARN
appender.file.type=File
appender.file.name=file
appender.file.fileName={}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
",
        file.display()
    )
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, with P-256 keys.
fn make_certificates(dir: &Path) -> TlsMaterial {
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let days = ["-days", "7"];
    let mut args = vec!["req", "-x509"];
    args.extend(new_key);
    args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=jobtide test CA",
    ]);
    args.extend(days);
    openssl(dir, &args);
    for (name, subject, extensions) in [
        (
            "server",
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "/CN=jobtide-client",
            "extendedKeyUsage=clientAuth\n",
        ),
    ] {
        let (key, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&ext), extensions).expect("extensions");
        let mut args = vec!["req"];
        args.extend(new_key);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
        openssl(dir, &args);
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &cert,
            "-extfile",
            &ext,
        ];
        args.extend(days);
        openssl(dir, &args);
        let pkcs8 = format!("{name}.pkcs8.pem");
        openssl(
            dir,
            &["pkcs8", "-topk8", "-nocrypt", "-in", &key, "-out", &pkcs8],
        );
    }
    let password = format!("pass:{KEY_PASSWORD}");
    openssl(
        dir,
        &[
            "ec",
            "-in",
            "client.key",
            "-aes256",
            "-passout",
            &password,
            "-out",
            "client.traditional-encrypted.pem",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            &password,
            "-in",
            "client.key",
            "-out",
            "client.pkcs8-encrypted.pem",
        ],
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    // Kafka's PEM key store: the PKCS#8 key, then the certificate chain.
    std::fs::write(
        dir.join("server-keystore.pem"),
        read("server.pkcs8.pem") + &read("server.pem"),
    )
    .expect("key store");
    TlsMaterial {
        ca: read("ca.pem"),
        client_cert: read("client.pem"),
        client_key: read("client.pkcs8.pem"),
        client_key_traditional_encrypted: read("client.traditional-encrypted.pem"),
        client_key_pkcs8_encrypted: read("client.pkcs8-encrypted.pem"),
    }
}

/// Creates `topic` (replication 1) with rdkafka's AdminClient.
async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    config: &[(&str, &str)],
) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(
            &[config.iter().fold(
                NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
                |new, (key, value)| new.set(key, value),
            )],
            &options,
        )
        .await
        .map_err(|e| e.to_string())?;
    for result in results {
        result.map_err(|(name, code)| format!("{name}: {code}"))?;
    }
    Ok(())
}
