//! The Grafana dashboard and the alerts the chart ships (`charts/jobtide/files/`) name only series
//! a live operator exports, with labels it sets; Prometheus' own `promtool` checks the rules, runs
//! their unit tests (`alerts_test.yaml`) and lints the live exposition.
//!
//! The live operator is `jobtide dev`'s, driven through a run that makes every referenced series
//! appear: Jobs created, finished and cleaned up, a Job that fits no node, Job creations a
//! ResourceQuota refuses, a measurement that fails,
//! messages dispatched and a dispatch step that fails. promtool comes from
//! `scripts/install-promtool` (`JOBTIDE_PROMTOOL`); without it the promtool checks skip with a
//! printed reason, and fail under `CI=true`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::dev::{example, start_dev};
use jobtide_api::ScaledJob;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;

fn files() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/jobtide/files")
}

/// Every PromQL expression the dashboard and the alerts hold, with where it is.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(files().join("dashboard.json")).unwrap())
            .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("dashboard panel {:?}", panel["title"]),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            // label_values(series, label): the series and the label.
            let inner = query
                .trim_start_matches("label_values(")
                .trim_end_matches(')');
            let (series, label) = inner.rsplit_once(',').unwrap();
            out.push((
                format!("dashboard variable {:?}", variable["name"]),
                format!("sum by ({}) ({series})", label.trim()),
            ));
        }
    }
    let alerts: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(files().join("alerts.yaml")).unwrap())
            .unwrap();
    for group in alerts["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            out.push((
                format!("alert {:?}", rule["alert"]),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(out.len() > 20, "{out:?}");
    out
}

/// What an expression refers to: each series with the label names its matchers use, and the
/// labels of its `by (…)` clauses.
#[derive(Debug, Default)]
struct References {
    series: BTreeMap<String, BTreeSet<String>>,
    grouping: BTreeSet<String>,
}

/// A small PromQL scanner: identifiers outside string literals; `{…}` after a series name holds
/// matchers; `by (…)` / `without (…)` hold label names.
fn references(expr: &str) -> References {
    #[derive(PartialEq)]
    enum Token {
        Ident(String),
        Punct(char),
        Str,
    }
    let mut tokens = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut ident = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    ident.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Ident(ident));
        } else if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    chars.next();
                } else if c == '"' {
                    break;
                }
            }
            tokens.push(Token::Str);
        } else {
            if !c.is_whitespace() {
                tokens.push(Token::Punct(c));
            }
            chars.next();
        }
    }
    let mut refs = References::default();
    let mut i = 0;
    while i < tokens.len() {
        if let Token::Ident(name) = &tokens[i] {
            if name.starts_with("keda_") || name.starts_with("jobtide_") {
                let labels = refs.series.entry(name.clone()).or_default();
                if tokens.get(i + 1) == Some(&Token::Punct('{')) {
                    let mut j = i + 2;
                    while j < tokens.len() && tokens[j] != Token::Punct('}') {
                        if let Token::Ident(label) = &tokens[j] {
                            labels.insert(label.clone());
                        }
                        j += 1;
                    }
                    i = j;
                }
            } else if (name == "by" || name == "without")
                && tokens.get(i + 1) == Some(&Token::Punct('('))
            {
                let mut j = i + 2;
                while j < tokens.len() && tokens[j] != Token::Punct(')') {
                    if let Token::Ident(label) = &tokens[j] {
                        refs.grouping.insert(label.clone());
                    }
                    j += 1;
                }
                i = j;
            }
        }
        i += 1;
    }
    refs
}

/// Sample names of an exposition with the label names each carries.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap();
        let labels = out.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            let inner = &line[end + 1..line.rfind('}').unwrap()];
            // Label values are quoted and hold no `="` of their own in these series.
            for pair in inner.split("\",") {
                if let Some((name, _)) = pair.split_once("=\"") {
                    labels.insert(name.trim_start_matches(',').to_owned());
                }
            }
        }
    }
    out
}

fn scaled_job(name: &str, edit: impl FnOnce(&mut ScaledJob)) -> ScaledJob {
    let mut sj = example();
    sj.metadata.name = Some(name.into());
    edit(&mut sj);
    sj
}

#[test]
fn the_scanner_finds_series_matchers_and_grouping() {
    let refs = references(
        r#"sum by (namespace, scaledJob) (rate(jobtide_jobs_created_total{namespace=~"$ns", x!="a,b=\"c"}[5m])) / on() keda_build_info"#,
    );
    assert_eq!(
        refs.series,
        BTreeMap::from([
            (
                "jobtide_jobs_created_total".to_owned(),
                BTreeSet::from(["namespace".to_owned(), "x".to_owned()])
            ),
            ("keda_build_info".to_owned(), BTreeSet::new()),
        ])
    );
    assert_eq!(
        refs.grouping,
        BTreeSet::from(["namespace".to_owned(), "scaledJob".to_owned()])
    );
    let samples = exported("# TYPE a counter\na_total{namespace=\"n\",scaledJob=\"s\"} 1\nb 2\n");
    assert_eq!(
        samples["a_total"],
        BTreeSet::from(["namespace".to_owned(), "scaledJob".to_owned()])
    );
    assert!(samples["b"].is_empty());
    assert_eq!(
        classic_text("# HELP a Things.\n# TYPE a counter\na_total 1\n# TYPE g gauge\ng 2\n# EOF\n"),
        "# HELP a_total Things.\n# TYPE a_total counter\na_total 1\n# TYPE g gauge\ng 2\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_and_alerts_name_is_exported_by_a_live_operator() {
    let expressions = expressions();
    let mut dev = start_dev(&[
        "--kafka-addr",
        "127.0.0.1:0",
        "--create-topic",
        "test-topic",
        "--create-topic",
        "orders",
    ]);
    let client = dev.client();
    let scaled_jobs: Api<ScaledJob> = Api::namespaced(client, "default");
    let post = PostParams::default();
    // Jobs created, finished and cleaned up by the history limit.
    let lag = scaled_job("kafka-scaledjob", |sj| {
        sj.spec.successful_jobs_history_limit = Some(1);
    });
    // A measurement that fails: the topic doesn't exist.
    let missing = scaled_job("missing-topic", |sj| {
        sj.spec.triggers[0]
            .metadata
            .insert("topic".into(), "no-such-topic".into());
    });
    // A Job that fits no node (it stays Unschedulable, waiting for capacity).
    let huge = scaled_job("huge-job", |sj| {
        sj.spec.min_replica_count = Some(1);
        let spec = sj.spec.job_target_ref.template.spec.as_mut().unwrap();
        spec.containers[0].resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_owned(),
                Quantity("1000".into()),
            )])),
            ..ResourceRequirements::default()
        });
    });
    // Job creations a ResourceQuota refuses (403 exceeded quota), in a namespace of their own.
    let quota_namespace = "quota-full";
    Api::<Namespace>::all(dev.client())
        .create(
            &post,
            &serde_json::from_value(serde_json::json!({"metadata": {"name": quota_namespace}}))
                .unwrap(),
        )
        .await
        .unwrap();
    Api::<ResourceQuota>::namespaced(dev.client(), quota_namespace)
        .create(
            &post,
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "no-jobs"},
                "spec": {"hard": {"count/jobs.batch": "0"}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut quota_bound = scaled_job("quota-bound", |sj| {
        sj.spec.min_replica_count = Some(1);
    });
    quota_bound.metadata.namespace = Some(quota_namespace.into());
    Api::<ScaledJob>::namespaced(dev.client(), quota_namespace)
        .create(&post, &quota_bound)
        .await
        .unwrap();
    let dispatch: ScaledJob = serde_saphyr::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dev-dispatch.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    // A dispatch step that fails: the topic doesn't exist.
    let mut dispatch_missing = dispatch.clone();
    dispatch_missing.metadata.name = Some("dispatch-missing".into());
    dispatch_missing.spec.triggers[0]
        .metadata
        .insert("topic".into(), "no-such-orders".into());
    for sj in [&lag, &missing, &huge, &dispatch, &dispatch_missing] {
        scaled_jobs.create(&post, sj).await.unwrap();
    }
    let messages: Vec<(Option<String>, String)> = (0..3)
        .map(|i| (Some(i.to_string()), format!("{{\"orderid\":{i}}}")))
        .collect();
    for topic in ["test-topic", "orders"] {
        jobtide_kafka::tools::produce(&dev.kafka, topic, &messages, Duration::from_secs(30))
            .await
            .unwrap();
    }

    // Scrape until every referenced series is there (Kafka statistics come every 15 s).
    let wanted: BTreeSet<String> = expressions
        .iter()
        .flat_map(|(_, e)| references(e).series.into_keys())
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let text = loop {
        let text = get(&dev.metrics).await.unwrap_or_default();
        let samples = exported(&text);
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|name| !samples.contains_key(*name))
            .collect();
        if missing.is_empty() {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never exported: {missing:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let samples = exported(&text);
    for (where_, expr) in &expressions {
        let refs = references(expr);
        let mut available: BTreeSet<String> = BTreeSet::from(["le".to_owned()]);
        for (name, matchers) in &refs.series {
            let labels = &samples[name];
            for label in matchers {
                assert!(
                    labels.contains(label),
                    "{where_}: {name} has no label {label:?} (it has {labels:?}): {expr}"
                );
            }
            available.extend(labels.iter().cloned());
        }
        for label in &refs.grouping {
            assert!(
                available.contains(label),
                "{where_}: no series groups by {label:?} (labels: {available:?}): {expr}"
            );
        }
    }

    // Prometheus' own lint of the live exposition.
    if let Some(promtool) = promtool() {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(classic_text(&text).as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // Findings are printed with a non-zero exit, a parse error too. The only ones allowed
        // come from KEDA's names, which jobtide keeps so that dashboards keep working: its
        // camelCase labels (`scaledJob`, `scaledObject`, `triggerIndex`, which jobtide's own
        // per-ScaledJob series share) and its two gauges named `…_total`.
        let unexpected: Vec<&str> = said
            .lines()
            .filter(|l| {
                !l.ends_with("label names should be written in 'snake_case' not 'camelCase'")
                    && !matches!(
                        *l,
                        "keda_resource_registered_total non-counter metrics should not have \"_total\" suffix"
                            | "keda_trigger_registered_total non-counter metrics should not have \"_total\" suffix"
                    )
            })
            .collect();
        assert!(
            unexpected.is_empty(),
            "promtool check metrics: {unexpected:?}\n{said}"
        );
        assert!(
            said.contains("camelCase"),
            "promtool linted nothing? {said}"
        );
    }
    assert!(dev.stop().success());
}

/// `GET url` (`http://host:port/path`) over HTTP/1.0 (no chunking): the body of a 200, else None.
async fn get(url: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_at(rest.find('/')?);
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(host))
            .await
            .ok()?
            .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_owned())
}

/// The classic Prometheus text format of an OpenMetrics exposition, which is what `promtool check
/// metrics` parses: a counter family `x` (samples `x_total`) is described as `x_total`, and there
/// is no `# EOF`. Prometheus maps the two formats the same way when it scrapes.
fn classic_text(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::new();
    for line in openmetrics.lines().filter(|l| *l != "# EOF") {
        let described = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (family, tail) = rest.split_once(' ')?;
            counters
                .contains(family)
                .then(|| format!("{prefix}{family}_total {tail}"))
        });
        out.push_str(&described.unwrap_or_else(|| line.to_owned()));
        out.push('\n');
    }
    out
}

/// promtool: `JOBTIDE_PROMTOOL` (scripts/install-promtool prints it). None (a printed skip)
/// without it, a failure under CI.
fn promtool() -> Option<PathBuf> {
    match std::env::var_os("JOBTIDE_PROMTOOL") {
        Some(path) => Some(path.into()),
        None => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must set JOBTIDE_PROMTOOL (.ci/run runs scripts/install-promtool)"
            );
            eprintln!("skipped: JOBTIDE_PROMTOOL is not set (scripts/install-promtool)");
            None
        }
    }
}

#[test]
fn promtool_checks_the_alerts_and_runs_their_unit_tests() {
    let Some(promtool) = promtool() else {
        return;
    };
    for args in [
        &["check", "rules", "alerts.yaml"][..],
        &["test", "rules", "alerts_test.yaml"][..],
    ] {
        let output = Command::new(&promtool)
            .current_dir(files())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
