//! A tenant's Kerberos username never reaches a shell (issue: command injection through
//! `sasl.kerberos.kinit.cmd`). Real librdkafka clients are created here: librdkafka runs its
//! kinit command once when a GSSAPI client starts.

#![allow(clippy::expect_used)] // test helpers: a failure is the test failing

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jobtide_api::secret::Secret;
use jobtide_api::trigger::connection::{Gssapi, GssapiCredential, KafkaConnection, Sasl};
use jobtide_kafka::client_config::{Isolation, client_config};
use jobtide_kafka::kerberos::{GssapiSupport, KinitHelper};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;

fn wait_for(path: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    path.exists()
}

fn executable(path: &Path, script: &str) {
    jobtide_testpeers::script::write_executable(path, script);
}

fn hostile_username(marker: &Path) -> String {
    format!("x;touch {};", marker.display())
}

/// librdkafka's own kinit command with a hostile principal runs the tenant's `touch`: the
/// attack this module defends against is real in this build of librdkafka.
#[test]
fn librdkafkas_default_kinit_command_is_injectable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("pwned");
    let keytab = dir.path().join("keytab");
    std::fs::write(&keytab, "KT").expect("keytab");
    let principal = format!("{}@EXAMPLE.COM", hostile_username(&marker));
    let consumer: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", "GSSAPI")
        .set("sasl.kerberos.principal", &principal)
        .set("sasl.kerberos.keytab", keytab.display().to_string())
        .create();
    let created = wait_for(&marker, Duration::from_secs(10));
    drop(consumer);
    assert!(created, "librdkafka did not run its kinit command");
}

/// jobtide's configuration runs only its helper, which gets the spec file; the tenant's text
/// never reaches `/bin/sh`.
#[test]
fn jobtides_kinit_command_runs_the_helper_and_nothing_of_the_tenants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("pwned");
    let record = dir.path().join("helper-args");
    let helper: PathBuf = dir.path().join("helper");
    executable(
        &helper,
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n",
            record.display()
        ),
    );
    let connection = KafkaConnection {
        bootstrap_servers: vec!["127.0.0.1:1".into()],
        tls: None,
        // The parser refuses this username; the layer below must be safe on its own.
        sasl: Sasl::Gssapi(Gssapi {
            username: hostile_username(&marker),
            credential: GssapiCredential::Keytab(Secret::new("KT")),
            realm: "EXAMPLE.COM".into(),
            kerberos_config: "[libdefaults]".into(),
            service_name: "kafka".into(),
            disable_fast: false,
        }),
    };
    let support = GssapiSupport::Kinit(KinitHelper {
        program: helper,
        args: vec!["kafka".into(), "kinit".into()],
    });
    let (config, _files) =
        client_config(&connection, Isolation::default(), &support).expect("config");
    let consumer: Result<BaseConsumer, _> = config.create();
    let ran = wait_for(&record, Duration::from_secs(10));
    drop(consumer);
    assert!(ran, "librdkafka did not run the kinit helper");
    let args = std::fs::read_to_string(&record).expect("helper args");
    let lines: Vec<&str> = args.lines().collect();
    assert_eq!(lines.len(), 3, "{args}");
    assert_eq!(&lines[..2], ["kafka", "kinit"]);
    assert!(lines[2].contains("jobtide-krb-"), "the spec file: {args}");
    // Give a shell that had been handed the text time to act, then check it didn't.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!marker.exists(), "the tenant's command ran");
}
