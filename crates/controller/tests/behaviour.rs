//! The operator's behaviour beyond the walkthrough, on the embedded API server with its local job
//! runner and librdkafka's mock cluster: pause, Min > 0, pending pods, API failures and lost
//! watches, restarts, leader election, request shapes, bad input and secrets.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use jobtide_api::ScaledJob;
use jobtide_controller::leader::{Elector, Timing};
use jobtide_controller::operator::Leadership;
use jobtide_controller::shards::Sharding;
use jobtide_devcluster::faults::{Failure, Matcher};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// Whether the `jobtide_leader` gauge reads `value` (the sample line, not the help text).
fn leads(metrics: &str, value: u8) -> bool {
    metrics
        .lines()
        .any(|l| l == format!("jobtide_leader {value}"))
}

/// Scripts of Jobs that keep running through a test.
const SLEEP: &str = "sleep 60";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_creation_and_unpause_resumes_it() {
    let h = harness(8).await;
    h.kafka.create_topic("paused", 1).unwrap();
    produce(&h.kafka, "paused", 2).await;
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let mut sj = scaled_job(
        "p",
        &h.kafka.bootstrap_servers(),
        "paused",
        SLEEP,
        json!({}),
    );
    sj.metadata.annotations = Some([("autoscaling.keda.sh/paused".into(), "true".into())].into());
    api.create(&PostParams::default(), &sj).await.unwrap();
    eventually("Paused True", 10, async || {
        let sj = api.get("p").await.ok()?;
        (condition(&sj, "Paused")?.0 == "True").then_some(())
    })
    .await;
    // A paused ScaledJob doesn't poll; a live one beside it proves the operator kept polling
    // while the paused one created nothing.
    api.create(
        &PostParams::default(),
        &scaled_job(
            "witness",
            &h.kafka.bootstrap_servers(),
            "paused",
            SLEEP,
            json!({}),
        ),
    )
    .await
    .unwrap();
    polls_pass(&operator, 3).await;
    assert!(
        jobs_of(&h.client, "p").await.is_empty(),
        "a paused ScaledJob created Jobs"
    );

    api.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused": null}}})),
    )
    .await
    .unwrap();
    eventually("two Jobs after unpausing", 15, async || {
        let sj = api.get("p").await.ok()?;
        (jobs_of(&h.client, "p").await.len() == 2 && condition(&sj, "Paused")?.0 == "False")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replica_count_is_maintained_with_no_lag() {
    let h = harness(8).await;
    h.kafka.create_topic("idle", 1).unwrap();
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let sj = scaled_job(
        "m",
        &h.kafka.bootstrap_servers(),
        "idle",
        SLEEP,
        json!({"minReplicaCount": 2}),
    );
    api.create(&PostParams::default(), &sj).await.unwrap();
    eventually("two Jobs", 15, async || {
        (jobs_of(&h.client, "m").await.len() == 2).then_some(())
    })
    .await;
    // Several polls later, still two.
    polls_pass(&operator, 3).await;
    assert_eq!(jobs_of(&h.client, "m").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pods_count_as_running_so_nothing_is_created_twice() {
    // The runner runs one pod at a time: the other Jobs' pods stay Pending (Unschedulable).
    let h = harness(1).await;
    h.kafka.create_topic("busy", 1).unwrap();
    produce(&h.kafka, "busy", 4).await;
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &scaled_job(
            "busy",
            &h.kafka.bootstrap_servers(),
            "busy",
            SLEEP,
            json!({}),
        ),
    )
    .await
    .unwrap();
    eventually("four Jobs", 15, async || {
        (jobs_of(&h.client, "busy").await.len() == 4).then_some(())
    })
    .await;
    // Nobody consumes: the lag stays 4 for every poll, and the default strategy subtracts the
    // running Jobs, pending pods included.
    polls_pass(&operator, 3).await;
    assert_eq!(jobs_of(&h.client, "busy").await.len(), 4);

    // `accurate` with pendingPodConditions: pods not Ready count as pending, and pending Jobs
    // are subtracted from what the lag asks for.
    let accurate = scaled_job(
        "accurate",
        &h.kafka.bootstrap_servers(),
        "busy",
        SLEEP,
        json!({"scalingStrategy": {"strategy": "accurate", "pendingPodConditions": ["Ready"]}}),
    );
    api.create(&PostParams::default(), &accurate).await.unwrap();
    eventually("four accurate Jobs", 15, async || {
        (jobs_of(&h.client, "accurate").await.len() == 4).then_some(())
    })
    .await;
    polls_pass(&operator, 3).await;
    assert_eq!(jobs_of(&h.client, "accurate").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_500_429_and_lost_watches_converge_without_duplicates() {
    let h = harness(16).await;
    h.kafka.create_topic("faulty", 1).unwrap();
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &scaled_job(
            "f",
            &h.kafka.bootstrap_servers(),
            "faulty",
            SLEEP,
            json!({}),
        ),
    )
    .await
    .unwrap();
    eventually("Ready", 10, async || {
        (condition(&api.get("f").await.ok()?, "Ready")?.0 == "True").then_some(())
    })
    .await;
    let faults = &h.cluster.faults;
    faults.fail_next(
        2,
        Matcher {
            verb: Some("create".into()),
            resource: Some("jobs".into()),
        },
        Failure::InternalError,
    );
    faults.fail_next(
        2,
        Matcher {
            verb: Some("patch".into()),
            resource: Some("scaledjobs".into()),
        },
        Failure::TooManyRequests {
            retry_after_seconds: 1,
        },
    );
    produce(&h.kafka, "faulty", 3).await;
    eventually("three Jobs despite the failures", 30, async || {
        (jobs_of(&h.client, "f").await.len() == 3).then_some(())
    })
    .await;
    let events = events_of(&h.client, "f").await;
    assert!(
        events
            .iter()
            .any(|(reason, _)| reason == "KEDAJobCreateFailed"),
        "{events:?}"
    );

    // Every watch is cut and the history compacted: watchers get 410 Gone and list again.
    h.cluster.store.compact();
    faults.drop_watches();
    produce(&h.kafka, "faulty", 2).await;
    eventually("five Jobs after the watches came back", 30, async || {
        (jobs_of(&h.client, "f").await.len() == 5).then_some(())
    })
    .await;
    polls_pass(&operator, 3).await;
    assert_eq!(jobs_of(&h.client, "f").await.len(), 5, "no duplicate Jobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_burst_creates_no_extra_job() {
    let h = harness(16).await;
    h.kafka.create_topic("burst", 1).unwrap();
    produce(&h.kafka, "burst", 5).await;
    let first = start_operator(&h, "first", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &scaled_job(
            "burst",
            &h.kafka.bootstrap_servers(),
            "burst",
            SLEEP,
            json!({}),
        ),
    )
    .await
    .unwrap();
    eventually("five Jobs", 15, async || {
        (jobs_of(&h.client, "burst").await.len() == 5).then_some(())
    })
    .await;
    first.stop().await;
    // The new instance's Job list fails a few times (its Job watch backs off) while its
    // ScaledJob watch is ready: its first poll must wait for the Jobs, not count none.
    h.cluster.faults.fail_next(
        3,
        Matcher {
            verb: Some("list".into()),
            resource: Some("jobs".into()),
        },
        Failure::InternalError,
    );
    let second = start_operator(&h, "second", Leadership::Always);
    polls_pass(&second, 3).await;
    assert_eq!(jobs_of(&h.client, "burst").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_instances_exactly_one_acts_and_the_other_takes_over() {
    let h = harness(16).await;
    h.kafka.create_topic("leader", 1).unwrap();
    let elected = |name: &str| {
        Leadership::Elected(Box::new(Elector::new(
            h.client.clone(),
            "default",
            "jobtide-test",
            name,
            Timing::default(),
        )))
    };
    let one = start_operator(&h, "one", elected("one"));
    let two = start_operator(&h, "two", elected("two"));
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), "default");
    let holder = eventually("a lease holder", 10, async || {
        leases.get("jobtide-test").await.ok()?.spec?.holder_identity
    })
    .await;
    let (leader, standby) = if holder == "one" {
        (one, two)
    } else {
        (two, one)
    };
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    produce(&h.kafka, "leader", 2).await;
    api.create(
        &PostParams::default(),
        &scaled_job(
            "l",
            &h.kafka.bootstrap_servers(),
            "leader",
            SLEEP,
            json!({}),
        ),
    )
    .await
    .unwrap();
    eventually("two Jobs", 15, async || {
        (jobs_of(&h.client, "l").await.len() == 2).then_some(())
    })
    .await;
    polls_pass(&leader, 3).await;
    assert_eq!(jobs_of(&h.client, "l").await.len(), 2);
    let instances: std::collections::BTreeSet<String> = all_events_of(&h.client, "l")
        .await
        .into_iter()
        .filter_map(|e| e.reporting_instance)
        .collect();
    assert_eq!(
        instances,
        [holder.clone()].into(),
        "events from the leader only"
    );
    assert!(leads(&leader.metrics(), 1));
    assert!(leads(&standby.metrics(), 0));
    assert!(!standby.metrics().contains("jobtide_jobs_created_total{"));

    // The leader stops and releases the lease: the standby takes over at once and acts.
    leader.stop().await;
    let next = eventually("the standby holding the lease", 10, async || {
        let holder2 = leases
            .get("jobtide-test")
            .await
            .ok()?
            .spec?
            .holder_identity?;
        (holder2 != holder).then_some(holder2)
    })
    .await;
    produce(&h.kafka, "leader", 1).await;
    eventually("a third Job from the new leader", 15, async || {
        (jobs_of(&h.client, "l").await.len() == 3).then_some(())
    })
    .await;
    assert!(leads(&standby.metrics(), 1));
    assert!(standby.metrics().contains("jobtide_jobs_created_total{"));
    assert!(
        all_events_of(&h.client, "l")
            .await
            .iter()
            .any(|e| e.reporting_instance.as_deref() == Some(next.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_shapes_that_matter_in_a_real_cluster() {
    let h = harness(16).await;
    h.kafka.create_topic("shapes", 1).unwrap();
    produce(&h.kafka, "shapes", 3).await;
    let _operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &scaled_job(
            "shapes",
            &h.kafka.bootstrap_servers(),
            "shapes",
            "true",
            json!({"successfulJobsHistoryLimit": 1}),
        ),
    )
    .await
    .unwrap();
    // Nobody commits: Jobs keep coming and the history keeps one.
    eventually("a history deletion", 30, async || {
        h.cluster
            .faults
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.resource.as_deref() == Some("jobs"))
            .then_some(())
    })
    .await;
    let requests = h.cluster.faults.requests();
    let uid = api.get("shapes").await.unwrap().uid().unwrap();
    let creates: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.resource.as_deref() == Some("jobs"))
        .collect();
    assert!(!creates.is_empty());
    for create in creates {
        let body = create.body.as_ref().unwrap();
        let owner = &body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["controller"], json!(true), "{body}");
        assert_eq!(owner["blockOwnerDeletion"], json!(true), "{body}");
        assert_eq!(owner["kind"], json!("ScaledJob"));
        assert_eq!(owner["uid"], json!(uid));
    }
    for delete in requests
        .iter()
        .filter(|r| r.method == "DELETE" && r.resource.as_deref() == Some("jobs"))
    {
        let background = delete
            .body
            .as_ref()
            .is_some_and(|b| b["propagationPolicy"] == json!("Background"))
            || delete.query.contains("propagationPolicy=Background");
        assert!(background, "{delete:?}");
    }
    // Status is written with merge patches (the finalizer with kube-runtime's guarded JSON patch).
    let status_patches: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/status"))
        .collect();
    assert!(!status_patches.is_empty());
    for patch in status_patches {
        assert_eq!(
            patch.content_type.as_deref(),
            Some("application/merge-patch+json"),
            "{patch:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_scaled_job_fails_alone() {
    let h = harness(16).await;
    h.kafka.create_topic("good", 1).unwrap();
    produce(&h.kafka, "good", 2).await;
    let _operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let bad = scaled_job(
        "bad",
        &h.kafka.bootstrap_servers(),
        "good",
        SLEEP,
        json!({"triggers": [{"type": "kafka", "metadata": {"bootstrapServers": "x:9092", "consumerGroup": "g", "topic": "good", "lagThreshold": "lots"}}]}),
    );
    api.create(&PostParams::default(), &bad).await.unwrap();
    let unknown = scaled_job(
        "unknown",
        &h.kafka.bootstrap_servers(),
        "good",
        SLEEP,
        json!({"triggers": [{"type": "rabbitmq", "metadata": {"queueName": "q"}}]}),
    );
    api.create(&PostParams::default(), &unknown).await.unwrap();
    api.create(
        &PostParams::default(),
        &scaled_job(
            "fine",
            &h.kafka.bootstrap_servers(),
            "good",
            SLEEP,
            json!({}),
        ),
    )
    .await
    .unwrap();
    for name in ["bad", "unknown"] {
        eventually("Ready False", 10, async || {
            let sj = api.get(name).await.ok()?;
            (condition(&sj, "Ready")?.0 == "False").then_some(())
        })
        .await;
        let events = all_events_of(&h.client, name).await;
        assert!(
            events.iter().any(|e| e.type_.as_deref() == Some("Warning")),
            "{name}: {events:?}"
        );
        assert!(jobs_of(&h.client, name).await.is_empty());
    }
    let warning = all_events_of(&h.client, "bad")
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.message)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(warning.contains("lagThreshold"), "{warning}");
    eventually("the good ScaledJob's Jobs", 15, async || {
        (jobs_of(&h.client, "fine").await.len() == 2).then_some(())
    })
    .await;
}

/// Everything the tests' operators log, for the secret check.
fn log_capture() -> Arc<Mutex<Vec<u8>>> {
    static CAPTURE: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(CAPTURE.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                "jobtide_controller=trace,jobtide_kafka=trace,jobtide_api=trace,kube=debug,info",
            )
            .with_writer(move || CaptureWriter(Arc::clone(&writer)))
            .try_init();
        buffer
    }))
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_value_appears_in_no_log_event_status_or_metric() {
    const PASSWORD: &str = "pa55-Very-Secret-4711";
    let logs = log_capture();
    let h = harness(16).await;
    h.kafka.create_topic("secure", 1).unwrap();
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "kafka-credentials"},
                "stringData": {"sasl": "plaintext", "username": "user", "password": PASSWORD},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let auth: Api<jobtide_api::TriggerAuthentication> =
        Api::namespaced(h.client.clone(), "default");
    auth.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": "kafka-auth"},
            "spec": {"secretTargetRef": [
                {"parameter": "sasl", "name": "kafka-credentials", "key": "sasl"},
                {"parameter": "username", "name": "kafka-credentials", "key": "username"},
                {"parameter": "password", "name": "kafka-credentials", "key": "password"},
            ]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let mut sj = scaled_job(
        "secure",
        &h.kafka.bootstrap_servers(),
        "secure",
        SLEEP,
        json!({}),
    );
    sj.spec.triggers[0].authentication_ref =
        serde_json::from_value(json!({"name": "kafka-auth"})).unwrap();
    api.create(&PostParams::default(), &sj).await.unwrap();
    // The mock broker has no SASL: the trigger fails, and the failure is reported.
    eventually("the SASL trigger failing", 30, async || {
        let sj = api.get("secure").await.ok()?;
        (condition(&sj, "Ready")? == ("False".into(), "TriggerError".into())).then_some(())
    })
    .await;
    let status = serde_json::to_string(&api.get("secure").await.unwrap().status).unwrap();
    // The credentials were resolved (the Secret's stringData became data): the failure is the
    // connection (a timeout or a transport error, depending on timing), not a missing or
    // malformed credential, whose error would name the parameter.
    let events = events_of(&h.client, "secure").await;
    let failures: Vec<&String> = events
        .iter()
        .filter(|(r, _)| r == "KEDAScalerFailed")
        .map(|(_, m)| m)
        .collect();
    assert!(!failures.is_empty(), "{events:?}");
    for message in failures {
        assert!(
            !message.contains("password")
                && !message.contains("username")
                && !message.contains("sasl"),
            "a credential error, not a connection error: {message}"
        );
    }
    assert!(!status.contains(PASSWORD), "status: {status}");
    for event in all_events_of(&h.client, "secure").await {
        let text = serde_json::to_string(&event).unwrap();
        assert!(!text.contains(PASSWORD), "event: {text}");
    }
    let metrics = operator.metrics();
    assert!(
        metrics.contains("keda_scaler_detail_errors_total{"),
        "{metrics}"
    );
    assert!(!metrics.contains(PASSWORD), "metrics: {metrics}");
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logged.contains("secure"),
        "nothing logged about the ScaledJob"
    );
    assert!(!logged.contains(PASSWORD), "a log line holds the secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_the_cache_has_not_shown_yet_are_counted() {
    let h = harness(16).await;
    h.kafka.create_topic("stale", 1).unwrap();
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &scaled_job(
            "stale",
            &h.kafka.bootstrap_servers(),
            "stale",
            SLEEP,
            json!({}),
        ),
    )
    .await
    .unwrap();
    eventually("Ready", 10, async || {
        (condition(&api.get("stale").await.ok()?, "Ready")?.0 == "True").then_some(())
    })
    .await;
    // The Job watch is cut and fails to resume for a while: the Job cache stays as it was
    // (empty) while polls go on every second (KEDA #2488's stale cache).
    h.cluster.faults.fail_next(
        6,
        Matcher {
            verb: Some("watch".into()),
            resource: Some("jobs".into()),
        },
        Failure::InternalError,
    );
    h.cluster.faults.drop_watches();
    produce(&h.kafka, "stale", 3).await;
    // Counted in the store itself: the test's own lists would use up the injected failures.
    let stored = || {
        let jobs = h.cluster.store.resource("batch", "v1", "jobs").unwrap();
        h.cluster
            .store
            .list(&jobs, Some("default"), |_| true)
            .0
            .len()
    };
    eventually("three Jobs", 15, async || (stored() == 3).then_some(())).await;
    polls_pass(&operator, 3).await;
    assert_eq!(stored(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_map_is_picked_up_before_the_next_poll() {
    let h = harness(16).await;
    h.kafka.create_topic("present", 1).unwrap();
    let _operator = start_operator(&h, "a", Leadership::Always);
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(h.client.clone(), "default");
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "kafka"}, "data": {"topic": "absent"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    // The topic comes from the container's env, which comes from the ConfigMap; polls are
    // 5 minutes apart.
    let mut sj = scaled_job(
        "env",
        &h.kafka.bootstrap_servers(),
        "unused",
        SLEEP,
        json!({"pollingInterval": 300}),
    );
    let trigger = &mut sj.spec.triggers[0].metadata;
    trigger.remove("topic");
    trigger.insert("topicFromEnv".into(), "TOPIC".into());
    sj.spec.job_target_ref.template.spec.as_mut().unwrap().containers[0].env =
        serde_json::from_value(json!([{"name": "TOPIC", "valueFrom": {"configMapKeyRef": {"name": "kafka", "key": "topic"}}}]))
            .unwrap();
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(&PostParams::default(), &sj).await.unwrap();
    eventually("Ready False: the topic doesn't exist", 10, async || {
        let sj = api.get("env").await.ok()?;
        (condition(&sj, "Ready")? == ("False".into(), "TriggerError".into())).then_some(())
    })
    .await;
    config_maps
        .patch(
            "kafka",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"topic": "present"}})),
        )
        .await
        .unwrap();
    eventually(
        "Ready True long before the next scheduled poll",
        15,
        async || {
            let sj = api.get("env").await.ok()?;
            (condition(&sj, "Ready")?.0 == "True").then_some(())
        },
    )
    .await;
}

/// `GET path` over plain HTTP/1.1: (status, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_over_http() {
    let h = harness(16).await;
    h.kafka.create_topic("metered", 1).unwrap();
    produce(&h.kafka, "metered", 2).await;
    let operator = start_operator(&h, "a", Leadership::Always);
    let (addr, _server) = jobtide_controller::http::serve(
        "127.0.0.1:0".parse().unwrap(),
        operator.context.metrics(),
        operator.health.clone(),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok".into()));
    eventually("ready", 10, async || {
        (http_get(addr, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &scaled_job(
            "mx",
            &h.kafka.bootstrap_servers(),
            "metered",
            SLEEP,
            json!({}),
        ),
    )
    .await
    .unwrap();
    eventually("two Jobs", 15, async || {
        (jobs_of(&h.client, "mx").await.len() == 2).then_some(())
    })
    .await;
    let labels = r#"{namespace="default",metric="s0-kafka-metered",scaledObject="mx",scaler="kafkaScaler",triggerIndex="0",type="scaledjob"}"#;
    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        format!("keda_scaler_metrics_value{labels} 2.0"),
        format!("keda_scaler_active{labels} 1"),
        format!("keda_scaler_detail_errors_total{labels} 0"),
        r#"keda_resource_registered_total{type="scaled_job",namespace="default"} 1"#.to_owned(),
        r#"keda_trigger_registered_total{type="kafka"} 1"#.to_owned(),
        r#"jobtide_jobs_created_total{namespace="default",scaledJob="mx"} 2"#.to_owned(),
        "jobtide_leader 1".to_owned(),
        "# TYPE keda_build_info gauge".to_owned(),
        "# TYPE jobtide_kafka_requests counter".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected} in\n{text}");
    }
    assert!(text.contains(&format!("keda_scaler_metrics_latency_seconds{labels} ")));
    assert!(text.contains("jobtide_reconcile_duration_seconds_count{result=\"ok\"}"));

    // The ScaledJob goes: its series go, its registration too.
    api.delete("mx", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    eventually("the ScaledJob's series removed", 15, async || {
        let (_, text) = http_get(addr, "/metrics").await;
        (!text.contains(labels)
            && text.contains(
                r#"keda_resource_registered_total{type="scaled_job",namespace="default"} 0"#,
            ))
        .then_some(())
    })
    .await;
}

/// (API group, resource[/subresource], verb) triples.
type Permissions = std::collections::BTreeSet<(String, String, String)>;

/// The rules of every ClusterRole and Role in `deploy/rbac.yaml`.
fn deployed_rules() -> Permissions {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rbac.yaml"),
    )
    .unwrap();
    let mut allowed = Permissions::new();
    for document in text.split("\n---\n") {
        let object: serde_json::Value = serde_saphyr::from_str(document).unwrap();
        if !matches!(object["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in object["rules"].as_array().unwrap() {
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        allowed.insert((
                            group.as_str().unwrap().to_owned(),
                            resource.as_str().unwrap().to_owned(),
                            verb.as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
        }
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_rules_are_exactly_what_the_operator_uses() {
    let h = harness(16).await;
    h.kafka.create_topic("rbac", 1).unwrap();
    produce(&h.kafka, "rbac", 3).await;
    // Objects a poll reads: a Secret, a ConfigMap, a TriggerAuthentication using both.
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"tls": "disable"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(h.client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "settings"}, "data": {"sasl": "none"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let auth: Api<jobtide_api::TriggerAuthentication> =
        Api::namespaced(h.client.clone(), "default");
    auth.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": "plain"},
            "spec": {"secretTargetRef": [{"parameter": "tls", "name": "creds", "key": "tls"}],
                "configMapTargetRef": [{"parameter": "sasl", "name": "settings", "key": "sasl"}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    // And a ClusterTriggerAuthentication, whose Secret is in the cluster object namespace.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(h.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "keda"}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), "keda")
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"tls": "disable"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<jobtide_api::ClusterTriggerAuthentication>::all(h.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "ClusterTriggerAuthentication",
                "metadata": {"name": "cluster-plain"},
                "spec": {"secretTargetRef": [{"parameter": "tls", "name": "creds", "key": "tls"}]},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let operator_client = kube::Client::try_from(jobtide_controller::with_user_agent(
        kube::Config::new(h.cluster.url().parse().unwrap()),
    ))
    .unwrap();
    // Sharded: a replica's member Lease takes every Lease verb leader election takes (get,
    // create, update), and lists the others and deletes its own at the end.
    let operator = start_operator(
        &h,
        "rbac",
        Leadership::Sharded(Box::new(
            Sharding::new(
                operator_client,
                "default",
                "jobtide-rbac",
                "rbac",
                Timing::default(),
            )
            .unwrap(),
        )),
    );
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let mut sj = scaled_job(
        "rbac",
        &h.kafka.bootstrap_servers(),
        "rbac",
        "true",
        json!({"successfulJobsHistoryLimit": 1, "rollout": {"strategy": "immediate"}}),
    );
    let mut second = sj.spec.triggers[0].clone();
    sj.spec.triggers[0].authentication_ref =
        serde_json::from_value(json!({"name": "plain"})).unwrap();
    second.authentication_ref = serde_json::from_value(
        json!({"name": "cluster-plain", "kind": "ClusterTriggerAuthentication"}),
    )
    .unwrap();
    sj.spec.triggers.push(second);
    api.create(&PostParams::default(), &sj).await.unwrap();
    // Jobs are created and finished ones deleted (nobody commits, so Jobs keep coming).
    eventually("history deletions", 30, async || {
        h.cluster
            .faults
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.resource.as_deref() == Some("jobs"))
            .then_some(())
    })
    .await;
    // Dispatch mode: a message Secret per Job, and a Job marked when its message failed for
    // good (maxAttempts 1, no dead-letter topic).
    h.kafka.create_topic("rbac-dispatch", 1).unwrap();
    produce(&h.kafka, "rbac-dispatch", 1).await;
    let mut dispatching = scaled_job(
        "rbac-dispatch",
        &h.kafka.bootstrap_servers(),
        "rbac-dispatch",
        "exit 1",
        json!({}),
    );
    dispatching.spec.triggers[0] = serde_json::from_value(json!({"type": "kafka-dispatch",
        "metadata": {"bootstrapServers": h.kafka.bootstrap_servers(), "consumerGroup": "rbac-dispatch",
            "topic": "rbac-dispatch", "offsetResetPolicy": "earliest"}}))
    .unwrap();
    api.create(&PostParams::default(), &dispatching)
        .await
        .unwrap();
    eventually("a dispatched Job marked failed for good", 30, async || {
        let requests = h.cluster.faults.requests();
        let by_operator = |method: &str, resource: &str| {
            requests.iter().any(|r| {
                r.method == method
                    && r.resource.as_deref() == Some(resource)
                    && r.user_agent.as_deref() == Some(jobtide_controller::USER_AGENT)
            })
        };
        (by_operator("POST", "secrets") && by_operator("PATCH", "jobs")).then_some(())
    })
    .await;
    api.delete("rbac-dispatch", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    // Capacity: a Job Kueue holds (suspended, with a queue name) makes a creating poll read the
    // Workloads (Kueue's CRD, so that the embedded server serves them).
    Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(h.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "workloads.kueue.x-k8s.io"},
                "spec": {"group": "kueue.x-k8s.io", "scope": "Namespaced",
                    "names": {"plural": "workloads", "singular": "workload", "kind": "Workload", "listKind": "WorkloadList"},
                    "versions": [{"name": "v1beta1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut queued = scaled_job(
        "rbac-kueue",
        &h.kafka.bootstrap_servers(),
        "rbac",
        "true",
        json!({}),
    );
    queued.metadata.labels = Some([("kueue.x-k8s.io/queue-name".into(), "q".into())].into());
    queued.spec.job_target_ref.suspend = Some(true);
    api.create(&PostParams::default(), &queued).await.unwrap();
    eventually("the Workloads read", 30, async || {
        h.cluster
            .faults
            .requests()
            .iter()
            .any(|r| r.resource.as_deref() == Some("workloads"))
            .then_some(())
    })
    .await;
    api.delete("rbac-kueue", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    // A changed spec under the immediate rollout deletes the old generation's Jobs.
    api.patch(
        "rbac",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxReplicaCount": 29}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    api.delete("rbac", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    eventually("the ScaledJob gone", 15, async || {
        api.get_opt("rbac").await.ok()?.is_none().then_some(())
    })
    .await;
    operator.stop().await;

    let mut used = Permissions::new();
    for request in h.cluster.faults.requests() {
        if request.user_agent.as_deref() != Some(jobtide_controller::USER_AGENT)
            || request.verb == "discovery"
        {
            continue;
        }
        let group = match request.path.strip_prefix("/apis/") {
            Some(rest) => rest.split('/').next().unwrap().to_owned(),
            None => String::new(),
        };
        let mut resource = request.resource.clone().unwrap();
        if request.path.ends_with("/status") {
            resource.push_str("/status");
        }
        used.insert((group, resource, request.verb.clone()));
    }
    let allowed = deployed_rules();
    let missing: Vec<_> = used.difference(&allowed).collect();
    assert!(
        missing.is_empty(),
        "the operator used what deploy/rbac.yaml doesn't grant: {missing:?}"
    );
    let unused: Vec<_> = allowed.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "deploy/rbac.yaml grants what the operator didn't use: {unused:?}"
    );
}
