//! What the operator writes and how fast it creates: status written only when it changes,
//! conditions that don't flip, KEDA's scaler events, and Job creation at KEDA's pace (at most one
//! creating poll per `pollingInterval`, whatever Job and pod changes re-poll in between). On the
//! embedded API server with its local job runner and librdkafka's mock cluster.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::*;
use jobtide_api::ScaledJob;
use jobtide_controller::operator::Leadership;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const CREATING: &str = CREATING_POLLS;
const UPDATES: &str = r#"jobtide_polls_total{kind="update"}"#;
const UNCHANGED: &str = r#"jobtide_status_writes_total{result="unchanged"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_healthy_scaled_job_is_not_rewritten_by_its_polls() {
    let h = harness(4).await;
    h.kafka.create_topic("quiet", 1).unwrap();
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let sj = scaled_job(
        "quiet",
        &h.kafka.bootstrap_servers(),
        "quiet",
        "true",
        json!({}),
    );
    api.create(&PostParams::default(), &sj).await.unwrap();
    eventually("Ready True and Active False", 15, async || {
        let sj = api.get("quiet").await.ok()?;
        (condition(&sj, "Ready")?.0 == "True" && condition(&sj, "Active")?.0 == "False")
            .then_some(())
    })
    .await;
    let before = api.get("quiet").await.unwrap().resource_version();
    let unchanged = sample(&operator.metrics(), UNCHANGED);
    // pollingInterval 1: five more polls, each through to its (skipped) status write — a poll
    // counts as started before its write, so waiting on the write count proves all five ended.
    eventually("five more polls that wrote nothing", 20, async || {
        (sample(&operator.metrics(), UNCHANGED) >= unchanged + 5).then_some(())
    })
    .await;
    let after = api.get("quiet").await.unwrap().resource_version();
    assert_eq!(
        before, after,
        "the status was rewritten with nothing changed"
    );
}

/// D19: an active ScaledJob whose state doesn't change writes `lastActiveTime` once per refresh
/// period (5 minutes by default), not at every poll as KEDA does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_scaled_job_refreshes_last_active_time_once_per_period_not_every_poll() {
    let h = harness(4).await;
    h.kafka.create_topic("waiting", 1).unwrap();
    // Lag that stays (nobody commits) and one Job that runs for minutes: every poll is active
    // and, past the first, finds nothing to do.
    produce(&h.kafka, "waiting", 3).await;
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let sj = scaled_job(
        "busy",
        &h.kafka.bootstrap_servers(),
        "waiting",
        "sleep 600",
        json!({"maxReplicaCount": 1}),
    );
    api.create(&PostParams::default(), &sj).await.unwrap();
    let first = eventually(
        "Active True with a lastActiveTime and one Job",
        20,
        async || {
            let sj = api.get("busy").await.ok()?;
            (condition(&sj, "Active")?.0 == "True" && jobs_of(&h.client, "busy").await.len() == 1)
                .then_some(())?;
            sj.status?.last_active_time
        },
    )
    .await;
    let version = api.get("busy").await.unwrap().resource_version();
    let unchanged = sample(&operator.metrics(), UNCHANGED);
    // pollingInterval 1: five more creating polls, each through to its (skipped) status write.
    eventually(
        "five more active polls that wrote nothing",
        30,
        async || (sample(&operator.metrics(), UNCHANGED) >= unchanged + 5).then_some(()),
    )
    .await;
    let sj = api.get("busy").await.unwrap();
    assert_eq!(condition(&sj, "Active").unwrap().0, "True");
    assert_eq!(sj.status.unwrap().last_active_time, Some(first));
    assert_eq!(
        version,
        api.get("busy").await.unwrap().resource_version(),
        "an active poll with nothing new rewrote the status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_trigger_keeps_ready_false_without_flipping_or_re_announcing_ready() {
    let h = harness(4).await;
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    // No such topic: every poll fails.
    let sj = scaled_job(
        "broken",
        &h.kafka.bootstrap_servers(),
        "missing",
        "true",
        json!({}),
    );
    api.create(&PostParams::default(), &sj).await.unwrap();
    eventually("Ready False TriggerError", 20, async || {
        let sj = api.get("broken").await.ok()?;
        (condition(&sj, "Ready")? == ("False".into(), "TriggerError".into())).then_some(())
    })
    .await;
    let before = api.get("broken").await.unwrap().resource_version();
    let polls = sample(&operator.metrics(), CREATING);
    eventually("four more polls", 30, async || {
        (sample(&operator.metrics(), CREATING) >= polls + 4).then_some(())
    })
    .await;
    let sj = api.get("broken").await.unwrap();
    assert_eq!(before, sj.resource_version(), "Ready flipped and back");
    assert_eq!(
        condition(&sj, "Ready"),
        Some(("False".into(), "TriggerError".into()))
    );
    let ready: i32 = all_events_of(&h.client, "broken")
        .await
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ScaledJobReady"))
        .map(|e| e.count.unwrap_or(1))
        .sum();
    assert!(ready <= 1, "ScaledJobReady announced {ready} times");
    let failed = events_of(&h.client, "broken").await;
    assert!(
        failed
            .iter()
            .any(|(reason, _)| reason == "KEDAScalerFailed"),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_and_pod_changes_do_not_create_jobs_faster_than_the_polling_interval() {
    let h = harness(8).await;
    h.kafka.create_topic("storm", 1).unwrap();
    produce(&h.kafka, "storm", 6).await;
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    // Jobs that succeed without consuming: the lag stays 6.
    let sj = scaled_job(
        "storm",
        &h.kafka.bootstrap_servers(),
        "storm",
        "exit 0",
        json!({"pollingInterval": 30, "maxReplicaCount": 10}),
    );
    api.create(&PostParams::default(), &sj).await.unwrap();
    let created = r#"jobtide_jobs_created_total{namespace="default",scaledJob="storm"}"#;
    eventually("the first poll's six Jobs", 15, async || {
        (sample(&operator.metrics(), created) >= 6).then_some(())
    })
    .await;
    // The Jobs finish (pods Running → Succeeded, Jobs Complete, history cleanup): each change
    // re-polls. Wait for proof that re-polls ran, and for the Jobs to be done.
    eventually("re-polls after the Jobs finished", 20, async || {
        let done = jobs_of(&h.client, "storm")
            .await
            .iter()
            .all(|j| has_condition(j, "Complete"));
        (done && sample(&operator.metrics(), UPDATES) >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = operator.metrics();
    assert_eq!(
        sample(&metrics, created),
        6,
        "Jobs created between polls ({} re-polls)",
        sample(&metrics, UPDATES)
    );
    assert_eq!(sample(&metrics, CREATING), 1, "one creating poll in 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_the_scalers_and_a_spec_change_rebuilds_them() {
    let h = harness(4).await;
    h.kafka.create_topic("events", 1).unwrap();
    let _operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let sj = scaled_job(
        "ev",
        &h.kafka.bootstrap_servers(),
        "events",
        "true",
        json!({}),
    );
    api.create(&PostParams::default(), &sj).await.unwrap();
    let built = async || {
        events_of(&h.client, "ev")
            .await
            .iter()
            .filter(|(reason, message)| {
                reason == "KEDAScalersStarted" && message == "Scaler kafka is built"
            })
            .count()
    };
    eventually("the scalers built", 15, async || {
        (built().await == 1).then_some(())
    })
    .await;
    api.patch(
        "ev",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"pollingInterval": 2}})),
    )
    .await
    .unwrap();
    // Events with the same reason and note are one Event with a count (series).
    let built_count = async || {
        all_events_of(&h.client, "ev")
            .await
            .iter()
            .filter(|e| e.message.as_deref() == Some("Scaler kafka is built"))
            .map(|e| e.count.unwrap_or(1))
            .sum::<i32>()
    };
    eventually("rebuilt after the spec change", 15, async || {
        (built_count().await >= 2).then_some(())
    })
    .await;
    api.patch(
        "ev",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused": "true"}}})),
    )
    .await
    .unwrap();
    eventually("KEDAScalersStopped on pause", 15, async || {
        events_of(&h.client, "ev")
            .await
            .iter()
            .any(|(reason, message)| {
                reason == "KEDAScalersStopped" && message == "Stopped scalers watch"
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_fail_at_once_trip_the_crash_loop_guard_until_it_is_turned_off() {
    let h = harness(8).await;
    h.kafka.create_topic("crash", 1).unwrap();
    produce(&h.kafka, "crash", 2).await;
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let failing = json!({"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox", "command": ["/bin/sh", "-c"], "args": ["exit 3"]}]}}});
    let sj = scaled_job(
        "crash",
        &h.kafka.bootstrap_servers(),
        "crash",
        "",
        json!({"jobTargetRef": failing, "failedJobsHistoryLimit": 10}),
    );
    api.create(&PostParams::default(), &sj).await.unwrap();
    let created = r#"jobtide_jobs_created_total{namespace="default",scaledJob="crash"}"#;
    eventually("CrashLoopBackOff True", 30, async || {
        let sj = api.get("crash").await.ok()?;
        (condition(&sj, "CrashLoopBackOff")? == ("True".into(), "CrashLoopBackOff".into()))
            .then_some(())
    })
    .await;
    let metrics = operator.metrics();
    assert_eq!(sample(&metrics, "jobtide_crash_loop_backoffs_total"), 1);
    let at_trip = sample(&metrics, created);
    assert!(at_trip >= 3, "{at_trip} Jobs before the trip");
    let polls = sample(&metrics, CREATING);
    // pollingInterval 1, a 30 s backoff: five polls and not one Job.
    eventually("five polls during the backoff", 20, async || {
        (sample(&operator.metrics(), CREATING) >= polls + 5).then_some(())
    })
    .await;
    assert_eq!(
        sample(&operator.metrics(), created),
        at_trip,
        "Jobs created while backing off"
    );
    let events = events_of(&h.client, "crash").await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "CrashLoopBackOff" && note.contains("30s")),
        "{events:?}"
    );
    // The knob: the annotation turns the guard off, and creation resumes at once.
    api.patch(
        "crash",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"jobtide.io/crash-loop-backoff": "false"}}}),
        ),
    )
    .await
    .unwrap();
    eventually("Jobs again without the guard", 15, async || {
        (sample(&operator.metrics(), created) > at_trip).then_some(())
    })
    .await;
    eventually("CrashLoopBackOff False", 15, async || {
        let sj = api.get("crash").await.ok()?;
        (condition(&sj, "CrashLoopBackOff")?.0 == "False").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_trigger_authentication_read_is_an_error_not_a_missing_object() {
    let h = harness(4).await;
    h.kafka.create_topic("auth", 1).unwrap();
    h.cluster.faults.fail_next(
        1000,
        jobtide_devcluster::faults::Matcher {
            verb: Some("get".into()),
            resource: Some("triggerauthentications".into()),
        },
        jobtide_devcluster::faults::Failure::Forbidden,
    );
    let operator = start_operator(&h, "a", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let mut sj = scaled_job(
        "auth",
        &h.kafka.bootstrap_servers(),
        "auth",
        "true",
        json!({}),
    );
    sj.spec.triggers[0].authentication_ref =
        serde_json::from_value(json!({"name": "some-auth"})).unwrap();
    api.create(&PostParams::default(), &sj).await.unwrap();
    let forbidden = r#"jobtide_reconcile_errors_total{category="api_forbidden"}"#;
    eventually("reconciles failing as forbidden", 20, async || {
        (sample(&operator.metrics(), forbidden) >= 2).then_some(())
    })
    .await;
    let sj = api.get("auth").await.unwrap();
    let status = serde_json::to_string(&sj.status).unwrap();
    assert!(
        !status.contains("not found"),
        "read as a missing object: {status}"
    );
    let events = events_of(&h.client, "auth").await;
    assert!(
        !events.iter().any(|(_, note)| note.contains("not found")),
        "{events:?}"
    );
}
