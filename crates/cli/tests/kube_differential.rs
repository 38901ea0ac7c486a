//! The differential test (issue 14): the requests the operator and kubectl make, sent to the
//! embedded API server (`jobtide-devcluster`) and to a real kube-apiserver v1.37 (from
//! `scripts/install-kube-peers`), the answers compared.
//!
//! Each case below is one sentence of the specification both servers meet: the request, the
//! status code both must answer, and the fields of the answer that must be equal (values) or
//! merely present with the same JSON type (`?` in front: uids, resourceVersions, timestamps,
//! continue tokens). A case fails when either server answers another code, or when the servers
//! differ in a compared field; the report names the case and shows both answers. Watches are
//! compared by their event types and objects in order.
//!
//! Without `JOBTIDE_KUBE_BIN` the test skips with a printed reason (under CI it fails).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

#[allow(
    dead_code,
    reason = "helpers shared with kube_apiserver.rs; not all used here"
)]
mod kube_peer;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use futures::StreamExt;
use jobtide_devcluster::DevCluster;
use jobtide_testpeers::ControlPlane;
use kube::core::WatchEvent;
use serde_json::{Value, json};

/// The namespace every case works in.
const NS: &str = "diff";

/// kubectl's Accept for `kubectl get` (a server-side Table).
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
/// kube-rs' Accept for metadata-only lists (the operator's Secret and ConfigMap watches).
const METADATA: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
const MERGE: &str = "application/merge-patch+json";
const JSON: &str = "application/json";

/// Values captured from earlier answers (`{name}` in a later path or body).
type Vars = BTreeMap<&'static str, String>;

/// One request.
struct Request {
    method: &'static str,
    path: String,
    body: Option<Value>,
    content_type: &'static str,
    accept: &'static str,
}

fn get(path: &str) -> Request {
    Request {
        method: "GET",
        path: path.to_owned(),
        body: None,
        content_type: JSON,
        accept: JSON,
    }
}

fn post(path: &str, body: Value) -> Request {
    Request {
        method: "POST",
        body: Some(body),
        ..get(path)
    }
}

fn put(path: &str, body: Value) -> Request {
    Request {
        method: "PUT",
        body: Some(body),
        ..get(path)
    }
}

fn merge_patch(path: &str, body: Value) -> Request {
    Request {
        method: "PATCH",
        body: Some(body),
        content_type: MERGE,
        ..get(path)
    }
}

fn delete(path: &str, body: Value) -> Request {
    Request {
        method: "DELETE",
        body: Some(body),
        ..get(path)
    }
}

fn with_accept(request: Request, accept: &'static str) -> Request {
    Request { accept, ..request }
}

const CONFIGMAPS: &str = "/api/v1/namespaces/diff/configmaps";
const JOBS: &str = "/apis/batch/v1/namespaces/diff/jobs";
const SCALEDJOBS: &str = "/apis/keda.sh/v1alpha1/namespaces/diff/scaledjobs";
const PODS: &str = "/api/v1/namespaces/diff/pods";

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "diff"}},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}})
}

fn config_map(name: &str, tier: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "diff", "tier": tier}},
        "data": {"k": "v"}})
}

fn job(name: &str) -> Value {
    // Suspended: the real Job controller makes no pod for it (it only says so in `status`).
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"app": "diff"}},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}}})
}

fn scaled_job() -> Value {
    let text =
        std::fs::read_to_string(kube_peer::root().join("examples/seed-scaledjob.yaml")).unwrap();
    let mut sj: Value = serde_saphyr::from_str(&text).unwrap();
    sj["metadata"]["namespace"] = json!(NS);
    sj
}

/// A case: what both servers do, as a sentence.
struct Case {
    says: &'static str,
    request: fn(&Vars) -> Request,
    /// The status code both answer.
    status: u16,
    /// JSON pointers compared (`*` for every item of an array; `?` in front: the type only).
    compared: &'static [&'static str],
    /// Values to keep for later cases: (name, pointer into this answer).
    capture: &'static [(&'static str, &'static str)],
}

const STATUS_FIELDS: &[&str] = &[
    "/kind", "/status", "/reason", "/code", "/message", "/details",
];
const CREATED_METADATA: &[&str] = &[
    "/kind",
    "/apiVersion",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/labels",
    "?/metadata/uid",
    "?/metadata/resourceVersion",
    "?/metadata/creationTimestamp",
    "/data",
];

/// The specification, in order (later cases build on earlier ones).
const CASES: &[Case] = &[
    Case {
        says: "a namespace is created",
        request: |_| {
            post(
                "/api/v1/namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
            )
        },
        status: 201,
        compared: &["/kind", "/metadata/name", "/status/phase"],
        capture: &[],
    },
    Case {
        says: "a ConfigMap is created with the server's metadata",
        request: |_| post(CONFIGMAPS, config_map("a", "one")),
        status: 201,
        compared: CREATED_METADATA,
        capture: &[("rv_a", "/metadata/resourceVersion")],
    },
    Case {
        says: "creating it again is 409 AlreadyExists",
        request: |_| post(CONFIGMAPS, config_map("a", "one")),
        status: 409,
        compared: STATUS_FIELDS,
        capture: &[],
    },
    Case {
        says: "a GET returns it",
        request: |_| get(&format!("{CONFIGMAPS}/a")),
        status: 200,
        compared: CREATED_METADATA,
        capture: &[],
    },
    Case {
        says: "a GET of a missing object is 404 NotFound",
        request: |_| get(&format!("{CONFIGMAPS}/missing")),
        status: 404,
        compared: STATUS_FIELDS,
        capture: &[],
    },
    Case {
        says: "a JSON merge patch changes what it names and keeps the rest",
        request: |_| {
            merge_patch(
                &format!("{CONFIGMAPS}/a"),
                json!({"data": {"k2": "v2"}, "metadata": {"labels": {"extra": "yes"}}}),
            )
        },
        status: 200,
        compared: &["/data", "/metadata/labels"],
        capture: &[],
    },
    Case {
        says: "a merge patch with null removes the key",
        request: |_| {
            merge_patch(
                &format!("{CONFIGMAPS}/a"),
                json!({"metadata": {"labels": {"extra": null}}}),
            )
        },
        status: 200,
        compared: &["/data", "/metadata/labels"],
        capture: &[],
    },
    Case {
        says: "a replace with a stale resourceVersion is 409 Conflict",
        request: |vars| {
            let mut object = config_map("a", "one");
            object["metadata"]["resourceVersion"] = json!(vars["rv_a"]);
            put(&format!("{CONFIGMAPS}/a"), object)
        },
        status: 409,
        compared: STATUS_FIELDS,
        capture: &[],
    },
    Case {
        says: "a replace without a resourceVersion is unconditional",
        request: |_| put(&format!("{CONFIGMAPS}/a"), config_map("a", "one")),
        status: 200,
        compared: &["/data", "/metadata/labels"],
        capture: &[],
    },
    Case {
        says: "a second ConfigMap is created",
        request: |_| post(CONFIGMAPS, config_map("b", "two")),
        status: 201,
        compared: CREATED_METADATA,
        capture: &[],
    },
    Case {
        says: "a third ConfigMap is created",
        request: |_| post(CONFIGMAPS, config_map("c", "two")),
        status: 201,
        compared: CREATED_METADATA,
        capture: &[],
    },
    Case {
        says: "an equality label selector lists the matching objects in name order",
        request: |_| get(&format!("{CONFIGMAPS}?labelSelector=tier%3Dtwo")),
        status: 200,
        compared: &[
            "/kind",
            "/apiVersion",
            "?/metadata/resourceVersion",
            "/items/*/metadata/name",
        ],
        capture: &[],
    },
    Case {
        says: "a set-based label selector lists the matching objects",
        request: |_| {
            get(&format!(
                "{CONFIGMAPS}?labelSelector=app%3Ddiff%2Ctier%20notin%20%28two%29"
            ))
        },
        status: 200,
        compared: &["/items/*/metadata/name"],
        capture: &[],
    },
    Case {
        says: "a field selector on metadata.name lists that object",
        request: |_| {
            get(&format!(
                "{CONFIGMAPS}?labelSelector=app%3Ddiff&fieldSelector=metadata.name%3Db"
            ))
        },
        status: 200,
        compared: &["/items/*/metadata/name"],
        capture: &[],
    },
    Case {
        says: "a field selector on a field the server doesn't index is 400 BadRequest",
        request: |_| get(&format!("{CONFIGMAPS}?fieldSelector=data.k%3Dv")),
        status: 400,
        compared: STATUS_FIELDS,
        capture: &[],
    },
    Case {
        says: "a list with limit gives the first page and a continue token",
        request: |_| get(&format!("{CONFIGMAPS}?labelSelector=app%3Ddiff&limit=2")),
        status: 200,
        compared: &[
            "/items/*/metadata/name",
            "?/metadata/continue",
            "/metadata/remainingItemCount",
        ],
        capture: &[("continue", "/metadata/continue")],
    },
    Case {
        says: "the continue token gives the rest and no further token",
        request: |vars| {
            get(&format!(
                "{CONFIGMAPS}?labelSelector=app%3Ddiff&limit=2&continue={}",
                vars["continue"]
            ))
        },
        status: 200,
        compared: &[
            "/items/*/metadata/name",
            "?/metadata/continue",
            "/metadata/remainingItemCount",
        ],
        capture: &[],
    },
    Case {
        says: "kubectl get's Table lists the columns and a row per object",
        request: |_| {
            with_accept(
                get(&format!("{CONFIGMAPS}?labelSelector=app%3Ddiff")),
                TABLE,
            )
        },
        status: 200,
        compared: &[
            "/kind",
            "/apiVersion",
            "/columnDefinitions/*/name",
            "/columnDefinitions/*/type",
            "/columnDefinitions/*/priority",
            "/rows/*/cells/0",
            "/rows/*/cells/1",
            "/rows/*/object/kind",
        ],
        capture: &[],
    },
    Case {
        says: "a metadata-only list has the objects' metadata and no data",
        request: |_| {
            with_accept(
                get(&format!("{CONFIGMAPS}?labelSelector=app%3Ddiff")),
                METADATA,
            )
        },
        status: 200,
        compared: &[
            "/kind",
            "/apiVersion",
            "/items/*/kind",
            "/items/*/apiVersion",
            "/items/*/metadata/name",
            "/items/*/data",
        ],
        capture: &[],
    },
    Case {
        says: "a Job is created with the defaults the operator reads",
        request: |_| post(JOBS, job("j")),
        status: 201,
        compared: &[
            "/spec/completions",
            "/spec/parallelism",
            "/spec/backoffLimit",
            "/spec/completionMode",
            "/spec/suspend",
            "?/spec/selector/matchLabels/batch.kubernetes.io~1controller-uid",
            "/spec/template/metadata/labels/batch.kubernetes.io~1job-name",
            "/spec/template/metadata/labels/job-name",
            "?/spec/template/metadata/labels/controller-uid",
            "/metadata/generation",
        ],
        capture: &[],
    },
    Case {
        says: "kubectl get jobs' Table has the Job columns",
        request: |_| with_accept(get(&format!("{JOBS}?labelSelector=app%3Ddiff")), TABLE),
        status: 200,
        compared: &[
            "/columnDefinitions/*/name",
            "/columnDefinitions/*/priority",
            "/rows/*/cells/0",
            // (cells/1, STATUS, is the Job controller's: the real one marks a suspended Job
            // `Suspended` when it gets to it; without a runner nothing does here.)
            "/rows/*/cells/2",
            "/rows/*/cells/5",
            "/rows/*/cells/6",
            "?/rows/*/cells/7",
        ],
        capture: &[],
    },
    Case {
        says: "changing a Job's pod template is 422 Invalid (immutable)",
        request: |_| {
            merge_patch(
                &format!("{JOBS}/j"),
                json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "other", "command": ["true"]}]}}}}),
            )
        },
        status: 422,
        compared: &[
            "/kind",
            "/reason",
            "/code",
            "/details/kind",
            "/details/name",
        ],
        capture: &[],
    },
    Case {
        says: "deleting a Job with propagationPolicy=Background answers Success naming it (its pods are the collector's)",
        request: |_| {
            delete(
                &format!("{JOBS}/j"),
                json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}),
            )
        },
        status: 200,
        compared: &[
            "/kind",
            "/apiVersion",
            "/status",
            "/details/name",
            "/details/group",
            "/details/kind",
            "?/details/uid",
            "/code",
        ],
        capture: &[],
    },
    Case {
        says: "a ScaledJob is created at generation 1",
        request: |_| post(SCALEDJOBS, scaled_job()),
        status: 201,
        compared: &[
            "/kind",
            "/metadata/generation",
            "/spec/pollingInterval",
            "/status",
        ],
        capture: &[("rv_sj", "/metadata/resourceVersion")],
    },
    Case {
        says: "a merge patch of the status subresource writes the status only and keeps the generation",
        request: |_| {
            merge_patch(
                &format!("{SCALEDJOBS}/kafka-scaledjob/status"),
                json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "ScaledJobReady", "message": "ready"}]}, "spec": {"pollingInterval": 99}}),
            )
        },
        status: 200,
        compared: &[
            "/metadata/generation",
            "/spec/pollingInterval",
            "/status/conditions",
        ],
        capture: &[],
    },
    Case {
        says: "a merge patch of the main resource ignores status and bumps the generation for a spec change",
        request: |_| {
            merge_patch(
                &format!("{SCALEDJOBS}/kafka-scaledjob"),
                json!({"spec": {"pollingInterval": 20}, "status": {"conditions": []}}),
            )
        },
        status: 200,
        compared: &[
            "/metadata/generation",
            "/spec/pollingInterval",
            "/status/conditions",
        ],
        capture: &[],
    },
    Case {
        says: "a status write with a stale resourceVersion is 409 Conflict",
        request: |vars| {
            merge_patch(
                &format!("{SCALEDJOBS}/kafka-scaledjob/status"),
                json!({"metadata": {"resourceVersion": vars["rv_sj"]}, "status": {"conditions": []}}),
            )
        },
        status: 409,
        compared: &[
            "/kind",
            "/reason",
            "/code",
            "/details/name",
            "/details/kind",
        ],
        capture: &[],
    },
    Case {
        says: "a ScaledJob breaking its schema is 422 Invalid naming the field",
        request: |_| {
            let mut sj = scaled_job();
            sj["metadata"]["name"] = json!("broken");
            sj["spec"]["pollingInterval"] = json!("ten");
            post(SCALEDJOBS, sj)
        },
        status: 422,
        compared: &[
            "/reason",
            "/code",
            "/details/causes/*/field",
            "/details/causes/*/reason",
        ],
        capture: &[],
    },
    Case {
        says: "a ScaledJob missing a required field is 422 FieldValueRequired",
        request: |_| {
            let mut sj = scaled_job();
            sj["metadata"]["name"] = json!("broken");
            sj["spec"].as_object_mut().unwrap().remove("triggers");
            post(SCALEDJOBS, sj)
        },
        status: 422,
        compared: &[
            "/reason",
            "/code",
            "/message",
            "/details/causes/*/field",
            "/details/causes/*/reason",
        ],
        capture: &[],
    },
    Case {
        says: "a ScaledJob with an unknown enum value is 422 FieldValueNotSupported",
        request: |_| {
            let mut sj = scaled_job();
            sj["metadata"]["name"] = json!("broken");
            sj["spec"]["scalingStrategy"] = json!({"strategy": "fastest"});
            post(SCALEDJOBS, sj)
        },
        status: 422,
        compared: &[
            "/reason",
            "/code",
            "/message",
            "/details/causes/*/field",
            "/details/causes/*/reason",
        ],
        capture: &[],
    },
    Case {
        says: "deleting a ScaledJob without finalizers answers Success naming it",
        request: |_| {
            delete(
                &format!("{SCALEDJOBS}/kafka-scaledjob"),
                json!({"propagationPolicy": "Background"}),
            )
        },
        status: 200,
        compared: &[
            "/kind",
            "/status",
            "/details/name",
            "/details/group",
            "/details/kind",
            "?/details/uid",
        ],
        capture: &[],
    },
    Case {
        says: "a pod is created Pending with its QoS class, whatever status it was sent",
        request: |_| {
            let mut pod = pod("p");
            pod["status"] = json!({"phase": "Running"});
            post(PODS, pod)
        },
        status: 201,
        compared: &["/kind", "/metadata/name", "/status"],
        capture: &[],
    },
    Case {
        says: "kubectl get pods' Table has the pod columns, wide ones too",
        request: |_| with_accept(get(&format!("{PODS}?labelSelector=app%3Ddiff")), TABLE),
        status: 200,
        compared: &[
            "/columnDefinitions/*/name",
            "/columnDefinitions/*/priority",
            "/rows/*/cells/0",
            "/rows/*/cells/1",
            "/rows/*/cells/2",
            "/rows/*/cells/3",
            "/rows/*/cells/5",
            "/rows/*/cells/6",
            "/rows/*/cells/7",
            "/rows/*/cells/8",
        ],
        capture: &[],
    },
    Case {
        says: "deleting a pod answers the pod (its registry returns deleted objects)",
        request: |_| {
            delete(
                &format!("{PODS}/p"),
                json!({"propagationPolicy": "Background", "gracePeriodSeconds": 0}),
            )
        },
        status: 200,
        compared: &["/kind", "/metadata/name"],
        capture: &[],
    },
    Case {
        says: "deleting a ConfigMap with propagationPolicy=Background answers Success",
        request: |_| {
            delete(
                &format!("{CONFIGMAPS}/a"),
                json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}),
            )
        },
        status: 200,
        compared: &[
            "/kind",
            "/apiVersion",
            "/status",
            "/details/name",
            "/details/group",
            "/details/kind",
            "?/details/uid",
            "/code",
        ],
        capture: &[],
    },
    Case {
        says: "deleting it again is 404 NotFound",
        request: |_| {
            delete(
                &format!("{CONFIGMAPS}/a"),
                json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}),
            )
        },
        status: 404,
        compared: STATUS_FIELDS,
        capture: &[],
    },
];

/// One server: a client for it and, for the expired-watch case, how to make its oldest
/// resourceVersions unavailable.
struct Server {
    name: &'static str,
    client: kube::Client,
}

struct Answer {
    status: u16,
    body: Value,
}

async fn send(server: &Server, request: &Request) -> Answer {
    let body = request
        .body
        .as_ref()
        .map(|b| b.to_string().into_bytes())
        .unwrap_or_default();
    let http = http::Request::builder()
        .method(request.method)
        .uri(&request.path)
        .header("content-type", request.content_type)
        .header("accept", request.accept)
        .body(kube::client::Body::from(body))
        .unwrap();
    let response = server.client.send(http).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await.unwrap();
    let body =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
    Answer { status, body }
}

/// The values at `pointer` (`*` for every item of an array); with `?` in front, their JSON types.
fn pick(body: &Value, pointer: &str) -> Value {
    let (types_only, pointer) = match pointer.strip_prefix('?') {
        Some(rest) => (true, rest),
        None => (false, pointer),
    };
    let value = match pointer.split_once("/*") {
        Some((array, rest)) => Value::Array(
            body.pointer(array)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|item| item.pointer(rest).cloned().unwrap_or(Value::Null))
                .collect(),
        ),
        None => body.pointer(pointer).cloned().unwrap_or(Value::Null),
    };
    if types_only { type_of(&value) } else { value }
}

fn type_of(value: &Value) -> Value {
    match value {
        Value::Null => json!("absent"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(s) if s.is_empty() => json!("empty string"),
        Value::String(_) => json!("string"),
        Value::Array(items) => Value::Array(items.iter().map(type_of).collect()),
        Value::Object(_) => json!("object"),
    }
}

/// Replaces `{name}` by captured values (continue tokens are URL-safe base64 already).
fn fill(request: Request, vars: &Vars) -> Request {
    let mut path = request.path.clone();
    for (name, value) in vars {
        path = path.replace(&format!("{{{name}}}"), value);
    }
    Request { path, ..request }
}

/// The events of a watch of `collection` (objects labelled `app=watched`) from
/// `resource_version`, while `during` is sent: (type, name or the ERROR's code and reason) until
/// `count` events came or 5 s passed without one.
async fn watch_while(
    server: &Server,
    collection: &str,
    resource_version: &str,
    during: &[Request],
    count: usize,
) -> Vec<(String, String)> {
    let http = http::Request::builder()
        .uri(format!(
            "{collection}?watch=true&labelSelector=app%3Dwatched&resourceVersion={resource_version}&allowWatchBookmarks=false"
        ))
        .body(Vec::new())
        .unwrap();
    let mut events = Box::pin(
        server
            .client
            .request_events::<kube::api::DynamicObject>(http)
            .await
            .unwrap(),
    );
    for request in during {
        let answer = send(server, request).await;
        assert!(
            answer.status < 300,
            "{}: {} {}: {}",
            server.name,
            request.method,
            request.path,
            answer.body
        );
    }
    let mut seen = Vec::new();
    while seen.len() < count {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), events.next()).await
        else {
            break;
        };
        seen.push(match event {
            Ok(WatchEvent::Added(cm)) => ("ADDED".into(), cm.metadata.name.unwrap_or_default()),
            Ok(WatchEvent::Modified(cm)) => {
                ("MODIFIED".into(), cm.metadata.name.unwrap_or_default())
            }
            Ok(WatchEvent::Deleted(cm)) => ("DELETED".into(), cm.metadata.name.unwrap_or_default()),
            Ok(WatchEvent::Bookmark(_)) => continue,
            Ok(WatchEvent::Error(status)) => {
                ("ERROR".into(), format!("{} {}", status.code, status.reason))
            }
            Err(error) => ("client error".into(), error.to_string()),
        });
    }
    seen
}

fn watched(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "watched"}}, "data": {"n": "0"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_answers_the_operators_and_kubectls_requests_as_kube_apiserver_does() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    kube_peer::install_crds(plane);
    let kubeconfig = kube::config::Kubeconfig::read_from(&plane.admin_kubeconfig).unwrap();
    let real = Server {
        name: "kube-apiserver",
        client: kube::Client::try_from(
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .unwrap(),
        )
        .unwrap(),
    };
    let embedded_cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let embedded = Server {
        name: "jobtide-devcluster",
        client: kube::Client::try_from(kube::Config::new(embedded_cluster.url().parse().unwrap()))
            .unwrap(),
    };
    // The same CRDs on both.
    let crds = kube_peer::ok(kube_peer::jobtide().arg("crd"), None);
    for document in crds.split("\n---") {
        let crd: Value = match serde_saphyr::from_str(document) {
            Ok(Value::Null) | Err(_) => continue,
            Ok(crd) => crd,
        };
        let answer = send(
            &embedded,
            &post(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                crd,
            ),
        )
        .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
    }

    let mut report = String::new();
    let mut failed = Vec::new();
    let mut vars: [Vars; 2] = [Vars::new(), Vars::new()];
    for case in CASES {
        let mut answers = Vec::new();
        for (server, vars) in [&real, &embedded].into_iter().zip(vars.iter_mut()) {
            let request = fill((case.request)(vars), vars);
            let answer = send(server, &request).await;
            for (name, pointer) in case.capture {
                if let Some(value) = answer.body.pointer(pointer).and_then(Value::as_str) {
                    vars.insert(name, value.to_owned());
                }
            }
            answers.push(answer);
        }
        let (real_answer, embedded_answer) = (&answers[0], &answers[1]);
        let mut problems = Vec::new();
        for (server, answer) in [(&real, real_answer), (&embedded, embedded_answer)] {
            if answer.status != case.status {
                problems.push(format!(
                    "{} answered {} (not {}): {}",
                    server.name, answer.status, case.status, answer.body
                ));
            }
        }
        for pointer in case.compared {
            let (a, b) = (
                pick(&real_answer.body, pointer),
                pick(&embedded_answer.body, pointer),
            );
            if a != b {
                problems.push(format!(
                    "{pointer}: kube-apiserver {a} ≠ jobtide-devcluster {b}"
                ));
            }
        }
        let verdict = if problems.is_empty() {
            "same"
        } else {
            "DIFFERENT"
        };
        writeln!(report, "[{verdict}] {}", case.says).unwrap();
        for problem in &problems {
            writeln!(report, "    {problem}").unwrap();
        }
        if !problems.is_empty() {
            failed.push(case.says);
        }
    }

    // Watches: a create, an update and a delete, seen in order from the resourceVersion before.
    let watch_case = "a watch from a resourceVersion sees ADDED, MODIFIED, DELETED in order";
    let mut sequences = Vec::new();
    for server in [&real, &embedded] {
        let before = send(
            server,
            &get(&format!("{CONFIGMAPS}?labelSelector=app%3Dwatched")),
        )
        .await;
        let from = before.body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        let during = [
            post(CONFIGMAPS, watched("w")),
            merge_patch(&format!("{CONFIGMAPS}/w"), json!({"data": {"n": "1"}})),
            delete(
                &format!("{CONFIGMAPS}/w"),
                json!({"propagationPolicy": "Background"}),
            ),
        ];
        sequences.push(watch_while(server, CONFIGMAPS, &from, &during, 3).await);
    }
    let expected: Vec<(String, String)> = ["ADDED", "MODIFIED", "DELETED"]
        .iter()
        .map(|t| ((*t).to_owned(), "w".to_owned()))
        .collect();
    check_watch(&mut report, &mut failed, watch_case, &sequences, &expected);

    // A watch from a resourceVersion the server no longer has: 410 Expired as an ERROR event in
    // a 200 stream. The real server's ScaledJob watch cache began when the CRD was established,
    // far after resourceVersion 1 (its built-in types' caches began at 1, and serve it); the
    // embedded server keeps 20,000 changes, so its history is dropped first.
    let expired_case = "a watch from an expired resourceVersion gets an ERROR event 410 Expired";
    embedded_cluster.store.compact();
    let mut sequences = Vec::new();
    for server in [&real, &embedded] {
        sequences.push(watch_while(server, SCALEDJOBS, "1", &[], 1).await);
    }
    let expected = vec![("ERROR".to_owned(), "410 Expired".to_owned())];
    check_watch(
        &mut report,
        &mut failed,
        expired_case,
        &sequences,
        &expected,
    );

    eprintln!("{report}");
    assert!(
        failed.is_empty(),
        "the servers differ in {} case(s): {failed:#?}\n{report}",
        failed.len()
    );
}

fn check_watch(
    report: &mut String,
    failed: &mut Vec<&'static str>,
    says: &'static str,
    sequences: &[Vec<(String, String)>],
    expected: &[(String, String)],
) {
    let same = sequences.iter().all(|s| s == expected);
    writeln!(
        report,
        "[{}] {says}",
        if same { "same" } else { "DIFFERENT" }
    )
    .unwrap();
    if !same {
        writeln!(
            report,
            "    kube-apiserver {:?}\n    jobtide-devcluster {:?}\n    expected {expected:?}",
            sequences[0], sequences[1]
        )
        .unwrap();
        failed.push(says);
    }
}
