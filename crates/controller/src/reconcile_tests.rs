//! `reconcile` against the embedded API server, where a test must hand it a particular copy of
//! a ScaledJob (the store's, older than the object).

use std::sync::Arc;

use jobtide_api::ScaledJob;
use jobtide_devcluster::DevCluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use super::{FINALIZER, STALE_COPY_RETRY, reconcile};
use crate::kept_scaled_job::KeptScaledJob;
use crate::{Config, Context};

/// A Job's change re-polls a ScaledJob right after its first reconcile added the finalizer,
/// before the watch delivered that: the store's copy is the one without it. Adding it again
/// is refused by the API server (the JSON patch's test of the finalizers fails, 422): the
/// reconcile waits for the watch instead, and the copy with the finalizer reconciles as usual.
/// The same holds for a copy older than the status this operator wrote: patching that copy's
/// conditions again would put back what the first write changed (an unpaused ScaledJob was
/// seen `Paused` again, its Jobs created, when a Job's change re-polled the older copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_older_than_this_operators_last_write_waits_for_the_watch() {
    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let client = Client::try_from(kube::Config::new(cluster.url().parse().unwrap())).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jobtide_api::crd::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let context = Arc::new(Context::new(client.clone(), Config::new("test", "t")));
    context.jobs.apply(&watcher::Event::Init);
    context.jobs.apply(&watcher::Event::InitDone);
    context.pods.apply(&watcher::Event::Init);
    context.pods.apply(&watcher::Event::InitDone);
    // Paused: its reconcile runs KEDA's steps and no poll (no Kafka here).
    let scaled_job: ScaledJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "sj", "namespace": "default",
            "annotations": {"autoscaling.keda.sh/paused": "true"}},
        "spec": {"jobTargetRef": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox"}]}}},
            "triggers": [{"type": "kafka", "metadata": {"bootstrapServers": "127.0.0.1:1",
                "consumerGroup": "g", "topic": "t", "lagThreshold": "1"}}]},
    }))
    .unwrap();
    let api: Api<ScaledJob> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &scaled_job)
        .await
        .unwrap();
    let kept: Api<KeptScaledJob> = Api::namespaced(client.clone(), "default");
    let stale = Arc::new(kept.get("sj").await.unwrap());
    let patches = || {
        cluster
            .faults
            .requests()
            .into_iter()
            .filter(|r| r.verb == "patch" && r.resource.as_deref() == Some("scaledjobs"))
            .map(|r| (r.path, r.status))
            .collect::<Vec<_>>()
    };

    cluster.faults.clear_requests();
    reconcile(Arc::clone(&stale), Arc::clone(&context))
        .await
        .unwrap();
    assert_eq!(patches().len(), 1, "the finalizer added: {:?}", patches());
    let again = reconcile(stale, Arc::clone(&context)).await.unwrap();
    assert_eq!(patches().len(), 1, "no second patch: {:?}", patches());
    assert_eq!(
        again,
        Action::requeue(STALE_COPY_RETRY),
        "it looks again soon"
    );

    let fresh = Arc::new(kept.get("sj").await.unwrap());
    assert!(fresh.finalizers().iter().any(|f| f == FINALIZER));
    reconcile(Arc::clone(&fresh), Arc::clone(&context))
        .await
        .unwrap();
    let after = patches();
    assert_eq!(after.len(), 2, "the status written: {after:?}");
    assert!(after.iter().all(|(_, status)| *status == 200), "{after:?}");
    assert!(after[1].0.ends_with("/status"), "{after:?}");
    // That copy has no status: reconciled again, it would be written again. (A status write
    // triggers no reconcile: the one that looks again must be scheduled.)
    let again = reconcile(fresh, Arc::clone(&context)).await.unwrap();
    assert_eq!(
        again,
        Action::requeue(STALE_COPY_RETRY),
        "it looks again soon"
    );
    assert_eq!(
        patches().len(),
        2,
        "no status patch of the older copy: {:?}",
        patches()
    );

    let written = Arc::new(kept.get("sj").await.unwrap());
    reconcile(written, Arc::clone(&context)).await.unwrap();
    assert_eq!(
        patches().len(),
        2,
        "its status is what it shows: {:?}",
        patches()
    );
    let status = api.get("sj").await.unwrap().status.unwrap();
    let paused = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Paused");
    assert_eq!(paused.map(|c| c.status), Some("True".to_owned()));
}

/// The scaler label is KEDA's `<type without dashes>Scaler` (or the trigger's name), whether
/// or not it is one of the names kept without a copy; the trigger index is its decimal.
#[test]
fn scaler_labels_read_as_keda_writes_them() {
    for (type_, expected) in [
        ("kafka", "kafkaScaler"),
        ("apache-kafka", "apacheKafkaScaler"),
        ("kafka-dispatch", "kafkadispatchScaler"),
        ("some-other", "someotherScaler"),
    ] {
        let trigger: jobtide_api::scaledjob::ScaleTrigger =
            serde_json::from_value(serde_json::json!({"type": type_, "metadata": {}})).unwrap();
        assert_eq!(super::scaler_name(&trigger), expected);
    }
    let named: jobtide_api::scaledjob::ScaleTrigger =
        serde_json::from_value(serde_json::json!({"type": "kafka", "name": "lag", "metadata": {}}))
            .unwrap();
    assert_eq!(super::scaler_name(&named), "lag");
    for index in [0, 7, 9, 10, 123] {
        assert_eq!(super::trigger_index(index), index.to_string());
    }
}
