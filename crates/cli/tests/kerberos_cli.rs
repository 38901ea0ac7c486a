//! Kerberos parameters from a tenant's Secret, through the real binary: a hostile username runs
//! nothing and is refused naming the parameter; with `--enable-gssapi` librdkafka's ticket
//! command reaches `kinit` only through `jobtide kafka kinit`, the principal as one argument.

#![allow(clippy::expect_used)] // test helpers: a failure is the test failing

use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;

fn manifest(dir: &Path, username: &str) -> std::path::PathBuf {
    let path = dir.join("gssapi.yaml");
    let text = format!(
        r#"apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {{name: sj, namespace: default}}
spec:
  jobTargetRef:
    template:
      spec:
        containers: [{{name: c, image: busybox}}]
  triggers:
    - type: kafka
      metadata: {{bootstrapServers: "127.0.0.1:1", consumerGroup: g, topic: t, sasl: gssapi}}
      authenticationRef: {{name: ta}}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {{name: ta, namespace: default}}
spec:
  secretTargetRef:
    - {{parameter: username, name: s, key: u}}
    - {{parameter: keytab, name: s, key: k}}
    - {{parameter: realm, name: s, key: r}}
    - {{parameter: kerberosConfig, name: s, key: c}}
---
apiVersion: v1
kind: Secret
metadata: {{name: s, namespace: default}}
stringData: {{u: {username:?}, k: KT, r: EXAMPLE.COM, c: "[libdefaults]"}}
"#
    );
    std::fs::write(&path, text).expect("write manifest");
    path
}

fn jobtide() -> Command {
    Command::cargo_bin("jobtide").expect("the jobtide binary")
}

#[test]
fn a_hostile_kerberos_username_runs_nothing_and_is_refused_naming_the_parameter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("pwned");
    let file = manifest(dir.path(), &format!("x;touch {};", marker.display()));
    for enable in [false, true] {
        let mut command = jobtide();
        command.args(["explain", "--timeout", "2", "-f"]).arg(&file);
        if enable {
            command.arg("--enable-gssapi");
        }
        let output = command.output().expect("explain runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(
            text.contains("username must be a Kerberos principal name"),
            "{text}"
        );
        assert!(
            !text.contains("touch"),
            "the Secret's value was echoed: {text}"
        );
    }
    let output = jobtide()
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .expect("validate runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("parameter username"), "{text}");
    assert!(!text.contains("touch"), "{text}");
    assert!(!marker.exists(), "the tenant's command ran");
}

#[test]
fn gssapi_is_off_unless_enabled_and_then_kinit_gets_the_principal_as_one_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = manifest(dir.path(), "svc/host.example.com");
    let output = jobtide()
        .args(["explain", "--timeout", "2", "-f"])
        .arg(&file)
        .output()
        .expect("explain runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("sasl gssapi is disabled in this process"),
        "{text}"
    );

    let record = dir.path().join("kinit-argv");
    let kinit = dir.path().join("kinit");
    jobtide_testpeers::script::write_executable(
        &kinit,
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}.tmp' && mv '{0}.tmp' '{0}'\n",
            record.display()
        ),
    );
    let output = jobtide()
        .args(["explain", "--timeout", "2", "--enable-gssapi", "-f"])
        .arg(&file)
        .env("JOBTIDE_KINIT", &kinit)
        .output()
        .expect("explain runs");
    // The broker at 127.0.0.1:1 is unreachable: the measurement fails, after librdkafka ran its
    // ticket command at client start.
    assert_eq!(output.status.code(), Some(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !record.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let argv = std::fs::read_to_string(&record).expect("jobtide kafka kinit ran kinit");
    let argv: Vec<&str> = argv.lines().collect();
    assert_eq!(argv.len(), 5, "{argv:?}");
    assert_eq!(argv[0], "-k");
    assert_eq!(argv[1], "-t");
    assert!(
        argv[2].contains("jobtide-krb-"),
        "the private keytab file: {argv:?}"
    );
    assert_eq!(&argv[3..], ["--", "svc/host.example.com@EXAMPLE.COM"]);
}
