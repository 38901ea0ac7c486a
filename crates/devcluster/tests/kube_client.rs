//! The embedded API server through kube-rs: CRUD, errors, CRDs and custom resources, status,
//! patches, selectors, paging, watchers (410 recovery included) and a full Controller.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failure is the test failing

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jobtide_devcluster::DevCluster;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;

async fn cluster() -> (DevCluster, Client) {
    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .expect("start");
    let config = Config::new(cluster.url().parse().unwrap());
    let client = Client::try_from(config).expect("client");
    (cluster, client)
}

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
        "data": {"k": "v"},
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_with_the_real_servers_errors() {
    let (_cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .expect("create");
    assert!(created.uid().is_some());
    assert!(created.creation_timestamp().is_some());
    assert_eq!(created.metadata.generation, Some(1));

    let error = api
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .expect_err("exists");
    let kube::Error::Api(status) = error else {
        panic!("{error}")
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(status.message, "configmaps \"a\" already exists");

    let mut stale = created.clone();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .expect("patch");
    stale.data = Some(BTreeMap::from([("k".into(), "x".into())]));
    let error = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .expect_err("stale");
    let kube::Error::Api(status) = error else {
        panic!("{error}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));

    let current = api.get("a").await.expect("get");
    assert_eq!(current.data.unwrap()["k"], "w");
    let patched = api
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(serde_json::from_value(json!([
            {"op": "test", "path": "/data/k", "value": "w"}, {"op": "replace", "path": "/data/k", "value": "z"}])).unwrap()))
        .await
        .expect("json patch");
    assert_eq!(patched.data.unwrap()["k"], "z");
    let error = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([{"op": "test", "path": "/data/k", "value": "nope"}]))
                    .unwrap(),
            ),
        )
        .await
        .expect_err("test op fails");
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 422),
        "{error}"
    );
    let error = api
        .patch("a", &PatchParams::apply("t"), &Patch::Apply(json!({})))
        .await
        .expect_err("ssa refused");
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 415),
        "{error}"
    );

    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let error = api.get("a").await.expect_err("gone");
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 404 && s.message == "configmaps \"a\" not found"),
        "{error}"
    );

    let missing_ns: Api<ConfigMap> = Api::namespaced(client, "nowhere");
    let error = missing_ns
        .create(&PostParams::default(), &config_map("b", &[]))
        .await
        .expect_err("no namespace");
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 404 && s.message == "namespaces \"nowhere\" not found"),
        "{error}"
    );
}

#[tokio::test]
async fn generate_name_selectors_and_paging() {
    let (_cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..7 {
        let mut cm = config_map("", &[("app", if i % 2 == 0 { "web" } else { "api" })]);
        cm.metadata.name = None;
        cm.metadata.generate_name = Some("cm-".into());
        let created = api
            .create(&PostParams::default(), &cm)
            .await
            .expect("create");
        let name = created.name_any();
        assert!(name.starts_with("cm-") && name.len() == 8, "{name}");
    }
    let web = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list");
    assert_eq!(web.items.len(), 4);
    let set = api
        .list(&ListParams::default().labels("app in (web,api),!missing"))
        .await
        .expect("list");
    assert_eq!(set.items.len(), 7);
    let page = api
        .list(&ListParams::default().limit(3))
        .await
        .expect("page");
    assert_eq!(page.items.len(), 3);
    let token = page.metadata.continue_.clone().expect("continue");
    let rest = api
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .expect("rest");
    assert_eq!(rest.items.len(), 4);
    assert!(rest.metadata.continue_.is_none());
    let by_name = api
        .list(&ListParams::default().fields(&format!("metadata.name={}", page.items[0].name_any())))
        .await
        .expect("fields");
    assert_eq!(by_name.items.len(), 1);
}

#[tokio::test]
async fn crds_serve_custom_resources_with_status() {
    let (_cluster, client) = cluster().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jobtide_api::crd::all() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    let established = crds.get("scaledjobs.keda.sh").await.expect("get CRD");
    let conditions = established
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/seed-scaledjob.yaml"
    ))
    .unwrap();
    let seed: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&yaml_to_json(&seed)).unwrap()).unwrap();
    let scaled_job: jobtide_api::ScaledJob = serde_json::from_value(seed).expect("seed");
    let api: Api<jobtide_api::ScaledJob> = Api::namespaced(client, "default");
    let created = api
        .create(&PostParams::default(), &scaled_job)
        .await
        .expect("create ScaledJob");
    assert_eq!(created.metadata.generation, Some(1));
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "ScaledJobReady"}], "triggersTypes": "kafka"}});
    let patched = api
        .patch_status(
            "kafka-scaledjob",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("status");
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status changes don't bump generation"
    );
    assert_eq!(
        patched
            .status
            .as_ref()
            .and_then(|s| s.triggers_types.as_deref()),
        Some("kafka")
    );
    // The main resource ignores status; a spec change bumps generation.
    let spec_patch =
        json!({"spec": {"pollingInterval": 5}, "status": {"triggersTypes": "ignored"}});
    let changed = api
        .patch(
            "kafka-scaledjob",
            &PatchParams::default(),
            &Patch::Merge(&spec_patch),
        )
        .await
        .expect("spec");
    assert_eq!(changed.metadata.generation, Some(2));
    assert_eq!(
        changed.status.and_then(|s| s.triggers_types).as_deref(),
        Some("kafka")
    );
}

fn yaml_to_json(text: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).expect("seed YAML")
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut cm = config_map("f", &[]);
    cm.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    api.delete("f", &DeleteParams::default())
        .await
        .expect("delete");
    let held = api.get("f").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("unfinalize");
    assert!(api.get_opt("f").await.expect("get").is_none());
}

#[tokio::test]
async fn watchers_see_changes_and_recover_from_compaction() {
    let (cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &config_map("before", &[]))
        .await
        .expect("create");
    let mut events = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .expect("in time")
        .expect("ok");
    assert_eq!(first.map(|o| o.name_any()).as_deref(), Some("before"));
    api.create(&PostParams::default(), &config_map("after", &[]))
        .await
        .expect("create");
    let second = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .expect("in time")
        .expect("ok");
    assert_eq!(second.map(|o| o.name_any()).as_deref(), Some("after"));

    // Compaction: the watcher's next watch gets 410 and re-lists; it must still see new objects.
    cluster.store.compact();
    drop(events);
    let mut events = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut seen = Vec::new();
    api.create(&PostParams::default(), &config_map("later", &[]))
        .await
        .expect("create");
    while !seen.contains(&"later".to_owned()) {
        let next = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("in time")
            .expect("stream open");
        if let Ok(object) = next {
            seen.push(object.name_any());
        }
    }
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_is_410_expired() {
    let (cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = api
        .create(&PostParams::default(), &config_map("x", &[]))
        .await
        .expect("create");
    let rv = created.resource_version().unwrap();
    api.create(&PostParams::default(), &config_map("y", &[]))
        .await
        .expect("create");
    // History before the compaction is gone: a watch from `x`'s version would miss `y`.
    cluster.store.compact();
    let mut stream = api
        .watch(&kube::api::WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    let event = stream.try_next().await.expect("event").expect("some");
    assert!(
        matches!(event, kube::api::WatchEvent::Error(ref e) if e.code == 410),
        "{event:?}"
    );
}

#[tokio::test]
async fn a_controller_reconciles_against_the_embedded_server() {
    let (_cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &config_map("one", &[]))
        .await
        .expect("create");
    api.create(&PostParams::default(), &config_map("two", &[]))
        .await
        .expect("create");
    let context = Arc::new(api.clone());
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(
            |object: Arc<ConfigMap>, api: Arc<Api<ConfigMap>>| async move {
                if object.labels().get("reconciled").is_none() {
                    api.patch(
                        &object.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"labels": {"reconciled": "yes"}}})),
                    )
                    .await?;
                }
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            context,
        )
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let labelled = api
            .list(&ListParams::default().labels("reconciled=yes"))
            .await
            .expect("list");
        if labelled.items.len() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller did not reconcile both objects"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.abort();
}

fn owned_by(name: &str, owner: &ConfigMap) -> ConfigMap {
    let mut cm = config_map(name, &[]);
    cm.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: owner.name_any(),
            uid: owner.uid().unwrap(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    ]);
    cm
}

#[tokio::test]
async fn garbage_collection_background_foreground_and_orphan() {
    let (_cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PostParams::default();

    // Background: the owner goes at once, its dependents (and theirs) after it.
    let owner = api.create(&pp, &config_map("owner", &[])).await.unwrap();
    let child = api.create(&pp, &owned_by("child", &owner)).await.unwrap();
    api.create(&pp, &owned_by("grandchild", &child))
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    for name in ["owner", "child", "grandchild"] {
        assert!(
            api.get_opt(name).await.unwrap().is_none(),
            "{name} collected"
        );
    }

    // Foreground: the owner waits for a dependent held by a finalizer.
    let owner = api.create(&pp, &config_map("fg-owner", &[])).await.unwrap();
    let mut held = owned_by("fg-held", &owner);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&pp, &held).await.unwrap();
    api.delete("fg-owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let waiting = api.get("fg-owner").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(
        waiting
            .finalizers()
            .iter()
            .any(|f| f == "foregroundDeletion")
    );
    api.patch(
        "fg-held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("fg-held").await.unwrap().is_none());
    assert!(
        api.get_opt("fg-owner").await.unwrap().is_none(),
        "the owner goes once its dependents are gone"
    );

    // Orphan: dependents stay, without the ownerReference.
    let owner = api.create(&pp, &config_map("or-owner", &[])).await.unwrap();
    api.create(&pp, &owned_by("or-child", &owner))
        .await
        .unwrap();
    api.delete("or-owner", &DeleteParams::orphan())
        .await
        .unwrap();
    let orphan = api.get("or-child").await.unwrap();
    assert!(orphan.owner_references().is_empty());
}

#[tokio::test]
async fn injected_faults_and_the_request_log() {
    use jobtide_devcluster::faults::{Failure, Matcher};
    let (cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let creates = Matcher {
        verb: Some("create".into()),
        resource: Some("configmaps".into()),
    };
    cluster
        .faults
        .fail_next(1, creates.clone(), Failure::InternalError);
    let error = api
        .create(&PostParams::default(), &config_map("x", &[]))
        .await
        .expect_err("injected");
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 500),
        "{error}"
    );
    api.create(&PostParams::default(), &config_map("x", &[]))
        .await
        .expect("the next one passes");

    // 429 + Retry-After, seen on the wire…
    cluster.faults.fail_next(
        1,
        Matcher {
            verb: Some("get".into()),
            resource: None,
        },
        Failure::TooManyRequests {
            retry_after_seconds: 1,
        },
    );
    let raw = raw_get(cluster.addr, "/api/v1/namespaces/default/configmaps/x").await;
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.to_lowercase().contains("retry-after: 1"), "{raw}");
    // …and kube-rs honours it: it waits and retries.
    cluster.faults.fail_next(
        1,
        Matcher {
            verb: Some("get".into()),
            resource: None,
        },
        Failure::TooManyRequests {
            retry_after_seconds: 1,
        },
    );
    api.get("x")
        .await
        .expect("kube-rs retries after Retry-After");

    cluster.faults.fail_next(
        1,
        Matcher {
            verb: Some("update".into()),
            resource: None,
        },
        Failure::Conflict,
    );
    let current = api.get("x").await.unwrap();
    let error = api
        .replace("x", &PostParams::default(), &current)
        .await
        .expect_err("conflict");
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 409),
        "{error}"
    );

    let log = cluster.faults.requests();
    let create = log
        .iter()
        .find(|r| r.verb == "create" && r.status == 201)
        .expect("logged create");
    assert_eq!(create.resource.as_deref(), Some("configmaps"));
    assert_eq!(create.path, "/api/v1/namespaces/default/configmaps");
    assert_eq!(
        create
            .body
            .as_ref()
            .and_then(|b| b.pointer("/metadata/name"))
            .and_then(|n| n.as_str()),
        Some("x")
    );
    assert!(log.iter().any(|r| r.verb == "get" && r.status == 429));

    cluster.faults.set_delay(Duration::from_millis(150));
    let started = std::time::Instant::now();
    api.get("x").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    cluster.faults.set_delay(Duration::ZERO);
}

/// `jobtide dev` runs for days: the request log keeps the newest requests up to its bound, the
/// oldest are dropped and counted.
#[tokio::test]
async fn the_request_log_is_a_bounded_ring_that_counts_what_it_drops() {
    let (cluster, client) = cluster().await;
    assert_eq!(
        jobtide_devcluster::faults::REQUEST_LOG,
        10_000,
        "docs/devcluster.md names this bound"
    );
    cluster.faults.set_request_log_capacity(5);
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..12 {
        api.create(&PostParams::default(), &config_map(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let log = cluster.faults.requests();
    assert_eq!(log.len(), 5);
    assert_eq!(cluster.faults.dropped_requests(), 7);
    let names: Vec<&str> = log
        .iter()
        .filter_map(|r| r.body.as_ref()?.pointer("/metadata/name")?.as_str())
        .collect();
    assert_eq!(
        names,
        ["c7", "c8", "c9", "c10", "c11"],
        "the newest are kept, in order"
    );
    cluster.faults.clear_requests();
    assert_eq!(cluster.faults.dropped_requests(), 0);
}

async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: dev\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn watchers_survive_dropped_watches() {
    let (cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut events = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    api.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .expect("in time")
        .expect("ok");
    assert_eq!(first.map(|o| o.name_any()).as_deref(), Some("a"));
    cluster.faults.drop_watches();
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.create(&PostParams::default(), &config_map("b", &[]))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&"b".to_owned()) {
        let next = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("in time")
            .expect("open");
        if let Ok(object) = next {
            seen.push(object.name_any());
        }
    }
}

#[tokio::test]
async fn bad_input_gets_the_real_servers_codes_and_stores_nothing() {
    let (cluster, client) = cluster().await;
    let send = |method: &str, path: &str, content_type: &str, body: &str| {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(kube::client::Body::from(body.as_bytes().to_vec()))
            .unwrap();
        let client = client.clone();
        async move {
            let response = client.send(request).await.expect("send");
            let status = response.status().as_u16();
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default(),
            )
        }
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    let (code, status) = send("POST", cms, "application/json", "{not json").await;
    assert_eq!(
        (code, status["kind"].as_str(), status["reason"].as_str()),
        (400, Some("Status"), Some("BadRequest"))
    );
    let (code, _) = send(
        "POST",
        cms,
        "application/json",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}"#,
    )
    .await;
    assert_eq!(code, 400, "kind doesn't match the URL");
    let (code, status) = send(
        "POST",
        cms,
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#,
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
    let (code, _) = send(
        "GET",
        "/apis/nothing.example.com/v1/widgets",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 404);
    let huge = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    let (code, _) = send("POST", cms, "application/json", &huge).await;
    assert!(code == 413 || code == 400, "oversized body refused: {code}");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing stored half-way"
    );
    let (code, _) = send(
        "PATCH",
        &format!("{cms}/none"),
        "application/strategic-merge-patch+json",
        "{}",
    )
    .await;
    assert!(code == 415 || code == 404, "{code}");

    // A bearer token, when configured, is required.
    let secured = DevCluster::start("127.0.0.1:0".parse().unwrap(), Some("s3cr3t".into()))
        .await
        .unwrap();
    let anonymous = Client::try_from(Config::new(secured.url().parse().unwrap())).unwrap();
    let error = Api::<ConfigMap>::namespaced(anonymous, "default")
        .list(&ListParams::default())
        .await
        .expect_err("401");
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 401),
        "{error}"
    );
    let mut config = Config::new(secured.url().parse().unwrap());
    config.auth_info.token = Some("s3cr3t".to_owned().into());
    let authorised = Client::try_from(config).unwrap();
    Api::<ConfigMap>::namespaced(authorised, "default")
        .list(&ListParams::default())
        .await
        .expect("authorised");
    drop(cluster);
}

#[tokio::test]
async fn concurrent_writers_never_lose_an_update() {
    let (_cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &config_map("counter", &[]))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for _ in 0..10 {
                loop {
                    let current = api.get("counter").await.unwrap();
                    let n: u64 = current
                        .data
                        .as_ref()
                        .and_then(|d| d.get("n"))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let mut next = current.clone();
                    next.data = Some(BTreeMap::from([("n".into(), (n + 1).to_string())]));
                    match api.replace("counter", &PostParams::default(), &next).await {
                        Ok(written) => {
                            versions
                                .push(written.resource_version().unwrap().parse::<u64>().unwrap());
                            break;
                        }
                        Err(kube::Error::Api(status)) if status.code == 409 => {}
                        Err(other) => panic!("{other}"),
                    }
                }
            }
            versions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let versions = task.await.unwrap();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "resourceVersion strictly increases"
        );
        all.extend(versions);
    }
    let final_value = api.get("counter").await.unwrap().data.unwrap()["n"].clone();
    assert_eq!(final_value, "80", "every one of the 80 increments survived");
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        80,
        "every successful write got its own resourceVersion"
    );
}

#[tokio::test]
async fn streaming_lists_end_with_the_initial_events_bookmark() {
    let (_cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &config_map("s1", &[]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &config_map("s2", &[]))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut names = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .expect("in time")
            .expect("ok")
        {
            Some(watcher::Event::InitApply(object)) => names.push(object.name_any()),
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
    names.sort();
    assert_eq!(names, ["s1", "s2"]);
}

#[tokio::test]
async fn jobs_are_defaulted_validated_and_their_template_is_immutable() {
    use k8s_openapi::api::batch::v1::Job;
    let (_cluster, client) = cluster().await;
    let api: Api<Job> = Api::namespaced(client, "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"generateName": "kafka-scaledjob-", "labels": {"scaledjob.keda.sh/name": "kafka-scaledjob"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}},
    }))
    .unwrap();
    let created = api
        .create(&PostParams::default(), &job)
        .await
        .expect("create");
    let name = created.name_any();
    assert!(
        name.starts_with("kafka-scaledjob-") && name.len() == "kafka-scaledjob-".len() + 5,
        "{name}"
    );
    let spec = created.spec.clone().unwrap();
    assert_eq!(
        (spec.completions, spec.parallelism, spec.backoff_limit),
        (Some(1), Some(1), Some(6))
    );
    let labels = spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert_eq!(labels.get("batch.kubernetes.io/job-name"), Some(&name));
    assert_eq!(labels.get("job-name"), Some(&name));
    assert_eq!(labels.get("controller-uid"), created.uid().as_ref());

    let error = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"restartPolicy": "OnFailure"}}}})),
        )
        .await
        .expect_err("immutable");
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("field is immutable")),
        "{error}"
    );

    let mut always = job.clone();
    always
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("Always".into());
    let error = api
        .create(&PostParams::default(), &always)
        .await
        .expect_err("Always is invalid for Jobs");
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 422),
        "{error}"
    );
}

#[tokio::test]
async fn events_written_as_events_k8s_io_are_read_as_core_v1() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let (_cluster, client) = cluster().await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let event: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "kafka-scaledjob."},
        "regarding": {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "name": "kafka-scaledjob", "namespace": "default", "uid": "u-1"},
        "reason": "KEDAJobsCreated", "note": "Created 1 jobs", "type": "Normal", "action": "Created 1 jobs",
        "eventTime": "2026-11-28T08:00:00.000000Z", "reportingController": "scale-handler", "reportingInstance": "jobtide-0",
    }))
    .unwrap();
    events
        .create(&PostParams::default(), &event)
        .await
        .expect("create events.k8s.io event");
    let core: Api<CoreEvent> = Api::namespaced(client, "default");
    let listed = core
        .list(
            &ListParams::default()
                .fields("involvedObject.name=kafka-scaledjob,involvedObject.kind=ScaledJob"),
        )
        .await
        .expect("list core events");
    assert_eq!(listed.items.len(), 1);
    let seen = &listed.items[0];
    assert_eq!(seen.message.as_deref(), Some("Created 1 jobs"));
    assert_eq!(seen.involved_object.uid.as_deref(), Some("u-1"));
    assert_eq!(seen.reporting_component.as_deref(), Some("scale-handler"));
    let none = core
        .list(&ListParams::default().fields("involvedObject.name=other"))
        .await
        .expect("list");
    assert!(none.items.is_empty());
}

#[tokio::test]
async fn aggregated_discovery_lists_every_served_type() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cluster, client) = cluster().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    crds.create(&PostParams::default(), &jobtide_api::crd::all()[0])
        .await
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(cluster.addr).await.unwrap();
    stream
        .write_all(b"GET /apis HTTP/1.1\r\nHost: dev\r\nAccept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.to_lowercase().contains(
            "content-type: application/json;g=apidiscovery.k8s.io;v=v2;as=apigroupdiscoverylist"
        ),
        "{response}"
    );
    let body: serde_json::Value =
        serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let groups: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["metadata"]["name"].as_str())
        .collect();
    assert!(
        groups.contains(&"batch") && groups.contains(&"keda.sh"),
        "{groups:?}"
    );
    let keda = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "keda.sh")
        .unwrap();
    let scaledjobs = &keda["versions"][0]["resources"][0];
    assert_eq!(scaledjobs["resource"], "scaledjobs");
    assert_eq!(scaledjobs["scope"], "Namespaced");
    assert_eq!(scaledjobs["subresources"][0]["subresource"], "status");
}

#[tokio::test]
async fn secret_string_data_is_merged_into_data_and_not_stored() {
    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, "default");
    let created = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "s"},
                "data": {"a": "b2xk", "b": "a2VwdA=="},
                "stringData": {"a": "new", "c": "plain"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert!(created.string_data.is_none());
    let data = created.data.unwrap();
    let text = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
    assert_eq!(
        (text("a"), text("b"), text("c")),
        ("new".into(), "kept".into(), "plain".into())
    );
}

#[tokio::test]
async fn metadata_only_requests_get_partial_object_metadata() {
    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "c", "labels": {"a": "b"}}, "data": {"k": "v"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let metadata: Api<kube::core::PartialObjectMeta<ConfigMap>> =
        Api::namespaced(client.clone(), "default");
    let listed = metadata.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.types.kind, "PartialObjectMetadataList");
    assert_eq!(
        listed.items[0].types.as_ref().unwrap().kind,
        "PartialObjectMetadata"
    );
    assert_eq!(listed.items[0].metadata.labels.as_ref().unwrap()["a"], "b");
    let one = metadata.get("c").await.unwrap();
    assert_eq!(one.types.unwrap().api_version, "meta.k8s.io/v1");
    // A metadata watch sees changes as metadata only.
    let mut events = watcher(metadata, watcher::Config::default())
        .touched_objects()
        .boxed();
    let first = events.try_next().await.unwrap().unwrap();
    assert_eq!(first.types.unwrap().kind, "PartialObjectMetadata");
}
