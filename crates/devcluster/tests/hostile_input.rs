//! Hostile request bodies and query parameters over HTTP (issue 18): the embedded API server
//! answers each with the real server's Status (400 BadRequest or 422 Invalid naming the field),
//! stores nothing half-way, and keeps serving — it never panics and drops the connection.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failure is the test failing

use std::time::{Duration, Instant};

use jobtide_devcluster::DevCluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client, Config};
use serde_json::{Value, json};

/// `metadata` values of the wrong JSON type.
const NOT_OBJECTS: [&str; 3] = ["5", "[]", "\"x\""];

struct Server {
    _cluster: DevCluster,
    client: Client,
}

impl Server {
    async fn start() -> Self {
        let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in jobtide_api::crd::all() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        Self {
            _cluster: cluster,
            client,
        }
    }

    /// The status code and Status body; status 0 when the connection failed (a panic).
    async fn send(&self, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(kube::client::Body::from(body.as_bytes().to_vec()))
            .unwrap();
        let Ok(response) = self.client.send(request).await else {
            return (0, Value::Null);
        };
        let status = response.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    /// Creates one object of each kind; returns (collection path, object path, object).
    async fn objects(&self) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (collection, object) in [
            (
                "/api/v1/namespaces/default/configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "cm"}, "data": {"k": "v"}}),
            ),
            (
                "/apis/batch/v1/namespaces/default/jobs",
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "job"},
                    "spec": {"template": {"spec": {"restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "busybox"}]}}}}),
            ),
            (
                "/apis/keda.sh/v1alpha1/namespaces/default/scaledjobs",
                json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
                    "metadata": {"name": "sj"},
                    "spec": {"jobTargetRef": {"template": {"spec": {"containers": [
                        {"name": "main", "image": "busybox"}]}}},
                        "triggers": [{"type": "kafka", "metadata": {}}]}}),
            ),
        ] {
            let (code, created) = self
                .send("POST", collection, "application/json", &object.to_string())
                .await;
            assert_eq!(code, 201, "{created}");
            let name = created["metadata"]["name"].as_str().unwrap().to_owned();
            out.push((
                collection.to_owned(),
                format!("{collection}/{name}"),
                created,
            ));
        }
        out
    }

    /// The object is still there, unchanged, and the server still answers.
    async fn assert_unchanged(&self, path: &str, before: &Value) {
        let (code, now) = self.send("GET", path, "application/json", "").await;
        assert_eq!(code, 200, "{path}: {now}");
        assert_eq!(
            now["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
            "{path} was not written"
        );
    }
}

fn assert_refused(code: u16, status: &Value, expected: (u16, &str), field: &str, what: &str) {
    assert_eq!(
        (code, status["kind"].as_str(), status["reason"].as_str()),
        (expected.0, Some("Status"), Some(expected.1)),
        "{what}: {status}"
    );
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(field),
        "{what}: the message names {field}: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_patch_whose_metadata_is_not_an_object_is_invalid() {
    let server = Server::start().await;
    for (_, path, before) in server.objects().await {
        for metadata in NOT_OBJECTS {
            let patch = format!(r#"{{"metadata": {metadata}}}"#);
            let (code, status) = server
                .send("PATCH", &path, "application/merge-patch+json", &patch)
                .await;
            assert_refused(
                code,
                &status,
                (422, "Invalid"),
                "metadata",
                &format!("{path} {patch}"),
            );
            server.assert_unchanged(&path, &before).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_patch_that_makes_metadata_a_non_object_is_invalid() {
    let server = Server::start().await;
    for (_, path, before) in server.objects().await {
        for metadata in NOT_OBJECTS {
            let patch =
                format!(r#"[{{"op": "replace", "path": "/metadata", "value": {metadata}}}]"#);
            let (code, status) = server
                .send("PATCH", &path, "application/json-patch+json", &patch)
                .await;
            assert_refused(
                code,
                &status,
                (422, "Invalid"),
                "metadata",
                &format!("{path} {patch}"),
            );
            server.assert_unchanged(&path, &before).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_metadata_is_not_an_object_is_a_bad_request() {
    let server = Server::start().await;
    for (_, path, before) in server.objects().await {
        for metadata in NOT_OBJECTS {
            let mut body = before.clone();
            body["metadata"] = serde_json::from_str(metadata).unwrap();
            let (code, status) = server
                .send("PUT", &path, "application/json", &body.to_string())
                .await;
            assert_refused(
                code,
                &status,
                (400, "BadRequest"),
                "metadata",
                &format!("PUT {path} {metadata}"),
            );
            server.assert_unchanged(&path, &before).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_metadata_is_not_an_object_is_a_bad_request() {
    let server = Server::start().await;
    for (collection, _, object) in server.objects().await {
        for metadata in NOT_OBJECTS {
            let mut body = json!({"apiVersion": object["apiVersion"], "kind": object["kind"]});
            body["metadata"] = serde_json::from_str(metadata).unwrap();
            let (code, status) = server
                .send("POST", &collection, "application/json", &body.to_string())
                .await;
            let what = format!("POST {collection} {metadata}");
            assert_refused(code, &status, (400, "BadRequest"), "metadata", &what);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_fields_of_the_wrong_type_are_refused_naming_the_field() {
    let server = Server::start().await;
    for (_, path, before) in server.objects().await {
        for (field, value) in [
            ("labels", "5"),
            ("labels", r#"{"a": 5}"#),
            ("annotations", "[]"),
            ("finalizers", "\"x\""),
            ("finalizers", "[5]"),
            ("ownerReferences", "{}"),
            ("name", "5"),
            ("resourceVersion", "[]"),
        ] {
            let patch = format!(r#"{{"metadata": {{"{field}": {value}}}}}"#);
            let (code, status) = server
                .send("PATCH", &path, "application/merge-patch+json", &patch)
                .await;
            let what = format!("{path} {patch}");
            assert_refused(
                code,
                &status,
                (422, "Invalid"),
                &format!("metadata.{field}"),
                &what,
            );
            server.assert_unchanged(&path, &before).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_template_labels_are_not_a_map_is_a_bad_request() {
    let server = Server::start().await;
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "odd"},
        "spec": {"template": {"metadata": {"labels": 5}, "spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox"}]}}}});
    let (code, status) = server
        .send(
            "POST",
            "/apis/batch/v1/namespaces/default/jobs",
            "application/json",
            &job.to_string(),
        )
        .await;
    assert_refused(
        code,
        &status,
        (400, "BadRequest"),
        "spec.template.metadata.labels",
        "job",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_of_the_wrong_type_is_invalid() {
    let server = Server::start().await;
    for (_, path, before) in server.objects().await.into_iter().skip(1) {
        let status_path = format!("{path}/status");
        let (code, status) = server
            .send(
                "PATCH",
                &status_path,
                "application/merge-patch+json",
                r#"{"status": 5}"#,
            )
            .await;
        assert_refused(code, &status, (422, "Invalid"), "status", &status_path);
        server.assert_unchanged(&path, &before).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_timeout_overflows_int64_is_a_bad_request() {
    let server = Server::start().await;
    let objects = server.objects().await;
    for (collection, _, _) in &objects {
        for timeout in ["18446744073709551615", "99999999999999999999", "ten"] {
            let path = format!("{collection}?watch=true&timeoutSeconds={timeout}");
            let (code, status) = server.send("GET", &path, "application/json", "").await;
            assert_refused(code, &status, (400, "BadRequest"), "timeoutSeconds", &path);
        }
    }
    // The largest int64 is a valid timeout (the real server takes it): a long watch, not a
    // panic. The headers arrive; the test then drops the stream.
    let path = format!(
        "{}?watch=true&timeoutSeconds=9223372036854775807",
        objects[0].0
    );
    let request = http::Request::builder()
        .uri(&path)
        .body(kube::client::Body::empty())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), server.client.send(request))
        .await
        .expect("headers in time")
        .expect("a response");
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        http_body_util::BodyExt::frame(&mut body),
    )
    .await
    .expect("the initial ADDED event in time");
    assert!(
        first.is_some_and(|frame| frame.is_ok()),
        "the watch stream is open and delivers events"
    );
    let (code, _) = server
        .send("GET", &objects[0].1, "application/json", "")
        .await;
    assert_eq!(code, 200, "the server still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_the_largest_resource_version_waits_for_its_timeout() {
    let server = Server::start().await;
    let started = Instant::now();
    let (code, _) = server
        .send(
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1&resourceVersion=18446744073709551615",
            "application/json",
            "",
        )
        .await;
    assert_eq!(code, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the watch ran until its timeout (it ended after {:?})",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_cannot_replace_a_built_in_type_or_name_itself_wrongly() {
    let server = Server::start().await;
    let objects = server.objects().await;
    let crd = |name: &str, group: &str, plural: &str| {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"group": group, "scope": "Namespaced",
                "names": {"kind": "Evil", "plural": plural, "singular": "evil"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
        .to_string()
    };
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    for (body, field) in [
        (crd("configmaps", "", "configmaps"), "spec.group"),
        (crd("jobs.batch", "batch", "jobs"), "spec.group"),
        (
            crd(
                "customresourcedefinitions.apiextensions.k8s.io",
                "apiextensions.k8s.io",
                "customresourcedefinitions",
            ),
            "api-approved.kubernetes.io",
        ),
        (
            crd(
                "customresourcedefinitions.apiextensions.k8s.io",
                "apiextensions.k8s.io",
                "customresourcedefinitions",
            )
            .replace(
                r#""metadata":{"#,
                r#""metadata":{"annotations":{"api-approved.kubernetes.io":"yes"},"#,
            ),
            "is a built-in type",
        ),
        (
            crd("widgets.example.com", "example.com", "gadgets"),
            "metadata.name",
        ),
        (
            crd("Widgets.example.com", "example.com", "Widgets"),
            "spec.names.plural",
        ),
    ] {
        let (code, status) = server.send("POST", crds, "application/json", &body).await;
        assert_refused(code, &status, (422, "Invalid"), field, &body);
    }
    for (_, path, before) in &objects {
        server.assert_unchanged(path, before).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_that_break_their_crd_schema_are_refused_naming_the_field() {
    let server = Server::start().await;
    let collection = "/apis/keda.sh/v1alpha1/namespaces/default/scaledjobs";
    let scaled_job = |spec: Value| {
        json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "schema"}, "spec": spec})
        .to_string()
    };
    let valid = json!({"jobTargetRef": {"template": {"spec": {"containers": [
        {"name": "main", "image": "busybox"}]}}}, "triggers": [{"type": "kafka", "metadata": {"topic": "t"}}]});
    for (spec, field) in [
        (json!(5), "spec"),
        (
            {
                let mut spec = valid.clone();
                spec["pollingInterval"] = json!("abc");
                spec
            },
            "spec.pollingInterval",
        ),
        (
            {
                let mut spec = valid.clone();
                spec["maxReplicaCount"] = json!(0);
                spec
            },
            "spec.maxReplicaCount",
        ),
        (
            {
                let mut spec = valid.clone();
                spec["triggers"][0]["metadata"]["topic"] = json!(5);
                spec
            },
            "spec.triggers[0].metadata.topic",
        ),
        (json!({"triggers": valid["triggers"]}), "spec.jobTargetRef"),
    ] {
        let (code, status) = server
            .send(
                "POST",
                collection,
                "application/json",
                &scaled_job(spec.clone()),
            )
            .await;
        assert_refused(code, &status, (422, "Invalid"), field, &spec.to_string());
    }
    // Unknown fields are pruned, as the real server does without strict field validation.
    let mut extra = valid.clone();
    extra["notAField"] = json!(true);
    let (code, created) = server
        .send("POST", collection, "application/json", &scaled_job(extra))
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"].get("notAField"), None, "{created}");
    // A status patch is checked too.
    let (code, status) = server
        .send(
            "PATCH",
            &format!("{collection}/schema/status"),
            "application/merge-patch+json",
            r#"{"status": {"conditions": [{"type": "Ready", "status": 5}]}}"#,
        )
        .await;
    assert_refused(
        code,
        &status,
        (422, "Invalid"),
        "status.conditions[0].status",
        "status patch",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_queries_and_names_are_read_as_the_real_server_reads_them() {
    let server = Server::start().await;
    let collection = "/api/v1/namespaces/default/configmaps";
    for query in [
        "labelSelector=%21%21",
        "labelSelector=a%3Db%3Dc",
        "limit=x",
        "limit=-1",
        "resourceVersion=abc",
        "resourceVersionMatch=Exact",
        "resourceVersion=1&resourceVersionMatch=Newest",
    ] {
        let (code, status) = server
            .send(
                "GET",
                &format!("{collection}?{query}"),
                "application/json",
                "",
            )
            .await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (400, Some("BadRequest")),
            "{query}: {status}"
        );
    }
    // The wrong kind is named as a kind, not as an API version.
    let (code, status) = server
        .send(
            "POST",
            collection,
            "application/json",
            r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}"#,
        )
        .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "the kind in the data (Secret) does not match the expected kind (ConfigMap)"
    );
    // A percent-encoded name is the name.
    let (code, _) = server
        .send(
            "POST",
            collection,
            "application/json",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "my-name"}}"#,
        )
        .await;
    assert_eq!(code, 201);
    let (code, found) = server
        .send(
            "GET",
            &format!("{collection}/my%2Dname"),
            "application/json",
            "",
        )
        .await;
    assert_eq!(
        (code, found["metadata"]["name"].as_str()),
        (200, Some("my-name"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_that_move_an_object_or_change_its_identity_are_refused() {
    let server = Server::start().await;
    for (_, path, before) in server.objects().await {
        for (patch, expected) in [
            (
                r#"[{"op": "replace", "path": "/metadata/namespace", "value": "elsewhere"}]"#,
                (400, "BadRequest"),
            ),
            (
                r#"[{"op": "replace", "path": "/metadata/uid", "value": "another"}]"#,
                (409, "Conflict"),
            ),
            (
                r#"[{"op": "replace", "path": "/kind", "value": "Other"}]"#,
                (400, "BadRequest"),
            ),
        ] {
            let (code, status) = server
                .send("PATCH", &path, "application/json-patch+json", patch)
                .await;
            assert_eq!(
                (code, status["reason"].as_str()),
                (expected.0, Some(expected.1)),
                "{path} {patch}: {status}"
            );
            server.assert_unchanged(&path, &before).await;
        }
    }
    // A body over the limit (3 MiB) is a Status too. Only just over it: the server answers
    // without reading the rest, and a client still writing a large remainder can see the
    // connection reset before the answer (it did, once in CI, with 1 MiB left to send).
    let big = format!(
        r#"{{"metadata": {{"name": "big"}}, "data": {{"k": "{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 4096)
    );
    let (code, status) = server
        .send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &big,
        )
        .await;
    assert_eq!(
        (code, status["kind"].as_str(), status["reason"].as_str()),
        (413, Some("Status"), Some("RequestEntityTooLarge")),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_options_of_the_wrong_shape_are_a_bad_request_and_delete_nothing() {
    let server = Server::start().await;
    for (_, path, before) in server.objects().await {
        for options in [
            r#"{"preconditions": 5}"#,
            r#"{"preconditions": {"uid": 5}}"#,
            r#"{"propagationPolicy": 1}"#,
            "[]",
        ] {
            let (code, status) = server
                .send("DELETE", &path, "application/json", options)
                .await;
            assert_refused(code, &status, (400, "BadRequest"), "DeleteOptions", options);
            server.assert_unchanged(&path, &before).await;
        }
    }
}
