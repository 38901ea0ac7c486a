//! Capacity on the embedded API server: its runner runs at most `max_parallel_pods` pods and
//! marks the rest `Unschedulable`; the tests write the Cluster Autoscaler's events and
//! ResourceQuotas themselves. Each test counts Jobs per message (lag mode: never more than the
//! strategy decides; dispatch: exactly one) and the Jobs created while others wait.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    Operator, condition, events_of, eventually, harness, has_condition, jobs_of, polls_pass,
    produce, sample, scaled_job, start_operator,
};
use jobtide_api::ScaledJob;
use jobtide_controller::operator::Leadership;
use k8s_openapi::api::core::v1::{Event, Pod, ResourceQuota};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// Unfinished Jobs of `name` whose pod is `Unschedulable` right now.
async fn unschedulable_pods(client: &Client, name: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default().labels(&format!("scaledjob.keda.sh/name={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"))
        })
        .collect()
}

fn unfinished(jobs: &[k8s_openapi::api::batch::v1::Job]) -> usize {
    jobs.iter()
        .filter(|j| !has_condition(j, "Complete") && !has_condition(j, "Failed"))
        .count()
}

/// Writes the Cluster Autoscaler's event `reason` about `pod`.
async fn autoscaler_says(client: &Client, pod: &Pod, reason: &str, message: &str) {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let event: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "ca-", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": pod.name_any(),
            "uid": pod.uid(), "apiVersion": "v1"},
        "reason": reason, "message": message, "type": "Normal",
        "source": {"component": "cluster-autoscaler"},
        "firstTimestamp": jiff::Timestamp::now().to_string(),
        "lastTimestamp": jiff::Timestamp::now().to_string(),
        "count": 1,
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
}

async fn capacity_reason(api: &Api<ScaledJob>, name: &str) -> Option<String> {
    let sj = api.get(name).await.ok()?;
    condition(&sj, "CapacityAvailable").map(|(_, reason)| reason)
}

fn metric(operator: &Operator, name: &str, reason: &str) -> u64 {
    sample(
        &operator.metrics(),
        &format!(
            "jobtide_jobs_waiting_for_capacity{{namespace=\"default\",scaledJob=\"{name}\",reason=\"{reason}\"}}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_waiting_for_capacity_stay_within_the_pending_budget() {
    // Two pods run at once; every Job takes 3 s and consumes nothing, so the lag stays and
    // KEDA's rule keeps 8 Jobs unfinished (6 of them Unschedulable) for ever. (3 s: a budget's
    // step of Jobs is still waiting at the next poll, so the gate doesn't reopen in between.)
    let h = harness(2).await;
    h.kafka.create_topic("t", 1).unwrap();
    produce(&h.kafka, "t", 8).await;
    let operator = start_operator(&h, "capacity", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let mut sj = scaled_job(
        "budget",
        &h.kafka.bootstrap_servers(),
        "t",
        "sleep 3",
        json!({"maxReplicaCount": 8}),
    );
    sj.metadata.annotations = Some([("jobtide.io/pending-budget".into(), "3".into())].into());
    api.create(&PostParams::default(), &sj).await.unwrap();
    eventually("the Unschedulable condition", 30, async || {
        (capacity_reason(&api, "budget").await.as_deref() == Some("Unschedulable")).then_some(())
    })
    .await;
    // The first poll knew of no waiting Job and created the 8 the strategy asked for; once the
    // waiting ones drain below the budget, no more than 3 wait at any time.
    eventually(
        "the first burst to drain below the budget",
        60,
        async || (unschedulable_pods(&h.client, "budget").await.len() <= 3).then_some(()),
    )
    .await;
    let created = |operator: &Operator| {
        sample(
            &operator.metrics(),
            "jobtide_jobs_created_total{namespace=\"default\",scaledJob=\"budget\"}",
        )
    };
    let created_before = created(&operator);
    let mut most_waiting = 0;
    let start = sample(&operator.metrics(), common::CREATING_POLLS);
    while sample(&operator.metrics(), common::CREATING_POLLS) < start + 8 {
        most_waiting = most_waiting.max(unschedulable_pods(&h.client, "budget").await.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = jobs_of(&h.client, "budget").await;
    assert!(
        created(&operator) > created_before,
        "Jobs were still created as others finished ({} then {})",
        created_before,
        created(&operator)
    );
    assert!(most_waiting <= 3, "{most_waiting} Jobs waited at once");
    assert!(
        unfinished(&jobs) <= 2 + 3 + 1,
        "{} unfinished",
        unfinished(&jobs)
    );
    let reasons: Vec<String> = events_of(&h.client, "budget")
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert!(reasons.contains(&"Unschedulable".to_owned()), "{reasons:?}");
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_up_is_waited_for_and_a_pod_no_node_fits_stops_creation() {
    let h = harness(1).await;
    h.kafka.create_topic("t", 1).unwrap();
    produce(&h.kafka, "t", 4).await;
    let operator = start_operator(&h, "capacity", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let mut sj = scaled_job(
        "grow",
        &h.kafka.bootstrap_servers(),
        "t",
        "sleep 60",
        json!({}),
    );
    if let Some(pod) = sj.spec.job_target_ref.template.spec.as_mut() {
        pod.containers[0].resources =
            Some(serde_json::from_value(json!({"requests": {"cpu": "2"}})).unwrap());
    }
    api.create(&PostParams::default(), &sj).await.unwrap();
    let waiting = eventually("3 Unschedulable pods", 30, async || {
        let pods = unschedulable_pods(&h.client, "grow").await;
        (pods.len() == 3).then_some(pods)
    })
    .await;
    for pod in &waiting[..2] {
        autoscaler_says(
            &h.client,
            pod,
            "TriggeredScaleUp",
            "pod triggered scale-up: [{pool 1->4 (max: 4)}]",
        )
        .await;
    }
    eventually("WaitingForScaleUp", 30, async || {
        (capacity_reason(&api, "grow").await.as_deref() == Some("WaitingForScaleUp")).then_some(())
    })
    .await;
    assert_eq!(metric(&operator, "grow", "scale_up"), 2);
    assert_eq!(metric(&operator, "grow", "unschedulable"), 1);
    autoscaler_says(
        &h.client,
        &waiting[2],
        "NotTriggerScaleUp",
        "pod didn't trigger scale-up: 1 max node group size reached",
    )
    .await;
    eventually("NoScaleUp", 30, async || {
        (capacity_reason(&api, "grow").await.as_deref() == Some("NoScaleUp")).then_some(())
    })
    .await;
    let sj = api.get("grow").await.unwrap();
    let message = sj
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "CapacityAvailable"))
        .and_then(|c| c.message.clone())
        .unwrap();
    assert!(message.contains("max node group size reached"), "{message}");
    assert!(message.contains("requests cpu=2"), "{message}");
    // More lag: the strategy asks for 6 more Jobs; none is created while nothing fits.
    produce(&h.kafka, "t", 6).await;
    polls_pass(&operator, 4).await;
    assert_eq!(jobs_of(&h.client, "grow").await.len(), 4);
    let events = events_of(&h.client, "grow").await;
    let warning = events
        .iter()
        .find(|(r, _)| r == "NoScaleUp")
        .expect("a NoScaleUp event");
    assert!(warning.1.contains("max node group size reached"));
    assert!(events.iter().any(|(r, _)| r == "WaitingForScaleUp"));
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refusal_stops_creation_without_an_error_storm_until_the_quota_grows() {
    let h = harness(8).await;
    h.kafka.create_topic("t", 1).unwrap();
    produce(&h.kafka, "t", 10).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(h.client.clone(), "default");
    let quota = |hard: u32| -> ResourceQuota {
        serde_json::from_value(json!({"metadata": {"name": "jobs", "namespace": "default"},
            "spec": {"hard": {"count/jobs.batch": hard.to_string()}}}))
        .unwrap()
    };
    quotas
        .create(&PostParams::default(), &quota(3))
        .await
        .unwrap();
    let operator = start_operator(&h, "capacity", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &scaled_job(
            "quota",
            &h.kafka.bootstrap_servers(),
            "t",
            "sleep 60",
            json!({}),
        ),
    )
    .await
    .unwrap();
    eventually("QuotaExceeded", 30, async || {
        (capacity_reason(&api, "quota").await.as_deref() == Some("QuotaExceeded")).then_some(())
    })
    .await;
    let refusals = |operator: &Operator| {
        sample(
            &operator.metrics(),
            "jobtide_job_create_quota_refusals_total{namespace=\"default\",scaledJob=\"quota\"}",
        )
    };
    assert_eq!(
        refusals(&operator),
        1,
        "one refusal ends the poll's creations"
    );
    polls_pass(&operator, 4).await;
    assert_eq!(refusals(&operator), 1, "no retry before the quota changes");
    assert_eq!(jobs_of(&h.client, "quota").await.len(), 3);
    let events = events_of(&h.client, "quota").await;
    assert!(
        !events.iter().any(|(r, _)| r == "KEDAJobCreateFailed"),
        "a condition, not an error per Job: {events:?}"
    );
    let warning = events
        .iter()
        .find(|(r, _)| r == "QuotaExceeded")
        .expect("event");
    assert!(warning.1.contains("exceeded quota: jobs"), "{}", warning.1);
    // The quota grows: the next poll tries again, and stops at the new limit.
    quotas
        .patch(
            "jobs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"count/jobs.batch": "6"}}})),
        )
        .await
        .unwrap();
    eventually("6 Jobs", 30, async || {
        (jobs_of(&h.client, "quota").await.len() == 6).then_some(())
    })
    .await;
    polls_pass(&operator, 3).await;
    assert_eq!(jobs_of(&h.client, "quota").await.len(), 6);
    assert!(refusals(&operator) <= 3, "{} refusals", refusals(&operator));
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_pauses_at_a_quota_and_still_creates_exactly_one_job_per_message() {
    let h = harness(8).await;
    h.kafka.create_topic("orders", 2).unwrap();
    produce(&h.kafka, "orders", 12).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(h.client.clone(), "default");
    quotas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "jobs", "namespace": "default"},
                "spec": {"hard": {"count/jobs.batch": "4"}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let operator = start_operator(&h, "capacity", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let sj: ScaledJob = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "orders", "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "busybox", "command": ["/bin/sh", "-c"], "args": ["true"]}]}}},
            "pollingInterval": 1, "maxReplicaCount": 6, "successfulJobsHistoryLimit": 100,
            "triggers": [{"type": "kafka-dispatch", "metadata": {"bootstrapServers": h.kafka.bootstrap_servers(),
                "consumerGroup": "orders-dispatch", "topic": "orders", "offsetResetPolicy": "earliest"}}],
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &sj).await.unwrap();
    eventually("QuotaExceeded", 30, async || {
        (capacity_reason(&api, "orders").await.as_deref() == Some("QuotaExceeded")).then_some(())
    })
    .await;
    // Reconciles (the dispatcher's gate is refreshed by each) pass, and nothing more is created.
    let reconciles = |operator: &Operator| {
        sample(
            &operator.metrics(),
            "jobtide_reconcile_duration_seconds_count{result=\"ok\"}",
        )
    };
    let start = reconciles(&operator);
    eventually("3 more reconciles", 30, async || {
        (reconciles(&operator) >= start + 3).then_some(())
    })
    .await;
    assert_eq!(jobs_of(&h.client, "orders").await.len(), 4);
    quotas
        .patch(
            "jobs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"count/jobs.batch": "100"}}})),
        )
        .await
        .unwrap();
    let jobs = eventually("12 Jobs", 60, async || {
        let jobs = jobs_of(&h.client, "orders").await;
        (jobs.len() >= 12).then_some(jobs)
    })
    .await;
    let messages: BTreeSet<(String, String)> = jobs
        .iter()
        .map(|j| {
            let labels = j.metadata.labels.as_ref().unwrap();
            (
                labels["jobtide.io/partition"].clone(),
                labels["jobtide.io/offset"].clone(),
            )
        })
        .collect();
    assert_eq!(jobs.len(), 12, "one Job per message");
    assert_eq!(messages.len(), 12, "no message twice");
    eventually("CapacityAvailable again", 30, async || {
        (capacity_reason(&api, "orders").await.as_deref() == Some("CapacityAvailable"))
            .then_some(())
    })
    .await;
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_kueue_holds_are_queued_backlog_and_an_inadmissible_workload_stops_creation() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let h = harness(8).await;
    // Kueue's Workload type (its schema kept open: only status.conditions is read).
    let crds: Api<CustomResourceDefinition> = Api::all(h.client.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "workloads.kueue.x-k8s.io"},
            "spec": {"group": "kueue.x-k8s.io", "scope": "Namespaced",
                "names": {"plural": "workloads", "singular": "workload", "kind": "Workload", "listKind": "WorkloadList"},
                "versions": [{"name": "v1beta1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    h.kafka.create_topic("t", 1).unwrap();
    produce(&h.kafka, "t", 3).await;
    let operator = start_operator(&h, "capacity", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let mut sj = scaled_job(
        "queued",
        &h.kafka.bootstrap_servers(),
        "t",
        "true",
        json!({}),
    );
    sj.metadata.labels = Some([("kueue.x-k8s.io/queue-name".into(), "team-a".into())].into());
    sj.spec.job_target_ref.suspend = Some(true);
    api.create(&PostParams::default(), &sj).await.unwrap();
    eventually("QueuedByKueue", 30, async || {
        (capacity_reason(&api, "queued").await.as_deref() == Some("QueuedByKueue")).then_some(())
    })
    .await;
    assert_eq!(metric(&operator, "queued", "kueue_queued"), 3);
    let jobs = jobs_of(&h.client, "queued").await;
    assert_eq!(
        jobs.len(),
        3,
        "suspended Jobs count as in flight: one per message"
    );
    // Kueue can't admit the first Job's Workload.
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta1", "Workload"),
        "workloads",
    );
    let workloads: Api<DynamicObject> =
        Api::namespaced_with(h.client.clone(), "default", &resource);
    let owner = &jobs[0];
    let mut workload = DynamicObject::new(&format!("job-{}", owner.name_any()), &resource);
    workload.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job",
            "name": owner.name_any(), "uid": owner.uid().unwrap(), "controller": true}))
        .unwrap(),
    ]);
    workload.data = json!({"spec": {"queueName": "team-a"}});
    workloads
        .create(&PostParams::default(), &workload)
        .await
        .unwrap();
    workloads
        .patch_status(
            &workload.name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "QuotaReserved", "status": "False",
                "reason": "Inadmissible", "message": "LocalQueue team-a doesn't exist",
                "lastTransitionTime": "2026-12-02T10:00:00Z"}]}}),
            ),
        )
        .await
        .unwrap();
    eventually("KueueInadmissible", 30, async || {
        (capacity_reason(&api, "queued").await.as_deref() == Some("KueueInadmissible"))
            .then_some(())
    })
    .await;
    produce(&h.kafka, "t", 5).await;
    polls_pass(&operator, 3).await;
    assert_eq!(
        jobs_of(&h.client, "queued").await.len(),
        3,
        "creation stopped"
    );
    let events = events_of(&h.client, "queued").await;
    let warning = events
        .iter()
        .find(|(r, _)| r == "KueueInadmissible")
        .expect("a KueueInadmissible event");
    assert!(
        warning.1.contains("LocalQueue team-a doesn't exist"),
        "{}",
        warning.1
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_budget_that_is_not_a_count_stops_the_scaled_job_naming_the_field() {
    let h = harness(4).await;
    h.kafka.create_topic("budget-typo", 1).unwrap();
    h.kafka.create_topic("quiet", 1).unwrap();
    produce(&h.kafka, "budget-typo", 3).await;
    let operator = start_operator(&h, "capacity", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    // A valid ScaledJob beside it: its polls prove the operator kept polling meanwhile.
    api.create(
        &PostParams::default(),
        &scaled_job(
            "witness",
            &h.kafka.bootstrap_servers(),
            "quiet",
            "true",
            json!({}),
        ),
    )
    .await
    .unwrap();
    let mut sj = scaled_job(
        "typo",
        &h.kafka.bootstrap_servers(),
        "budget-typo",
        "sleep 1",
        json!({}),
    );
    sj.metadata.annotations = Some([("jobtide.io/pending-budget".into(), "ten".into())].into());
    api.create(&PostParams::default(), &sj).await.unwrap();

    let expected = "ScaledJob default/typo: metadata.annotations[jobtide.io/pending-budget]: \
                    \"ten\" is not a non-negative integer (how many Jobs may wait for capacity; \
                    default 10)";
    let message = eventually("Ready False naming the annotation", 30, async || {
        let sj = api.get("typo").await.ok()?;
        let ready = sj
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "False")?;
        (ready.reason.as_deref() == Some("ScaledJobCheckFailed")).then_some(ready.message)
    })
    .await;
    assert_eq!(message.as_deref(), Some(expected));
    assert!(
        events_of(&h.client, "typo")
            .await
            .contains(&("ScaledJobCheckFailed".into(), expected.into())),
        "{:?}",
        events_of(&h.client, "typo").await
    );
    // Three messages wait, yet no Job is created while the budget can't be read.
    polls_pass(&operator, 5).await;
    assert!(jobs_of(&h.client, "typo").await.is_empty());

    // Fixed: Ready again, and Jobs for the lag.
    api.patch(
        "typo",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"jobtide.io/pending-budget": "2"}}})),
    )
    .await
    .unwrap();
    eventually("Ready True and Jobs", 30, async || {
        let sj = api.get("typo").await.ok()?;
        let ready = condition(&sj, "Ready")? == ("True".into(), "ScaledJobReady".into());
        (ready && !jobs_of(&h.client, "typo").await.is_empty()).then_some(())
    })
    .await;
    operator.stop().await;
}
