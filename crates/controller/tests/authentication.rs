//! The authentication objects a ScaledJob references list it in `status.scaledjobs`, as KEDA
//! keeps them (keda-compat §2.2 steps 2 and 9).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use common::{eventually, harness, polls_pass, scaled_job, start_operator};
use jobtide_api::{ClusterTriggerAuthentication, ScaledJob, TriggerAuthentication};
use jobtide_controller::operator::Leadership;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

async fn create_secret(client: &Client, namespace: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
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
}

fn auth_spec() -> serde_json::Value {
    json!({"secretTargetRef": [{"parameter": "tls", "name": "creds", "key": "tls"}]})
}

/// A ScaledJob with two triggers on `topic`, one per authentication kind.
fn authenticated(name: &str, servers: &str) -> ScaledJob {
    let mut sj = scaled_job(name, servers, "auth", "true", json!({}));
    let mut second = sj.spec.triggers[0].clone();
    sj.spec.triggers[0].authentication_ref =
        serde_json::from_value(json!({"name": "plain"})).unwrap();
    second.authentication_ref = serde_json::from_value(
        json!({"name": "cluster-plain", "kind": "ClusterTriggerAuthentication"}),
    )
    .unwrap();
    sj.spec.triggers.push(second);
    sj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentications_list_the_scaled_jobs_that_use_them_until_they_are_deleted() {
    let h = harness(4).await;
    h.kafka.create_topic("auth", 1).unwrap();
    create_secret(&h.client, "default").await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(h.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "keda"}})).unwrap(),
        )
        .await
        .unwrap();
    create_secret(&h.client, "keda").await;
    let tas: Api<TriggerAuthentication> = Api::namespaced(h.client.clone(), "default");
    tas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": "plain"}, "spec": auth_spec(),
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let ctas: Api<ClusterTriggerAuthentication> = Api::all(h.client.clone());
    ctas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ClusterTriggerAuthentication",
            "metadata": {"name": "cluster-plain"}, "spec": auth_spec(),
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let operator = start_operator(&h, "auth", Leadership::Always);
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    let servers = h.kafka.bootstrap_servers();
    for name in ["first", "second"] {
        api.create(&PostParams::default(), &authenticated(name, &servers))
            .await
            .unwrap();
    }

    let listed = async || {
        let ta = tas.get("plain").await.ok()?.status?.scaledjobs?;
        let cta = ctas.get("cluster-plain").await.ok()?.status?.scaledjobs?;
        Some((ta, cta))
    };
    let (ta, cta) = eventually("both ScaledJobs listed", 30, async || {
        listed()
            .await
            .filter(|(ta, cta)| ta.split(',').count() == 2 && cta.split(',').count() == 2)
    })
    .await;
    for list in [&ta, &cta] {
        let mut names: Vec<&str> = list.split(',').collect();
        names.sort_unstable();
        assert_eq!(names, ["first", "second"], "{list}");
    }

    // Polls don't rewrite the lists: the objects' resourceVersions stay.
    let versions = async || {
        (
            tas.get("plain").await.unwrap().resource_version(),
            ctas.get("cluster-plain").await.unwrap().resource_version(),
        )
    };
    let before = versions().await;
    polls_pass(&operator, 3).await;
    assert_eq!(versions().await, before, "no write while nothing changed");

    api.delete("first", &DeleteParams::default()).await.unwrap();
    eventually("the deleted ScaledJob unlisted", 30, async || {
        listed()
            .await
            .filter(|lists| *lists == ("second".to_owned(), "second".to_owned()))
    })
    .await;
    operator.stop().await;
}
